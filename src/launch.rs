//! Launch geometry: `(shape, dtype, kernel family) -> launches`, from the kernel registry's facts. Pure;
//! computed once when a plan is made, then shared by the GPU engine and the emulator so both run exactly
//! the same grids.

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::problem::AttentionShape;
use crate::registry::{find, KernelFamily, KernelSpec};

/// Grid limits of y and z; x is limited to 2^31 - 1. The kernels loop over what a grid cannot cover.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Grid limit of x.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;

/// One kernel launch: exported name, grid, block and dynamic shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLaunch {
    /// Exported kernel name, e.g. `naive_scores_bf16`.
    pub name: &'static str,
    /// Grid dimensions.
    pub grid: (u32, u32, u32),
    /// Block dimensions.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

/// The registered kernel of `family` for `dtype` at `head_dim`, or a typed error naming what is missing.
///
/// # Errors
/// [`AttentionError::KernelUnsupported`] when no kernel of that family serves the pair.
pub fn kernel_for(
    family: KernelFamily,
    dtype: DType,
    head_dim: usize,
) -> Result<&'static KernelSpec> {
    find(family, dtype, head_dim).ok_or_else(|| AttentionError::KernelUnsupported {
        kernel: match family {
            KernelFamily::Flash | KernelFamily::FlashVarlen => "flash",
            KernelFamily::FlashSm90 => "flash-sm90",
            KernelFamily::AppendKv => "append_kv",
            KernelFamily::Combine | KernelFamily::MergeStates => "combine",
            KernelFamily::AttentionMap => "attention_map",
            _ => "naive",
        },
        reason: format!("no {family:?} kernel for {dtype} at head_dim {head_dim} in this build"),
    })
}

/// The naive forward pass: scores (skipped when seq_k = 0), softmax, P V. The shape must be validated.
///
/// # Errors
/// As [`kernel_for`].
pub fn naive_launches(shape: &AttentionShape, dtype: DType) -> Result<Vec<KernelLaunch>> {
    let bh = (shape.batch * shape.heads_q) as u64;
    let tiled = |kernel: &'static KernelSpec, columns: usize| KernelLaunch {
        name: kernel.name,
        grid: (
            blocks(columns as u64, u64::from(kernel.tile_cols), MAX_GRID_X),
            blocks(shape.seq_q as u64, u64::from(kernel.tile_rows), MAX_GRID_YZ),
            bh.clamp(1, MAX_GRID_YZ) as u32,
        ),
        block: kernel.block,
        shared_bytes: kernel.shared_bytes_for(shape.head_dim) as u32,
    };
    let mut launches = Vec::with_capacity(3);
    // 1. S = scale * Q K^T (nothing to compute when there are no keys).
    if shape.seq_k > 0 {
        let scores = kernel_for(KernelFamily::NaiveScores, dtype, shape.head_dim)?;
        launches.push(tiled(scores, shape.seq_k));
    }
    // 2. P = softmax(S) and lse, `tile_rows` rows (one per warp) per block.
    let softmax = kernel_for(KernelFamily::NaiveSoftmax, dtype, shape.head_dim)?;
    launches.push(KernelLaunch {
        name: softmax.name,
        grid: (
            blocks(
                bh * shape.seq_q as u64,
                u64::from(softmax.tile_rows),
                MAX_GRID_X,
            ),
            1,
            1,
        ),
        block: softmax.block,
        shared_bytes: softmax.shared_bytes_for(shape.head_dim) as u32,
    });
    // 3. O = P V.
    let pv = kernel_for(KernelFamily::NaivePv, dtype, shape.head_dim)?;
    launches.push(tiled(pv, shape.head_dim));
    Ok(launches)
}

/// The flash forward pass of `family` (dense or ragged): one launch; blocks of `tile_rows` query rows of
/// one (sequence, head), for the shape's bounds. Whether the device can run it (strides, grid, shared
/// memory) is the planner's question.
///
/// # Errors
/// As [`kernel_for`].
pub fn flash_launch(
    shape: &AttentionShape,
    dtype: DType,
    family: KernelFamily,
) -> Result<KernelLaunch> {
    let kernel = kernel_for(family, dtype, shape.head_dim)?;
    Ok(KernelLaunch {
        name: kernel.name,
        grid: (
            blocks(shape.seq_q as u64, u64::from(kernel.tile_rows), MAX_GRID_X),
            shape.heads_q.min(MAX_GRID_YZ as usize) as u32,
            shape.batch.min(MAX_GRID_YZ as usize) as u32,
        ),
        block: kernel.block,
        shared_bytes: kernel
            .shared_bytes_for(shape.head_dim)
            .min(u64::from(u32::MAX)) as u32,
    })
}

/// The K/V append of `rows` new rows of `heads_kv` heads of `head_dim` (grid-stride over the elements).
///
/// # Errors
/// As [`kernel_for`].
pub fn append_launch(
    heads_kv: usize,
    head_dim: usize,
    rows: usize,
    dtype: DType,
) -> Result<KernelLaunch> {
    let kernel = kernel_for(KernelFamily::AppendKv, dtype, head_dim)?;
    let elements = (rows as u64)
        .saturating_mul(heads_kv as u64)
        .saturating_mul(head_dim as u64);
    Ok(KernelLaunch {
        name: kernel.name,
        grid: (
            blocks(elements, u64::from(kernel.tile_rows), MAX_GRID_YZ),
            1,
            1,
        ),
        block: kernel.block,
        shared_bytes: 0,
    })
}

/// The merge of two states of `rows` rows of `heads` heads of `head_dim`: one warp per (row, head).
///
/// # Errors
/// As [`kernel_for`].
pub fn merge_launch(
    rows: usize,
    heads: usize,
    head_dim: usize,
    dtype: DType,
) -> Result<KernelLaunch> {
    let kernel = kernel_for(KernelFamily::MergeStates, dtype, head_dim)?;
    let units = (rows as u64).saturating_mul(heads as u64);
    Ok(KernelLaunch {
        name: kernel.name,
        grid: (blocks(units, u64::from(kernel.tile_rows), MAX_GRID_X), 1, 1),
        block: kernel.block,
        shared_bytes: 0,
    })
}

/// ceil(n / per_block), at least 1, at most `limit`.
fn blocks(n: u64, per_block: u64, limit: u64) -> u32 {
    n.div_ceil(per_block.max(1)).clamp(1, limit) as u32
}
