//! The call contract every backend shares: one tensor bundle ([`Tensors`]), one output type
//! ([`AttentionOutput`]), and one binding step that checks the caller's buffers against a [`Plan`] and
//! fills the kernels' parameter struct.
//!
//! The GPU engine passes device buffers, the emulator and the CPU backend host slices; each reduces its
//! bundle to [`Region`]s (address, length, element size) and calls [`bind`], which checks, once and in
//! this order: that every buffer the plan needs is there (and none it cannot honour), the length of
//! q/k/v/out/lse/weights/workspace/ALiBi slopes, the alignment rules (element alignment everywhere, the
//! plan's input alignment for q, k and v, 16 bytes for the workspace), and that no output overlaps
//! another buffer.

use std::ffi::c_void;

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::plan::{KernelKind, Plan, Target};
use crate::problem::{AttentionProblem, KeyStorage, Strides, Tensor};
use crate::sys::AttentionParams;

/// log2(e): the kernels use exp2, so the host folds it into the scale once.
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// Byte alignment the naive kernels' score workspace must have.
pub const WORKSPACE_ALIGNMENT: usize = 16;

/// The buffers of one forward call, the same bundle for every backend: q, k, v and out laid out by the
/// problem's strides; the f32 logsumexp (`[batch, heads_q, seq_q]`, ragged: `[heads_q, total_q]`) exactly
/// when the plan asks for it; the f32 weights `[batch, heads_q, seq_q, seq_k]` exactly when the plan asks
/// for them; at least `plan.workspace_bytes()` of workspace when that is not 0; the f32 ALiBi slopes and
/// sinks `[heads_q]` when the problem has them (host backends read the problem's own values when none are
/// passed); the i32 metadata of a ragged batch exactly as [`AttentionProblem::metadata_elements`] lists it.
#[derive(Debug)]
pub struct Tensors<I, O, F, W, S, M> {
    /// q.
    pub q: I,
    /// k.
    pub k: I,
    /// v.
    pub v: I,
    /// out.
    pub out: O,
    /// f32 logsumexp.
    pub lse: Option<F>,
    /// f32 attention weights (naive and CPU only).
    pub weights: Option<F>,
    /// Scratch for the naive kernels' scores.
    pub workspace: Option<W>,
    /// f32 ALiBi slopes.
    pub alibi_slopes: Option<S>,
    /// f32 attention sinks.
    pub sinks: Option<S>,
    /// Ragged batches: i32 `[batch + 1]` query row offsets.
    pub cu_seqlens_q: Option<M>,
    /// Ragged batches with packed keys: i32 `[batch + 1]` key row offsets.
    pub cu_seqlens_k: Option<M>,
    /// Ragged batches: i32 `[batch]` key counts.
    pub seqused_k: Option<M>,
    /// Paged keys: i32 `[batch, block_table_stride]` physical pages.
    pub block_table: Option<M>,
    /// Block-sparse mask: i32 `[row_blocks + 1]` row offsets ([`crate::BlockMask::row_offsets`]).
    pub block_row_offsets: Option<M>,
    /// Block-sparse mask: i32 `[nnz]` key blocks ([`crate::BlockMask::col_indices`]).
    pub block_col_indices: Option<M>,
}

impl<I, O, F, W, S, M> Tensors<I, O, F, W, S, M> {
    /// q, k, v and out; nothing else.
    pub fn new(q: I, k: I, v: I, out: O) -> Self {
        Tensors {
            q,
            k,
            v,
            out,
            lse: None,
            weights: None,
            workspace: None,
            alibi_slopes: None,
            sinks: None,
            cu_seqlens_q: None,
            cu_seqlens_k: None,
            seqused_k: None,
            block_table: None,
            block_row_offsets: None,
            block_col_indices: None,
        }
    }

    /// Adds the logsumexp buffer.
    pub fn with_lse(mut self, lse: F) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Adds the weights buffer.
    pub fn with_weights(mut self, weights: F) -> Self {
        self.weights = Some(weights);
        self
    }

