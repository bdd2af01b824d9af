//! Launch geometry of every kernel, shared by the GPU engine and the emulator so both run exactly the
//! same grids.

use crate::dtype::DType;
use crate::error::{AttentionError, Result};
use crate::plan::{KernelKind, Plan};
use crate::problem::AttentionShape;
use crate::sys::{
    FLASH_BLOCK_N, FLASH_BLOCK_N_SMALL, FLASH_F32_KEY_TILE, FLASH_F32_THREADS, FLASH_F32_WARPS,
    FLASH_HEAD_DIM_STEP, FLASH_NARROW_MAX_HEAD_DIM, FLASH_ROW_PADDING, FLASH_SMALL_MAX_HEAD_DIM,
    FLASH_THREADS, FLASH_WARPS, FLASH_WARP_ROWS_NARROW, FLASH_WARP_ROWS_WIDE, MAX_HEAD_DIM,
    NAIVE_ROWS_PER_PASS, NAIVE_SHARED_BYTES, NAIVE_SOFTMAX_THREADS, NAIVE_SOFTMAX_WARPS,
    NAIVE_TILE,
};

/// Grid limits of y and z; x is limited to 2^31 - 1. The kernels loop over what a grid cannot cover.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Grid limit of x.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;

/// One kernel launch: exported name, grid, block and dynamic shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLaunch {
    /// Exported kernel name, e.g. `naive_scores_bf16`.
    pub name: String,
    /// Grid dimensions.
    pub grid: (u32, u32, u32),
    /// Block dimensions.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

/// The naive forward pass: scores (skipped when seq_k = 0), softmax, P V. The shape must be validated.
pub fn naive_launches(shape: &AttentionShape, dtype: DType) -> Vec<KernelLaunch> {
    let tile = u64::from(NAIVE_TILE);
    let bh = (shape.batch * shape.heads_q) as u64;
    let row_tiles = blocks(shape.seq_q as u64, tile, MAX_GRID_YZ);
    let tiled = |name: String, grid_x: u32| KernelLaunch {
        name,
        grid: (grid_x, row_tiles, bh.clamp(1, MAX_GRID_YZ) as u32),
        block: (NAIVE_TILE, NAIVE_ROWS_PER_PASS, 1),
        shared_bytes: NAIVE_SHARED_BYTES,
    };
    let mut launches = Vec::with_capacity(3);
    // 1. S = scale * Q K^T (nothing to compute when there are no keys).
    if shape.seq_k > 0 {
        launches.push(tiled(
            format!("naive_scores_{dtype}"),
            blocks(shape.seq_k as u64, tile, MAX_GRID_X),
        ));
    }
    // 2. P = softmax(S) and lse, one warp per row.
    launches.push(KernelLaunch {
        name: "naive_softmax".into(),
        grid: (
            blocks(
                bh * shape.seq_q as u64,
                u64::from(NAIVE_SOFTMAX_WARPS),
                MAX_GRID_X,
            ),
            1,
            1,
        ),
        block: (NAIVE_SOFTMAX_THREADS, 1, 1),
        shared_bytes: 0,
    });
    // 3. O = P V.
    launches.push(tiled(
        format!("naive_pv_{dtype}"),
        blocks(shape.head_dim as u64, tile, MAX_GRID_X),
    ));
    launches
}

/// Head dimensions the flash kernel is instantiated for (32, 64, ..., 256).
pub fn flash_head_dims() -> impl Iterator<Item = usize> {
    (1..=(MAX_HEAD_DIM / FLASH_HEAD_DIM_STEP) as usize).map(|i| i * FLASH_HEAD_DIM_STEP as usize)
}

/// The instantiation that runs `head_dim`: the next multiple of the step (smaller dims are zero-padded
/// on load inside the kernel, never copied).
pub fn flash_padded_head_dim(head_dim: usize) -> usize {
    head_dim.div_ceil(FLASH_HEAD_DIM_STEP as usize).max(1) * FLASH_HEAD_DIM_STEP as usize
}

/// Query rows per block of the flash instantiation for `padded_head_dim` (the traits in kernels/flash.cu).
pub fn flash_block_m(padded_head_dim: usize) -> u32 {
    let warp_rows = if padded_head_dim <= FLASH_NARROW_MAX_HEAD_DIM as usize {
        FLASH_WARP_ROWS_NARROW
    } else {
        FLASH_WARP_ROWS_WIDE
    };
    FLASH_WARPS * warp_rows
}

