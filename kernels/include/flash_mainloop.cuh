/*
 * flash_mainloop.cuh - the one flash main loop: a block's query rows against the key tiles [begin, end),
 * parameterised by the K/V row addressing (sequence.cuh: dense, packed or paged) and the epilogue. Every
 * flash-family kernel calls it on one sequence's parameters (sequence_params); none copies it.
 *
 * The tiles come from a TileWalk: the range [begin, end) or, with a block-sparse mask, the listed tiles in
 * it (absent blocks: no load, no product).
 *
 * Pipeline of one key tile t (two barriers per tile, FlashAttention-2's interleave):
 *   wait for K_t; barrier (K_t visible; every warp done with V_{t-1})
 *   V_t -> shared (cp.async, in flight while S is computed)
 *   S = Q K_t^T; scale and mask; online softmax -> P          (warps that see none of the tile skip this)
 *   wait for V_t; barrier (V_t visible; every warp done with K_t)
 *   K_{t+1} -> shared (cp.async, in flight while P V is computed)
 *   O += P V_t
 * then the epilogue. Only the step that differs is compiled in variants, chosen by uniform branches once
 * per block or per warp and tile, never per element: scores are kPlain (scale folded into the exp2) unless
 * the problem has a soft cap, ALiBi or a scale <= 0 (kAdjusted, with the mask, for every tile); a kPlain
 * tile gets the per-element mask only when it straddles a mask boundary (causal diagonal, window edges, end
 * of the keys) for some row of the warp; a load checks rows against seq_k only in the tail tile.
 *
 * Shared memory: Q [kBlockM][D + 8], K [kBlockN][D + 8], V [kBlockN][D + 8] (flash_traits.cuh).
 */
#ifndef CUDA_ATTENTION_FLASH_MAINLOOP_CUH
#define CUDA_ATTENTION_FLASH_MAINLOOP_CUH

#include "flash_steps.cuh"
#include "sequence.cuh"

/* Key tiles [begin, end) of kBlockN keys. */
struct TileRange {
    int begin;
    int end;
};

/* The key tiles any row of [m0, m0 + kBlockM) can see (key ranges grow with the row's position): tiles
 * wholly outside are never visited. */
template <typename Traits> __device__ __forceinline__ TileRange block_tiles(const AttentionParams &p, int m0) {
    const int row_last = min(m0 + Traits::kBlockM, query_rows(p)) - 1;
    const int key_begin = key_range(p, query_position(p, m0)).begin;
    const int key_end = key_range(p, query_position(p, row_last)).end;
    TileRange tiles;
    tiles.begin = key_begin / Traits::kBlockN;
    tiles.end = key_end > key_begin ? (key_end + Traits::kBlockN - 1) / Traits::kBlockN : tiles.begin;
    return tiles;
}

/* Split `split` of `splits` of the key tiles `tiles` (split-KV): contiguous ranges of ceil(n / splits)
 * tiles, the last ones possibly empty. */
__device__ __forceinline__ TileRange split_tiles(TileRange tiles, int split, int splits) {
    const int per_split = (tiles.end - tiles.begin + splits - 1) / splits;
    TileRange range;
    range.begin = min(tiles.end, tiles.begin + split * per_split);
    range.end = min(tiles.end, range.begin + per_split);
    return range;
}

/* The key tiles a block visits, in increasing order: the range `tiles` (block_tiles, split_tiles) and,
 * with a block-sparse mask, only the tiles of key blocks listed for the block's query blocks (at most two:
 * block_q is a multiple of 64 and a query tile holds at most 128 rows; their lists are merged as the walk
 * goes). A walk is a sequence of runs of consecutive tiles; `rows` has bit c set when the block's query
 * block c lists the current run, and a warp whose rows lie in an unlisted query block skips the tile as one
 * it cannot see (every warp's rows lie in one query block: block_q is a multiple of the warp's rows, and no
 * GQA packing with a block mask). Without a mask the walk is the one run `tiles` and rows is all ones. Key
 * block b holds tiles [b * block_k / kBlockN, (b + 1) * block_k / kBlockN) (block_k is a multiple of
 * kBlockN). The lists are read on the device, clamped: a bad list gives wrong numbers, never an access
 * outside the buffers, and the walk always ends. */