    /// Adds the workspace.
    pub fn with_workspace(mut self, workspace: W) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// Adds the ALiBi slopes.
    pub fn with_alibi_slopes(mut self, slopes: S) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// Adds the sinks.
    pub fn with_sinks(mut self, sinks: S) -> Self {
        self.sinks = Some(sinks);
        self
    }

    /// Adds a ragged batch's metadata: `cu_seqlens_q`, and `cu_seqlens_k`, `seqused_k` and `block_table`
    /// as its problem uses them.
    pub fn with_metadata(
        mut self,
        cu_seqlens_q: M,
        cu_seqlens_k: Option<M>,
        seqused_k: Option<M>,
        block_table: Option<M>,
    ) -> Self {
        self.cu_seqlens_q = Some(cu_seqlens_q);
        self.cu_seqlens_k = cu_seqlens_k;
        self.seqused_k = seqused_k;
        self.block_table = block_table;
        self
    }

    /// Adds the problem's block-sparse mask in the kernels' form: its CSR row offsets and key blocks
    /// (the host backends read the problem's own mask when none is passed).
    pub fn with_block_mask(mut self, row_offsets: M, col_indices: M) -> Self {
        self.block_row_offsets = Some(row_offsets);
        self.block_col_indices = Some(col_indices);
        self
    }
}

/// The bundle of the host backends (emulator, CPU): slices.
pub type HostTensors<'a, T> =
    Tensors<&'a [T], &'a mut [T], &'a mut [f32], &'a mut [u8], &'a [f32], &'a [i32]>;

/// What every backend's `forward` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOutput<O, F> {
    /// Output laid out per the problem's `out_strides` (elements between strided rows are 0).
    pub out: O,
    /// Logsumexp `[batch, heads_q, seq_q]` (natural log, `-inf` for a row that sees no key), if asked.
    pub lse: Option<F>,
    /// Attention weights `[batch, heads_q, seq_q, seq_k]` (0 where masked), if asked.
    pub weights: Option<F>,
}

/// The output of the host backends.
pub type HostOutput<T> = AttentionOutput<Vec<T>, Vec<f32>>;

/// A buffer as the binding step sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    /// Base address (device or host).
    pub address: u64,
    /// Length in elements.
    pub len: usize,
    /// Bytes per element.
    pub elem_bytes: usize,
}

impl Region {
    /// The region of a host slice.
    pub fn of_slice<T>(slice: &[T]) -> Region {
        Region {
            address: slice.as_ptr() as u64,
            len: slice.len(),
            elem_bytes: size_of::<T>(),
        }
    }

    /// The first `elements` of this region as a byte range (`len` is a real buffer's length, so the
    /// product fits the address space).
    fn span(&self, elements: usize) -> (u64, u64) {
        let bytes = (elements.min(self.len) * self.elem_bytes) as u64;
        (self.address, self.address.saturating_add(bytes))
    }
}

/// The bundle reduced to regions, as [`bind`] takes it.
pub type Regions = Tensors<Region, Region, Region, Region, Region, Region>;

impl<T> HostTensors<'_, T> {
    /// The regions of these slices.
    pub fn regions(&self) -> Regions {
        Tensors {
            q: Region::of_slice(self.q),
            k: Region::of_slice(self.k),
            v: Region::of_slice(self.v),
            out: Region::of_slice(self.out),
            lse: self.lse.as_deref().map(Region::of_slice),
            weights: self.weights.as_deref().map(Region::of_slice),
            workspace: self.workspace.as_deref().map(Region::of_slice),
            alibi_slopes: self.alibi_slopes.map(Region::of_slice),
            sinks: self.sinks.map(Region::of_slice),
            cu_seqlens_q: self.cu_seqlens_q.map(Region::of_slice),
            cu_seqlens_k: self.cu_seqlens_k.map(Region::of_slice),
            seqused_k: self.seqused_k.map(Region::of_slice),
            block_table: self.block_table.map(Region::of_slice),
            block_row_offsets: self.block_row_offsets.map(Region::of_slice),
            block_col_indices: self.block_col_indices.map(Region::of_slice),
        }
    }

    /// [`HostTensors::regions`], reading the problem's own ALiBi slopes, sinks and block mask when none
    /// were passed (the host backends can).
    pub fn regions_with_slopes_of(&self, problem: &AttentionProblem) -> Regions {
        let mut regions = self.regions();
        if regions.alibi_slopes.is_none() {
            regions.alibi_slopes = problem.alibi_slopes.as_deref().map(Region::of_slice);
        }
        if regions.sinks.is_none() {
            regions.sinks = problem.sinks.as_deref().map(Region::of_slice);
        }
        if let (None, None, Some(mask)) = (
            regions.block_row_offsets,
            regions.block_col_indices,
            &problem.block_mask,
        ) {
            regions.block_row_offsets = Some(Region::of_slice(mask.row_offsets()));
            regions.block_col_indices = Some(Region::of_slice(mask.col_indices()));
        }
        regions
    }
}

