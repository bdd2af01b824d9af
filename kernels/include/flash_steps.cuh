/*
 * flash_steps.cuh - the named steps of the flash forward (FlashAttention-2 style, mma.sync m16n8k16), shared
 * by every flash-family kernel. The main loop (flash_mainloop.cuh) strings them together:
 *
 *   TileCopy::load   a tile of rows into padded shared memory with cp.async (zero-filled past head_dim, and
 *                    past the valid rows when CHECK_ROWS: only tail tiles pay for that test)
 *   qk_product       S = Q K^T for the warp's rows, f32 accumulators          (ldmatrix.x4, mma)
 *   scale_and_mask   kPlain: S stays raw (the softmax folds scale * log2(e) into its exp2 as one FFMA);
 *                    kAdjusted: soft cap and ALiBi in natural units, then * log2(e); kMask: -inf outside
 *                    each row's key range (only tiles that straddle a boundary for some row of the warp)
 *   online_softmax   m_new = max(m, rowmax S); P = exp2(S * c - m_new * c); l = l * exp2((m - m_new) * c) +
 *                    rowsum P; O *= exp2((m - m_new) * c), skipped warp-uniformly when no max moved; P packed
 *                    to the input dtype as the A operand of P V
 *   pv_product       O += P V                                                (ldmatrix.x4.trans, mma)
 *   WriteNormalized  O / l in the output dtype through the out strides, lse = (m * c + log2 l) * ln 2 (and the
 *                    sink, when the problem has sinks)
 *
 * Fragment layouts: kernels/include/fragment_layout.h. A thread holds rows `lane / 4` and `lane / 4 + 8` of
 * each of its warp's 16-row m-tiles, and columns 2 * (lane % 4) + {0, 1} of each 8-column accumulator tile.
 *
 * Non-finite values (README, "Non-finite values"): the row max (fmaxf) skips a NaN score but exp2 of it
 * is NaN, so l becomes NaN and the row's output and lse are NaN; l == 0 (no key seen, or only -inf scores)
 * writes exactly 0 and lse -inf by a select, whatever the accumulators hold (0 * NaN from V at a masked key
 * in a tile the warp multiplies). K at masked keys never matters (masked scores are -inf by a select).
 */
#ifndef CUDA_ATTENTION_FLASH_STEPS_CUH
#define CUDA_ATTENTION_FLASH_STEPS_CUH

#include "flash_traits.cuh"

/* How scores become log2-unit logits. */
enum class ScoreMode {
    kPlain,    /* no soft cap, no ALiBi, scale > 0: the scale is folded into the softmax's exp2 */
    kAdjusted, /* soft cap and/or ALiBi (or a scale <= 0): scores scaled and adjusted here, per element */
};

/* Where one thread's fragments live in shared memory, fixed for the block (element offsets). */
template <typename Traits> struct WarpLayout {
    int warp;
    int lane;
    int q_frag; /* Q rows of this lane's ldmatrix.x4 (A operand of S = Q K^T) */
    int k_frag; /* K rows of this lane's ldmatrix.x4 (B operand of S) */
    int v_frag; /* V rows of this lane's ldmatrix.x4.trans (B operand of P V) */

    __device__ __forceinline__ explicit WarpLayout(int thread) {
        warp = thread / WARP_SIZE;
        lane = thread % WARP_SIZE;
        q_frag = (warp * Traits::kWarpRows + lane % 16) * Traits::kRowStride + (lane / 16) * 8;
        k_frag = ((lane / 16) * 8 + lane % 8) * Traits::kRowStride + ((lane / 8) % 2) * 8;
        v_frag = (((lane / 8) % 2) * 8 + lane % 8) * Traits::kRowStride + (lane / 16) * 8;
    }
};

/* The running state of the warp's rows: O accumulators, raw row maxima (multiply by the softmax scale for
 * log2 units), row sums of P (this thread's columns only, reduced over the quad in the epilogue). */
template <typename Traits> struct SoftmaxState {
    float acc_o[Traits::kMTiles][Traits::kDTiles][4];
    float row_max[Traits::kMTiles][2];
    float row_sum[Traits::kMTiles][2];

    __device__ __forceinline__ void init() {
        UNROLL
        for (int mt = 0; mt < Traits::kMTiles; ++mt) {
            UNROLL
            for (int dt = 0; dt < Traits::kDTiles; ++dt) {
                UNROLL
                for (int i = 0; i < 4; ++i) {
                    acc_o[mt][dt][i] = 0.0f;
                }
            }
            UNROLL
            for (int r = 0; r < 2; ++r) {
                row_max[mt][r] = -INFINITY;
                row_sum[mt][r] = 0.0f;
            }
        }
    }
};

