//! What a benchmark sweep covers: kernels, dtypes, head dims, masks and sequence lengths, with
//! batch * seq and heads * head_dim held constant (FlashAttention's convention: 16k tokens, hidden 2048);
//! or, with `--varlen`, one ragged batch beside a dense batch of as many sequences of the mean length
//! ([`Varlen`]); or, with `--decode`, decode steps over batch sizes and context lengths
//! ([`super::decode`]); or, with `--sparse`, each shape dense and under a block-sparse mask
//! ([`SparseCase`]).

use std::str::FromStr;
use std::sync::Arc;

use super::budget::MAX_SECONDS;
use super::decode::{self, Decode, DecodeCase, Storage, MAX_SEQ_Q};
use super::results::{Mode, Record, SplitKv, Status};
use super::varlen::{LengthDist, RaggedCase};
use crate::cli::buffer_bytes;
use crate::cli::runner::Runner;
use crate::cli::sparse_spec::SparseSpec;
use crate::{
    AttentionError, AttentionProblem, AttentionShape, BlockMask, DType, KernelChoice, Tensor,
};

/// Most timed runs per kernel and shape (`--iters`): beyond this a sweep takes days.
pub const MAX_ITERS: usize = 10_000;
/// Most untimed warm-up runs per kernel and shape (`--warmup`).
pub const MAX_WARMUP: usize = 10_000;
/// Most input sets rotated between runs (`--input-sets`): each is a full copy of q, k and v.
pub const MAX_INPUT_SETS: usize = 64;
/// Most query rows checked per kernel and shape (`--check-rows`).
pub const MAX_CHECK_ROWS: usize = 4096;
/// Longest timing budget of a host kernel per shape, in seconds (`--host-seconds`).
pub const MAX_HOST_SECONDS: f64 = 3600.0;

/// The sizes a sweep covers unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub seqs: &'static [usize],
    /// batch * seq.
    pub tokens: usize,
    /// heads * head_dim.
    pub hidden: usize,
    pub head_dims: &'static [usize],
}

/// On a GPU: FlashAttention's sweep (16k tokens, hidden 2048, seq 512 to 16k, head dims 64 and 128).
/// benches/torch_sdpa.py has the same (a test holds them together).
pub const GPU_DEFAULTS: Defaults = Defaults {
    seqs: &[512, 1024, 2048, 4096, 8192, 16384],
    tokens: 16384,
    hidden: 2048,
    head_dims: &[64, 128],
};

/// `--quick` on a GPU (and in benches/torch_sdpa.py).
pub const GPU_QUICK: Defaults = Defaults {
    seqs: &[512, 1024, 2048],
    tokens: 4096,
    hidden: 2048,
    head_dims: &[128],
};

/// On the CPU backend: about a minute on 2 cores.
pub const CPU_DEFAULTS: Defaults = Defaults {
    seqs: &[128, 256, 512, 1024, 2048],
    tokens: 2048,
    hidden: 2048,
    head_dims: &[64, 128],
};

/// `--quick` on the CPU backend: seconds.
pub const CPU_QUICK: Defaults = Defaults {
    seqs: &[128, 256, 512],
    tokens: 1024,
    hidden: 1024,
    head_dims: &[64, 128],
};

/// `--sparse` on a GPU: long sequences, where a block-sparse pattern pays (BigBird's blocks of 64 at
/// 2k tokens are a quarter of the blocks, at 64k under 2%); batch * seq 64k.
pub const GPU_SPARSE: Defaults = Defaults {
    seqs: &[2048, 4096, 8192, 16384, 32768, 65536],
    tokens: 65536,
    hidden: 2048,
    head_dims: &[64, 128],
};

/// `--sparse --quick` on a GPU.
pub const GPU_SPARSE_QUICK: Defaults = Defaults {
    seqs: &[4096, 16384],
    tokens: 16384,
    hidden: 2048,
    head_dims: &[128],
};