/// Checks the lengths of q, k and v alone (the convenience `forward` calls do so before allocating their
/// outputs; [`bind`] checks every buffer).
///
/// # Errors
/// [`AttentionError::BufferTooSmall`] naming the first short input.
pub fn check_inputs(problem: &AttentionProblem, q: usize, k: usize, v: usize) -> Result<()> {
    problem.check_len(Tensor::Q, q)?;
    problem.check_len(Tensor::K, k)?;
    problem.check_len(Tensor::V, v)
}

/// Checks that `plan` was made for buffers of `dtype` and for this kind of backend (the CPU backend, or
/// one that runs the kernels); `how` names the planning call to use instead.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] saying which.
pub fn check_plan(plan: &Plan, dtype: DType, cpu_backend: bool, how: &str) -> Result<()> {
    if plan.dtype() != dtype {
        return Err(AttentionError::InvalidArgument(format!(
            "the plan was made for {} but the buffers hold {dtype}: plan with the buffers' element type",
            plan.dtype()
        )));
    }
    if (plan.target() == Target::Cpu) != cpu_backend {
        return Err(AttentionError::InvalidArgument(format!(
            "the plan was made for {}: plan with {how}",
            match plan.target() {
                Target::Cpu => "the CPU backend".to_string(),
                Target::Device(caps) => format!(
                    "a device of compute capability {}.{}",
                    caps.compute_capability.0, caps.compute_capability.1
                ),
            }
        )));
    }
    Ok(())
}