/* The S accumulators of one key tile, and P packed for P V. */
template <typename Traits> using ScoreTile = float[Traits::kMTiles][Traits::kNTiles][4];
template <typename Traits> using PTile = uint32_t[Traits::kMTiles][Traits::kKChunks][4];

/* What one thread copies of every ROWS x HEAD_DIM tile, fixed for the block: ROWS * kChunksPerRow /
 * kThreads chunks of 16 bytes. Where a row's chunks split evenly over the threads, a thread always copies
 * the same column, of rows row0, row0 + kRowStep, ...: its source offsets are computed once per block and
 * each copy costs a 64-bit add. Columns at or past head_dim are zero-filled, never read. */
template <typename Traits, int ROWS> struct TileCopy {
    static constexpr int kPerThread = ROWS * Traits::kChunksPerRow / Traits::kThreads;
    static constexpr bool kFixedColumn = Traits::kThreads % Traits::kChunksPerRow == 0;
    static constexpr int kRowStep = Traits::kThreads / Traits::kChunksPerRow;
    int row0;
    int col;
    int bytes;       /* of the thread's column inside head_dim: 16, fewer at the edge, or 0 */
    int smem_offset; /* element offset of its first chunk in the shared tile */
    int head_dim;

    __device__ __forceinline__ TileCopy(int thread, int head_dim_) {
        head_dim = head_dim_;
        row0 = thread / Traits::kChunksPerRow;
        col = thread % Traits::kChunksPerRow * 8;
        bytes = min(8, max(0, head_dim - col)) * 2;
        smem_offset = row0 * Traits::kRowStride + col;
    }

    /* The source offset (elements) of the thread's first chunk from a tile's first row, and the step
     * between its chunks, for a matrix of row stride `stride`. */
    __device__ __forceinline__ int64_t source_offset(int64_t stride) const {
        return row0 * stride + (bytes > 0 ? col : 0);
    }

    /* Copies the tile whose first row is `tile` (rows `stride` elements apart) into `smem`. CHECK_ROWS:
     * rows at or past rows_valid are zero-filled (tail tiles only). FULL: head_dim is the instantiation's, so
     * every chunk is 16 bytes. `offset` is source_offset(stride). */
    template <bool CHECK_ROWS, bool FULL, typename T>
    __device__ __forceinline__ void load(T *smem, const T *tile, int64_t stride, int64_t offset,
                                         int rows_valid) const {
        if constexpr (kFixedColumn) {
            const T *src = tile + offset;
            const int64_t step = kRowStep * stride;
            UNROLL
            for (int i = 0; i < kPerThread; ++i) {
                T *dst = smem + smem_offset + i * kRowStep * Traits::kRowStride;
                if constexpr (CHECK_ROWS) {
                    /* A zero-byte copy still needs a valid address: the tile's first row. */
                    const bool inside = row0 + i * kRowStep < rows_valid && bytes > 0;
                    cp_async_16(dst, inside ? src : tile, inside ? bytes : 0);
                } else if constexpr (FULL) {
                    cp_async_16_full(dst, src);
                } else {
                    cp_async_16(dst, src, bytes);
                }
                src += step;
            }
        } else {
            UNROLL
            for (int i = 0; i < kPerThread; ++i) {
                const int chunk = (int)threadIdx.x + i * Traits::kThreads;
                const int row = chunk / Traits::kChunksPerRow;
                const int chunk_col = chunk % Traits::kChunksPerRow * 8;
                const int chunk_bytes = FULL ? 16 : min(8, max(0, head_dim - chunk_col)) * 2;
                const bool inside = chunk_bytes > 0 && (!CHECK_ROWS || row < rows_valid);
                const T *src = inside ? tile + row * stride + chunk_col : tile;
                cp_async_16(smem + row * Traits::kRowStride + chunk_col, src, inside ? chunk_bytes : 0);
            }
        }
    }

    /* Copies rows [n0, n0 + ROWS) of `rows` into `smem`, addressing every row alone (rows(n) for a paged
     * cache whose pages do not hold whole tiles); rows at or past rows_valid are zero-filled and never
     * addressed (their page entries may be garbage). */
    template <typename T, typename Rows>
    __device__ __forceinline__ void gather(T *smem, const Rows &rows, int n0, int rows_valid) const {
        /* Not unrolled: one chunk's address at a time, so the gather adds no live registers to the loop. */
        NO_UNROLL
        for (int i = 0; i < kPerThread; ++i) {
            const int chunk = (int)threadIdx.x + i * Traits::kThreads;
            const int row = chunk / Traits::kChunksPerRow;
            const int chunk_col = chunk % Traits::kChunksPerRow * 8;
            const int chunk_bytes = min(8, max(0, head_dim - chunk_col)) * 2;
            const bool inside = chunk_bytes > 0 && row < rows_valid;
            /* A zero-byte copy still needs a valid address: the head's first row. */
            const T *src = rows.base;
            if (inside) {
                src = rows(n0 + row) + chunk_col;
            }
            cp_async_16(smem + row * Traits::kRowStride + chunk_col, src, inside ? chunk_bytes : 0);
        }
    }
};