/// `--sparse` on the CPU backend: under a minute on 2 cores (it computes only the listed key blocks, so a
/// sparse shape costs about its computed pairs).
pub const CPU_SPARSE: Defaults = Defaults {
    seqs: &[512, 1024, 2048, 4096],
    tokens: 4096,
    hidden: 1024,
    head_dims: &[64, 128],
};

/// `--sparse --quick` on the CPU backend: seconds.
pub const CPU_SPARSE_QUICK: Defaults = Defaults {
    seqs: &[1024, 2048],
    tokens: 2048,
    hidden: 1024,
    head_dims: &[64],
};

/// Which masks a sweep covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masks {
    /// Non-causal only.
    No,
    /// Causal only.
    Yes,
    /// Both, non-causal first.
    Both,
}

impl Masks {
    pub fn causal_flags(self) -> Vec<bool> {
        match self {
            Masks::No => vec![false],
            Masks::Yes => vec![true],
            Masks::Both => vec![false, true],
        }
    }
}

impl FromStr for Masks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" | "false" => Ok(Masks::No),
            "yes" | "true" => Ok(Masks::Yes),
            "both" => Ok(Masks::Both),
            other => Err(format!(
                "unknown causal setting '{other}': use no, yes or both"
            )),
        }
    }
}

/// `value` of `flag` within `min..=max`, or a message saying the range.
fn in_range(flag: &str, value: usize, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{flag} {value} is out of range: use {min} to {max}"
        ))
    }
}

/// A message when `list` (the values of `flag`) holds a value twice.
fn no_repeats<T: PartialEq + std::fmt::Display>(flag: &str, list: &[T]) -> Result<(), String> {
    for (i, value) in list.iter().enumerate() {
        if list[..i].contains(value) {
            return Err(format!("{flag} lists {value} twice"));
        }
    }
    Ok(())
}

/// A resolved sweep: every setting decided.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// What is timed: each names one kernel on one backend ([`Runner::is_one_kernel`]).
    pub kernels: Vec<Runner>,
    pub dtypes: Vec<DType>,
    pub head_dims: Vec<usize>,
    pub masks: Masks,
    pub seqs: Vec<usize>,
    /// batch * seq.
    pub tokens: usize,
    /// heads * head_dim, unless `heads` is set.
    pub hidden: usize,
    /// A fixed head count instead of hidden / head_dim.
    pub heads: Option<usize>,
    pub warmup: usize,
    pub iters: usize,
    pub input_sets: usize,
    pub flush_l2: bool,
    /// Seconds of timed runs after which a host kernel (cpu, emulator) stops, once it has 3 runs.
    pub host_seconds: f64,
    /// Query rows checked per kernel and shape.
    pub check_rows: usize,
    /// The time budget of the whole sweep in seconds ([`super::budget`]); `None`: no budget.
    pub max_seconds: Option<f64>,
    /// A ragged batch timed beside a dense one, in place of the sweep of `seqs` (`--varlen`).
    pub varlen: Option<Varlen>,
    /// Decode steps over batch sizes and contexts, in place of the sweep of `seqs` (`--decode`); the
    /// query heads are `heads` (required with it).
    pub decode: Option<Decode>,
    /// A block-sparse mask built for each sequence length: every shape is timed dense and under the mask
    /// (`--sparse`).
    pub sparse: Option<SparseSpec>,
}

/// The block-sparse mask of a sweep case (`--sparse`): the spec as the records name it (every option
/// spelled out) and the mask it builds for the case's sequence length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseCase {
    pub spec: Arc<str>,
    pub mask: Arc<BlockMask>,
}

/// `attn bench --varlen DIST [--paged PAGE_SIZE,...]`: for each dtype, head dim and mask, one ragged
/// batch of self-attention prefill with K/V packed (and, per page size, in a paged cache), beside a dense
/// batch of as many sequences of the mean length (rounded to the nearest integer): the same sequences
/// and, within half a token per sequence, the same tokens. Not the same FLOPs: a ragged batch's are the
/// sum of its squared lengths, at least those of the dense batch, so the two compare by TFLOP/s, each
/// counted on its own lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Varlen {
    /// The lengths (uniform draws up to the sweep's tokens, or a list).
    pub dist: LengthDist,
    /// Page sizes of the paged runs (`--paged`); empty: packed K/V only.
    pub page_sizes: Vec<usize>,
}

