//! The schema of `results.json`, written by `attn bench --out DIR` and by `benches/torch_sdpa.py`, so that
//! both load with the one type [`BenchResults`] and `attn bench --compare` can merge them.
//!
//! Conventions: times in milliseconds, memory in bytes, FLOPs = 4 * batch * heads * seq * seq * head_dim
//! (halved when causal), TFLOP/s from the median time. A record that was not timed (skipped, out of
//! memory, failed check, error) has no `timing` and says why in `reason`; one skipped because of the time
//! budget (`settings.max_seconds`) says `over the time budget` and the prediction.
//!
//! Ragged batches (`attn bench --varlen`, `settings.varlen`): a record's `mode` is `varlen` (packed K/V)
//! or `paged` (a paged KV cache of `page_size` tokens per page) and `seq_lens` holds the real lengths of
//! its sequences; `batch` is their number, `seq` their mean rounded to the nearest integer (the dense
//! comparison's sequence length), and `flops` is counted on the real lengths: the sum over sequences of
//! 4 * heads * seq_len^2 * head_dim, halved when causal. Files written before these fields load as dense
//! records (`mode` `dense`, `page_size` and `seq_lens` null).
//!
//! Decode (`attn bench --decode`): a record's `mode` is `decode`, `seq` is seq_q (1, or a few queries of
//! speculative decoding), `context` the keys each sequence attends to, `heads` the query heads and
//! `heads_kv` the key/value heads (GQA). `split_kv` is what was asked of the flash kernel (`auto`: the
//! decode path, split heuristic and GQA packing as the plan picks them; `off`: one split, no packing, the
//! prefill kernel as it is), `splits` and `gqa_packing` what its plan ran (query heads per tile, 1: none); `bytes` counts K, V, Q and O once
//! (`(2 * batch * context * heads_kv + 2 * batch * seq * heads) * head_dim * element size`),
//! `bandwidth_gb_s` is bytes / median (1e9 bytes per GB) and `copy_fraction` that over the copy of
//! `settings.copy_bandwidth` in the record's memory space, measured in the same run (bytes read +
//! written): a device-to-device copy, or on the host a memcpy (a host number, not a GPU one). `flops` is 4 * batch * heads * head_dim times the keys each
//! query sees (all `context` of them; with the causal mask the i-th of `seq` queries sees
//! `context - seq + 1 + i`). These fields are null in records of other modes and in older files.
//!
//! Block-sparse attention (`attn bench --sparse SPEC`, `settings.sparse`): each shape is timed twice, as
//! a `dense` record and as a `sparse` record whose `sparse` field holds the mask's spec (every option
//! spelled out, e.g. `bigbird:block=64,window=1,global=1,random=3,seed=0`). A sparse record's `flops`
//! counts the computed (query, key) pairs only: 4 * batch * heads * head_dim times the pairs the block
//! mask lists and the causal mask keeps; `density` is those pairs over the pairs of the dense record
//! (the same causal mask, no block mask). Both fields are null in other records and in older files.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Identifies the format; bump the number on an incompatible change.
pub const SCHEMA: &str = "cuda-attention-bench/1";

/// One benchmark run: where, when, how, and every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResults {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What produced the file: `attn bench` or `torch_sdpa.py`.
    pub tool: String,
    /// `gpu` or `cpu`: where the timed kernels ran.
    pub backend: String,
    /// The card (or the CPU) and its driver.
    pub device: Device,
    /// Versions of the software under test, e.g. `cuda-attention 0.1.0` or `torch 2.11.0 (CUDA 13.0)`.
    pub software: String,
    /// Git commit of this repository at run time (`+dirty` when the work tree had changes).
    pub commit: String,
    /// Start of the run, RFC 3339 in UTC.
    pub date: String,
    /// The command line that produced the file.
    pub command: String,
    /// How the figures were taken.
    pub settings: Settings,
    /// One record per kernel and shape, in the order they ran (`attn bench`: by dtype, cheapest shape
    /// first).
    pub records: Vec<Record>,
}

/// The machine the kernels ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// `gpu` or `cpu`.
    pub kind: String,
    /// E.g. `NVIDIA H100 80GB HBM3`, or the CPU model.
    pub name: String,
    /// Driver version, e.g. `580.65.06 (CUDA 13.0)`; `null` on a CPU.
    #[serde(default)]
    pub driver: Option<String>,
    /// E.g. `9.0`; `null` on a CPU.
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// Device memory in bytes (host memory for a CPU).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Streaming multiprocessors (GPU) or hardware threads (CPU).
    #[serde(default)]
    pub processors: Option<u64>,
}

