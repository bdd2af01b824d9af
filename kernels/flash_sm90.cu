/*
 * flash_sm90.cu - fused attention forward for sm_90a (FlashAttention-3 class): TMA loads into a multi-stage
 * shared-memory ring guarded by mbarriers, warp specialisation, wgmma with S kept in registers as P.
 *
 * Block = 3 warpgroups (include/flash_sm90_traits.cuh): warpgroup 0 produces, warpgroups 1 and 2 consume.
 *   producer   setmaxnreg.dec; one elected thread of warp 0: Q tile (HEAD_DIM / 64 boxes of (64, 128)) on
 *              q_full; then for each key tile n, stage s = n % kStages: wait k_empty[s], K_n boxes on k_full[s];
 *              wait v_empty[s], V_n boxes on v_full[s]. Warps 1-3 of the producer leave after setmaxnreg.
 *   consumer   setmaxnreg.inc; warpgroup c owns query rows 64 (c - 1) .. +64 of the tile; per key tile n
 *              (stage s), with the P V product of tile n - 1 overlapping the softmax of tile n (N = kBlockN keys):
 *                wait k_full[s]; wait for this warpgroup's turn (bar.sync, ping-pong below)
 *                issue S = Q K_n^T                           wgmma SS m64nNk16, HEAD_DIM / 16 k-blocks
 *                wait v_full[s-1]; issue O += P_{n-1} V_{n-1} wgmma RS m64nHEAD_DIMk16, V MN-major, N / 16 k-blocks
 *                hand the turn to the other warpgroup (bar.arrive)
 *                wait_group 1 (S landed); release k_empty[s] (one thread per warpgroup)
 *                -inf where masked (only tiles a row's key range does not cover whole)
 *                m_new = max(m, rowmax S) (quad shuffles 1, 2); P = exp2(S c - m_new); l = l alpha + rowsum P
 *                wait_group 0 (O landed); release v_empty[s-1]; O *= alpha = exp2(m - m_new)
 *                P_n -> bf16/f16 in registers: accumulators 8k..8k+7 are the A fragment of k-block k
 *              the first tile has no P V before it (its turn issues S only), the last one's P V runs after
 *              the loop, outside the turns; epilogue: O /= l (quad-reduced), plain stores in the output dtype;
 *              lse = (m + log2 l) ln 2.
 *   ping-pong  (inter-warpgroup overlap, Turns) the two consumer warpgroups issue their wgmmas in turns,
 *              group 0 first: g0 tile 0, g1 tile 0, g0 tile 1, ..., so one warpgroup's softmax runs while the
 *              other's GEMMs occupy the tensor cores. Named barriers kTurnBarrier + g (ids 1, 2; 256
 *              threads: the waiting warpgroup's sync and the other's arrive). Both warpgroups have the block's
 *              tile count, so the hand-overs pair up for any count, 0 included. Head dims 64 and 128 only
 *              (Traits::kPingPong, as FA3 tuned it): at 256 the warpgroups issue freely.
 * Tiles (flash_sm90_traits.cuh): 128 query rows; kBlockN = 128 keys at head dims 64 and 128, 80 at 256
 * (shared memory: Q 64 KiB + 2 stages x (K + V) 160 KiB = 225 KiB of the 227; O is 128 f32 per thread).
 * c is scale * log2(e) from the host; with a soft cap or ALiBi scores are adjusted in natural units first
 * (adjust_score) and c is log2(e). Sinks join the denominator in finish_row. A row that sees no key writes
 * 0 and lse -inf.
 *
 * Layouts: attention_params.h. q/k/v are read only through the tensor maps p.tma_q/k/v, 4-d (head_dim, then
 * seq, heads and batch in the order of p.tma_dim_order) with 128-byte swizzle and zero fill: rows past seq_q/seq_k and columns past head_dim land
 * as zeros (no padding copies); keys past seq_k are also masked to -inf. GQA: query head h reads key/value
 * head h / heads_ratio. Rows past seq_q are computed on zeros and never written.
 *
 * Limits (the planner refuses the rest with a reason, src/plan.rs): dense batches only (no ragged/paged
 * K/V, no block-sparse mask, no split-KV, no GQA packing), f16/bf16, head_dim <= 256, strides multiples of
 * 8 elements, base addresses 16-byte aligned. Non-finite inputs are not given the sm_80 kernel's exact
 * semantics (README, "Non-finite values"): a NaN key reaches its rows as in the sm_80 kernel, but not
 * otherwise audited. Not yet: TMA stores of O, clusters, kBlockN = 176 (docs/kernel-notes.md, "Hopper flash
 * v1" and "Hopper flash v2").
 *
 * Exports: flash_sm90_fwd_d<HEAD_DIM>_<dtype> for HEAD_DIM 64, 128, 256 (serving head dims 1..64, 65..128,
 * 129..256) and dtype f16, bf16. sm_90a only: the sm_80 build of these entries traps (the planner never
 * launches them there).
 */
