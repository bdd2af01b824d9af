/*
 * naive.cu - the baseline: attention that materialises the full score matrix.
 *
 * Algorithm, three launches per forward pass (all in f32 arithmetic, inputs f32/f16/bf16):
 *   1. naive_scores_<dtype>: S = scale * Q K^T, masked entries -inf, into p.scores [b, hq, sq, sk] f32.
 *   2. naive_softmax:        P = softmax(S) row by row, in place; lse = m + log(sum) when p.lse is set.
 *                            A row whose max is -inf (no visible key, or every visible score -inf)
 *                            becomes all zeros with lse = -inf; P is exactly 0 at the keys a row does not
 *                            see, even in a NaN row. With sinks, the head's sink joins the max and the
 *                            denominator (the weights then sum to less than 1) and a row that sees no
 *                            key gets lse = sink.
 *   3. naive_pv_<dtype>:     O = P V, written to p.out in the caller's dtype and strides; a row that
 *                            sees no key is written as exactly 0.
 * The caller may keep P: it is the attention-weights output.
 *
 * Layouts: see attention_params.h (strides in elements, head_dim contiguous; GQA maps query head h to
 * key/value head h / heads_ratio).
 *
 * Ownership (scores and PV): a block of NAIVE_TILE x NAIVE_ROWS_PER_PASS threads owns a NAIVE_TILE x
 * NAIVE_TILE output tile of one (batch, head); thread (tx, ty) owns column tx of rows ty, ty + 8, ...
 * Operands are staged through two padded f32 tiles in shared memory, loaded with consecutive threads on
 * consecutive elements (coalesced). Grid-stride loops in x, y and z, so any size fits the grid limits.
 * Masks (causal, window): score tiles wholly outside every row's key range are written as -inf without
 * a product, and the PV loop covers only the keys the tile's rows see. Soft cap and ALiBi are applied to
 * the scaled scores before masking (adjust_score in device_helpers.cuh). A block-sparse mask is a
 * per-element test on top (block_allows: a binary search of the row's block list) in the scores and the
 * softmax; tiles are skipped by the key range only, so the P V rule below covers keys the block mask
 * hides too, and a row whose keys the block mask hides entirely is written as 0 * V (0 unless V is
 * non-finite in its chunks).
 *
 * Softmax: one warp per row, NAIVE_SOFTMAX_WARPS rows per block, three passes over the row
 * (max, sum of exp, normalise).
 *
 * Non-finite values (README, "Non-finite values"): the max keeps NaN, so a NaN score (NaN in the row's
 * q or in a key it sees) makes the row's P, lse and output NaN instead of passing for a masked row; a
 * +inf score does the same (inf - inf). K at masked keys never matters (their scores are -inf by a
 * select). P V multiplies every key of the chunks its 32-row tile visits, from the 32-key chunk holding
 * the first row's first key to the chunk holding the last row's last key: a NaN or an infinity in V at a
 * key in those chunks that a row does not see gives NaN in that column of the row (0 * NaN), unless the
 * row sees no key at all (written as 0). A row that sees keys but whose scores are all -inf (infinite q or
 * k) has P = 0 and lse -inf, and is written as 0 * V: 0, except NaN in a column where V holds a NaN or an
 * infinity at a key of those chunks (the flash kernels write exactly 0). Keys past seq_k are never read.
 *
 * Limits: head_dim 1..MAX_HEAD_DIM (any value; the d loop is tiled), seq lengths up to 2^31 - 1,
 * workspace batch * heads_q * seq_q * seq_k * 4 bytes; dense batches only (the plan says so for ragged ones),
 * lse contiguous [batch, heads_q, seq_q].
 */
#include "include/device_helpers.cuh"

/* Tiles, the one place they are chosen: a block of NAIVE_TILE x NAIVE_ROWS_PER_PASS threads computes a
 * NAIVE_TILE x NAIVE_TILE tile (each thread NAIVE_TILE / NAIVE_ROWS_PER_PASS rows of one column), staged
 * through two NAIVE_TILE x (NAIVE_TILE + 1) f32 tiles of dynamic shared memory (padded against bank
 * conflicts). Softmax: one warp per row, NAIVE_SOFTMAX_WARPS rows per block. */