/// One shape of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub dtype: DType,
    pub head_dim: usize,
    pub causal: bool,
    /// seq_q = seq_k; for a ragged batch its mean length, rounded (the dense comparison's); for a decode
    /// step seq_q alone.
    pub seq: usize,
    /// Sequences.
    pub batch: usize,
    /// Query heads (= key/value heads but in a decode step).
    pub heads: usize,
    /// `None`: a dense batch of `batch` x `seq`; else the ragged batch and its K/V storage.
    pub ragged: Option<RaggedCase>,
    /// A decode step: `seq` queries against `context` keys, GQA (never with `ragged`).
    pub decode: Option<DecodeCase>,
    /// A dense batch under a block-sparse mask (never with `ragged` or `decode`).
    pub sparse: Option<SparseCase>,
}

impl Case {
    /// Floating-point operations of one call (4 * b * h * seq^2 * d, halved when causal; a ragged batch
    /// on its real lengths, [`RaggedCase::flops`]; a decode step 4 * b * h * d times the keys its queries
    /// see, every key of the context without the causal mask; a block-sparse batch 4 * b * h * d times
    /// the pairs it computes, [`Case::pairs`]).
    pub fn flops(&self) -> f64 {
        match (&self.ragged, &self.decode, &self.sparse) {
            (Some(ragged), _, _) => ragged.flops(self.heads, self.head_dim, self.causal),
            (None, Some(_), _) | (None, None, Some(_)) => {
                4.0 * self.batch as f64
                    * self.heads as f64
                    * self.head_dim as f64
                    * self.pairs(&self.problem()) as f64
            }
            (None, None, None) => self.problem().shape.flops(self.causal),
        }
    }

    /// The FLOPs `kernel` does on this case, which time predictions scale by: [`Case::flops`], except
    /// that a block-sparse case costs the kernels that test each element (naive) what its dense shape
    /// does; the flash kernels and the CPU backend skip the tiles no row lists.
    pub fn work_flops(&self, kernel: Runner) -> f64 {
        let skips_tiles = kernel == Runner::Cpu || kernel.kernel() == KernelChoice::Flash;
        match &self.sparse {
            Some(_) if !skips_tiles => Case {
                sparse: None,
                ..self.clone()
            }
            .flops(),
            _ => self.flops(),
        }
    }

    /// The (query, key) pairs of one sequence and head of `problem` that its masks keep
    /// ([`AttentionProblem::visible_keys`] summed over the queries).
    fn pairs(&self, problem: &AttentionProblem) -> u64 {
        (0..self.seq).map(|i| problem.visible_keys(i) as u64).sum()
    }

    /// The pairs a block-sparse case computes over those of the same shape without its block mask
    /// (`None` without one).
    pub fn density(&self) -> Option<f64> {
        self.sparse.as_ref()?;
        let sparse = self.problem();
        let mut dense = sparse.clone();
        dense.block_mask = None;
        let all = self.pairs(&dense);
        Some(if all == 0 {
            0.0
        } else {
            self.pairs(&sparse) as f64 / all as f64
        })
    }

    /// Self-attention, contiguous `[b, s, h, d]`, default scale; a ragged batch as
    /// [`RaggedCase::problem`] lays it out; a decode step with `context` keys and `heads_kv` key/value
    /// heads, contiguous `[b, s, h, d]` too.
    pub fn problem(&self) -> AttentionProblem {
        match (&self.ragged, &self.decode) {
            (Some(ragged), _) => ragged.problem(self.heads, self.head_dim, self.causal),
            (None, Some(step)) => AttentionProblem::new(
                AttentionShape::new(self.batch, self.seq, self.heads, self.head_dim)
                    .with_seq_k(step.context)
                    .with_heads_kv(step.heads_kv),
            )
            .with_causal(self.causal),
            (None, None) => {
                let problem = AttentionProblem::new(AttentionShape::new(
                    self.batch,
                    self.seq,
                    self.heads,
                    self.head_dim,
                ))
                .with_causal(self.causal);
                match &self.sparse {
                    Some(sparse) => problem.with_block_mask(sparse.mask.clone()),
                    None => problem,
                }
            }
        }
    }