/* S = Q K^T for the warp's rows and the tile's keys: acc_s[mt][nt] is the 16 x 8 block of rows 16 mt and keys
 * 8 nt. Each K fragment serves every m-tile of the warp. */
template <typename Traits, typename T>
__device__ __forceinline__ void qk_product(ScoreTile<Traits> &acc_s, const T *q_smem, const T *k_smem,
                                           const WarpLayout<Traits> &w) {
    using Ops = MmaOps<T>;
    UNROLL
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
        UNROLL
        for (int nt = 0; nt < Traits::kNTiles; ++nt) {
            UNROLL
            for (int i = 0; i < 4; ++i) {
                acc_s[mt][nt][i] = 0.0f;
            }
        }
    }
    UNROLL
    for (int ks = 0; ks < Traits::kHeadDim / 16; ++ks) {
        uint32_t a[Traits::kMTiles][4];
        UNROLL
        for (int mt = 0; mt < Traits::kMTiles; ++mt) {
            ldmatrix_x4(a[mt][0], a[mt][1], a[mt][2], a[mt][3],
                        q_smem + w.q_frag + mt * 16 * Traits::kRowStride + ks * 16);
        }
        UNROLL
        for (int nt = 0; nt < Traits::kNTiles; nt += 2) {
            uint32_t b[4];
            ldmatrix_x4(b[0], b[1], b[2], b[3], k_smem + w.k_frag + nt * 8 * Traits::kRowStride + ks * 16);
            const uint32_t b0[2] = {b[0], b[1]};
            const uint32_t b1[2] = {b[2], b[3]};
            UNROLL
            for (int mt = 0; mt < Traits::kMTiles; ++mt) {
                Ops::mma(acc_s[mt][nt], a[mt], b0);
                Ops::mma(acc_s[mt][nt + 1], a[mt], b1);
            }
        }
    }
}

/* Scores into the softmax's units (see ScoreMode) and, with kMask, -inf where the key is outside the row's
 * range. `row0` is the warp's first query-tile row (query_row: its position and head), `n0` the tile's first
 * key. */
template <typename Traits, ScoreMode kMode, bool kMask>
__device__ __forceinline__ void scale_and_mask(ScoreTile<Traits> &acc_s, const AttentionParams &p, int head, int row0,
                                               int n0, int lane) {
    if constexpr (kMode == ScoreMode::kPlain && !kMask) {
        return;
    }
    UNROLL
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
        UNROLL
        for (int nt = 0; nt < Traits::kNTiles; ++nt) {
            UNROLL
            for (int i = 0; i < 4; ++i) {
                const QueryRow q = query_row(p, head, row0 + mt * 16 + mma_c_row(lane, i));
                const int col = n0 + nt * 8 + mma_c_col(lane, i);
                float s = acc_s[mt][nt][i];
                if constexpr (kMode == ScoreMode::kAdjusted) {
                    s = adjust_score(p, q.head, q.position, col, s * p.scale) * LOG2_E;
                }
                if constexpr (kMask) {
                    const KeyRange visible = key_range(p, q.position);
                    s = col < visible.begin || col >= visible.end ? -INFINITY : s;
                }
                acc_s[mt][nt][i] = s;
            }
        }
    }
}

/* The online softmax of one tile: new row maxima, P = exp2(S * c - m * c) (c: `scale`, the softmax scale in
 * log2 units for kPlain scores, 1 for scores already in log2 units), the row sums, the O rescale (skipped
 * warp-uniformly when no max of the m-tile moved: the factor would be exactly 1), and P packed to T. */