/// How every record was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// batch * seq, held constant across the sweep.
    pub tokens: usize,
    /// heads * head_dim (the model width), held constant across head dims.
    pub hidden: usize,
    /// Untimed runs before the timed ones (besides the checking run).
    pub warmup: usize,
    /// Timed runs asked for per kernel and shape (a record's `timing.times_ms` holds those made).
    pub iters: usize,
    /// Input sets rotated between runs so that the cache does not flatter.
    pub input_sets: usize,
    /// Bytes written between timed runs to flush the L2 cache (0: no flush).
    pub l2_flush_bytes: u64,
    /// `cuda events` or `wall clock`.
    pub timer: String,
    /// What `memory.peak_bytes` counts.
    pub memory_method: String,
    /// What a record's `check` compares.
    pub check_method: String,
    /// The time budget of the sweep in seconds (`attn bench --max-seconds`); `null`: none.
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// The length distribution of the ragged batch (`attn bench --varlen`), e.g. `uniform:1..2048:0` or
    /// `128,512,2048`; `null`: a sweep of dense shapes. With it, `tokens` is the ragged batch's.
    #[serde(default)]
    pub varlen: Option<String>,
    /// The copies decode records are compared with (`attn bench --decode`), one per memory space the
    /// timed kernels ran in: `device` (a device-to-device copy) and `host` (a memcpy); empty otherwise.
    #[serde(default)]
    pub copy_bandwidth: Vec<CopyBandwidth>,
    /// The block mask of the sparse records (`attn bench --sparse`), every option spelled out; `null`:
    /// none.
    #[serde(default)]
    pub sparse: Option<String>,
}

/// A memory copy timed in the same run as the decode records: the ceiling their bandwidth is a
/// fraction of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyBandwidth {
    /// `device` or `host`: the memory copied, and the records (by their `memory.space`) compared with it.
    pub space: String,
    /// Bytes one copy moves: read plus written (twice the bytes copied).
    pub bytes: u64,
    /// Every timed copy, in order.
    pub times_ms: Vec<f64>,
    pub median_ms: f64,
    /// bytes / median, 1e9 bytes per GB.
    pub bandwidth_gb_s: f64,
    /// What was copied and how it was timed, e.g. a device-to-device copy timed by CUDA events, or a
    /// host memcpy (then not a GPU number).
    pub method: String,
}

impl CopyBandwidth {
    /// The copy of `bytes` (read plus written) in `space`, timed at `times_ms` (at least one), described
    /// by `method`.
    pub fn from_times(
        bytes: u64,
        times_ms: Vec<f64>,
        space: String,
        method: String,
    ) -> CopyBandwidth {
        let median_ms = Timing::from_times(times_ms.clone(), 0.0).median_ms;
        CopyBandwidth {
            space,
            bytes,
            times_ms,
            median_ms,
            bandwidth_gb_s: gb_per_s(bytes, median_ms),
            method,
        }
    }
}

/// `bytes` moved in `ms` milliseconds, in GB/s (1e9 bytes); 0 for a time that is not positive.
pub fn gb_per_s(bytes: u64, ms: f64) -> f64 {
    if ms > 0.0 {
        bytes as f64 / (ms * 1e-3) / 1e9
    } else {
        0.0
    }
}

/// What happened to one kernel on one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked, then timed.
    Ok,
    /// The output was wrong on the checked slice: never timed.
    FailedCheck,
    /// Needs more device memory than is free.
    OutOfMemory,
    /// The kernel does not support the shape or dtype, or the sweep left it out (see `reason`).
    Skipped,
    /// The run failed (see `reason`).
    Error,
}

impl Status {
    /// Lower-case words, as in the table.
    pub fn words(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::FailedCheck => "FAILED CHECK",
            Status::OutOfMemory => "out of memory",
            Status::Skipped => "skipped",
            Status::Error => "error",
        }
    }
}

/// How the sequences of a record's batch are laid out.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `[batch, seq, heads, head_dim]` tensors, every sequence `seq` long.
    #[default]
    Dense,
    /// A ragged batch, K/V packed `[total, heads, head_dim]`.
    Varlen,
    /// A ragged batch, K/V in a paged cache `[pages, page_size, heads, head_dim]` (NHD).
    Paged,
    /// Decode: `seq` queries per sequence (1, or a few) against `context` keys, GQA.
    Decode,
    /// A dense batch under a block-sparse mask (the record's `sparse`).
    Sparse,
}

/// What a decode record asked of the flash kernel's split-KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKv {
    /// The decode path as the plan picks it: `Splits::Auto` (the split heuristic picks the count, the
    /// record's `splits`) and `GqaPacking::Auto` (the record's `gqa_packing`).
    Auto,
    /// `Splits::Fixed(1)` and `GqaPacking::Off`: the prefill kernel as it is.
    Off,
}