template <typename Traits> struct TileWalk {
    int tile;    /* the current tile; -1 once done */
    int run_end; /* end of the current run */
    int range_end;
    unsigned rows;
    int cursor[2]; /* next entries of the two query blocks' lists; cursor_end: their ends */
    int cursor_end[2];

    __device__ __forceinline__ TileWalk(const AttentionParams &p, TileRange tiles, int m0) {
        range_end = tiles.end;
        rows = ~0u;
        tile = -1;
        run_end = tiles.end;
        cursor[0] = cursor[1] = cursor_end[0] = cursor_end[1] = 0;
        if (p.block_row_offsets == NULL) {
            tile = tiles.begin < tiles.end ? tiles.begin : -1;
            return;
        }
        const int first = m0 / p.block_q;
        const int last = (min(m0 + Traits::kBlockM, p.seq_q) - 1) / p.block_q;
        const BlockList a = block_list(p, first);
        const BlockList b = last != first ? block_list(p, last) : BlockList{0, 0};
        cursor[0] = a.begin;
        cursor_end[0] = a.end;
        cursor[1] = b.begin;
        cursor_end[1] = b.end;
        next_run(p, tiles.begin);
    }

    /* Moves to the first listed tile at or after `from` (tile = -1 when none is left). */
    __device__ __forceinline__ void next_run(const AttentionParams &p, int from) {
        const int tiles_per_block = p.block_k / Traits::kBlockN;
        const int blocks = (p.seq_k + p.block_k - 1) / p.block_k;
        tile = -1;
        NO_UNROLL
        while (from < range_end) {
            const int none = blocks + 1; /* past any clamped entry */
            int block = none;
            UNROLL
            for (int c = 0; c < 2; ++c) {
                if (cursor[c] < cursor_end[c]) {
                    block = min(block, clamp_block(p.block_col_indices[cursor[c]], blocks));
                }
            }
            if (block == none) {
                return;
            }
            rows = 0;
            UNROLL
            for (int c = 0; c < 2; ++c) {
                if (cursor[c] < cursor_end[c] && clamp_block(p.block_col_indices[cursor[c]], blocks) == block) {
                    rows |= 1u << c;
                    ++cursor[c];
                }
            }
            const int begin = max(block * tiles_per_block, from);
            const int end = min((block + 1) * tiles_per_block, range_end);
            if (begin < end) {
                tile = begin;
                run_end = end;
                return;
            }
        }
    }

    static __device__ __forceinline__ int clamp_block(int block, int blocks) { return min(max(block, 0), blocks); }

    /* The tile after the current one (the current run's next, or the next run's first). */
    __device__ __forceinline__ void advance(const AttentionParams &p) {
        if (tile + 1 < run_end) {
            ++tile;
        } else if (p.block_row_offsets != NULL) {
            next_run(p, tile + 1);
        } else {
            tile = -1;
        }
    }
};

/* Which keys the warp's rows see, for the per-tile decisions (fixed for the block). */
struct WarpKeys {
    int full_begin; /* [full_begin, full_end): keys every row of the warp sees (no per-element mask) */
    int full_end;
    int any_begin; /* [any_begin, any_end): keys some valid row of the warp sees (else the warp skips) */
    int any_end;
};

template <typename Traits>
__device__ __forceinline__ WarpKeys warp_keys(const AttentionParams &p, int row0) {
    WarpKeys keys;
    const KeyRange first = key_range(p, query_position(p, row0));
    keys.full_begin = key_range(p, query_position(p, row0 + Traits::kWarpRows - 1)).begin;
    keys.full_end = first.end;
    const int row_last = min(row0 + Traits::kWarpRows, query_rows(p)) - 1;
    keys.any_begin = first.begin;
    keys.any_end = row_last >= row0 ? key_range(p, query_position(p, row_last)).end : keys.any_begin;
    return keys;
}