template <typename Traits, typename T>
__device__ __forceinline__ void online_softmax(ScoreTile<Traits> &acc_s, SoftmaxState<Traits> &state,
                                               PTile<Traits> &p_frag, float scale) {
    using Ops = MmaOps<T>;
    UNROLL
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
        float correction[2];
        UNROLL
        for (int r = 0; r < 2; ++r) {
            float tile_max = -INFINITY;
            UNROLL
            for (int nt = 0; nt < Traits::kNTiles; ++nt) {
                tile_max = fmaxf(tile_max, fmaxf(acc_s[mt][nt][2 * r], acc_s[mt][nt][2 * r + 1]));
            }
            tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_WARP_MASK, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_WARP_MASK, tile_max, 2));
            const float old_max = state.row_max[mt][r];
            const float new_max = fmaxf(old_max, tile_max);
            /* While the row has seen only masked keys its max is -inf: subtract 0 instead (no -inf - -inf). */
            const float scaled_max = new_max == -INFINITY ? 0.0f : new_max * scale;
            correction[r] = new_max == old_max ? 1.0f : ex2_approx_ftz(fmaf(old_max, scale, -scaled_max));
            state.row_max[mt][r] = new_max;
            float tile_sum = 0.0f;
            UNROLL
            for (int nt = 0; nt < Traits::kNTiles; ++nt) {
                UNROLL
                for (int c = 0; c < 2; ++c) {
                    const float e = ex2_approx_ftz(fmaf(acc_s[mt][nt][2 * r + c], scale, -scaled_max));
                    acc_s[mt][nt][2 * r + c] = e;
                    tile_sum += e;
                }
            }
            state.row_sum[mt][r] = fmaf(state.row_sum[mt][r], correction[r], tile_sum);
        }
        if (__any_sync(FULL_WARP_MASK, correction[0] != 1.0f || correction[1] != 1.0f)) {
            UNROLL
            for (int dt = 0; dt < Traits::kDTiles; ++dt) {
                UNROLL
                for (int i = 0; i < 4; ++i) {
                    state.acc_o[mt][dt][i] *= correction[i / 2];
                }
            }
        }
        /* The accumulators of key tiles 2j and 2j+1 are exactly the A fragment of keys 16j..16j+15. */
        UNROLL
        for (int j = 0; j < Traits::kKChunks; ++j) {
            p_frag[mt][j][0] = Ops::pack(acc_s[mt][2 * j][0], acc_s[mt][2 * j][1]);
            p_frag[mt][j][1] = Ops::pack(acc_s[mt][2 * j][2], acc_s[mt][2 * j][3]);
            p_frag[mt][j][2] = Ops::pack(acc_s[mt][2 * j + 1][0], acc_s[mt][2 * j + 1][1]);
            p_frag[mt][j][3] = Ops::pack(acc_s[mt][2 * j + 1][2], acc_s[mt][2 * j + 1][3]);
        }
    }
}

/* O += P V for the tile; each V fragment serves every m-tile of the warp. */
template <typename Traits, typename T>
__device__ __forceinline__ void pv_product(SoftmaxState<Traits> &state, const PTile<Traits> &p_frag, const T *v_smem,
                                           const WarpLayout<Traits> &w) {
    using Ops = MmaOps<T>;
    UNROLL
    for (int j = 0; j < Traits::kKChunks; ++j) {
        UNROLL
        for (int dt = 0; dt < Traits::kDTiles; dt += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b[0], b[1], b[2], b[3], v_smem + w.v_frag + j * 16 * Traits::kRowStride + dt * 8);
            const uint32_t b0[2] = {b[0], b[1]};
            const uint32_t b1[2] = {b[2], b[3]};
            UNROLL
            for (int mt = 0; mt < Traits::kMTiles; ++mt) {
                Ops::mma(state.acc_o[mt][dt], p_frag[mt][j], b0);
                Ops::mma(state.acc_o[mt][dt + 1], p_frag[mt][j], b1);
            }
        }
    }
}

/* A row's sum over the four threads of its quad (each holds its own columns' share). */
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(FULL_WARP_MASK, x, 1);
    return x + __shfl_xor_sync(FULL_WARP_MASK, x, 2);
}

/* The epilogue of a complete softmax: O / l written once in the output dtype through the out strides of
 * (batch, head), and lse = (m * scale + log2 l) * ln 2 (natural log) at lse[batch * lse_batch_stride +
 * head * lse_head_stride + row]; with a sink, finish_row (device_helpers.cuh) folds it into both. l == 0
 * (the row saw no key, or only -inf scores) writes exactly 0 and lse -inf (the sink, with one) by a select;
 * a NaN l stays NaN in out and lse. */