    /// `dense`, `varlen`, `paged`, `decode` or `sparse`.
    pub fn mode(&self) -> Mode {
        match (&self.ragged, &self.decode) {
            (None, None) if self.sparse.is_some() => Mode::Sparse,
            (None, None) => Mode::Dense,
            (None, Some(_)) => Mode::Decode,
            (
                Some(RaggedCase {
                    page_size: None, ..
                }),
                _,
            ) => Mode::Varlen,
            (Some(_), _) => Mode::Paged,
        }
    }

    /// The split-KV choice of a decode step (`None` otherwise, or before a kernel chose).
    pub fn split(&self) -> Option<SplitKv> {
        self.decode.and_then(|step| step.split)
    }

    /// Bytes of K, V, Q and O one call of a decode step moves ([`decode::bytes`]); `None` otherwise.
    pub fn bytes(&self) -> Option<u64> {
        self.decode.map(|step| {
            decode::bytes(
                [
                    self.batch,
                    self.seq,
                    step.context,
                    self.heads,
                    step.heads_kv,
                    self.head_dim,
                ],
                self.dtype.size_bytes(),
            )
        })
    }

    /// The records `kernel` makes of this case: a decode step on a flash kernel twice, with split-KV
    /// ([`SplitKv::Auto`]) and without ([`SplitKv::Off`]); every other case and kernel once, as it is.
    pub fn variants(&self, kernel: Runner) -> Vec<Case> {
        let splits = matches!(
            kernel,
            Runner::Gpu(KernelChoice::Flash) | Runner::Emulator(KernelChoice::Flash)
        );
        match self.decode {
            Some(step) if splits => [SplitKv::Auto, SplitKv::Off]
                .into_iter()
                .map(|split| Case {
                    decode: Some(DecodeCase {
                        split: Some(split),
                        ..step
                    }),
                    ..self.clone()
                })
                .collect(),
            _ => vec![self.clone()],
        }
    }

    /// The shape in words, for messages: `seq 512 d64`, or `batch 4 context 8192 d128` for a decode step.
    pub fn words(&self) -> String {
        match &self.decode {
            Some(step) => format!(
                "batch {} context {} d{}",
                self.batch, step.context, self.head_dim
            ),
            None => format!("seq {} d{}", self.seq, self.head_dim),
        }
    }

    /// A record for `kernel` on this shape, not yet run.
    pub fn record(&self, kernel: &str, status: Status, reason: Option<String>) -> Record {
        Record {
            kernel: kernel.to_string(),
            dtype: self.dtype.name().to_string(),
            causal: self.causal,
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
            head_dim: self.head_dim,
            mode: self.mode(),
            page_size: self.ragged.as_ref().and_then(|r| r.page_size),
            seq_lens: self.ragged.as_ref().map(|r| r.lengths.to_vec()),
            context: self.decode.map(|step| step.context),
            heads_kv: self.decode.map(|step| step.heads_kv),
            split_kv: self.split(),
            splits: None,
            gqa_packing: None,
            sparse: self.sparse.as_ref().map(|s| s.spec.to_string()),
            density: self.density(),
            bytes: self.bytes(),
            bandwidth_gb_s: None,
            copy_fraction: None,
            flops: self.flops(),
            status,
            reason,
            check: None,
            timing: None,
            memory: None,
        }
    }
}

