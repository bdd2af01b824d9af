/*
 * hopper_probe.cu - dumps what the sm_90a instructions produce (wgmma accumulators for several N, operand
 * sources and shared-memory layouts; a TMA load into 128-byte-swizzled shared memory; mbarrier phases) as
 * small exact integers, so that a GPU and the CPU emulator can be compared value by value, as
 * layout_probe.cu does for sm_80.
 *
 * One warpgroup: grid 1, block 128, HOPPER_PROBE_SHARED_BYTES of dynamic shared memory. Inputs:
 *   p.q      a 64-byte-aligned 2-d tensor map (CUtensorMap) over p.k, f16, dims (64, HOPPER_PROBE_TMA_ROWS),
 *            row stride 128 bytes, box (64, 16), SWIZZLE_128B, zero fill
 *   p.k      that tensor: element (row r, column c) = r * 64 + c + 1 (exact in f16)
 *   p.v      a 3-d tensor map over the same tensor seen as (32 columns, HOPPER_PROBE_TMA_ROWS rows, 2 halves):
 *            strides 128 bytes (rows) and 64 bytes (halves), box (32, 8, 2), SWIZZLE_64B
 *   p.seq_q  0, or a planted bug for the emulator's tests (HOPPER_PROBE_PLANTED_*)
 * Output p.out, HOPPER_PROBE_VALUES floats:
 *   [0..4)   header: version, value count, shared bytes, case count
 *   cases    HOPPER_PROBE_CASES x 9: N, dtype (0 f16, 1 bf16), A in registers, trans A, swizzle A (wgmma
 *            descriptor mode), trans B, swizzle B, wgmmas chained, C added
 *   wgmma    per case, 128 threads x N/2 accumulators: D = A B (+ C), chained wgmmas on the same
 *            accumulators add A B again (no wait between them); A[m][k] = probe_a, B[k][n] = probe_b,
 *            C[m][n] = probe_c; the operands are stored by hopper_layout.h's address functions; the
 *            accumulators hold C before every case, so the cases without C check that scale-d = 0
 *            discards them
 *   phases   6 mbarrier.test_wait results: parity 0 and 1 on a fresh barrier (count 1), after one
 *            arrival, after two
 *   tma      2 boxes x 16 rows x 64 columns, the f16 values as read back from shared memory in the dense,
 *            unswizzled order (row r, column c at swizzle(box + 128 r + 2 c)): box 0 at coordinates (0, -4),
 *            box 1 at (0, HOPPER_PROBE_TMA_ROWS - 8), so both hang over an edge (zeros there)
 *   tma_mma  128 threads x 8: D (64 x 16) = A (registers, 64 x 64: probe_a) B (box 0 as 16 n-rows of 64 k,
 *            K-major, 128-byte swizzle), four chained k-blocks, the descriptor's start advanced 32 bytes
 *            each, as a flash kernel computes S = Q K^T from a TMA-loaded K tile
 *   tma3d    the 3-d box at (0, 2, 0) (rows 2..9, both halves: 512 f16) in the second phase of the same
 *            barrier, read back densely (element e at swizzle64(box + 2 e)), as a d128 kernel loads a row in
 *            two 64-byte slices
 *   named    64 values that warps 0-1 store to shared memory before bar.arrive 1, 128 and warps 2-3 read
 *            after bar.sync 1, 128 (value 1000 + i + 1 for thread i of warps 0-1)
 *
 * Run by tests/emulator_hopper_probe.rs on the emulator, against the plain products and (once a GPU has run it)
 * the golden dump tests/golden/hopper_probe.txt. sm_90a only: the sm_80 build of this kernel traps.
 */
#include "include/device_helpers.cuh"
#include "include/named_barrier.cuh"
#include "include/ptx_sm90.cuh"