#include "include/flash_sm90_traits.cuh"

#if SM90_CODE_COMPILED
namespace flash_sm90_impl {

/* The block's shared memory (flash_sm90_traits.cuh): pointers and their shared-window addresses. */
template <typename Traits> struct Sm90Shared {
    unsigned char *q;
    unsigned char *k;
    unsigned char *v;
    uint32_t q_address;
    uint32_t k_address;
    uint32_t v_address;
    uint64_t *barriers;

    __device__ __forceinline__ uint64_t *q_full() const { return barriers; }
    __device__ __forceinline__ uint64_t *k_full(int s) const { return barriers + 1 + s; }
    __device__ __forceinline__ uint64_t *k_empty(int s) const { return barriers + 1 + Traits::kStages + s; }
    __device__ __forceinline__ uint64_t *v_full(int s) const { return barriers + 1 + 2 * Traits::kStages + s; }
    __device__ __forceinline__ uint64_t *v_empty(int s) const { return barriers + 1 + 3 * Traits::kStages + s; }
};

template <typename Traits> __device__ __forceinline__ Sm90Shared<Traits> shared_plan() {
    unsigned char *base = dynamic_shared<unsigned char>();
    const uint32_t base_address = shared_address(base);
    const uint32_t aligned = (base_address + Traits::kSwizzleRepeat - 1) & ~(uint32_t)(Traits::kSwizzleRepeat - 1);
    Sm90Shared<Traits> s;
    s.q = base + (aligned - base_address);
    s.k = s.q + Traits::kQBytes;
    s.v = s.k + Traits::kStages * Traits::kKvTileBytes;
    s.q_address = aligned;
    s.k_address = aligned + Traits::kQBytes;
    s.v_address = s.k_address + Traits::kStages * Traits::kKvTileBytes;
    s.barriers = reinterpret_cast<uint64_t *>(s.v + Traits::kStages * Traits::kKvTileBytes);
    return s;
}

/* The key tiles [first, end) that any row of the query tile at m0 can see. */
struct TileRange {
    int first;
    int end;
};

template <typename Traits> __device__ __forceinline__ TileRange tile_range(const AttentionParams &p, int m0) {
    const int last_row = min(m0 + Traits::kBlockM, p.seq_q) - 1;
    const KeyRange first = key_range(p, m0), last = key_range(p, last_row);
    TileRange range;
    range.first = first.begin / Traits::kBlockN;
    range.end = last.end > first.begin ? (last.end + Traits::kBlockN - 1) / Traits::kBlockN : range.first;
    return range;
}

/* Loads the box at (column, row, head, batch) of a map whose dimensions 1-3 hold seq, heads and batch in the
 * order `order` gives (attention_params.h, tma_dim_order): selects, not an indexed array (which would live
 * in local memory). */
__device__ __forceinline__ void tma_load_tile(void *dst, const TensorMapParam *map, int32_t order, int column,
                                              int row, int head, int batch, uint64_t *bar) {
    const int seq_slot = order & 3, head_slot = (order >> 2) & 3;
    const int c1 = seq_slot == 1 ? row : (head_slot == 1 ? head : batch);
    const int c2 = seq_slot == 2 ? row : (head_slot == 2 ? head : batch);
    const int c3 = seq_slot == 3 ? row : (head_slot == 3 ? head : batch);
    tma_load_4d(dst, map, column, c1, c2, c3, bar);
}

/* Producer: one thread issues every TMA load of the block. */
template <typename Traits>
__device__ void produce(const AttentionParams &p, const Sm90Shared<Traits> &s, int m0, int head, int kv_head,
                        int batch, TileRange tiles) {
    mbarrier_arrive_expect_tx(s.q_full(), Traits::kQBytes);
    for (int c = 0; c < Traits::kColumnBlocks; ++c) {
        tma_load_tile(s.q + c * Traits::kQBoxBytes, &p.tma_q, p.tma_dim_order[0], c * Traits::kBoxCols, m0, head,
                      batch, s.q_full());
    }
    for (int tile = tiles.first, i = 0; tile < tiles.end; ++tile, ++i) {
        const int stage = i % Traits::kStages;
        const uint32_t phase = (uint32_t)(i / Traits::kStages) & 1u;
        const int n0 = tile * Traits::kBlockN;
        /* The first lap's waits are for the phase before the first: complete at once. */
        mbarrier_wait_parity(s.k_empty(stage), phase ^ 1u);
        mbarrier_arrive_expect_tx(s.k_full(stage), Traits::kKvTileBytes);
        unsigned char *k_tile = s.k + stage * Traits::kKvTileBytes;
        for (int c = 0; c < Traits::kColumnBlocks; ++c) {
            tma_load_tile(k_tile + c * Traits::kKvBoxBytes, &p.tma_k, p.tma_dim_order[1], c * Traits::kBoxCols, n0,
                          kv_head, batch, s.k_full(stage));
        }
        mbarrier_wait_parity(s.v_empty(stage), phase ^ 1u);
        mbarrier_arrive_expect_tx(s.v_full(stage), Traits::kKvTileBytes);
        unsigned char *v_tile = s.v + stage * Traits::kKvTileBytes;
        for (int c = 0; c < Traits::kColumnBlocks; ++c) {
            tma_load_tile(v_tile + c * Traits::kKvBoxBytes, &p.tma_v, p.tma_dim_order[2], c * Traits::kBoxCols, n0,
                          kv_head, batch, s.v_full(stage));
        }
    }
}

/* Per-row online-softmax state of one consumer thread: rows r and r + 8 of its warpgroup's 64. */
struct RowState {
    float m[2]; /* running max of the scores in log2 units (-inf: nothing seen yet) */
    float l[2]; /* this thread's partial sum of exp2(x - m) */
};

/* What a consumer thread knows of its two rows (r and r + 8) before the key loop: their key ranges, the
 * keys both see, and whether scores are adjusted (soft cap, ALiBi). */
struct RowMasks {
    KeyRange range0;
    KeyRange range1;
    int begin;
    int end;
    bool adjust;
};

__device__ __forceinline__ RowMasks row_masks(const AttentionParams &p, int row0) {
    RowMasks masks;
    masks.range0 = key_range(p, row0);
    masks.range1 = key_range(p, row0 + 8);
    masks.begin = max(masks.range0.begin, masks.range1.begin);
    masks.end = min(masks.range0.end, masks.range1.end);
    masks.adjust = adjusts_scores(p);
    return masks;
}

/* The scores of one key tile in log2 units, -inf where masked; x = S c (or adjusted, then log2(e)). */
template <typename Traits>
__device__ __forceinline__ void scale_and_mask(const AttentionParams &p, float (&x)[Traits::kBlockN / 2], int head,
                                               int row0, int n0, int quad_col, const RowMasks &masks) {
    /* One block-uniform branch per tile, not one per element: the common path is one FMUL per score. */
    if (masks.adjust) {
        UNROLL
        for (int i = 0; i < Traits::kBlockN / 2; ++i) {
            const int col = n0 + 8 * (i >> 2) + quad_col + (i & 1);
            x[i] = adjust_score(p, head, row0 + 8 * ((i >> 1) & 1), col, x[i] * p.scale) * LOG2_E;
        }
    } else {
        const float scale_log2 = p.scale_log2;
        UNROLL
        for (int i = 0; i < Traits::kBlockN / 2; ++i) {
            x[i] *= scale_log2;
        }
    }
    if (n0 >= masks.begin && n0 + Traits::kBlockN <= masks.end) {
        return;
    }
    UNROLL
    for (int i = 0; i < Traits::kBlockN / 2; ++i) {
        const int col = n0 + 8 * (i >> 2) + quad_col + (i & 1);
        const KeyRange range = (i >> 1) & 1 ? masks.range1 : masks.range0;
        x[i] = col >= range.begin && col < range.end ? x[i] : -INFINITY;
    }
}

/* m_new = max(m, rowmax x); x = exp2(x - m_new); l = l alpha + rowsum; returns alpha = exp2(m - m_new) of
 * both rows, by which O is to be scaled (rescale_output) once the P V product in flight has landed. */
template <typename Traits>
__device__ __forceinline__ void online_softmax(float (&x)[Traits::kBlockN / 2], RowState &state, float (&alpha)[2]) {
    UNROLL
    for (int half = 0; half < 2; ++half) {
        float row_max = -INFINITY;
        UNROLL
        for (int i = 2 * half; i < Traits::kBlockN / 2; i += 4) {
            row_max = fmaxf(row_max, fmaxf(x[i], x[i + 1]));
        }
        row_max = fmaxf(row_max, __shfl_xor_sync(FULL_WARP_MASK, row_max, 1));
        row_max = fmaxf(row_max, __shfl_xor_sync(FULL_WARP_MASK, row_max, 2));
        const float m_new = fmaxf(state.m[half], row_max);
        /* A row with nothing seen yet keeps m = -inf: subtract 0 instead (its x are all -inf). */
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[half] = ex2_approx_ftz(state.m[half] - m_use);
        float sum = 0.0f;
        UNROLL
        for (int i = 2 * half; i < Traits::kBlockN / 2; i += 4) {
            x[i] = ex2_approx_ftz(x[i] - m_use);
            x[i + 1] = ex2_approx_ftz(x[i + 1] - m_use);
            sum += x[i] + x[i + 1];
        }
        state.m[half] = m_new;
        state.l[half] = fmaf(state.l[half], alpha[half], sum);
    }
}

/* O *= alpha, row by row (registers with bit 1 clear hold row r, set row r + 8). */
template <typename Traits>
__device__ __forceinline__ void rescale_output(float (&o)[Traits::kHeadDim / 2], const float (&alpha)[2]) {
    UNROLL
    for (int i = 0; i < Traits::kHeadDim / 2; ++i) {
        o[i] *= alpha[(i >> 1) & 1];
    }
}

/* P in registers: accumulators 8 kb .. 8 kb + 7 of S are the A fragment of keys 16 kb .. 16 kb + 15. */
template <typename Traits, typename T>
__device__ __forceinline__ void pack_p(const float (&x)[Traits::kBlockN / 2], uint32_t (&pa)[Traits::kBlockN / 16][4]) {
    UNROLL
    for (int kb = 0; kb < Traits::kBlockN / 16; ++kb) {
        UNROLL
        for (int r = 0; r < 4; ++r) {
            pa[kb][r] = Sm90Mma<T>::pack(x[8 * kb + 2 * r], x[8 * kb + 2 * r + 1]);
        }
    }
}

/* O / l into out, lse; rows past seq_q and columns past head_dim are not written. */
template <typename Traits, typename T>
__device__ __forceinline__ void write_output(const AttentionParams &p, const float (&o)[Traits::kHeadDim / 2],
                                             RowState &state, int head, int batch, int row0, int quad) {
    UNROLL
    for (int half = 0; half < 2; ++half) {
        float l = state.l[half];
        l += __shfl_xor_sync(FULL_WARP_MASK, l, 1);
        l += __shfl_xor_sync(FULL_WARP_MASK, l, 2);
        const RowEnd end = finish_row(state.m[half], 1.0f, l, sink_log2(p, head));
        const int row = row0 + 8 * half;
        if (row >= p.seq_q) {
            continue;
        }
        T *out = static_cast<T *>(p.out) + batch * p.out_batch_stride + row * p.out_seq_stride +
                 head * p.out_head_stride;
        UNROLL
        for (int i = 2 * half; i < Traits::kHeadDim / 2; i += 4) {
            const int col = 8 * (i >> 2) + 2 * quad;
            if (col < p.head_dim) {
                out[col] = from_float<T>(end.seen ? o[i] * end.factor : 0.0f);
            }
            if (col + 1 < p.head_dim) {
                out[col + 1] = from_float<T>(end.seen ? o[i + 1] * end.factor : 0.0f);
            }
        }
        if (p.lse != NULL && quad == 0) {
            p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + row] = end.lse;
        }
    }
}

