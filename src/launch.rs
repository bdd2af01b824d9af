//! Launch geometry of every kernel, shared by the GPU engine and the emulator so both run exactly the
//! same grids.

use crate::dtype::DType;
use crate::problem::AttentionShape;
use crate::sys::{
    NAIVE_ROWS_PER_PASS, NAIVE_SHARED_BYTES, NAIVE_SOFTMAX_THREADS, NAIVE_SOFTMAX_WARPS, NAIVE_TILE,
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

/// ceil(n / per_block), at least 1, at most `limit`.
fn blocks(n: u64, per_block: u64, limit: u64) -> u32 {
    n.div_ceil(per_block).clamp(1, limit) as u32
}
