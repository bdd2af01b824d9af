/*
 * flash.cu - fused attention forward (FlashAttention-2 style) on mma.sync tensor cores, sm_80 and newer.
 *
 * One block owns BLOCK_M = WARPS * WARP_ROWS query rows of one (batch, head); warp w owns rows
 * w * WARP_ROWS .. (w + 1) * WARP_ROWS - 1, as WARP_ROWS / 16 m-tiles of 16 rows (lane l holds rows l/4 and
 * l/4 + 8 of each m-tile, as the mma accumulator layout dictates). WARP_ROWS is 32 for head dims up to 128
 * (BLOCK_M 128: every K and V fragment read from shared memory feeds two mma, FlashAttention-2's ratio) and
 * 16 beyond (BLOCK_M 64: the O accumulators of 32 rows would not fit in registers). The block walks the
 * key/value tiles of its head, BLOCK_N keys each (64 for head dims up to 64, else 32: 32 x 64 S
 * accumulators on top of the O accumulators spill), and never writes a score to memory:
 *
 *   Q tile -> shared (cp.async, once); for each key tile t:
 *     V_t -> shared (cp.async, in flight while S is computed)
 *     S = Q K_t^T                         mma.sync m16n8k16, A = Q (ldmatrix.x4), B = K (ldmatrix.x4)
 *     S = S * scale * log2(e); -inf where masked (ragged tail, causal, window)
 *     m_new = max(m, rowmax S); P = exp2(S - m_new); l = l * exp2(m - m_new) + rowsum P;
 *     O *= exp2(m - m_new), skipped when no max of the warp's m-tile moved (the factor would be 1)
 *     K_{t+1} -> shared (cp.async, in flight while P V is computed)
 *     P packed to the input dtype in registers (the f32 S accumulators die here)
 *     O += P V_t                          P stays in registers as the A operand; B = V (ldmatrix.x4.trans)
 *   O /= l, written once in the output dtype; lse = (m + log2 l) * ln 2 (l == 0: O = 0, lse = -inf).
 *
 * Shared memory: Q [BLOCK_M][D + 8], K [BLOCK_N][D + 8], V [BLOCK_N][D + 8] in the input dtype. The
 * 8-element (16-byte) row padding puts the 8 rows of every ldmatrix in 8 different bank groups (no
 * conflicts).
 *
 * Masking: rows past seq_q are computed on zero-filled Q and never written; keys past seq_k are zero-filled
 * by cp.async and their scores set to -inf; causal (bottom-right: key j visible to query i iff j <= i +
 * seq_k - seq_q) and the sliding window (key_range in device_helpers.cuh). Key tiles wholly outside every
 * row's range are not visited at all; a warp skips the products and the softmax of a tile none of its own
 * rows sees (it still loads and synchronises); only tiles that straddle a boundary for some row of the warp
 * pay for the per-element test. Soft cap and ALiBi (runtime flags) change the scaled score before the mask.
 * A row that sees no key ends with l = 0 and is written as 0 with lse = -inf (the running max is replaced
 * by 0 while it is -inf, so -inf - -inf never happens).
 *
 * Non-finite values (README, "Non-finite values"), all settled in the epilogue, none in the key loop:
 * a NaN score (NaN in the row's q or a key it sees; the row max, an fmaxf, skips it but exp2 of it is
 * NaN) or a +inf score (inf - inf) makes l NaN, so the row's output and lse are NaN; l == 0 (no key seen,
 * or only -inf scores) writes exactly 0 and lse -inf by a select, whatever acc_o holds. K at masked keys
 * never matters (masked scores are -inf by a select). P V multiplies whole tiles: a NaN or an infinity in
 * V at a key a row does not see gives NaN in that column of the row (0 * NaN) when the key lies in a key
 * tile its warp multiplies, i.e. a tile that holds a key some row of the warp sees (warp: 32 rows, 16
 * above head_dim 128; tile: 64 keys, 32 above head_dim 64); rows of a warp that sees nothing, and keys
 * past seq_k (zero-filled), are never affected. FlashAttention's kernels multiply whole tiles too.
 *
 * Layouts: attention_params.h (strides in elements). Requirements checked on the host: f16 or bf16,
 * head_dim <= the instantiation's HEAD_DIM (smaller dims are zero-padded on load, without copies),
 * every stride a multiple of 8 elements and every base address 16-byte aligned (cp.async moves 16 bytes),
 * batch and heads_q at most 65535 (grid y and z).
 *
 * Exports: flash_fwd_d<HEAD_DIM>_<dtype> for HEAD_DIM in 32, 64, 96, 128, 160, 192, 224, 256 and dtype f16,
 * bf16.
 */