/* The ring slot of the i-th key tile a block visits. */
template <typename Traits> struct Slot {
    int stage;
    uint32_t phase;
    __device__ __forceinline__ explicit Slot(int i)
        : stage(i % Traits::kStages), phase((uint32_t)(i / Traits::kStages) & 1u) {}
};

/* Descriptors advance by adding (byte offset >> 4) to their start-address field, as long as the addresses stay
 * inside the 256 KiB window the field covers (shared memory is at most 227 KiB). */
__device__ __forceinline__ uint64_t advance(uint64_t desc, uint32_t bytes) { return desc + (uint64_t)(bytes >> 4); }

/* Issues S = Q K^T: desc_q and desc_k describe k-block 0 of Q's rows and of the K tile (K-major SW128);
 * k-block kb is 32 bytes into column block kb / 4 (compile-time offsets). */
template <typename Traits, typename T>
__device__ __forceinline__ void issue_qk(float (&x)[Traits::kBlockN / 2], uint64_t desc_q, uint64_t desc_k) {
    UNROLL
    for (int kb = 0; kb < Traits::kHeadDim / 16; ++kb) {
        const uint32_t offset = (uint32_t)((kb % 4) * 32);
        Sm90Mma<T>::template qk<Traits::kBlockN>(x, advance(desc_q, (uint32_t)((kb / 4) * Traits::kQBoxBytes) + offset),
                                                 advance(desc_k, (uint32_t)((kb / 4) * Traits::kKvBoxBytes) + offset),
                                                 kb > 0);
    }
    wgmma_commit_group();
}