#define NAIVE_TILE 32
#define NAIVE_ROWS_PER_PASS 8
#define NAIVE_THREADS (NAIVE_TILE * NAIVE_ROWS_PER_PASS)
#define NAIVE_SHARED_BYTES (2 * NAIVE_TILE * (NAIVE_TILE + 1) * 4)
#define NAIVE_SOFTMAX_WARPS 4
#define NAIVE_SOFTMAX_THREADS (NAIVE_SOFTMAX_WARPS * WARP_SIZE)

#define NAIVE_TILE_STRIDE (NAIVE_TILE + 1)
#define NAIVE_ROWS_PER_THREAD (NAIVE_TILE / NAIVE_ROWS_PER_PASS)

/* The keys any of rows [row0, row_end) may see (key ranges grow with the row). */
__device__ __forceinline__ KeyRange tile_key_range(const AttentionParams &p, int row0, int row_end) {
    KeyRange range;
    range.begin = key_range(p, row0).begin;
    range.end = key_range(p, row_end - 1).end;
    return range;
}

template <typename T> __device__ void naive_scores(const AttentionParams &p) {
    float *q_tile = dynamic_shared<float>();              // [TILE rows][TILE d] of Q
    float *k_tile = q_tile + NAIVE_TILE * NAIVE_TILE_STRIDE; // [TILE keys][TILE d] of K
    const T *q = static_cast<const T *>(p.q);
    const T *k = static_cast<const T *>(p.k);
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int64_t bh_count = (int64_t)p.batch * p.heads_q;

    for (int64_t bh = blockIdx.z; bh < bh_count; bh += gridDim.z) {
        const int b = (int)(bh / p.heads_q);
        const int h = (int)(bh % p.heads_q);
        const T *q_bh = q + b * p.q_batch_stride + h * p.q_head_stride;                   // [sq, d]
        const T *k_bh = k + b * p.k_batch_stride + (h / p.heads_ratio) * p.k_head_stride; // [sk, d]
        float *s_bh = p.scores + bh * p.seq_q * (int64_t)p.seq_k;                          // [sq, sk]

        for (int row0 = blockIdx.y * NAIVE_TILE; row0 < p.seq_q; row0 += gridDim.y * NAIVE_TILE) {
            const KeyRange keys = tile_key_range(p, row0, min(row0 + NAIVE_TILE, p.seq_q));
            for (int col0 = blockIdx.x * NAIVE_TILE; col0 < p.seq_k; col0 += gridDim.x * NAIVE_TILE) {
                float acc[NAIVE_ROWS_PER_THREAD] = {};
                // S_tile = Q_tile K_tile^T, head_dim in chunks of TILE; skipped when the tile is all masked.
                if (col0 < keys.end && col0 + NAIVE_TILE > keys.begin) {
                    for (int d0 = 0; d0 < p.head_dim; d0 += NAIVE_TILE) {
                        const int d = d0 + tx;
                        for (int r = ty; r < NAIVE_TILE; r += NAIVE_ROWS_PER_PASS) {
                            const int qi = row0 + r;
                            const int kj = col0 + r;
                            q_tile[r * NAIVE_TILE_STRIDE + tx] =
                                (qi < p.seq_q && d < p.head_dim) ? to_float(q_bh[qi * p.q_seq_stride + d]) : 0.0f;
                            k_tile[r * NAIVE_TILE_STRIDE + tx] =
                                (kj < p.seq_k && d < p.head_dim) ? to_float(k_bh[kj * p.k_seq_stride + d]) : 0.0f;
                        }
                        __syncthreads();
                        for (int kk = 0; kk < NAIVE_TILE; ++kk) {
                            const float key = k_tile[tx * NAIVE_TILE_STRIDE + kk];
                            for (int i = 0; i < NAIVE_ROWS_PER_THREAD; ++i) {
                                acc[i] += q_tile[(ty + i * NAIVE_ROWS_PER_PASS) * NAIVE_TILE_STRIDE + kk] * key;
                            }
                        }
                        __syncthreads();
                    }
                }
                // S = scale * acc (soft cap, ALiBi), -inf where the mask hides the key.
                const int col = col0 + tx;
                for (int i = 0; i < NAIVE_ROWS_PER_THREAD; ++i) {
                    const int row = row0 + ty + i * NAIVE_ROWS_PER_PASS;
                    if (row < p.seq_q && col < p.seq_k) {
                        const KeyRange visible = key_range(p, row);
                        const bool seen = col >= visible.begin && col < visible.end && block_allows(p, row, col);
                        s_bh[(int64_t)row * p.seq_k + col] = seen ? adjust_score(p, h, row, col, acc[i] * p.scale) : -INFINITY;
                    }
                }
            }
        }
    }
}