/// Checks `regions` against `plan` (see the module documentation) and returns the kernels' parameters.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] for a missing or superfluous buffer, a misaligned output or
/// workspace, or overlapping buffers; [`AttentionError::BufferTooSmall`] naming the first short buffer;
/// [`AttentionError::KernelUnsupported`] when q, k or v breaks the plan's input alignment.
pub fn bind(plan: &Plan, regions: &Regions) -> Result<AttentionParams> {
    let problem = plan.problem();
    let shape = &problem.shape;
    let options = plan.options();
    let [cu_seqlens_q, cu_seqlens_k, seqused_k, block_table] = problem.metadata_elements()?;
    let needs = Needs {
        lse: options
            .return_lse
            .then(|| problem.lse_elements())
            .transpose()?,
        weights: options
            .return_weights
            .then(|| shape.score_elements())
            .transpose()?,
        workspace: (plan.workspace_bytes() > 0).then_some(plan.workspace_bytes()),
        alibi_slopes: problem.alibi_slopes.as_ref().map(|s| s.len()),
        sinks: problem.sinks.as_ref().map(|s| s.len()),
    };
    let mask = problem.block_mask.as_deref();
    // The read-only buffers the plan may need beyond q, k and v: name, region, elements needed, and how
    // to ask for them.
    let inputs = [
        (
            "alibi_slopes",
            regions.alibi_slopes,
            needs.alibi_slopes,
            "AttentionProblem::with_alibi_slopes",
        ),
        (
            "sinks",
            regions.sinks,
            needs.sinks,
            "AttentionProblem::with_sinks",
        ),
        (
            "cu_seqlens_q",
            regions.cu_seqlens_q,
            cu_seqlens_q,
            "a ragged problem (AttentionProblem::ragged)",
        ),
        (
            "cu_seqlens_k",
            regions.cu_seqlens_k,
            cu_seqlens_k,
            "packed keys (KeyStorage::Packed)",
        ),
        (
            "seqused_k",
            regions.seqused_k,
            seqused_k,
            "Ragged::seqused_k",
        ),
        (
            "block_table",
            regions.block_table,
            block_table,
            "a paged cache (KeyStorage::Paged)",
        ),
        (
            "block_row_offsets",
            regions.block_row_offsets,
            mask.map(|m| m.row_offsets().len()),
            "AttentionProblem::with_block_mask",
        ),
        (
            "block_col_indices",
            regions.block_col_indices,
            mask.map(|m| m.nnz()),
            "AttentionProblem::with_block_mask",
        ),
    ];

    // 1. Presence.
    check_presence(
        "lse",
        regions.lse.is_some(),
        needs.lse,
        "ForwardOptions::with_lse(true)",
    )?;
    check_presence(
        "weights",
        regions.weights.is_some(),
        needs.weights,
        "ForwardOptions::with_weights(true)",
    )?;
    for (tensor, region, needed, how) in inputs {
        check_presence(tensor, region.is_some(), needed, how)?;
    }
    if needs.workspace.is_some() && regions.workspace.is_none() {
        return Err(AttentionError::InvalidArgument(format!(
            "the plan ({} kernel) needs a workspace of {} bytes but none was passed",
            plan.kernel(),
            plan.workspace_bytes()
        )));
    }

    // 2. Lengths.
    // A fixed array, not a Vec: the binding step runs on the hot path of forward_into, which allocates
    // nothing. At most 15 buffers: q, k, v, out, lse, weights, workspace, and the eight inputs above.
    let mut spans = [("", Region::default(), 0usize, false); 15];
    let mut count = 0;
    for (tensor, region, writable) in [
        (Tensor::Q, regions.q, false),
        (Tensor::K, regions.k, false),
        (Tensor::V, regions.v, false),
        (Tensor::Out, regions.out, true),
    ] {
        problem.check_len(tensor, region.len)?;
        spans[count] = (
            tensor.name(),
            region,
            problem.required_len(tensor)?,
            writable,
        );
        count += 1;
    }
    let outputs = [
        ("lse", regions.lse, needs.lse, true),
        ("weights", regions.weights, needs.weights, true),
        ("workspace", regions.workspace, needs.workspace, true),
    ];
    let inputs = inputs.map(|(tensor, region, needed, _)| (tensor, region, needed, false));
    for (tensor, region, needed, writable) in outputs.into_iter().chain(inputs) {
        if let (Some(region), Some(needed)) = (region, needed) {
            check_len(tensor, region, needed)?;
            spans[count] = (tensor, region, needed, writable);
            count += 1;
        }
    }

    // 3. Alignment.
    let spans = &spans[..count];
    for &(tensor, region, _, _) in spans {
        if region.elem_bytes > 1 && region.address % region.elem_bytes as u64 != 0 {
            return Err(AttentionError::InvalidArgument(format!(
                "the {tensor} buffer at {:#x} is not aligned to its {}-byte elements",
                region.address, region.elem_bytes
            )));
        }
    }
    for (tensor, region) in [("q", regions.q), ("k", regions.k), ("v", regions.v)] {
        if region.address % plan.input_alignment() as u64 != 0 {
            return Err(AttentionError::KernelUnsupported {
                kernel: plan.kernel().name(),
                reason: format!(
                    "the {tensor} buffer is not {}-byte aligned (the plan says so in its reason): pass aligned \
                     buffers or plan with KernelChoice::Naive",
                    plan.input_alignment()
                ),
            });
        }
    }
    if let (Some(workspace), Some(_)) = (regions.workspace, needs.workspace) {
        if workspace.address % WORKSPACE_ALIGNMENT as u64 != 0 {
            return Err(AttentionError::InvalidArgument(format!(
                "the workspace is not {WORKSPACE_ALIGNMENT}-byte aligned: pass a buffer from an allocation"
            )));
        }
    }

    // 4. No output overlaps another buffer (inputs may overlap each other: stride-0 broadcasts).
    for (i, &(name_a, a, needed_a, writable_a)) in spans.iter().enumerate() {
        for &(name_b, b, needed_b, writable_b) in &spans[i + 1..] {
            let (start_a, end_a) = a.span(needed_a);
            let (start_b, end_b) = b.span(needed_b);
            if (writable_a || writable_b) && start_a < end_b && start_b < end_a {
                return Err(AttentionError::InvalidArgument(format!(
                    "the {name_a} and {name_b} buffers overlap: an output must not share memory with any other \
                     buffer of the call"
                )));
            }
        }
    }

    let split_layout = (plan.splits() > 1)
        .then(|| crate::plan::split_workspace(problem, plan.splits()))
        .transpose()?;
    let (partial_lse, partial_out) = match (split_layout, regions.workspace) {
        (Some(layout), Some(workspace)) => (
            workspace.address,
            workspace.address + layout.out_offset as u64,
        ),
        _ => (0, 0),
    };
    let scores = match plan.kernel() {
        KernelKind::Naive => regions
            .weights
            .filter(|_| needs.weights.is_some())
            .or(regions.workspace)
            .map_or(0, |r| r.address),
        KernelKind::Flash | KernelKind::FlashSm90 | KernelKind::Cpu => 0,
    };
    let optional = |region: Option<Region>, needed: Option<usize>| {
        region.filter(|_| needed.is_some()).map_or(0, |r| r.address)
    };
    Ok(AttentionParams {
        q: regions.q.address as *const c_void,
        k: regions.k.address as *const c_void,
        v: regions.v.address as *const c_void,
        out: regions.out.address as *mut c_void,
        lse: optional(regions.lse, needs.lse) as *mut f32,
        scores: scores as *mut f32,
        alibi_slopes: optional(regions.alibi_slopes, needs.alibi_slopes) as *const f32,
        sinks: optional(regions.sinks, needs.sinks) as *const f32,
        cu_seqlens_q: optional(regions.cu_seqlens_q, cu_seqlens_q) as *const i32,
        cu_seqlens_k: optional(regions.cu_seqlens_k, cu_seqlens_k) as *const i32,
        seqused_k: optional(regions.seqused_k, seqused_k) as *const i32,
        block_table: optional(regions.block_table, block_table) as *const i32,
        block_row_offsets: optional(
            regions.block_row_offsets,
            mask.map(|m| m.row_offsets().len()),
        ) as *const i32,
        block_col_indices: optional(regions.block_col_indices, mask.map(|m| m.nnz())) as *const i32,
        partial_lse: partial_lse as *mut f32,
        partial_out: partial_out as *mut f32,
        ..plan_params(plan)
    })
}