/* Issues O += P V: desc_v describes keys 0..15 of the V tile (MN-major SW128); k-block kb is keys 16 kb ..,
 * 16 rows of 128 bytes further. */
template <typename Traits, typename T>
__device__ __forceinline__ void issue_pv(float (&o)[Traits::kHeadDim / 2],
                                         const uint32_t (&pa)[Traits::kBlockN / 16][4], uint64_t desc_v) {
    UNROLL
    for (int kb = 0; kb < Traits::kBlockN / 16; ++kb) {
        Sm90Mma<T>::template pv<Traits::kHeadDim>(o, pa[kb], advance(desc_v, (uint32_t)(kb * 16 * Traits::kRowBytes)));
    }
    wgmma_commit_group();
}

/* Ping-pong between the two consumer warpgroups (FA3's inter-warpgroup overlap): a warpgroup issues the wgmmas
 * of a key tile (S_i, with P_{i-1} V_{i-1} after the first) only in its turn, so that while one warpgroup's
 * GEMMs run on the tensor cores the other runs its softmax. Turn i of group g waits on barrier
 * kTurnBarrier + g and, once its wgmmas are issued, hands the next turn over by arriving on the other's:
 * the order is g0 t0, g1 t0, g0 t1, g1 t1, ... Both groups walk the block's key tiles (TileRange), so both
 * have `count` turns and a hand-over happens only towards a turn that exists: group 1 gives group 0 its
 * first (start) and each later one (after its turn i when i + 1 < count); group 0 gives group 1 each of
 * its turns. Every bar.sync is thus met by exactly one arrival of the other group (256 threads), none is
 * left over at exit, and with no tile (count 0) nobody touches the barriers. The arrivals cannot run a
 * generation ahead: group 1's next arrival on barrier 0 needs the turn group 0's pending sync precedes.
 * A turn covers both wgmma batches of a step (S_i, then P_{i-1} V_{i-1}), as in FA3: handing over right after
 * S would queue the other warpgroup's S between this one's S and P V, delaying the P V this warpgroup waits
 * for (wait_group 0) right after its softmax. */