#define HOPPER_PROBE_VERSION 1
#define HOPPER_PROBE_HEADER 4
#define HOPPER_PROBE_CASES 6
#define HOPPER_PROBE_CASE_FIELDS 9
/* Accumulators per thread over all cases: 8/2 + 64/2 + 256/2 + 32/2 + 16/2 + 128/2. */
#define HOPPER_PROBE_CASE_ACCUMULATORS (4 + 32 + 128 + 16 + 8 + 64)
#define HOPPER_PROBE_PHASES 6
#define HOPPER_PROBE_TMA_ROWS 20
#define HOPPER_PROBE_BOX_ROWS 16
#define HOPPER_PROBE_BOX_COLS 64
#define HOPPER_PROBE_BOX_BYTES (HOPPER_PROBE_BOX_ROWS * HOPPER_PROBE_BOX_COLS * 2)
#define HOPPER_PROBE_TMA (2 * HOPPER_PROBE_BOX_ROWS * HOPPER_PROBE_BOX_COLS)
#define HOPPER_PROBE_TMA_MMA (128 * 8)
#define HOPPER_PROBE_TMA3D (32 * 8 * 2)
#define HOPPER_PROBE_NAMED 64
#define HOPPER_PROBE_VALUES                                                                                        \
    (HOPPER_PROBE_HEADER + HOPPER_PROBE_CASES * HOPPER_PROBE_CASE_FIELDS + 128 * HOPPER_PROBE_CASE_ACCUMULATORS +    \
     HOPPER_PROBE_PHASES + HOPPER_PROBE_TMA + HOPPER_PROBE_TMA_MMA + HOPPER_PROBE_TMA3D + \
     HOPPER_PROBE_NAMED)
/* Shared memory: 1024 bytes of alignment slack, A and B operand regions (8 KiB each, the largest
 * footprint of a 64 x 16 or 256 x 16 operand), two TMA boxes, two mbarriers. */
#define HOPPER_PROBE_REGION_BYTES 8192
#define HOPPER_PROBE_SHARED_BYTES (1024 + 2 * HOPPER_PROBE_REGION_BYTES + 2 * HOPPER_PROBE_BOX_BYTES + 16)

/* Planted bugs (p.seq_q), for the emulator's tests only. */
#define HOPPER_PROBE_PLANTED_NONE 0
#define HOPPER_PROBE_PLANTED_MISSING_WAIT 1  /* no mbarrier wait before the wgmma reads the TMA box */
#define HOPPER_PROBE_PLANTED_WRONG_SWIZZLE 2 /* the wgmma reads the TMA box with a 64-byte swizzle */
#define HOPPER_PROBE_PLANTED_WRONG_PHASE 3   /* the TMA wait uses parity 1 (already complete) */
#define HOPPER_PROBE_PLANTED_NEVER_PHASE 4   /* a second wait for a phase nobody completes */
#define HOPPER_PROBE_PLANTED_OUTSIDE 5       /* a B descriptor past the end of shared memory */
#define HOPPER_PROBE_PLANTED_NO_FENCE 6      /* the TMA product's wgmmas without a wgmma.fence */
#define HOPPER_PROBE_PLANTED_EARLY_READ 7    /* the TMA product's accumulators read before the wait */
#define HOPPER_PROBE_PLANTED_NO_INIT 8       /* an arrival on the TMA barrier before its mbarrier.init */
#define HOPPER_PROBE_PLANTED_SPLIT_DESC 9    /* one thread passes another descriptor to the TMA product */
#define HOPPER_PROBE_PLANTED_UNALIGNED_BOX 10 /* box 0 lands 128 bytes past the swizzle's repeat */
#define HOPPER_PROBE_PLANTED_HALF_GROUP 11   /* warps 2 and 3 skip the TMA product and exit */
#define HOPPER_PROBE_PLANTED_NAMED_COUNT 12  /* the consumers of named barrier 1 count 96 threads */
#define HOPPER_PROBE_PLANTED_NAMED_SKIP 13   /* the producers never arrive at named barrier 1 */