/// The parameter struct of a plan with every buffer address NULL: [`problem_params`] of its problem and
/// what the plan decided (split count, GQA packing). [`bind`] fills in the addresses.
pub fn plan_params(plan: &Plan) -> AttentionParams {
    AttentionParams {
        num_splits: plan.splits() as i32,
        packed_heads: plan.gqa_packing().unwrap_or(1) as i32,
        ..problem_params(plan.problem())
    }
}

/// Element counts of the optional buffers the plan needs (`None`: not needed).
struct Needs {
    lse: Option<usize>,
    weights: Option<usize>,
    workspace: Option<usize>,
    alibi_slopes: Option<usize>,
    sinks: Option<usize>,
}

fn check_presence(
    tensor: &'static str,
    passed: bool,
    needed: Option<usize>,
    how: &str,
) -> Result<()> {
    match (passed, needed) {
        (false, Some(n)) => Err(AttentionError::InvalidArgument(format!(
            "the plan needs a {tensor} buffer of {n} elements but none was passed (it comes with {how})"
        ))),
        (true, None) => Err(AttentionError::InvalidArgument(format!(
            "a {tensor} buffer was passed but the plan does not use one: plan with {how}, or pass none"
        ))),
        _ => Ok(()),
    }
}

fn check_len(tensor: &'static str, region: Region, needed: usize) -> Result<()> {
    if region.len < needed {
        return Err(AttentionError::BufferTooSmall {
            tensor,
            needed,
            len: region.len,
        });
    }
    Ok(())
}