template <typename Traits> struct Turns {
    int group;
    int count;

    __device__ __forceinline__ int barrier(int g) const { return Traits::kTurnBarrier + g; }
    __device__ __forceinline__ void start() const {
        if (Traits::kPingPong && group == 1 && count > 0) {
            named_barrier_arrive(barrier(0), Traits::kTurnThreads);
        }
    }
    __device__ __forceinline__ void wait() const {
        if (Traits::kPingPong) {
            named_barrier_sync(barrier(group), Traits::kTurnThreads);
        }
    }
    __device__ __forceinline__ void pass(int i) const {
        if (Traits::kPingPong && (group == 0 || i + 1 < count)) {
            named_barrier_arrive(barrier(1 - group), Traits::kTurnThreads);
        }
    }
};

/* Consumer warpgroup `group` (0 or 1): 64 query rows of the tile. Intra-warpgroup overlap: the softmax of
 * key tile i runs while the wgmmas of P_{i-1} V_{i-1} are in flight (issued right after S_i = Q K_i^T). */
template <typename Traits, typename T>
__device__ void consume(const AttentionParams &p, const Sm90Shared<Traits> &s, int m0, int head, int batch,
                        TileRange tiles, int group) {
    constexpr int kN = Traits::kBlockN, kD = Traits::kHeadDim;
    const int t = threadIdx.x % Traits::kWarpgroupThreads;
    const int quad = t & 3;
    /* This thread's rows (of the sequence): wgmma_d_row(t, 0) and + 8. */
    const int row0 = m0 + group * Traits::kWarpgroupRows + wgmma_d_row(t, 0);
    float o[kD / 2];
    UNROLL
    for (int i = 0; i < kD / 2; ++i) {
        o[i] = 0.0f;
    }
    RowState state;
    state.m[0] = state.m[1] = -INFINITY;
    state.l[0] = state.l[1] = 0.0f;
    /* Q's 64 rows of this warpgroup start 64 * 128 bytes into each column block. */
    const uint32_t q_rows = s.q_address + (uint32_t)(group * Traits::kWarpgroupRows * Traits::kRowBytes);
    const uint64_t desc_q = wgmma_descriptor(q_rows, 16, Traits::kKMajorSbo, WGMMA_SWIZZLE_128B);
    const uint64_t desc_k = wgmma_descriptor(s.k_address, 16, Traits::kKMajorSbo, WGMMA_SWIZZLE_128B);
    const uint64_t desc_v = wgmma_descriptor(s.v_address, Traits::kVLbo, Traits::kVSbo, WGMMA_SWIZZLE_128B);
    const RowMasks masks = row_masks(p, row0);
    const int tile_count = tiles.end - tiles.first;
    const Turns<Traits> turns = {group, tile_count};
    turns.start();

    mbarrier_wait_parity(s.q_full(), 0);
    if (tile_count > 0) {
        float x[kN / 2];
        float alpha[2];
        uint32_t pa[kN / 16][4];
        /* Prologue, tile 0: S_0 = Q K_0^T; softmax; P_0 (O is 0: nothing to rescale). */
        {
            const Slot<Traits> slot(0);
            mbarrier_wait_parity(s.k_full(slot.stage), slot.phase);
            turns.wait();
            wgmma_fence();
            issue_qk<Traits, T>(x, desc_q, advance(desc_k, (uint32_t)(slot.stage * Traits::kKvTileBytes)));
            turns.pass(0);
            wgmma_wait_group<0>();
            if (t == 0) {
                mbarrier_arrive(s.k_empty(slot.stage));
            }
            scale_and_mask<Traits>(p, x, head, row0, tiles.first * kN, 2 * quad, masks);
            online_softmax<Traits>(x, state, alpha);
            pack_p<Traits, T>(x, pa);
        }
        /* Steady state, tile i: issue S_i and P_{i-1} V_{i-1}; wait for S_i only; mask and softmax under
         * the P V wgmmas; wait for them; O *= alpha; P_i. */
        for (int i = 1; i < tile_count; ++i) {
            const Slot<Traits> slot(i), previous(i - 1);
            mbarrier_wait_parity(s.k_full(slot.stage), slot.phase);
            turns.wait();
            wgmma_fence();
            issue_qk<Traits, T>(x, desc_q, advance(desc_k, (uint32_t)(slot.stage * Traits::kKvTileBytes)));
            mbarrier_wait_parity(s.v_full(previous.stage), previous.phase);
            issue_pv<Traits, T>(o, pa, advance(desc_v, (uint32_t)(previous.stage * Traits::kKvTileBytes)));
            turns.pass(i);
            wgmma_wait_group<1>();
            if (t == 0) {
                mbarrier_arrive(s.k_empty(slot.stage));
            }
            scale_and_mask<Traits>(p, x, head, row0, (tiles.first + i) * kN, 2 * quad, masks);
            online_softmax<Traits>(x, state, alpha);
            wgmma_wait_group<0>();
            if (t == 0) {
                mbarrier_arrive(s.v_empty(previous.stage));
            }
            rescale_output<Traits>(o, alpha);
            pack_p<Traits, T>(x, pa);
        }
        /* Epilogue: O += P_last V_last. */
        const Slot<Traits> last(tile_count - 1);
        mbarrier_wait_parity(s.v_full(last.stage), last.phase);
        wgmma_fence();
        issue_pv<Traits, T>(o, pa, advance(desc_v, (uint32_t)(last.stage * Traits::kKvTileBytes)));
        wgmma_wait_group<0>();
        if (t == 0) {
            mbarrier_arrive(s.v_empty(last.stage));
        }
    }
    write_output<Traits, T>(p, o, state, head, batch, row0, quad);
}