impl SplitKv {
    /// The word in the schema and the tables.
    pub fn word(self) -> &'static str {
        match self {
            SplitKv::Auto => "auto",
            SplitKv::Off => "off",
        }
    }
}

impl Mode {
    /// The word in the schema and the tables.
    pub fn word(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Varlen => "varlen",
            Mode::Paged => "paged",
            Mode::Decode => "decode",
            Mode::Sparse => "sparse",
        }
    }
}

/// One kernel on one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `naive`, `flash`, `cpu`, `emulator-naive`, `emulator-flash`, or `torch-<backend>`.
    pub kernel: String,
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// Bottom-right-aligned causal mask (seq_q = seq_k here but in decode records, so also top-left).
    pub causal: bool,
    /// Sequences in the batch.
    pub batch: usize,
    /// seq_q = seq_k; for a ragged record the mean of `seq_lens`, rounded to the nearest integer; for a
    /// decode record seq_q alone (the keys are `context`).
    pub seq: usize,
    /// Query heads (= key/value heads but in decode records, see `heads_kv`).
    pub heads: usize,
    pub head_dim: usize,
    /// `dense`, `varlen`, `paged`, `decode` or `sparse` (`dense` in files that predate the field).
    #[serde(default)]
    pub mode: Mode,
    /// Tokens per page of a `paged` record's KV cache; `null` otherwise.
    #[serde(default)]
    pub page_size: Option<usize>,
    /// The length of each sequence of a ragged record (seq_q = seq_k); `null` for a dense one.
    #[serde(default)]
    pub seq_lens: Option<Vec<usize>>,
    /// Keys each sequence of a `decode` record attends to (seq_k); `null` otherwise.
    #[serde(default)]
    pub context: Option<usize>,
    /// Key/value heads of a `decode` record (`heads` a multiple of it); `null` otherwise.
    #[serde(default)]
    pub heads_kv: Option<usize>,
    /// What a `decode` record of a flash kernel asked of split-KV; `null` otherwise (and for kernels
    /// without a split choice: the CPU backend, PyTorch).
    #[serde(default)]
    pub split_kv: Option<SplitKv>,
    /// Splits of the keys the plan of a `decode` record ran (1: none); `null` when not planned or not
    /// known (PyTorch).
    #[serde(default)]
    pub splits: Option<usize>,
    /// Query heads per key/value head the plan of a `decode` record stacked as rows of one query tile
    /// (GQA packing; 1: not packed); `null` when not planned or not known (PyTorch).
    #[serde(default)]
    pub gqa_packing: Option<usize>,
    /// Bytes of K, V, Q and O one call of a `decode` record moves, each counted once; `null` otherwise.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// `bytes` / median time of a timed `decode` record, in GB/s (1e9 bytes); `null` otherwise.
    #[serde(default)]
    pub bandwidth_gb_s: Option<f64>,
    /// `bandwidth_gb_s` over the bandwidth of the copy in `settings.copy_bandwidth` of the record's memory
    /// space; `null` without both.
    #[serde(default)]
    pub copy_fraction: Option<f64>,
    /// The block mask of a `sparse` record, every option spelled out; `null` otherwise.
    #[serde(default)]
    pub sparse: Option<String>,
    /// The pairs a `sparse` record computes over those of the dense record of its shape; `null`
    /// otherwise.
    #[serde(default)]
    pub density: Option<f64>,
    /// Floating-point operations of one call (4 * b * h * seq^2 * d, halved when causal; for a ragged
    /// record the sum of 4 * h * seq_len^2 * d over `seq_lens`, halved when causal; for a decode record
    /// 4 * b * h * d times the keys its queries see; for a sparse record 4 * b * h * d times the pairs
    /// it computes; see the module documentation).
    pub flops: f64,
    pub status: Status,
    /// Why the record is not `ok`, in words; for an `ok` record what cut its runs (the time budget), or
    /// `null`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The correctness check made before timing; `null` when the kernel never ran.
    #[serde(default)]
    pub check: Option<Check>,
    /// `null` unless the status is `ok`.
    #[serde(default)]
    pub timing: Option<Timing>,
    /// `null` when not measured.
    #[serde(default)]
    pub memory: Option<Memory>,
}

impl Record {
    /// The shape part of a record, to match records of different kernels.
    pub fn shape_key(&self) -> ShapeKey {
        ShapeKey {
            dtype: self.dtype.clone(),
            causal: self.causal,
            head_dim: self.head_dim,
            seq: self.seq,
            batch: self.batch,
            heads: self.heads,
            mode: self.mode,
            page_size: self.page_size,
            context: self.context,
            heads_kv: self.heads_kv,
            sparse: self.sparse.clone(),
        }
    }