/* S, scale and mask, softmax of one tile for one warp. The score variant is chosen by uniform branches
 * around the one step that differs (`plain`: per block; the mask: per warp and tile); S and the softmax are
 * compiled once. */
template <typename Traits, typename T>
__device__ __forceinline__ void score_tile(const AttentionParams &p, SoftmaxState<Traits> &state, PTile<Traits> &p_frag,
                                           const T *q_smem, const T *k_smem, const WarpLayout<Traits> &w,
                                           const WarpKeys &keys, int head, int row0, int n0, bool plain, float scale) {
    ScoreTile<Traits> acc_s;
    qk_product<Traits>(acc_s, q_smem, k_smem, w);
    if (!plain) {
        scale_and_mask<Traits, ScoreMode::kAdjusted, true>(acc_s, p, head, row0, n0, w.lane);
    } else if (n0 < keys.full_begin || n0 + Traits::kBlockN > keys.full_end) {
        scale_and_mask<Traits, ScoreMode::kPlain, true>(acc_s, p, head, row0, n0, w.lane);
    }
    online_softmax<Traits, T>(acc_s, state, p_frag, scale);
}

/* Rows [n0, n0 + ROWS) of `rows` into `smem` (`offset`: copy.source_offset(rows.stride)): the row check
 * only in a tile that reaches past rows_valid, the full-width copy when head_dim is the instantiation's; a
 * paged source whose pages do not hold whole tiles is gathered row by row. */
template <typename Traits, int ROWS, typename T, typename Rows>
__device__ __forceinline__ void load_rows(const TileCopy<Traits, ROWS> &copy, T *smem, const Rows &rows,
                                          int64_t offset, int n0, int rows_valid, bool full) {
    if (!rows.strided_tiles()) {
        copy.gather(smem, rows, n0, rows_valid);
        return;
    }
    const T *tile = rows(n0);
    if (rows_valid < ROWS) {
        copy.template load<true, false>(smem, tile, rows.stride, offset, rows_valid);
    } else if (full) {
        copy.template load<false, true>(smem, tile, rows.stride, offset, rows_valid);
    } else {
        copy.template load<false, false>(smem, tile, rows.stride, offset, rows_valid);
    }
}

/* The key loop over the walk's tiles; `warp_bit` is the warp's query block in the walk's `rows`, `plain`
 * and `scale` as in score_tile and online_softmax. */
template <typename Traits, typename T, typename Kv>
__device__ __forceinline__ void key_loop(const AttentionParams &p, SoftmaxState<Traits> &state, T *q_smem, T *k_smem,
                                         T *v_smem, const Kv &kv, TileWalk<Traits> walk, const WarpLayout<Traits> &w,
                                         const WarpKeys &keys, unsigned warp_bit, int head, int row0, bool plain,
                                         float scale) {
    const bool warp_has_keys = keys.any_begin < keys.any_end;
    const TileCopy<Traits, Traits::kBlockN> copy((int)threadIdx.x, p.head_dim);
    const int64_t k_offset = copy.source_offset(kv.k.stride);
    const int64_t v_offset = copy.source_offset(kv.v.stride);
    const bool full = p.head_dim == Traits::kHeadDim;
    while (walk.tile >= 0) {
        const int n0 = walk.tile * Traits::kBlockN;
        cp_async_wait_group<0>(); /* K_t (and, first, Q) has landed */
        __syncthreads();          /* ... for every thread; every warp is done with V_{t-1} */
        load_rows(copy, v_smem, kv.v, v_offset, n0, p.seq_k - n0, full);
        cp_async_commit_group();

        const bool warp_active = warp_has_keys && (walk.rows & warp_bit) != 0 && n0 < keys.any_end &&
                                 n0 + Traits::kBlockN > keys.any_begin;
        PTile<Traits> p_frag;
        if (warp_active) {
            score_tile<Traits>(p, state, p_frag, q_smem, k_smem, w, keys, head, row0, n0, plain, scale);
        }

        cp_async_wait_group<0>(); /* V_t has landed */
        __syncthreads();          /* ... for every thread; every warp is done reading K_t */
        walk.advance(p);
        if (walk.tile >= 0) {
            const int next = walk.tile * Traits::kBlockN;
            load_rows(copy, k_smem, kv.k, k_offset, next, p.seq_k - next, full);
            cp_async_commit_group();
        }
        if (warp_active) {
            pv_product<Traits>(state, p_frag, v_smem, w);
        }
    }
}