template <typename T> __device__ void naive_pv(const AttentionParams &p) {
    float *p_tile = dynamic_shared<float>();               // [TILE rows][TILE keys] of P
    float *v_tile = p_tile + NAIVE_TILE * NAIVE_TILE_STRIDE; // [TILE keys][TILE d] of V
    const T *v = static_cast<const T *>(p.v);
    T *out = static_cast<T *>(p.out);
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int64_t bh_count = (int64_t)p.batch * p.heads_q;

    for (int64_t bh = blockIdx.z; bh < bh_count; bh += gridDim.z) {
        const int b = (int)(bh / p.heads_q);
        const int h = (int)(bh % p.heads_q);
        const T *v_bh = v + b * p.v_batch_stride + (h / p.heads_ratio) * p.v_head_stride; // [sk, d]
        T *o_bh = out + b * p.out_batch_stride + h * p.out_head_stride;                   // [sq, d]
        const float *p_bh = p.scores + bh * p.seq_q * (int64_t)p.seq_k;                    // [sq, sk]

        for (int row0 = blockIdx.y * NAIVE_TILE; row0 < p.seq_q; row0 += gridDim.y * NAIVE_TILE) {
            const KeyRange keys = tile_key_range(p, row0, min(row0 + NAIVE_TILE, p.seq_q));
            for (int d0 = blockIdx.x * NAIVE_TILE; d0 < p.head_dim; d0 += gridDim.x * NAIVE_TILE) {
                float acc[NAIVE_ROWS_PER_THREAD] = {};
                // O_tile = sum over the visible key chunks of P_tile V_tile (P is 0 outside the mask).
                for (int j0 = keys.begin / NAIVE_TILE * NAIVE_TILE; j0 < keys.end; j0 += NAIVE_TILE) {
                    for (int r = ty; r < NAIVE_TILE; r += NAIVE_ROWS_PER_PASS) {
                        const int row = row0 + r;
                        const int j = j0 + tx;
                        p_tile[r * NAIVE_TILE_STRIDE + tx] =
                            (row < p.seq_q && j < p.seq_k) ? p_bh[(int64_t)row * p.seq_k + j] : 0.0f;
                        const int key = j0 + r;
                        const int d = d0 + tx;
                        v_tile[r * NAIVE_TILE_STRIDE + tx] =
                            (key < p.seq_k && d < p.head_dim) ? to_float(v_bh[key * p.v_seq_stride + d]) : 0.0f;
                    }
                    __syncthreads();
                    for (int jj = 0; jj < NAIVE_TILE; ++jj) {
                        const float value = v_tile[jj * NAIVE_TILE_STRIDE + tx];
                        for (int i = 0; i < NAIVE_ROWS_PER_THREAD; ++i) {
                            acc[i] += p_tile[(ty + i * NAIVE_ROWS_PER_PASS) * NAIVE_TILE_STRIDE + jj] * value;
                        }
                    }
                    __syncthreads();
                }
                const int d = d0 + tx;
                for (int i = 0; i < NAIVE_ROWS_PER_THREAD; ++i) {
                    const int row = row0 + ty + i * NAIVE_ROWS_PER_PASS;
                    if (row < p.seq_q && d < p.head_dim) {
                        // A row that sees no key is written as exactly 0, even where 0 * NaN made acc NaN. An
                        // empty range is always [0, 0) (a row whose range would start past key 0 has its
                        // diagonal among the keys and sees it), so the end decides.
                        const float value = key_range(p, row).end > 0 ? acc[i] : 0.0f;
                        o_bh[row * p.out_seq_stride + d] = from_float<T>(value);
                    }
                }
            }
        }
    }
}