/// Keys per tile of the flash instantiation for `padded_head_dim`.
pub fn flash_block_n(padded_head_dim: usize) -> u32 {
    if padded_head_dim <= FLASH_SMALL_MAX_HEAD_DIM as usize {
        FLASH_BLOCK_N_SMALL
    } else {
        FLASH_BLOCK_N
    }
}

/// Dynamic shared memory of the flash instantiation for `padded_head_dim`.
pub fn flash_shared_bytes(padded_head_dim: usize) -> u32 {
    let rows = flash_block_m(padded_head_dim) + 2 * flash_block_n(padded_head_dim);
    rows * (padded_head_dim as u32 + FLASH_ROW_PADDING) * 2
}

/// Exported name of a flash instantiation.
pub fn flash_kernel_name(padded_head_dim: usize, dtype: DType) -> String {
    format!("flash_fwd_d{padded_head_dim}_{dtype}")
}

/// Dynamic shared memory of the f32 (SIMT) flash kernel for `head_dim`.
pub fn flash_f32_shared_bytes(head_dim: usize) -> u32 {
    let d = head_dim as u32;
    (FLASH_F32_WARPS * d + FLASH_F32_KEY_TILE * (2 * d + 1)) * 4
}

/// Name of the f32 (SIMT) flash kernel, which serves every head dim.
pub const FLASH_F32_KERNEL: &str = "flash_fwd_f32";

/// The flash forward pass: one launch; blocks of query rows of one (batch, head) (`flash_block_m` rows
/// on tensor cores for f16/bf16, FLASH_F32_WARPS rows for f32). The problem must have passed the flash
/// checks of the planner (strides, batch and heads within the grid, shared memory).
pub fn flash_launch(shape: &AttentionShape, dtype: DType) -> KernelLaunch {
    if dtype == DType::F32 {
        return KernelLaunch {
            name: FLASH_F32_KERNEL.into(),
            grid: (
                blocks(shape.seq_q as u64, u64::from(FLASH_F32_WARPS), MAX_GRID_X),
                shape.heads_q as u32,
                shape.batch as u32,
            ),
            block: (FLASH_F32_THREADS, 1, 1),
            shared_bytes: flash_f32_shared_bytes(shape.head_dim),
        };
    }
    let padded = flash_padded_head_dim(shape.head_dim);
    KernelLaunch {
        name: flash_kernel_name(padded, dtype),
        grid: (
            blocks(
                shape.seq_q as u64,
                u64::from(flash_block_m(padded)),
                MAX_GRID_X,
            ),
            shape.heads_q as u32,
            shape.batch as u32,
        ),
        block: (FLASH_THREADS, 1, 1),
        shared_bytes: flash_shared_bytes(padded),
    }
}

/// The launches of a plan's kernel, after the checks only the buffers' addresses allow: the tensor-core
/// flash kernels load 16-byte rows with cp.async, so q, k and v must start 16-byte aligned (the f32 flash
/// kernel and the naive kernels load scalars).
///
/// # Errors
/// [`AttentionError::KernelUnsupported`] naming the first misaligned buffer.
pub fn plan_launches(plan: &Plan, q: u64, k: u64, v: u64) -> Result<Vec<KernelLaunch>> {
    let shape = &plan.problem.shape;
    match plan.kernel {
        KernelKind::Naive => Ok(naive_launches(shape, plan.dtype)),
        KernelKind::Flash => {
            if plan.dtype != DType::F32 {
                for (tensor, address) in [("q", q), ("k", k), ("v", v)] {
                    if address % 16 != 0 {
                        return Err(AttentionError::KernelUnsupported {
                            kernel: "flash",
                            reason: format!(
                                "the {tensor} buffer is not 16-byte aligned: pass aligned buffers or plan \
                                 with KernelChoice::Naive"
                            ),
                        });
                    }
                }
            }
            Ok(vec![flash_launch(shape, plan.dtype)])
        }
    }
}

/// ceil(n / per_block), at least 1, at most `limit`.
fn blocks(n: u64, per_block: u64, limit: u64) -> u32 {
    n.div_ceil(per_block).clamp(1, limit) as u32
}
