/*
 * flash_f32.cu - fused attention forward for f32 inputs on CUDA cores (SIMT), any head_dim up to 256.
 *
 * The f32 path of the flash family: the same online softmax and the same O(seq) memory as the tensor-core
 * kernel (flash.cu), without rounding the inputs to 16 bits. No tensor cores: it trades speed for exact
 * f32 inputs, and still beats materialising seq_q x seq_k scores once sequences are long.
 *
 * One block owns FLASH_F32_WARPS query rows of one (sequence, head); warp w owns row w. The block walks the
 * key/value tiles of its head, FLASH_F32_KEY_TILE keys at a time, staged in shared memory, each row addressed
 * through the sequence's K/V rows (include/sequence.cuh: dense, packed or paged):
 *   S_j   = scale * q . k_j           lane j of the warp computes key j of the tile (a full dot product)
 *   m_new = max(m, max_j S_j); P_j = exp2(S_j - m_new); l = l * exp2(m - m_new) + sum_j P_j
 *   O    = O * exp2(m - m_new) + sum_j P_j v_j    lane l owns output columns l, l + 32, ... (P_j by shuffle)
 *   out = O / l, lse = (m + log2 l) * ln 2, written once (l == 0: out = 0, lse = -inf, by a select; with
 *   sinks, finish_row folds the head's sink into both).
 * Scores are in log2 units (scale * log2(e) from the host); soft cap and ALiBi, when set, are applied in
 * natural units first. Masks: key_range (causal, window) per row, tiles outside every row's range skipped;
 * keys past seq_k are never loaded. A row that sees no key keeps l = 0 and is written as 0, lse -inf.
 *
 * Non-finite values (README, "Non-finite values"), settled in the epilogue: a NaN or +inf score (NaN in
 * the row's q or a key it sees) makes l NaN, so out and lse are NaN; l == 0 (no key seen, or only -inf
 * scores) writes exactly 0 and lse -inf whatever acc holds. K at masked keys never matters (masked
 * scores are -inf). Every warp multiplies every key of every tile its block visits (the 32-key tiles
 * holding a key one of the block's 8 rows sees): a NaN or an infinity in V at such a key that the row
 * does not see gives NaN in that column of the row (0 * NaN).
 *
 * Shared memory (f32): q [WARPS][head_dim], k [KEY_TILE][head_dim + 1] (padding: lane j reads row j),
 * v [KEY_TILE][head_dim]. Layouts: attention_params.h; no alignment requirement (scalar loads).
 * Exports: flash_fwd_f32 (dense batches) and flash_varlen_f32 (ragged: the grid fixed by the plan's bounds,
 * blocks past their sequence's rows return at once).
 */
#include "include/sequence.cuh"

/* Tiles, the one place they are chosen: FLASH_F32_WARPS query rows per block (one per warp), key tiles of
 * FLASH_F32_KEY_TILE; shared memory (FLASH_F32_WARPS * d + FLASH_F32_KEY_TILE * (2 * d + 1)) * 4 bytes. */
#define FLASH_F32_WARPS 8
#define FLASH_F32_THREADS (FLASH_F32_WARPS * WARP_SIZE)
#define FLASH_F32_KEY_TILE 32
#define FLASH_F32_COLUMNS_PER_LANE (MAX_HEAD_DIM / WARP_SIZE)

/* Registry record of the f32 path for a KERNEL_FAMILY_FLASH* family. */
#define FLASH_F32_INFO(family)                                                                             \
    make_kernel_info(family, KERNEL_DTYPE_F32, 1, MAX_HEAD_DIM, FLASH_F32_THREADS, 1, FLASH_F32_WARPS,     \
                     FLASH_F32_KEY_TILE, FLASH_F32_KEY_TILE * 4, (FLASH_F32_WARPS + 2 * FLASH_F32_KEY_TILE) * 4, 1, 4)

/* Rows [row0, row0 + FLASH_F32_WARPS) of (batch, head) of `s` (a dense batch, or one sequence of a ragged
 * one with batch = its first row: sequence_params), keys and values through `kv`. */