#if SM90_CODE_COMPILED
/* Everything but the entry point sits in a namespace: the unity build shares one scope with layout_probe. */
namespace hopper_probe_impl {

/* The probe's matrices: small integers, so every product and sum is exact. */
__device__ __forceinline__ float probe_a(int row, int k) { return (float)((row * 16 + k) * 7 % 13 - 6); }
__device__ __forceinline__ float probe_b(int k, int n) { return (float)((k * 8 + n) * 5 % 11 - 5); }
__device__ __forceinline__ float probe_c(int row, int col) { return (float)(row - col); }

struct ProbeCase {
    int n, bf16, a_registers, trans_a, swizzle_a, trans_b, swizzle_b, chained, add_c;
};

/* The cases; the dump records them so the host needs no copy of this table. */
__device__ __forceinline__ ProbeCase probe_case(int index) {
    switch (index) {
    case 0: return ProbeCase{8, 1, 0, 0, WGMMA_SWIZZLE_128B, 0, WGMMA_SWIZZLE_128B, 1, 0};
    case 1: return ProbeCase{64, 0, 0, 0, WGMMA_SWIZZLE_64B, 1, WGMMA_SWIZZLE_128B, 1, 0};
    case 2: return ProbeCase{256, 1, 0, 0, WGMMA_SWIZZLE_32B, 0, WGMMA_SWIZZLE_NONE, 1, 0};
    case 3: return ProbeCase{32, 0, 0, 1, WGMMA_SWIZZLE_64B, 1, WGMMA_SWIZZLE_NONE, 1, 0};
    case 4: return ProbeCase{16, 1, 1, 0, WGMMA_SWIZZLE_NONE, 0, WGMMA_SWIZZLE_128B, 2, 1};
    default: return ProbeCase{128, 0, 1, 0, WGMMA_SWIZZLE_NONE, 1, WGMMA_SWIZZLE_32B, 1, 0};
    }
}

/* A descriptor for an operand of `extent` rows (M or N) by 16 k at shared address `start`, in the
 * canonical layout of (trans, mode) with densely packed core matrices (hopper_layout.h). */
__device__ __forceinline__ uint64_t probe_descriptor(uint32_t start, int trans, int mode, int extent) {
    const uint32_t span = wgmma_swizzle_bytes(mode);
    if (trans == 0) {
        return span != 0 ? wgmma_descriptor(start, 16, 8 * span, mode) : wgmma_descriptor(start, 128, 256, mode);
    }
    return span != 0 ? wgmma_descriptor(start, 8 * span, (uint32_t)extent / (span / 2) * 8 * span, mode)
                     : wgmma_descriptor(start, (uint32_t)extent / 8 * 128, 128, mode);
}

template <typename T> __device__ __forceinline__ uint16_t probe_bits(float x) {
    const T h = from_float<T>(x);
    uint16_t bits;
    memcpy(&bits, &h, sizeof bits);
    return bits;
}

/* Stores element (mn, k) = value(mn, k) of an operand at the addresses `desc` gives; `region` is the
 * pointer of shared address `start`. */
template <typename T, typename Value>
__device__ void probe_store_operand(unsigned char *region, uint32_t start, uint64_t desc, int trans, int extent,
                                    int t, Value value) {
    for (int e = t; e < extent * 16; e += 128) {
        const int mn = e / 16, k = e % 16;
        const uint16_t bits = probe_bits<T>(value(mn, k));
        memcpy(region + (wgmma_operand_address(desc, trans, mn, k) - start), &bits, sizeof bits);
    }
}

/* One wgmma of a case (shape N, element type T). */
template <typename T, int N, int TRANS_A, int TRANS_B> struct ProbeIssue {
    static __device__ __forceinline__ void run(float (&d)[N / 2], const uint32_t (&a)[4], bool registers,
                                               uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        if (registers) {
            wgmma_rs_f16<N, TRANS_B>(d, a, desc_b, accumulate);
        } else {
            wgmma_ss_f16<N, TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate);
        }
    }
};
template <int N, int TRANS_A, int TRANS_B> struct ProbeIssue<__nv_bfloat16, N, TRANS_A, TRANS_B> {
    static __device__ __forceinline__ void run(float (&d)[N / 2], const uint32_t (&a)[4], bool registers,
                                               uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        if (registers) {
            wgmma_rs_bf16<N, TRANS_B>(d, a, desc_b, accumulate);
        } else {
            wgmma_ss_bf16<N, TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate);
        }
    }
};