#include "include/device_helpers.cuh"
#include "include/ptx.cuh"

/* Tile sizes per head dimension: the one place they are chosen. Four warps per block. Head dims up to 128
 * give each warp 32 query rows, wider ones 16 (the O accumulators of 32 rows x 160+ columns do not fit in a
 * thread's 255 registers). Key tiles have 64 rows up to head dim 64 and 32 beyond (S accumulators of 32 rows
 * x 64 keys on top of 32 x 96+ O accumulators spill). Shared memory holds one Q, one K and one V tile of
 * 2-byte elements, rows padded by 8 elements. Head dims are instantiated in steps of kHeadDimStep; smaller
 * ones are zero-padded on load. */
template <int HEAD_DIM> struct FlashTraits {
    static constexpr int kHeadDimStep = 32;
    static_assert(HEAD_DIM % kHeadDimStep == 0 && HEAD_DIM <= MAX_HEAD_DIM, "unsupported head dim");
    static constexpr bool kNarrow = HEAD_DIM <= 128;
    static constexpr int kHeadDim = HEAD_DIM;
    static constexpr int kWarps = 4;
    static constexpr int kThreads = kWarps * WARP_SIZE;
    static constexpr int kWarpRows = kNarrow ? 32 : 16;
    static constexpr int kMTiles = kWarpRows / 16; /* 16-row mma tiles per warp */
    static constexpr int kBlockM = kWarps * kWarpRows;
    static constexpr int kBlockN = HEAD_DIM <= 64 ? 64 : 32;
    static constexpr int kRowPadding = 8;
    static constexpr int kRowStride = HEAD_DIM + kRowPadding; /* elements; 16 bytes of padding per row */
    static constexpr int kChunksPerRow = HEAD_DIM / 8;        /* 16-byte chunks */
    static constexpr int kSharedBytes = (kBlockM + 2 * kBlockN) * kRowStride * 2;
    /* cp.async moves 16 bytes: q, k, v strides in multiples of 8 elements, base addresses 16-byte aligned. */
    static constexpr int kStrideMultiple = 8;
    static constexpr int kBaseAlignment = 16;
    static_assert(kWarpRows % 16 == 0, "warps own whole 16-row mma tiles");
    static_assert(kRowPadding * 2 == 16, "ldmatrix rows must stay 16-byte aligned and change bank group");
    static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "mma tiles are 16 deep");

    /* The registry record of the instantiation for element type T (kernel_registry.h). */
    template <typename T> static constexpr KernelInfo info() {
        static_assert(sizeof(T) == 2, "the tensor-core kernel takes 2-byte elements");
        return make_kernel_info(KERNEL_FAMILY_FLASH, kernel_dtype<T>(), HEAD_DIM - kHeadDimStep + 1, HEAD_DIM,
                                kThreads, 1, kBlockM, kBlockN, kSharedBytes, 0, kStrideMultiple, kBaseAlignment);
    }
};

/* Register packing and tensor-core product per input dtype. */
template <typename T> struct MmaOps;
template <> struct MmaOps<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_half2(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        mma_m16n8k16_f16(d, a, b, d);
    }
};
template <> struct MmaOps<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_bfloat162(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        mma_m16n8k16_bf16(d, a, b, d);
    }
};

/* rows x HEAD_DIM tile of a [seq, d] matrix (row stride seq_stride) into padded shared memory, with
 * cp.async; rows at or past `rows_valid` and columns at or past head_dim are zero-filled. */