template <typename Kv>
__device__ void flash_f32_block(const AttentionParams &s, int batch, int head, int row0, const Kv &kv) {
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int d = s.head_dim;
    float *q_smem = dynamic_shared<float>();             // [WARPS][d]
    float *k_smem = q_smem + FLASH_F32_WARPS * d;         // [KEY_TILE][d + 1]
    float *v_smem = k_smem + FLASH_F32_KEY_TILE * (d + 1); // [KEY_TILE][d]

    const float *q = static_cast<const float *>(s.q) + batch * s.q_batch_stride + head * s.q_head_stride;

    for (int i = threadIdx.x; i < FLASH_F32_WARPS * d; i += FLASH_F32_THREADS) {
        const int r = row0 + i / d;
        q_smem[i] = r < s.seq_q ? q[r * s.q_seq_stride + i % d] : 0.0f;
    }

    const int row = row0 + warp;
    const int row_last = min(row0 + FLASH_F32_WARPS, s.seq_q) - 1;
    const KeyRange block_keys = {key_range(s, row0).begin, key_range(s, row_last).end};
    const KeyRange row_keys = key_range(s, row);
    const bool adjust = adjusts_scores(s);

    float acc[FLASH_F32_COLUMNS_PER_LANE] = {};
    float row_max = -INFINITY;
    float row_sum = 0.0f;
    for (int n0 = block_keys.begin / FLASH_F32_KEY_TILE * FLASH_F32_KEY_TILE; n0 < block_keys.end;
         n0 += FLASH_F32_KEY_TILE) {
        __syncthreads(); /* the previous tile (and, the first time, q) is no longer being read / is written */
        for (int i = threadIdx.x; i < FLASH_F32_KEY_TILE * d; i += FLASH_F32_THREADS) {
            const int j = n0 + i / d;
            const bool inside = j < s.seq_k; /* rows past the keys are never addressed */
            k_smem[(i / d) * (d + 1) + i % d] = inside ? kv.k(j)[i % d] : 0.0f;
            v_smem[i] = inside ? kv.v(j)[i % d] : 0.0f;
        }
        __syncthreads();

        /* S_j for key j = n0 + lane, in log2 units; -inf outside the row's range. */
        const int key = n0 + lane;
        float score = -INFINITY;
        if (key >= row_keys.begin && key < row_keys.end) {
            float dot = 0.0f;
            for (int c = 0; c < d; ++c) {
                dot += q_smem[warp * d + c] * k_smem[lane * (d + 1) + c];
            }
            score = adjust ? adjust_score(s, head, row, key, dot * s.scale) * LOG2_E : dot * s.scale_log2;
        }
        /* Online softmax over the tile (the running max stays -inf only while nothing is visible). */
        const float new_max = fmaxf(row_max, warp_max(score));
        const float safe_max = new_max == -INFINITY ? 0.0f : new_max;
        const float correction = exp2f(row_max - safe_max);
        const float prob = exp2f(score - safe_max);
        row_max = new_max;
        row_sum = row_sum * correction + warp_sum(prob);
        /* O = O * correction + sum_j P_j v_j */
        for (int t = 0; t < FLASH_F32_COLUMNS_PER_LANE; ++t) {
            acc[t] *= correction;
        }
        for (int j = 0; j < FLASH_F32_KEY_TILE; ++j) {
            const float pj = __shfl_sync(FULL_WARP_MASK, prob, j);
            for (int t = 0; t < FLASH_F32_COLUMNS_PER_LANE; ++t) {
                const int c = lane + t * WARP_SIZE;
                if (c < d) {
                    acc[t] += pj * v_smem[j * d + c];
                }
            }
        }
    }

    if (row < s.seq_q) {
        const RowEnd end = finish_row(row_max, 1.0f, row_sum, sink_log2(s, head));
        float *out = static_cast<float *>(s.out) + batch * s.out_batch_stride + head * s.out_head_stride +
                     row * s.out_seq_stride;
        for (int t = 0; t < FLASH_F32_COLUMNS_PER_LANE; ++t) {
            const int c = lane + t * WARP_SIZE;
            if (c < d) {
                out[c] = end.seen ? acc[t] * end.factor : 0.0f;
            }
        }
        if (s.lse != NULL && lane == 0) {
            s.lse[batch * s.lse_batch_stride + head * s.lse_head_stride + row] = end.lse;
        }
    }
}

template <bool kVarlen> __device__ void flash_f32_forward(const AttentionParams &p) {
    const int head = blockIdx.y;
    const int row0 = (gridDim.x - 1 - blockIdx.x) * FLASH_F32_WARPS; /* heavy (late) rows first */
    if constexpr (kVarlen) {
        int q_begin;
        const AttentionParams s = sequence_params<float>(p, blockIdx.z, q_begin);
        if (row0 < s.seq_q) {
            flash_f32_block(s, q_begin, head, row0, varlen_kv_rows<float, 1>(p, s, head / p.heads_ratio));
        }
    } else {
        const int batch = blockIdx.z;
        if (row0 < p.seq_q) {
            flash_f32_block(p, batch, head, row0, dense_kv_rows<float>(p, batch, head / p.heads_ratio));
        }
    }
}

ATTENTION_KERNEL(flash_fwd_f32, FLASH_F32_THREADS, FLASH_F32_INFO(KERNEL_FAMILY_FLASH)) {
    flash_f32_forward<false>(p);
}

ATTENTION_KERNEL(flash_varlen_f32, FLASH_F32_THREADS, FLASH_F32_INFO(KERNEL_FAMILY_FLASH_VARLEN)) {
    flash_f32_forward<true>(p);
}