/* Runs case `index`: stores the operands, issues the wgmma(s), dumps the accumulators at `out`. */
template <typename T, int N, int TRANS_A, int TRANS_B>
__device__ void probe_wgmma_case(int index, float *out, int t, unsigned char *a_region, unsigned char *b_region,
                                 uint32_t a_start, uint32_t b_start, int planted) {
    const ProbeCase c = probe_case(index);
    const uint64_t desc_a = probe_descriptor(a_start, c.trans_a, c.swizzle_a, 64);
    const uint64_t desc_b = probe_descriptor(b_start, c.trans_b, c.swizzle_b, N);
    /* The planted bug hands the wgmma a descriptor past the end of shared memory (stores use the good one). */
    const uint64_t issued_desc_b = planted == HOPPER_PROBE_PLANTED_OUTSIDE && index == 0
                                       ? probe_descriptor(b_start + HOPPER_PROBE_SHARED_BYTES, c.trans_b, c.swizzle_b, N)
                                       : desc_b;
    if (!c.a_registers) {
        probe_store_operand<T>(a_region, a_start, desc_a, c.trans_a, 64, t, probe_a);
    }
    probe_store_operand<T>(b_region, b_start, desc_b, c.trans_b, N, t,
                           [](int n, int k) { return probe_b(k, n); });
    fence_proxy_async_shared();
    __syncthreads();

    uint32_t a[4] = {0, 0, 0, 0};
    for (int j = 0; j < 8; ++j) {
        a[j / 2] |= (uint32_t)probe_bits<T>(probe_a(wgmma_a_row(t, j), wgmma_a_col(t, j))) << (16 * (j % 2));
    }
    float d[N / 2];
    for (int i = 0; i < N / 2; ++i) {
        d[i] = probe_c(wgmma_d_row(t, i), wgmma_d_col(t, i)); /* discarded unless the case adds C */
    }
    wgmma_fence();
    for (int w = 0; w < c.chained; ++w) {
        ProbeIssue<T, N, TRANS_A, TRANS_B>::run(d, a, c.a_registers != 0, desc_a, issued_desc_b, c.add_c || w > 0);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
    for (int i = 0; i < N / 2; ++i) {
        out[t * (N / 2) + i] = d[i];
    }
    __syncthreads(); /* every wgmma has read the operands before the next case overwrites them */
}

/* D (64 x 16) = A (registers, 64 x 64) B (the TMA box: 16 n-rows of 64 k, K-major, 128-byte swizzle). */
__device__ void probe_tma_mma(float *out, int t, uint32_t box_start, int planted) {
    const int mode = planted == HOPPER_PROBE_PLANTED_WRONG_SWIZZLE ? WGMMA_SWIZZLE_64B : WGMMA_SWIZZLE_128B;
    float d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (planted != HOPPER_PROBE_PLANTED_NO_FENCE) {
        wgmma_fence();
    }
    for (int kb = 0; kb < 4; ++kb) {
        uint32_t a[4] = {0, 0, 0, 0};
        for (int j = 0; j < 8; ++j) {
            const float value = probe_a(wgmma_a_row(t, j), 16 * kb + wgmma_a_col(t, j));
            a[j / 2] |= (uint32_t)probe_bits<__half>(value) << (16 * (j % 2));
        }
        const uint32_t skew = planted == HOPPER_PROBE_PLANTED_SPLIT_DESC && t == 5 ? 32u : 0u;
        const uint64_t desc = wgmma_descriptor(box_start + 32u * (uint32_t)kb + skew, 16, 1024, mode);
        wgmma_rs_f16<16>(d, a, desc, kb > 0);
    }
    wgmma_commit_group();
    if (planted == HOPPER_PROBE_PLANTED_EARLY_READ) {
        for (int i = 0; i < 8; ++i) {
            out[t * 8 + i] = d[i];
        }
    }
    wgmma_wait_group<0>();
    if (planted != HOPPER_PROBE_PLANTED_EARLY_READ) {
        for (int i = 0; i < 8; ++i) {
            out[t * 8 + i] = d[i];
        }
    }
}

__device__ void hopper_probe_body(const AttentionParams &p) {
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    const int planted = p.seq_q;
    unsigned char *shared = dynamic_shared<unsigned char>();
    /* Swizzled tiles start at a 1024-byte boundary of the shared window. */
    const uint32_t shared_base = shared_address(shared);
    const uint32_t aligned = (shared_base + 1023u) & ~1023u;
    unsigned char *a_region = shared + (aligned - shared_base);
    unsigned char *b_region = a_region + HOPPER_PROBE_REGION_BYTES;
    unsigned char *boxes = b_region + HOPPER_PROBE_REGION_BYTES;
    uint64_t *bars = reinterpret_cast<uint64_t *>(boxes + 2 * HOPPER_PROBE_BOX_BYTES);
    uint64_t *tma_bar = bars, *phase_bar = bars + 1;
    const uint32_t a_start = aligned, b_start = aligned + HOPPER_PROBE_REGION_BYTES;
    const uint32_t box_start = b_start + HOPPER_PROBE_REGION_BYTES;

    if (t == 0) {
        out[0] = HOPPER_PROBE_VERSION;
        out[1] = HOPPER_PROBE_VALUES;
        out[2] = HOPPER_PROBE_SHARED_BYTES;
        out[3] = HOPPER_PROBE_CASES;
        for (int index = 0; index < HOPPER_PROBE_CASES; ++index) {
            const ProbeCase c = probe_case(index);
            const int fields[HOPPER_PROBE_CASE_FIELDS] = {c.n,       c.bf16,      c.a_registers,
                                                          c.trans_a, c.swizzle_a, c.trans_b,
                                                          c.swizzle_b, c.chained, c.add_c};
            for (int f = 0; f < HOPPER_PROBE_CASE_FIELDS; ++f) {
                out[HOPPER_PROBE_HEADER + index * HOPPER_PROBE_CASE_FIELDS + f] = (float)fields[f];
            }
        }
    }

    /* wgmma cases: shapes and layouts as the case table says. */
    float *dump = out + HOPPER_PROBE_HEADER + HOPPER_PROBE_CASES * HOPPER_PROBE_CASE_FIELDS;
    probe_wgmma_case<__nv_bfloat16, 8, 0, 0>(0, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 4;
    probe_wgmma_case<__half, 64, 0, 1>(1, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 32;
    probe_wgmma_case<__nv_bfloat16, 256, 0, 0>(2, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 128;
    probe_wgmma_case<__half, 32, 1, 1>(3, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 16;
    probe_wgmma_case<__nv_bfloat16, 16, 0, 0>(4, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 8;
    probe_wgmma_case<__half, 128, 0, 1>(5, dump, t, a_region, b_region, a_start, b_start, planted);
    dump += 128 * 64;

    /* mbarrier phases: parity 1 of a fresh barrier is "the preceding phase", complete at once. */
    if (t == 0 && planted == HOPPER_PROBE_PLANTED_NO_INIT) {
        mbarrier_arrive(tma_bar);
    }
    if (t == 0) {
        mbarrier_init(tma_bar, 1);
        mbarrier_init(phase_bar, 1);
        fence_mbarrier_init();
    }
    __syncthreads();
    if (t == 0) {
        for (int arrivals = 0; arrivals < 3; ++arrivals) {
            dump[2 * arrivals] = mbarrier_test_parity(phase_bar, 0) ? 1.0f : 0.0f;
            dump[2 * arrivals + 1] = mbarrier_test_parity(phase_bar, 1) ? 1.0f : 0.0f;
            if (arrivals < 2) {
                mbarrier_arrive(phase_bar);
            }
        }
    }
    dump += HOPPER_PROBE_PHASES;

    /* TMA: one elected thread expects both boxes' bytes on the barrier and issues the loads. */
    const void *tensor_map = p.q;
    if (t < 32 && elect_one_sync()) {
        mbarrier_arrive_expect_tx(tma_bar, 2 * HOPPER_PROBE_BOX_BYTES);
        tma_load_2d(boxes + (planted == HOPPER_PROBE_PLANTED_UNALIGNED_BOX ? 128 : 0), tensor_map, 0, -4, tma_bar);
        tma_load_2d(boxes + HOPPER_PROBE_BOX_BYTES, tensor_map, 0, HOPPER_PROBE_TMA_ROWS - 8, tma_bar);
    }
    if (planted != HOPPER_PROBE_PLANTED_MISSING_WAIT) {
        mbarrier_wait_parity(tma_bar, planted == HOPPER_PROBE_PLANTED_WRONG_PHASE ? 1u : 0u);
    }
    if (planted == HOPPER_PROBE_PLANTED_NEVER_PHASE) {
        mbarrier_wait_parity(tma_bar, 1u);
    }
    for (int e = t; e < HOPPER_PROBE_TMA; e += 128) {
        const int box = e / (HOPPER_PROBE_BOX_ROWS * HOPPER_PROBE_BOX_COLS);
        const int row = e / HOPPER_PROBE_BOX_COLS % HOPPER_PROBE_BOX_ROWS, col = e % HOPPER_PROBE_BOX_COLS;
        const uint32_t logical = box_start + (uint32_t)box * HOPPER_PROBE_BOX_BYTES + 128u * (uint32_t)row +
                                 2u * (uint32_t)col;
        __half value;
        memcpy(&value, shared + (swizzle_address(logical, 128) - shared_base), sizeof value);
        dump[e] = __half2float(value);
    }
    dump += HOPPER_PROBE_TMA;

    if (planted == HOPPER_PROBE_PLANTED_HALF_GROUP && t >= 64) {
        return;
    }
    probe_tma_mma(dump, t, box_start, planted);
    dump += HOPPER_PROBE_TMA_MMA;

    /* A 3-d box into box 1's space (every thread has read box 1 above), completing phase 1 of the barrier. */
    __syncthreads();
    const uint32_t box3_start = box_start + HOPPER_PROBE_BOX_BYTES;
    if (t < 32 && elect_one_sync()) {
        mbarrier_arrive_expect_tx(tma_bar, HOPPER_PROBE_TMA3D * 2);
        tma_load_3d(boxes + HOPPER_PROBE_BOX_BYTES, p.v, 0, 2, 0, tma_bar);
    }
    mbarrier_wait_parity(tma_bar, 1u);
    for (int e = t; e < HOPPER_PROBE_TMA3D; e += 128) {
        __half value;
        memcpy(&value, shared + (swizzle_address(box3_start + 2u * (uint32_t)e, 64) - shared_base), sizeof value);
        dump[e] = __half2float(value);
    }
    dump += HOPPER_PROBE_TMA3D;

    /* Named barriers: warps 0-1 produce into the A region (free since the wgmma cases), warps 2-3 consume. */
    float *handoff = reinterpret_cast<float *>(a_region);
    if (t < 64) {
        handoff[t] = (float)(1000 + t + 1);
        if (planted != HOPPER_PROBE_PLANTED_NAMED_SKIP) {
            named_barrier_arrive(1, 128);
        }
    } else {
        named_barrier_sync(1, planted == HOPPER_PROBE_PLANTED_NAMED_COUNT ? 96 : 128);
        dump[t - 64] = handoff[t - 64];
    }
    named_barrier_sync(2, 128);
}

} /* namespace hopper_probe_impl */
#endif /* SM90_CODE_COMPILED */

KERNEL_ENTRY(hopper_probe, 128) {
#if SM90_CODE_COMPILED
    hopper_probe_impl::hopper_probe_body(p);
#else
    __trap();
#endif
}