/// The parameter struct of a validated problem with every buffer address NULL: sizes, strides, scale
/// (and `scale * log2(e)`, folded once here for the exp2-based kernels) and masks. [`bind`] fills in the
/// addresses.
pub fn problem_params(problem: &AttentionProblem) -> AttentionParams {
    let s = &problem.shape;
    let stride = |st: &Strides| (st.batch as i64, st.seq as i64, st.head as i64);
    let (q_batch_stride, q_seq_stride, q_head_stride) = stride(&problem.q_strides);
    let (k_batch_stride, k_seq_stride, k_head_stride) = stride(&problem.k_strides);
    let (v_batch_stride, v_seq_stride, v_head_stride) = stride(&problem.v_strides);
    let (out_batch_stride, out_seq_stride, out_head_stride) = stride(&problem.out_strides);
    let scale = problem.scale();
    let mask = problem.block_mask.as_deref();
    let (total_q, total_k, paging) = match problem.ragged_layout() {
        None => (0, 0, None),
        Some(ragged) => match ragged.keys {
            KeyStorage::Packed { total_k } => (ragged.total_q, total_k, None),
            KeyStorage::Paged(paging) => (ragged.total_q, 0, Some(paging)),
        },
    };
    // The logsumexp: [batch, heads_q, seq_q], or [heads_q, total_q] for a ragged batch (whose kernels
    // move the pointer to each sequence's first row instead of using a batch stride).
    let (lse_batch_stride, lse_head_stride) = match problem.ragged_layout() {
        None => ((s.heads_q * s.seq_q) as i64, s.seq_q as i64),
        Some(ragged) => (0, ragged.total_q as i64),
    };
    // Split-KV row slots (attention_params.h): dense rows by batch and row, ragged by packed row.
    let (partial_rows, partial_batch_rows) = match problem.ragged_layout() {
        None => ((s.batch * s.seq_q) as i64, s.seq_q as i64),
        Some(ragged) => (ragged.total_q as i64, 1),
    };
    AttentionParams {
        num_splits: 1,
        block_q: mask.map_or(0, |m| m.block_q() as i32),
        block_k: mask.map_or(0, |m| m.block_k() as i32),
        block_rows: mask.map_or(0, |m| m.row_blocks() as i32),
        block_nnz: mask.map_or(0, |m| m.nnz() as i32),
        partial_rows,
        partial_batch_rows,
        lse_batch_stride,
        lse_head_stride,
        total_q: total_q as i32,
        total_k: total_k as i32,
        page_size: paging.map_or(0, |p| p.page_size as i32),
        num_pages: paging.map_or(0, |p| p.num_pages as i32),
        pages_per_seq: paging.map_or(0, |p| p.pages_per_seq as i32),
        block_table_stride: paging.map_or(0, |p| p.block_table_stride as i64),
        q_batch_stride,
        q_seq_stride,
        q_head_stride,
        k_batch_stride,
        k_seq_stride,
        k_head_stride,
        v_batch_stride,
        v_seq_stride,
        v_head_stride,
        out_batch_stride,
        out_seq_stride,
        out_head_stride,
        batch: s.batch as i32,
        seq_q: s.seq_q as i32,
        seq_k: s.seq_k as i32,
        heads_q: s.heads_q as i32,
        heads_kv: s.heads_kv as i32,
        head_dim: s.head_dim as i32,
        heads_ratio: problem.heads_ratio() as i32,
        causal: i32::from(problem.causal),
        window_left: problem.window.left.map_or(-1, |b| b as i32),
        window_right: problem.window.right.map_or(-1, |b| b as i32),
        scale,
        scale_log2: scale * LOG2_E,
        softcap: problem.softcap.unwrap_or(0.0),
        ..AttentionParams::default()
    }
}

/// The buffers of one K/V append ([`bind_append`]): `rows` new rows of k and v, contiguous
/// `[rows, heads_kv, head_dim]`, the i64 slot of each (`slot = page * page_size + row`, negative: skip),
/// and the paged k and v caches of the problem.
#[derive(Debug)]
pub struct KvAppend<I, O, S> {
    /// New keys.
    pub k_new: I,
    /// New values.
    pub v_new: I,
    /// i64 slot of each new row.
    pub slot_mapping: S,
    /// The key cache (written).
    pub k_cache: O,
    /// The value cache (written).
    pub v_cache: O,
}