impl Sweep {
    /// Checks every setting against its bounds and every shape against the library's validation, before
    /// anything runs, and returns the shapes in the order the sweep runs them: by dtype as listed, and
    /// within a dtype cheapest (fewest FLOPs) first, so that the smallest shapes are measured before
    /// the sweep spends its time on the largest.
    ///
    /// # Errors
    /// A message naming the flag (or the shape) and what would be accepted.
    pub fn validate(&self) -> Result<Vec<Case>, String> {
        in_range("--iters", self.iters, 1, MAX_ITERS)?;
        in_range("--warmup", self.warmup, 0, MAX_WARMUP)?;
        in_range("--input-sets", self.input_sets, 1, MAX_INPUT_SETS)?;
        in_range("--check-rows", self.check_rows, 1, MAX_CHECK_ROWS)?;
        if !(0.0..=MAX_HOST_SECONDS).contains(&self.host_seconds) {
            return Err(format!(
                "--host-seconds {} is out of range: use 0 to {MAX_HOST_SECONDS}",
                self.host_seconds
            ));
        }
        if let Some(seconds) = self.max_seconds {
            if !(seconds > 0.0 && seconds <= MAX_SECONDS) {
                return Err(format!(
                    "--max-seconds {seconds} is out of range: use more than 0, at most {MAX_SECONDS} (a week)"
                ));
            }
        }
        if self.kernels.is_empty() || self.dtypes.is_empty() {
            return Err("--kernels and --dtypes need at least one value each".into());
        }
        if let Some(kernel) = self.kernels.iter().find(|k| !k.is_one_kernel()) {
            return Err(format!(
                "--kernels {kernel}: a benchmark record times one kernel: use naive, flash, cpu, \
                 emulator-naive or emulator-flash"
            ));
        }
        no_repeats("--kernels", &self.kernels)?;
        no_repeats("--dtypes", &self.dtypes)?;
        no_repeats("--head-dims", &self.head_dims)?;
        no_repeats("--seqs", &self.seqs)?;
        if let Some(varlen) = &self.varlen {
            no_repeats("--paged", &varlen.page_sizes)?;
        }
        if self.sparse.is_some() && (self.varlen.is_some() || self.decode.is_some()) {
            return Err(
                "--sparse times dense batches with and without a block mask: drop --varlen and --decode"
                    .into(),
            );
        }
        if let Some(decode) = &self.decode {
            no_repeats("--batches", &decode.batches)?;
            no_repeats("--contexts", &decode.contexts)?;
            in_range("--seq-q", decode.seq_q, 1, MAX_SEQ_Q)?;
            if let Some(kernel) = self
                .kernels
                .iter()
                .find(|k| k.kernel() == KernelChoice::Naive)
            {
                return Err(format!(
                    "--kernels {kernel} with --decode: decode times flash with and without split-KV (and \
                     the CPU backend); use flash, emulator-flash or cpu"
                ));
            }
        }
        let mut cases = self.cases()?;
        for case in &cases {
            case.problem().validate().map_err(|e| {
                // The layout is named when it is not the dense default.
                let mode = match (case.mode().word(), &case.decode) {
                    ("dense", _) => String::new(),
                    ("sparse", _) => format!(
                        " (sparse: {})",
                        case.sparse.as_ref().map_or("", |s| &s.spec)
                    ),
                    (_, Some(step)) => format!(
                        " (decode: context {}, heads_kv {})",
                        step.context, step.heads_kv
                    ),
                    (word, None) => format!(" ({word})"),
                };
                format!(
                    "the sweep's shape {} d{} seq {} batch {} heads {}{mode}: {e}",
                    case.dtype, case.head_dim, case.seq, case.batch, case.heads,
                )
            })?;
        }
        // A stable sort: equal costs keep the order of `cases`. A block-sparse case costs what its dense
        // shape does here, so that it runs right after it: the two are timed back to back, under the
        // same load of a shared machine.
        let cost = |c: &Case| match c.sparse {
            Some(_) => Case {
                sparse: None,
                ..c.clone()
            }
            .flops(),
            None => c.flops(),
        };
        cases.sort_by(|a, b| {
            let dtype = |c: &Case| self.dtypes.iter().position(|&d| d == c.dtype);
            dtype(a).cmp(&dtype(b)).then(cost(a).total_cmp(&cost(b)))
        });
        Ok(cases)
    }