/* P = softmax(S) in place, row by row; one warp per row. */
ATTENTION_KERNEL(naive_softmax, NAIVE_SOFTMAX_THREADS,
                 make_kernel_info(KERNEL_FAMILY_NAIVE_SOFTMAX, KERNEL_DTYPE_NONE, 1, MAX_HEAD_DIM, NAIVE_SOFTMAX_THREADS,
                                  1, NAIVE_SOFTMAX_WARPS, 0, 0, 0, 1, 1)) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int64_t rows = (int64_t)p.batch * p.heads_q * p.seq_q;

    for (int64_t row = (int64_t)blockIdx.x * NAIVE_SOFTMAX_WARPS + warp; row < rows;
         row += (int64_t)gridDim.x * NAIVE_SOFTMAX_WARPS) {
        float *s = p.scores + row * p.seq_k; // [sk]
        const int query = (int)(row % p.seq_q);
        const KeyRange keys = key_range(p, query);
        const float sink = p.sinks != NULL ? p.sinks[(row / p.seq_q) % p.heads_q] : -INFINITY;
        // m = rowmax(S), NaN if any score is NaN; top = max(m, sink), the shift of the exponentials.
        float m = -INFINITY;
        for (int j = lane; j < p.seq_k; j += WARP_SIZE) {
            m = max_keeping_nan(m, s[j]);
        }
        m = warp_max_keeping_nan(m);
        const float top = sink == -INFINITY ? m : max_keeping_nan(m, sink);
        // l = sum exp(S - top) (+ exp(sink - top)); a row that sees nothing (or only -inf scores) sums no
        // score and never computes -inf - -inf. A NaN m makes l, P and lse NaN.
        const bool empty = (m == -INFINITY);
        float l = 0.0f;
        if (!empty) {
            for (int j = lane; j < p.seq_k; j += WARP_SIZE) {
                l += expf(s[j] - top);
            }
        }
        l = warp_sum(l);
        if (sink != -INFINITY) {
            l += expf(sink - top);
        }
        // P = exp(S - top) / l at the visible keys; exactly 0 at the others (exp(-inf - top) is 0 anyway
        // unless top is NaN).
        const float inv_l = empty ? 0.0f : 1.0f / l;
        for (int j = lane; j < p.seq_k; j += WARP_SIZE) {
            const bool visible = j >= keys.begin && j < keys.end && block_allows(p, query, j);
            s[j] = (empty || !visible) ? 0.0f : expf(s[j] - top) * inv_l;
        }
        if (lane == 0 && p.lse != NULL) {
            p.lse[row] = (empty && sink == -INFINITY) ? -INFINITY : top + logf(l);
        }
    }
}

/* Registry record of a tiled naive kernel: any head dim, any strides, element-aligned buffers. */
#define NAIVE_TILED_INFO(family, T)                                                                        \
    make_kernel_info(family, kernel_dtype<T>(), 1, MAX_HEAD_DIM, NAIVE_TILE, NAIVE_ROWS_PER_PASS, NAIVE_TILE, \
                     NAIVE_TILE, NAIVE_SHARED_BYTES, 0, 1, sizeof(T))

#define NAIVE_EXPORTS(dtype_name, T)                                                                       \
    ATTENTION_KERNEL(naive_scores_##dtype_name, NAIVE_THREADS, NAIVE_TILED_INFO(KERNEL_FAMILY_NAIVE_SCORES, T)) { \
        naive_scores<T>(p);                                                                                 \
    }                                                                                                       \
    ATTENTION_KERNEL(naive_pv_##dtype_name, NAIVE_THREADS, NAIVE_TILED_INFO(KERNEL_FAMILY_NAIVE_PV, T)) {   \
        naive_pv<T>(p);                                                                                     \
    }

NAIVE_EXPORTS(f32, float)
NAIVE_EXPORTS(f16, __half)
NAIVE_EXPORTS(bf16, __nv_bfloat16)