/// The append bundle of the host backends.
pub type HostKvAppend<'a, T> = KvAppend<&'a [T], &'a mut [T], &'a [i64]>;

impl<T> HostKvAppend<'_, T> {
    /// The regions of these slices.
    pub fn regions(&self) -> KvAppend<Region, Region, Region> {
        KvAppend {
            k_new: Region::of_slice(self.k_new),
            v_new: Region::of_slice(self.v_new),
            slot_mapping: Region::of_slice(self.slot_mapping),
            k_cache: Region::of_slice(self.k_cache),
            v_cache: Region::of_slice(self.v_cache),
        }
    }
}

/// The binding step of a K/V append, shared by every backend: `problem` must be a ragged problem with a
/// paged cache (it gives the cache's geometry, heads_kv and head_dim); `rows` is the number of new rows
/// (padding tokens included: their slot is negative). Checks the lengths (new rows `rows * heads_kv *
/// head_dim`, `rows` slots, the caches as the problem's k and v), element alignment, and that neither
/// cache overlaps a new row or the slots (the two caches may interleave, e.g. K and V pages of one
/// allocation, as long as they share no element). Returns the kernel's parameters.
///
/// # Errors
/// [`AttentionError::InvalidArgument`] for a problem without a paged cache, misalignment or overlap;
/// [`AttentionError::BufferTooSmall`] naming the first short buffer; the problem's validation errors;
/// [`AttentionError::SizeOverflow`] for more than `i32::MAX` rows.
pub fn bind_append(
    problem: &AttentionProblem,
    rows: usize,
    regions: &KvAppend<Region, Region, Region>,
) -> Result<AttentionParams> {
    problem.validate()?;
    if problem.paging().is_none() {
        return Err(AttentionError::InvalidArgument(
            "appending K/V needs a paged cache: describe it with AttentionProblem::ragged and KeyStorage::Paged"
                .into(),
        ));
    }
    if rows > i32::MAX as usize {
        return Err(AttentionError::SizeOverflow {
            what: "new K/V rows",
            detail: format!("{rows} > {}", i32::MAX),
        });
    }
    let s = &problem.shape;
    let per_row = s.heads_kv * s.head_dim;
    let new_len = crate::problem::checked_product("new K/V rows", &[rows, per_row])?;
    let spans = [
        ("k_new", regions.k_new, new_len, false),
        ("v_new", regions.v_new, new_len, false),
        ("slot_mapping", regions.slot_mapping, rows, false),
        (
            "k_cache",
            regions.k_cache,
            problem.required_len(Tensor::K)?,
            true,
        ),
        (
            "v_cache",
            regions.v_cache,
            problem.required_len(Tensor::V)?,
            true,
        ),
    ];
    for &(name, region, needed, _) in &spans {
        check_len(name, region, needed)?;
        if region.elem_bytes > 1 && region.address % region.elem_bytes as u64 != 0 {
            return Err(AttentionError::InvalidArgument(format!(
                "the {name} buffer at {:#x} is not aligned to its {}-byte elements",
                region.address, region.elem_bytes
            )));
        }
    }
    for (i, &(name_a, a, needed_a, cache_a)) in spans.iter().enumerate() {
        for &(name_b, b, needed_b, cache_b) in &spans[i + 1..] {
            let (start_a, end_a) = a.span(needed_a);
            let (start_b, end_b) = b.span(needed_b);
            if cache_a != cache_b && start_a < end_b && start_b < end_a {
                return Err(AttentionError::InvalidArgument(format!(
                    "the {name_a} and {name_b} buffers overlap: a cache must not share memory with the new rows or \
                     the slots"
                )));
            }
        }
    }
    Ok(AttentionParams {
        k_cache: regions.k_cache.address as *mut c_void,
        v_cache: regions.v_cache.address as *mut c_void,
        k_new: regions.k_new.address as *const c_void,
        v_new: regions.v_new.address as *const c_void,
        slot_mapping: regions.slot_mapping.address as *const i64,
        new_seq_stride: per_row as i64,
        new_head_stride: s.head_dim as i64,
        new_rows: rows as i32,
        ..problem_params(problem)
    })
}