    /// Elements of the largest q (or k, or v) and of the largest output over `cases`: the storage every
    /// shape of one dtype is sliced from.
    ///
    /// # Errors
    /// The shapes' size errors.
    pub fn buffer_lens(cases: &[Case]) -> Result<(usize, usize), AttentionError> {
        let (mut input_len, mut out_len) = (0, 0);
        for case in cases {
            let problem = case.problem();
            for tensor in [Tensor::Q, Tensor::K, Tensor::V] {
                input_len = input_len.max(problem.required_len(tensor)?);
            }
            out_len = out_len.max(problem.required_len(Tensor::Out)?);
        }
        Ok((input_len, out_len))
    }

    /// The storage of the decode cases in `cases` ([`Storage`]): the largest q and k.
    ///
    /// # Errors
    /// The shapes' size errors.
    pub fn decode_storage(cases: &[Case]) -> Result<Storage, AttentionError> {
        let mut lens = Vec::with_capacity(cases.len());
        for case in cases {
            let problem = case.problem();
            lens.push((
                problem.required_len(Tensor::Q)?,
                problem.required_len(Tensor::K)?,
            ));
        }
        Ok(Storage::of(lens))
    }

    /// Host bytes the sweep holds at once, for the dtype that needs most: `input_sets` copies of q, k and
    /// v, an output and (on the GPU) its NaN poison; for a decode sweep [`Storage::host_bytes`]. `None`
    /// when the size overflows.
    ///
    /// # Errors
    /// The shapes' size errors.
    pub fn host_bytes(&self, cases: &[Case]) -> Result<Option<usize>, AttentionError> {
        let mut most = Some(0usize);
        let host_kernels = self.kernels.iter().any(|k| !k.on_gpu());
        for &dtype in &self.dtypes {
            let of_dtype: Vec<Case> = cases.iter().filter(|c| c.dtype == dtype).cloned().collect();
            if self.decode.is_some() {
                let storage = Sweep::decode_storage(&of_dtype)?;
                let bytes = storage.host_bytes(self.input_sets, dtype.size_bytes(), host_kernels);
                most = most.zip(bytes).map(|(a, b)| a.max(b));
                continue;
            }
            let (input_len, out_len) = Sweep::buffer_lens(&of_dtype)?;
            let bytes = buffer_bytes(&[self.input_sets, 3, input_len], dtype.size_bytes())
                .zip(buffer_bytes(&[2, out_len], dtype.size_bytes()))
                .and_then(|(inputs, outputs)| inputs.checked_add(outputs));
            most = most.zip(bytes).map(|(a, b)| a.max(b));
        }
        Ok(most)
    }

    /// The lengths of the ragged batch (`--varlen`), drawn (seeded) or listed; `None` without one.
    ///
    /// # Errors
    /// [`LengthDist::lengths`]'s.
    pub fn lengths(&self) -> Result<Option<Vec<usize>>, String> {
        self.varlen
            .as_ref()
            .map(|varlen| varlen.dist.lengths(self.tokens))
            .transpose()
    }