struct WriteNormalized {
    template <typename Traits, typename T>
    __device__ __forceinline__ void operator()(const AttentionParams &p, const SoftmaxState<Traits> &state, int batch,
                                               int head, int row0, int lane, float scale) const {
        T *out = static_cast<T *>(p.out) + batch * p.out_batch_stride; // [sq, hq, d]
        const int rows = query_rows(p);
        const int group = lane / 4;
        const int thread_in_group = lane % 4;
        UNROLL
        for (int mt = 0; mt < Traits::kMTiles; ++mt) {
            UNROLL
            for (int r = 0; r < 2; ++r) {
                const int row = row0 + mt * 16 + group + 8 * r;
                const QueryRow q = query_row(p, head, row);
                const float sum = quad_sum(state.row_sum[mt][r]);
                const RowEnd end = finish_row(state.row_max[mt][r], scale, sum, sink_log2(p, q.head));
                if (row < rows) {
                    T *out_row = out + q.head * p.out_head_stride + q.position * p.out_seq_stride;
                    UNROLL
                    for (int dt = 0; dt < Traits::kDTiles; ++dt) {
                        const int col = dt * 8 + 2 * thread_in_group;
                        if (col < p.head_dim) {
                            out_row[col] = from_float<T>(end.seen ? state.acc_o[mt][dt][2 * r] * end.factor : 0.0f);
                        }
                        if (col + 1 < p.head_dim) {
                            out_row[col + 1] =
                                from_float<T>(end.seen ? state.acc_o[mt][dt][2 * r + 1] * end.factor : 0.0f);
                        }
                    }
                    if (p.lse != NULL && thread_in_group == 0) {
                        p.lse[batch * p.lse_batch_stride + q.head * p.lse_head_stride + q.position] = end.lse;
                    }
                }
            }
        }
    }
};

/* The epilogue of one split of split-KV (attention_params.h): the split's normalised partial output and
 * its natural-log lse, without the sink (the combine adds it once), in f32 at the row's slot. A row that
 * saw no key of the split writes 0 and lse -inf. */
struct WritePartial {
    int split;
    template <typename Traits, typename T>
    __device__ __forceinline__ void operator()(const AttentionParams &p, const SoftmaxState<Traits> &state, int batch,
                                               int head, int row0, int lane, float scale) const {
        const int rows = query_rows(p);
        const int group = lane / 4;
        const int thread_in_group = lane % 4;
        UNROLL
        for (int mt = 0; mt < Traits::kMTiles; ++mt) {
            UNROLL
            for (int r = 0; r < 2; ++r) {
                const float sum = quad_sum(state.row_sum[mt][r]);
                const RowEnd end = finish_row(state.row_max[mt][r], scale, sum, -INFINITY);
                const int row = row0 + mt * 16 + group + 8 * r;
                const QueryRow q = query_row(p, head, row);
                if (row < rows) {
                    const int64_t slot = batch * p.partial_batch_rows + q.position;
                    float *out_row =
                        p.partial_out + ((split * p.partial_rows + slot) * p.heads_q + q.head) * p.head_dim;
                    UNROLL
                    for (int dt = 0; dt < Traits::kDTiles; ++dt) {
                        const int col = dt * 8 + 2 * thread_in_group;
                        if (col < p.head_dim) {
                            out_row[col] = end.seen ? state.acc_o[mt][dt][2 * r] * end.factor : 0.0f;
                        }
                        if (col + 1 < p.head_dim) {
                            out_row[col + 1] = end.seen ? state.acc_o[mt][dt][2 * r + 1] * end.factor : 0.0f;
                        }
                    }
                    if (thread_in_group == 0) {
                        p.partial_lse[(split * p.heads_q + q.head) * p.partial_rows + slot] = end.lse;
                    }
                }
            }
        }
    }
};

/* The flash epilogue: the normalised output, or a split's partial state when the launch splits the keys
 * (a uniform branch after the loop: one copy of the main loop serves both). The split index is read from
 * the grid here (z = sequence * num_splits + split), not carried through the loop in a register. */
struct WriteOutput {
    template <typename Traits, typename T>
    __device__ __forceinline__ void operator()(const AttentionParams &p, const SoftmaxState<Traits> &state, int batch,
                                               int head, int row0, int lane, float scale) const {
        if (p.num_splits > 1) {
            const int split = (int)blockIdx.z % p.num_splits;
            WritePartial{split}.template operator()<Traits, T>(p, state, batch, head, row0, lane, scale);
        } else {
            WriteNormalized().template operator()<Traits, T>(p, state, batch, head, row0, lane, scale);
        }
    }
};

#endif /* CUDA_ATTENTION_FLASH_STEPS_CUH */