    /// The layout in one word: `dense`, `varlen`, `paged:PAGE_SIZE` or `decode`.
    pub fn layout(&self) -> String {
        match (self.mode, self.page_size) {
            (Mode::Paged, Some(size)) => format!("paged:{size}"),
            (mode, _) => mode.word().to_string(),
        }
    }

    /// The line a record is plotted on: the kernel, followed by the layout when it is not dense; a decode
    /// record's kernel followed by its split-KV choice (`flash split:auto`), when it has one.
    pub fn series(&self) -> String {
        match (self.mode, self.split_kv) {
            (Mode::Dense, _) | (Mode::Decode, None) => self.kernel.clone(),
            (Mode::Decode, Some(split)) => format!("{} split:{}", self.kernel, split.word()),
            _ => format!("{} {}", self.kernel, self.layout()),
        }
    }

    /// Fills a timed decode record's `bandwidth_gb_s` (its `bytes` over its median time) and
    /// `copy_fraction` (that over `copy_gb_s`, when given); leaves both null for other records.
    pub fn set_bandwidth(&mut self, copy_gb_s: Option<f64>) {
        let bandwidth = self
            .bytes
            .zip(self.median_ms())
            .map(|(bytes, ms)| gb_per_s(bytes, ms));
        self.bandwidth_gb_s = bandwidth;
        self.copy_fraction = bandwidth
            .zip(copy_gb_s.filter(|copy| *copy > 0.0))
            .map(|(ours, copy)| ours / copy);
    }

    /// The panel a record is plotted in: dtype, head dim, mask, and a decode record's batch (its lines
    /// run over the context, one panel per batch size).
    pub fn config_key(&self) -> (String, usize, bool, Option<usize>) {
        let batch = (self.mode == Mode::Decode).then_some(self.batch);
        (self.dtype.clone(), self.head_dim, self.causal, batch)
    }

    /// Where a record sits on the plots' x axis: its sequence length, or a decode record's context.
    pub fn x_position(&self) -> usize {
        self.context.unwrap_or(self.seq)
    }

    /// Median milliseconds when timed.
    pub fn median_ms(&self) -> Option<f64> {
        self.timing.as_ref().map(|t| t.median_ms)
    }
}

/// Everything that identifies a shape, ordered as tables sort it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShapeKey {
    pub dtype: String,
    pub causal: bool,
    pub head_dim: usize,
    pub seq: usize,
    pub batch: usize,
    pub heads: usize,
    pub mode: Mode,
    pub page_size: Option<usize>,
    pub context: Option<usize>,
    pub heads_kv: Option<usize>,
    pub sparse: Option<String>,
}

/// A correctness check: sampled query rows of the checked output against the f64 reference computed
/// for those rows only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Query rows compared (each a whole `head_dim` output row).
    pub rows: usize,
    /// Largest absolute error over those rows.
    pub max_abs_error: f64,
    /// What the tolerance rule allows for those rows.
    pub allowed: f64,
    pub passed: bool,
}

/// Timed runs of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Every timed run, in order.
    pub times_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// 10th and 90th percentiles (nearest rank).
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// flops / median.
    pub tflops: f64,
}

impl Timing {
    /// Statistics of `times_ms` (at least one run), with TFLOP/s for `flops` per run.
    pub fn from_times(times_ms: Vec<f64>, flops: f64) -> Timing {
        let mut sorted = times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let median_ms = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Timing {
            median_ms,
            min_ms: sorted[0],
            max_ms: sorted[n - 1],
            p10_ms: rank(0.1),
            p90_ms: rank(0.9),
            tflops: flops / (median_ms * 1e-3) / 1e12,
            times_ms,
        }
    }

    /// Half the p10-p90 range as a percentage of the median: the spread the table shows.
    pub fn spread_percent(&self) -> f64 {
        if self.median_ms > 0.0 {
            50.0 * (self.p90_ms - self.p10_ms) / self.median_ms
        } else {
            0.0
        }
    }
}

/// Memory one call needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak bytes of one call, as `settings.memory_method` says.
    pub peak_bytes: u64,
    /// `device` or `host`.
    pub space: String,
}

impl BenchResults {
    /// Reads and parses a results file, checking the schema tag.
    pub fn load(path: &Path) -> Result<BenchResults, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let results: BenchResults = serde_json::from_str(&text)
            .map_err(|e| format!("parsing {} as bench results: {e}", path.display()))?;
        if results.schema != SCHEMA {
            return Err(format!(
                "{} has schema '{}', this attn reads '{SCHEMA}'",
                path.display(),
                results.schema
            ));
        }
        Ok(results)
    }

    /// Writes pretty-printed JSON.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| format!("serialising the results: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
    }
}