    /// Every shape, ordered by dtype, head dim, mask, sequence length; with `--varlen`, by dtype, head
    /// dim and mask, each the dense batch, then the ragged one packed, then paged per page size; with
    /// `--decode`, by dtype, head dim, mask, batch and context; with `--sparse`, each shape dense, then
    /// under the block mask built for its length.
    ///
    /// # Errors
    /// When `hidden` is not a multiple of a head dim (and no head count is fixed), or a size is 0.
    pub fn cases(&self) -> Result<Vec<Case>, String> {
        if let Some(decode) = &self.decode {
            return self.decode_cases(decode);
        }
        if self.tokens == 0 || self.seqs.contains(&0) || self.head_dims.contains(&0) {
            return Err("tokens, sequence lengths and head dims must be at least 1".into());
        }
        if self
            .varlen
            .as_ref()
            .is_some_and(|v| v.page_sizes.contains(&0))
        {
            return Err("--paged 0: a page holds at least 1 token".into());
        }
        let lengths: Option<Arc<[usize]>> = self.lengths()?.map(Arc::from);
        let mut cases = Vec::new();
        for &dtype in &self.dtypes {
            for &head_dim in &self.head_dims {
                let heads = match self.heads {
                    Some(heads) => heads,
                    None if self.hidden % head_dim == 0 && self.hidden >= head_dim => {
                        self.hidden / head_dim
                    }
                    None => {
                        return Err(format!(
                            "hidden {} is not a multiple of head_dim {head_dim}: pick another --hidden or set --heads",
                            self.hidden
                        ))
                    }
                };
                for causal in self.masks.causal_flags() {
                    if let (Some(lengths), Some(varlen)) = (&lengths, &self.varlen) {
                        let batch = lengths.len();
                        let total: usize = lengths.iter().sum();
                        let dense = Case {
                            dtype,
                            head_dim,
                            causal,
                            seq: ((total + batch / 2) / batch.max(1)).max(1),
                            batch,
                            heads,
                            ragged: None,
                            decode: None,
                            sparse: None,
                        };
                        let storages = std::iter::once(None)
                            .chain(varlen.page_sizes.iter().map(|&size| Some(size)));
                        let ragged: Vec<Case> = storages
                            .map(|page_size| Case {
                                ragged: Some(RaggedCase {
                                    lengths: lengths.clone(),
                                    page_size,
                                }),
                                ..dense.clone()
                            })
                            .collect();
                        cases.push(dense);
                        cases.extend(ragged);
                        continue;
                    }
                    for &seq in &self.seqs {
                        let dense = Case {
                            dtype,
                            head_dim,
                            causal,
                            seq,
                            batch: (self.tokens / seq).max(1),
                            heads,
                            ragged: None,
                            decode: None,
                            sparse: None,
                        };
                        let sparse = match &self.sparse {
                            Some(spec) => Some(Case {
                                sparse: Some(SparseCase {
                                    spec: spec.to_string().into(),
                                    mask: Arc::new(spec.build(seq).map_err(|e| {
                                        format!("--sparse {spec} at seq {seq}: {e}")
                                    })?),
                                }),
                                ..dense.clone()
                            }),
                            None => None,
                        };
                        cases.push(dense);
                        cases.extend(sparse);
                    }
                }
            }
        }
        Ok(cases)
    }

    /// The decode steps: every dtype, head dim, mask, batch and context (in that order), `seq_q` queries
    /// and `heads` query heads each (no split choice yet: [`Case::variants`]).
    ///
    /// # Errors
    /// When a size is 0 or the query heads are not set.
    fn decode_cases(&self, decode: &Decode) -> Result<Vec<Case>, String> {
        let sizes = [&decode.batches, &decode.contexts, &self.head_dims];
        if sizes
            .iter()
            .any(|list| list.is_empty() || list.contains(&0))
        {
            return Err(
                "--batches, --contexts and --head-dims need at least one value each, every one at least 1"
                    .into(),
            );
        }
        let heads = self
            .heads
            .ok_or("--decode needs the query heads (--heads)")?;
        let mut cases = Vec::new();
        for &dtype in &self.dtypes {
            for &head_dim in &self.head_dims {
                for causal in self.masks.causal_flags() {
                    for &batch in &decode.batches {
                        for &context in &decode.contexts {
                            cases.push(Case {
                                dtype,
                                head_dim,
                                causal,
                                seq: decode.seq_q,
                                batch,
                                heads,
                                ragged: None,
                                decode: Some(DecodeCase {
                                    context,
                                    heads_kv: decode.heads_kv,
                                    split: None,
                                }),
                                sparse: None,
                            });
                        }
                    }
                }
            }
        }
        Ok(cases)
    }
}