template <typename Traits, int ROWS, typename T>
__device__ __forceinline__ void load_tile_async(T *smem, const T *gmem, int64_t seq_stride, int rows_valid,
                                                int head_dim) {
    constexpr int kChunks = ROWS * Traits::kChunksPerRow; /* 16-byte chunks in the tile */
    if constexpr (Traits::kThreads % Traits::kChunksPerRow == 0 && kChunks % Traits::kThreads == 0) {
        /* Head dims whose rows split evenly over the threads: a thread always copies the same column chunk,
         * of rows row0, row0 + kRowStep, ...; the column test is made once. */
        constexpr int kRowStep = Traits::kThreads / Traits::kChunksPerRow;
        const int row0 = threadIdx.x / Traits::kChunksPerRow;
        const int col = (threadIdx.x % Traits::kChunksPerRow) * 8;
        const int col_bytes = min(8, max(0, head_dim - col)) * 2;
        UNROLL
        for (int i = 0; i < kChunks / Traits::kThreads; ++i) {
            const int row = row0 + i * kRowStep;
            const bool inside = row < rows_valid && col_bytes > 0;
            /* A zero-byte copy still needs a valid address: the tile's base. */
            const T *src = inside ? gmem + row * seq_stride + col : gmem;
            cp_async_16(smem + row * Traits::kRowStride + col, src, inside ? col_bytes : 0);
        }
    } else {
        for (int chunk = threadIdx.x; chunk < kChunks; chunk += Traits::kThreads) {
            const int row = chunk / Traits::kChunksPerRow;
            const int col = (chunk % Traits::kChunksPerRow) * 8;
            const int valid_cols = min(8, max(0, head_dim - col));
            const bool inside = row < rows_valid && valid_cols > 0;
            const T *src = inside ? gmem + row * seq_stride + col : gmem;
            cp_async_16(smem + row * Traits::kRowStride + col, src, inside ? valid_cols * 2 : 0);
        }
    }
}