template <int HEAD_DIM, typename T> __device__ void flash_sm90_forward(const AttentionParams &p) {
    using Traits = FlashSm90Traits<HEAD_DIM>;
    /* Heavy (late) query tiles first: with a causal mask they have the most keys. */
    const int m0 = (int)(gridDim.x - 1 - blockIdx.x) * Traits::kBlockM;
    const int head = blockIdx.y, batch = blockIdx.z;
    const int kv_head = head / p.heads_ratio;
    if (m0 >= p.seq_q) {
        return;
    }
    const Sm90Shared<Traits> s = shared_plan<Traits>();
    const TileRange tiles = tile_range<Traits>(p, m0);
    if (threadIdx.x == 0) {
        mbarrier_init(s.q_full(), 1);
        for (int stage = 0; stage < Traits::kStages; ++stage) {
            mbarrier_init(s.k_full(stage), 1);
            mbarrier_init(s.v_full(stage), 1);
            mbarrier_init(s.k_empty(stage), Traits::kConsumerWarpgroups);
            mbarrier_init(s.v_empty(stage), Traits::kConsumerWarpgroups);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    /* Read from lane 0, so that ptxas knows it is warp-uniform: the turns branch on it, and a branch it
     * cannot prove uniform makes it serialise the wgmmas (C7520). */
    const int warpgroup = __shfl_sync(FULL_WARP_MASK, (int)threadIdx.x / Traits::kWarpgroupThreads, 0);
    if (warpgroup == 0) {
        setmaxnreg_dec<Traits::kProducerRegisters>();
        if (threadIdx.x < WARP_SIZE && elect_one_sync()) {
            produce<Traits>(p, s, m0, head, kv_head, batch, tiles);
        }
        return;
    }
    setmaxnreg_inc<Traits::kConsumerRegisters>();
    consume<Traits, T>(p, s, m0, head, batch, tiles, warpgroup - 1);
}

} /* namespace flash_sm90_impl */
#endif /* SM90_CODE_COMPILED */

#if SM90_CODE_COMPILED
#define FLASH_SM90_BODY(head_dim, T) flash_sm90_impl::flash_sm90_forward<head_dim, T>(p)
#else
#define FLASH_SM90_BODY(head_dim, T) __trap()
#endif

#define FLASH_SM90_EXPORT(head_dim, dtype_name, T)                                                       \
    ATTENTION_KERNEL(flash_sm90_fwd_d##head_dim##_##dtype_name, FlashSm90Traits<head_dim>::kThreads,       \
                     FlashSm90Traits<head_dim>::info<T>()) {                                              \
        FLASH_SM90_BODY(head_dim, T);                                                                     \
    }

FLASH_SM90_EXPORT(64, f16, __half)
FLASH_SM90_EXPORT(64, bf16, __nv_bfloat16)
FLASH_SM90_EXPORT(128, f16, __half)
FLASH_SM90_EXPORT(128, bf16, __nv_bfloat16)
FLASH_SM90_EXPORT(256, f16, __half)
FLASH_SM90_EXPORT(256, bf16, __nv_bfloat16)