/* The block's kBlockM query rows starting at m0 of (batch, head) against the key tiles `tiles`, then the
 * epilogue; `p` is a dense batch's parameters, or one sequence's (sequence_params, batch = its first row);
 * `head` is the block's head (query_row: a key/value head under GQA packing). Rows past query_rows(p) are
 * computed on zero-filled Q and never written. */
template <typename Traits, typename T, typename Kv, typename Epilogue>
__device__ __forceinline__ void flash_main_loop(const AttentionParams &p, int batch, int head, int m0, const Kv &kv,
                                                TileRange tiles, const Epilogue &epilogue) {
    T *q_smem = dynamic_shared<T>();                 // [kBlockM][kRowStride]
    T *k_smem = q_smem + Traits::kBlockM * Traits::kRowStride; // [kBlockN][kRowStride]
    T *v_smem = k_smem + Traits::kBlockN * Traits::kRowStride; // [kBlockN][kRowStride]
    const WarpLayout<Traits> w((int)threadIdx.x);
    const int row0 = m0 + w.warp * Traits::kWarpRows;
    const WarpKeys keys = warp_keys<Traits>(p, row0);
    const TileWalk<Traits> walk(p, tiles, m0);
    const unsigned warp_bit = p.block_row_offsets != NULL ? 1u << (row0 / p.block_q - m0 / p.block_q) : 1u;

    SoftmaxState<Traits> state;
    state.init();
    if (walk.tile >= 0) {
        const bool full = p.head_dim == Traits::kHeadDim;
        const TileCopy<Traits, Traits::kBlockM> q_copy((int)threadIdx.x, p.head_dim);
        const T *q_batch = static_cast<const T *>(p.q) + batch * p.q_batch_stride;
        if (packed_heads(p) > 1) {
            q_copy.gather(q_smem, PackedQueryRows<T>(p, q_batch, head), m0, query_rows(p) - m0);
        } else {
            DenseRows<T> q_rows;
            q_rows.base = q_batch + head * p.q_head_stride;
            q_rows.stride = p.q_seq_stride;
            load_rows(q_copy, q_smem, q_rows, q_copy.source_offset(q_rows.stride), m0, p.seq_q - m0, full);
        }
        const TileCopy<Traits, Traits::kBlockN> k_copy((int)threadIdx.x, p.head_dim);
        const int n0 = walk.tile * Traits::kBlockN;
        load_rows(k_copy, k_smem, kv.k, k_copy.source_offset(kv.k.stride), n0, p.seq_k - n0, full);
        cp_async_commit_group();
    }
    /* kPlain folds the scale into the exp2, which needs max(S * c) = max(S) * c, i.e. c > 0; kAdjusted
     * scores are in log2 units already (c = 1). */
    const bool plain = !adjusts_scores(p) && p.scale_log2 > 0.0f;
    const float scale = plain ? p.scale_log2 : 1.0f;
    key_loop<Traits, T>(p, state, q_smem, k_smem, v_smem, kv, walk, w, keys, warp_bit, head, row0, plain, scale);
    epilogue.template operator()<Traits, T>(p, state, batch, head, row0, w.lane, scale);
}

#endif /* CUDA_ATTENTION_FLASH_MAINLOOP_CUH */