template <int HEAD_DIM, typename T> __device__ void flash_forward(const AttentionParams &p) {
    using Traits = FlashTraits<HEAD_DIM>;
    using Ops = MmaOps<T>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStride = Traits::kRowStride;
    constexpr int kMTiles = Traits::kMTiles; /* 16-row tiles of the warp's query rows */
    constexpr int kNTiles = kBlockN / 8;     /* 8-key accumulator tiles of S */
    constexpr int kKChunks = kBlockN / 16;   /* 16-key chunks of P (A operands of P V) */
    constexpr int kDTiles = HEAD_DIM / 8;    /* 8-column accumulator tiles of O */

    /* Heavy (late) query tiles first: with a causal mask they have the most keys. */
    const int m_block = gridDim.x - 1 - blockIdx.x;
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int m0 = m_block * kBlockM;
    if (m0 >= p.seq_q) {
        return;
    }
    const int warp = threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int group = lane / 4;
    const int thread_in_group = lane % 4;

    T *q_smem = dynamic_shared<T>();        // [kBlockM][kStride]
    T *k_smem = q_smem + kBlockM * kStride; // [kBlockN][kStride]
    T *v_smem = k_smem + kBlockN * kStride; // [kBlockN][kStride]

    const T *q = static_cast<const T *>(p.q) + batch * p.q_batch_stride + head * p.q_head_stride; // [sq, d]
    const int kv_head = head / p.heads_ratio;
    const T *k = static_cast<const T *>(p.k) + batch * p.k_batch_stride + kv_head * p.k_head_stride; // [sk, d]
    const T *v = static_cast<const T *>(p.v) + batch * p.v_batch_stride + kv_head * p.v_head_stride; // [sk, d]

    /* Key tiles any of the block's rows can see (key ranges grow with the row): tiles wholly outside are
     * never visited. */
    const int row_last = min(m0 + kBlockM, p.seq_q) - 1;
    const int key_begin = key_range(p, m0).begin;
    const int key_end = key_range(p, row_last).end;
    const int first_tile = key_begin / kBlockN;
    const int n_tiles = key_end > key_begin ? (key_end + kBlockN - 1) / kBlockN : first_tile;

    /* Running state per thread: rows `group` and `group + 8` of each of the warp's m-tiles. */
    float acc_o[kMTiles][kDTiles][4] = {};
    float row_max[kMTiles][2];
    float row_sum[kMTiles][2];
    UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
        UNROLL
        for (int r = 0; r < 2; ++r) {
            row_max[mt][r] = -INFINITY;
            row_sum[mt][r] = 0.0f;
        }
    }

    if (first_tile < n_tiles) {
        const int n0 = first_tile * kBlockN;
        load_tile_async<Traits, kBlockM>(q_smem, q + m0 * p.q_seq_stride, p.q_seq_stride, p.seq_q - m0, p.head_dim);
        load_tile_async<Traits, kBlockN>(k_smem, k + n0 * p.k_seq_stride, p.k_seq_stride, p.seq_k - n0, p.head_dim);
        cp_async_commit_group();
    }
    const int warp_row0 = m0 + warp * Traits::kWarpRows;
    /* The keys every row of this warp sees: a tile inside them needs no per-element mask. */
    const int warp_full_begin = key_range(p, warp_row0 + Traits::kWarpRows - 1).begin;
    const int warp_full_end = key_range(p, warp_row0).end;
    /* The keys any valid row of this warp sees: the warp skips the tiles outside them (its rows would only
     * get P = 0 there; causal diagonal and window edges), still loading and synchronising with the block. */
    const int warp_row_last = min(warp_row0 + Traits::kWarpRows, p.seq_q) - 1;
    const int warp_any_begin = key_range(p, warp_row0).begin;
    const int warp_any_end = warp_row_last >= warp_row0 ? key_range(p, warp_row_last).end : warp_any_begin;
    const bool adjust = adjusts_scores(p);
    for (int tile = first_tile; tile < n_tiles; ++tile) {
        const int n0 = tile * kBlockN;
        load_tile_async<Traits, kBlockN>(v_smem, v + n0 * p.v_seq_stride, p.v_seq_stride, p.seq_k - n0, p.head_dim);
        cp_async_commit_group();
        cp_async_wait_group<1>(); /* Q and K_t have landed (V_t may still be in flight) */
        __syncthreads();

        const bool warp_active =
            warp_any_begin < warp_any_end && n0 < warp_any_end && n0 + kBlockN > warp_any_begin;
        uint32_t p_frag[kMTiles][kKChunks][4]; /* P of this tile, the A operands of P V */
        if (warp_active) {
            /* S = Q K_t^T, f32 accumulators: acc_s[mt][nt] is the 16 x 8 tile of rows 16 mt and keys n0 + 8 nt.
             * Each K fragment serves every m-tile of the warp. */
            float acc_s[kMTiles][kNTiles][4] = {};
            UNROLL
            for (int ks = 0; ks < HEAD_DIM / 16; ++ks) {
                uint32_t a[kMTiles][4];
                UNROLL
                for (int mt = 0; mt < kMTiles; ++mt) {
                    const int row = warp * Traits::kWarpRows + mt * 16 + lane % 16;
                    const T *q_row = q_smem + row * kStride + ks * 16 + (lane / 16) * 8;
                    ldmatrix_x4(a[mt][0], a[mt][1], a[mt][2], a[mt][3], q_row);
                }
                UNROLL
                for (int nt = 0; nt < kNTiles; nt += 2) {
                    uint32_t b[4];
                    const int key = nt * 8 + (lane / 16) * 8 + lane % 8;
                    ldmatrix_x4(b[0], b[1], b[2], b[3], k_smem + key * kStride + ks * 16 + ((lane / 8) % 2) * 8);
                    const uint32_t b0[2] = {b[0], b[1]};
                    const uint32_t b1[2] = {b[2], b[3]};
                    UNROLL
                    for (int mt = 0; mt < kMTiles; ++mt) {
                        Ops::mma(acc_s[mt][nt], a[mt], b0);
                        Ops::mma(acc_s[mt][nt + 1], a[mt], b1);
                    }
                }
            }

            /* Scale into log2 units (soft cap and ALiBi in natural units first, when set); mask only tiles that
             * straddle a mask boundary or the end of the keys. */
            const bool tile_needs_mask = n0 < warp_full_begin || n0 + kBlockN > warp_full_end;
            UNROLL
            for (int mt = 0; mt < kMTiles; ++mt) {
                UNROLL
                for (int nt = 0; nt < kNTiles; ++nt) {
                    UNROLL
                    for (int i = 0; i < 4; ++i) {
                        const int row = warp_row0 + mt * 16 + mma_c_row(lane, i);
                        const int col = n0 + nt * 8 + mma_c_col(lane, i);
                        float s = adjust ? adjust_score(p, head, row, col, acc_s[mt][nt][i] * p.scale) * LOG2_E
                                         : acc_s[mt][nt][i] * p.scale_log2;
                        if (tile_needs_mask) {
                            const KeyRange visible = key_range(p, row);
                            if (col < visible.begin || col >= visible.end) {
                                s = -INFINITY;
                            }
                        }
                        acc_s[mt][nt][i] = s;
                    }
                }
            }

            /* Online softmax: m_new = max(m, rowmax S); rescale what was accumulated under the old max. P is
             * packed to the input dtype as soon as it exists: the accumulators of key tiles 2j and 2j+1 are
             * exactly the A fragment of keys 16j..16j+15. */
            UNROLL
            for (int mt = 0; mt < kMTiles; ++mt) {
                float correction[2];
                UNROLL
                for (int r = 0; r < 2; ++r) {
                    float tile_max = -INFINITY;
                    UNROLL
                    for (int nt = 0; nt < kNTiles; ++nt) {
                        tile_max = fmaxf(tile_max, fmaxf(acc_s[mt][nt][2 * r], acc_s[mt][nt][2 * r + 1]));
                    }
                    tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_WARP_MASK, tile_max, 1));
                    tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_WARP_MASK, tile_max, 2));
                    const float new_max = fmaxf(row_max[mt][r], tile_max);
                    /* While the row has seen only masked keys its max is -inf: subtract 0 instead. */
                    const float safe_max = new_max == -INFINITY ? 0.0f : new_max;
                    correction[r] = new_max == row_max[mt][r] ? 1.0f : ex2_approx_ftz(row_max[mt][r] - safe_max);
                    row_max[mt][r] = new_max;
                    float tile_sum = 0.0f;
                    UNROLL
                    for (int nt = 0; nt < kNTiles; ++nt) {
                        acc_s[mt][nt][2 * r] = ex2_approx_ftz(acc_s[mt][nt][2 * r] - safe_max);
                        acc_s[mt][nt][2 * r + 1] = ex2_approx_ftz(acc_s[mt][nt][2 * r + 1] - safe_max);
                        tile_sum += acc_s[mt][nt][2 * r] + acc_s[mt][nt][2 * r + 1];
                    }
                    row_sum[mt][r] = row_sum[mt][r] * correction[r] + tile_sum;
                }
                /* Once the running maxima settle, most tiles change no max of the warp's rows: the O rescale
                 * (kDTiles * 4 multiplications by exactly 1) is skipped, warp-uniformly. */
                if (__any_sync(FULL_WARP_MASK, correction[0] != 1.0f || correction[1] != 1.0f)) {
                    UNROLL
                    for (int dt = 0; dt < kDTiles; ++dt) {
                        UNROLL
                        for (int i = 0; i < 4; ++i) {
                            acc_o[mt][dt][i] *= correction[i / 2];
                        }
                    }
                }
                UNROLL
                for (int j = 0; j < kKChunks; ++j) {
                    p_frag[mt][j][0] = Ops::pack(acc_s[mt][2 * j][0], acc_s[mt][2 * j][1]);
                    p_frag[mt][j][1] = Ops::pack(acc_s[mt][2 * j][2], acc_s[mt][2 * j][3]);
                    p_frag[mt][j][2] = Ops::pack(acc_s[mt][2 * j + 1][0], acc_s[mt][2 * j + 1][1]);
                    p_frag[mt][j][3] = Ops::pack(acc_s[mt][2 * j + 1][2], acc_s[mt][2 * j + 1][3]);
                }
            }
        }

        cp_async_wait_group<0>(); /* V_t has landed */
        __syncthreads();          /* and every warp is done reading K_t */
        if (tile + 1 < n_tiles) {
            const int next = n0 + kBlockN;
            load_tile_async<Traits, kBlockN>(k_smem, k + next * p.k_seq_stride, p.k_seq_stride, p.seq_k - next,
                                             p.head_dim);
            cp_async_commit_group();
        }

        if (warp_active) {
            /* O += P V_t; each V fragment serves every m-tile of the warp. */
            UNROLL
            for (int j = 0; j < kKChunks; ++j) {
                UNROLL
                for (int dt = 0; dt < kDTiles; dt += 2) {
                    uint32_t b[4];
                    const int key = j * 16 + ((lane / 8) % 2) * 8 + lane % 8;
                    ldmatrix_x4_trans(b[0], b[1], b[2], b[3], v_smem + key * kStride + (dt + lane / 16) * 8);
                    const uint32_t b0[2] = {b[0], b[1]};
                    const uint32_t b1[2] = {b[2], b[3]};
                    UNROLL
                    for (int mt = 0; mt < kMTiles; ++mt) {
                        Ops::mma(acc_o[mt][dt], p_frag[mt][j], b0);
                        Ops::mma(acc_o[mt][dt + 1], p_frag[mt][j], b1);
                    }
                }
            }
        }
        __syncthreads(); /* every warp is done reading V_t before V_{t+1} overwrites it */
    }

    /* O = O / l, written once; lse in natural log. */
    T *out = static_cast<T *>(p.out) + batch * p.out_batch_stride + head * p.out_head_stride; // [sq, d]
    UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
        UNROLL
        for (int r = 0; r < 2; ++r) {
            float sum = row_sum[mt][r];
            sum += __shfl_xor_sync(FULL_WARP_MASK, sum, 1);
            sum += __shfl_xor_sync(FULL_WARP_MASK, sum, 2);
            /* l == 0: the row saw no key (or only -inf scores) and is written as exactly 0, by a select
             * (acc_o may hold 0 * NaN from V at keys it does not see). A NaN l stays NaN in out and lse. */
            const bool seen = sum != 0.0f;
            const float inv_sum = seen ? 1.0f / sum : 0.0f;
            const int row = warp_row0 + mt * 16 + group + 8 * r;
            if (row < p.seq_q) {
                T *out_row = out + row * p.out_seq_stride;
                UNROLL
                for (int dt = 0; dt < kDTiles; ++dt) {
                    const int col = dt * 8 + 2 * thread_in_group;
                    if (col < p.head_dim) {
                        out_row[col] = from_float<T>(seen ? acc_o[mt][dt][2 * r] * inv_sum : 0.0f);
                    }
                    if (col + 1 < p.head_dim) {
                        out_row[col + 1] = from_float<T>(seen ? acc_o[mt][dt][2 * r + 1] * inv_sum : 0.0f);
                    }
                }
                if (p.lse != NULL && thread_in_group == 0) {
                    const int64_t lse_index = ((int64_t)batch * p.heads_q + head) * p.seq_q + row;
                    p.lse[lse_index] = seen ? (row_max[mt][r] + log2f(sum)) * LN_2 : -INFINITY;
                }
            }
        }
    }
}

#define FLASH_EXPORT(head_dim, dtype_name, T)                                                           \
    ATTENTION_KERNEL(flash_fwd_d##head_dim##_##dtype_name, FlashTraits<head_dim>::kThreads,                \
                     FlashTraits<head_dim>::info<T>()) {                                                  \
        flash_forward<head_dim, T>(p);                                                                   \
    }

#define FLASH_EXPORTS(head_dim)                                                                          \
    FLASH_EXPORT(head_dim, f16, __half)                                                                 \
    FLASH_EXPORT(head_dim, bf16, __nv_bfloat16)

FLASH_EXPORTS(32)
FLASH_EXPORTS(64)
FLASH_EXPORTS(96)
FLASH_EXPORTS(128)
FLASH_EXPORTS(160)
FLASH_EXPORTS(192)
FLASH_EXPORTS(224)
FLASH_EXPORTS(256)
