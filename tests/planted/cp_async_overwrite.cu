/*
 * cp_async_overwrite.cu - planted bug: a shared tile overwritten by the next cp.async while other warps
 * may still read it (no __syncthreads between the last read of tile t and the issue of the copy of tile
 * t + 1 into the same buffer). On a GPU the copy may land at any moment between its issue and its wait,
 * so the readers see a mix of both tiles. The emulator writes the destination at the issue (NaN bytes) and
 * at the wait (the data), each as the issuing CUDA thread; the checking mode's ThreadSanitizer build must
 * report a data race in this file for each kernel, and the _fixed twins (barrier present) must run clean.
 *
 * Both mirror flash.cu's pipeline on one block of four warps, every warp reading every row of the tile:
 *   K-like: the tile is read with ldmatrix (rows of keys, for a dot product), and the copy of tile t + 1
 *           is issued right after the reads of tile t and lands before the barrier at the top of the next
 *           iteration (flash.cu's K tile with its "every warp is done reading K_t" barrier removed): both
 *           the issue and the landing race with the reads.
 *   V-like: the tile is read by columns (one column per lane, every key), and the copy of tile t + 1 is
 *           issued at the top of the next iteration, but waited for only after a barrier (flash.cu's V
 *           tile with its "every warp is done reading V_t" barrier removed): only the issue races.
 *
 * Launch: 1 block of 128 threads, 4096 bytes of shared memory; p.q holds 2048 floats (two 32 x 32 f32
 * tiles), p.out 128.
 */
#include "include/device_helpers.cuh"
#include "include/ptx.cuh"

#define OVERWRITE_THREADS 128
#define OVERWRITE_ROWS 32
#define OVERWRITE_COLS 32
#define OVERWRITE_TILES 2

/* Tile `tile` of p.q into shared memory, 16 bytes per cp.async, two chunks per thread; not committed. */
__device__ __forceinline__ void issue_tile(float *smem, const AttentionParams &p, int tile) {
    const float *src = static_cast<const float *>(p.q) + tile * OVERWRITE_ROWS * OVERWRITE_COLS;
    for (int chunk = threadIdx.x; chunk < OVERWRITE_ROWS * OVERWRITE_COLS / 4; chunk += OVERWRITE_THREADS) {
        cp_async_16(smem + chunk * 4, src + chunk * 4);
    }
}

/* out[thread] = sum over tiles and keys of k[key][c] * w(warp, c), where lane l reads, through ldmatrix.x4
 * on f32 data (each register one float), the floats (8 m + l / 4, 4 s + l % 4) of the tile. */
template <bool FIXED> __device__ void k_like(const AttentionParams &p) {
    float *k_smem = dynamic_shared<float>(); // [ROWS][COLS]
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    float acc = 0.0f;
    issue_tile(k_smem, p, 0);
    cp_async_commit_group();
    for (int tile = 0; tile < OVERWRITE_TILES; ++tile) {
        cp_async_wait_group<0>(); /* K_t has landed */
        __syncthreads();          /* and every thread sees it */
        for (int s = 0; s < OVERWRITE_COLS / 4; ++s) {
            uint32_t r[4];
            ldmatrix_x4(r[0], r[1], r[2], r[3], k_smem + lane * OVERWRITE_COLS + s * 4);
            const float weight = (float)((warp + s + lane % 4) % 3) - 1.0f;
            for (int m = 0; m < 4; ++m) {
                acc += __uint_as_float(r[m]) * weight;
            }
        }
        if (FIXED) {
            __syncthreads(); /* every warp is done reading K_t */
        }
        if (tile + 1 < OVERWRITE_TILES) {
            issue_tile(k_smem, p, tile + 1);
            cp_async_commit_group();
        }
    }
    static_cast<float *>(p.out)[threadIdx.x] = acc;
}

/* out[thread] = sum over tiles and keys j of w(warp, j) * v[j][lane]: lane l reads column l. */
template <bool FIXED> __device__ void v_like(const AttentionParams &p) {
    float *v_smem = dynamic_shared<float>(); // [ROWS][COLS]
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    float acc = 0.0f;
    for (int tile = 0; tile < OVERWRITE_TILES; ++tile) {
        issue_tile(v_smem, p, tile);
        cp_async_commit_group();
        __syncthreads();          /* flash.cu's barrier after K_t has landed */
        cp_async_wait_group<0>(); /* V_t has landed */
        __syncthreads();          /* and every thread sees it */
        for (int j = 0; j < OVERWRITE_ROWS; ++j) {
            const float weight = (float)((warp + j) % 5) * 0.25f;
            acc += weight * v_smem[j * OVERWRITE_COLS + lane];
        }
        if (FIXED) {
            __syncthreads(); /* every warp is done reading V_t */
        }
    }
    static_cast<float *>(p.out)[threadIdx.x] = acc;
}

KERNEL_ENTRY(planted_cp_async_overwrite_k, OVERWRITE_THREADS) { k_like<false>(p); }
KERNEL_ENTRY(planted_cp_async_overwrite_k_fixed, OVERWRITE_THREADS) { k_like<true>(p); }
KERNEL_ENTRY(planted_cp_async_overwrite_v, OVERWRITE_THREADS) { v_like<false>(p); }
KERNEL_ENTRY(planted_cp_async_overwrite_v_fixed, OVERWRITE_THREADS) { v_like<true>(p); }
