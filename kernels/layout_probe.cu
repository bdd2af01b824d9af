/*
 * layout_probe.cu - dumps the register layouts of ldmatrix and mma.sync m16n8k16 as the hardware (or the
 * CPU emulator) produces them, so the two can be compared value by value.
 *
 * One warp, grid 1, block 32, LAYOUT_PROBE_SHARED_BYTES of dynamic shared memory; it reads no input and
 * writes LAYOUT_PROBE_VALUES floats to p.out. Every value is a small integer, exact in f16, bf16 and f32
 * and independent of the order of any sum, so a GPU and the emulator must agree bit for bit:
 *
 *   [0..4)     header: version, value count, shared bytes, 0
 *   ldmatrix   6 variants (x1, x2, x4, then the same .trans) x 32 lanes x 8 halves: shared memory holds
 *              four 8x8 matrices with M_m[r][c] = 64m + 8r + c + 1, lane l gives the address of row l % 8
 *              of matrix l / 8; each register half is dumped as its 16-bit integer (0 where unused).
 *   mma        f16 then bf16, 32 lanes x 4 accumulators of D = A B + C, with A, B, C small integer
 *              matrices placed into registers by fragment_layout.h's tables. If those tables are the
 *              hardware's, the dump is the plain product placed by the C table.
 *   mma_ldsm   f16 then bf16: the FlashAttention-2 path, A (16x16 row-major) through ldmatrix.x4 and B
 *              (stored k-major, 16 rows of 8) through ldmatrix.x2.trans, then mma; 32 x 4 accumulators.
 *   cp_async   three 16-byte copies of 8 halves with src_bytes 16, 8 and 0; the 24 landed halves.
 *
 * Run by tests/emulator_layouts.rs on the emulator (against the plain product and, once a GPU has run it,
 * the golden dump tests/golden/layout_probe.txt) and on a GPU when one is present.
 */
#include "include/device_helpers.cuh"
#include "include/ptx.cuh"

#define LAYOUT_PROBE_VERSION 1
#define LAYOUT_PROBE_HEADER 4
#define LAYOUT_PROBE_LDMATRIX (6 * 32 * 8)
#define LAYOUT_PROBE_MMA (2 * 32 * 4)
#define LAYOUT_PROBE_MMA_LDSM (2 * 32 * 4)
#define LAYOUT_PROBE_CP_ASYNC 24
#define LAYOUT_PROBE_VALUES                                                                                        \
    (LAYOUT_PROBE_HEADER + LAYOUT_PROBE_LDMATRIX + LAYOUT_PROBE_MMA + LAYOUT_PROBE_MMA_LDSM + LAYOUT_PROBE_CP_ASYNC)
/* Shared memory: 4 8x8 matrices (512 B), A 16x16 (512 B), B 16x8 (256 B), 3 cp.async chunks (48 B). */
#define LAYOUT_PROBE_SHARED_BYTES (512 + 512 + 256 + 48)
/* p.out also serves as the cp.async source: 16 halves after the dump, 16-byte aligned. */
#define LAYOUT_PROBE_SOURCE_FLOATS 8

/* The probe's matrices: small integers, so every product and sum is exact. */
__device__ __forceinline__ float probe_a(int row, int col) { return (float)((row * 16 + col) * 7 % 13 - 6); }
__device__ __forceinline__ float probe_b(int k, int n) { return (float)((k * 8 + n) * 5 % 11 - 5); }
__device__ __forceinline__ float probe_c(int row, int col) { return (float)(row - col); }

template <typename T> __device__ __forceinline__ uint16_t probe_bits(float x) {
    const T h = from_float<T>(x);
    uint16_t bits;
    memcpy(&bits, &h, sizeof bits);
    return bits;
}

template <typename T>
__device__ __forceinline__ void probe_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void probe_mma<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    const float c[4] = {d[0], d[1], d[2], d[3]};
    mma_m16n8k16_f16(d, a, b, c);
}
template <>
__device__ __forceinline__ void probe_mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
    const float c[4] = {d[0], d[1], d[2], d[3]};
    mma_m16n8k16_bf16(d, a, b, c);
}

/* D = A B + C with the operands placed by the tables of fragment_layout.h. */
template <typename T> __device__ void probe_mma_from_tables(float *out, int lane) {
    uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float d[4];
    for (int i = 0; i < 8; ++i) {
        a[i / 2] |= (uint32_t)probe_bits<T>(probe_a(mma_a_row(lane, i), mma_a_col(lane, i))) << (16 * (i % 2));
    }
    for (int i = 0; i < 4; ++i) {
        b[i / 2] |= (uint32_t)probe_bits<T>(probe_b(mma_b_k(lane, i), mma_b_n(lane, i))) << (16 * (i % 2));
        d[i] = probe_c(mma_c_row(lane, i), mma_c_col(lane, i));
    }
    probe_mma<T>(d, a, b);
    for (int i = 0; i < 4; ++i) {
        out[lane * 4 + i] = d[i];
    }
}

/* The same product with A and B loaded from shared memory by ldmatrix, as a flash kernel loads them. */
template <typename T> __device__ void probe_mma_from_shared(float *out, int lane, T *a_tile, T *b_tile) {
    for (int e = lane; e < 16 * 16; e += WARP_SIZE) {
        a_tile[e] = from_float<T>(probe_a(e / 16, e % 16)); // [16 rows][16 cols]
    }
    for (int e = lane; e < 16 * 8; e += WARP_SIZE) {
        b_tile[e] = from_float<T>(probe_b(e / 8, e % 8)); // [16 k][8 n]
    }
    __syncwarp();
    uint32_t a[4], b[2];
    float d[4];
    /* A: lanes 0-15 give rows 0-15 at column 0, lanes 16-31 the same rows at column 8. */
    ldmatrix_x4(a[0], a[1], a[2], a[3], a_tile + (lane % 16) * 16 + (lane / 16) * 8);
    /* B: lanes 0-15 give k rows 0-15; .trans turns the k-major rows into the "col" operand. */
    ldmatrix_x2_trans(b[0], b[1], b_tile + (lane % 16) * 8);
    for (int i = 0; i < 4; ++i) {
        d[i] = probe_c(mma_c_row(lane, i), mma_c_col(lane, i));
    }
    probe_mma<T>(d, a, b);
    for (int i = 0; i < 4; ++i) {
        out[lane * 4 + i] = d[i];
    }
    __syncwarp();
}

KERNEL_ENTRY(layout_probe, 32) {
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    unsigned char *shared = dynamic_shared<unsigned char>();
    uint16_t *matrices = reinterpret_cast<uint16_t *>(shared);      // [4][8][8]
    __half *a_f16 = reinterpret_cast<__half *>(shared + 512);       // [16][16]
    __half *b_f16 = reinterpret_cast<__half *>(shared + 1024);      // [16][8]
    uint16_t *landed = reinterpret_cast<uint16_t *>(shared + 1280); // [3][8]

    if (lane == 0) {
        out[0] = LAYOUT_PROBE_VERSION;
        out[1] = LAYOUT_PROBE_VALUES;
        out[2] = LAYOUT_PROBE_SHARED_BYTES;
        out[3] = 0;
    }

    /* ldmatrix: every variant from the same four matrices. */
    for (int e = lane; e < 4 * 64; e += WARP_SIZE) {
        matrices[e] = (uint16_t)(e + 1);
    }
    __syncwarp();
    const uint16_t *row = matrices + (lane / 8) * 64 + (lane % 8) * 8;
    float *dump = out + LAYOUT_PROBE_HEADER;
    for (int variant = 0; variant < 6; ++variant) {
        uint32_t r[4] = {0, 0, 0, 0};
        switch (variant) {
        case 0: ldmatrix_x1(r[0], row); break;
        case 1: ldmatrix_x2(r[0], r[1], row); break;
        case 2: ldmatrix_x4(r[0], r[1], r[2], r[3], row); break;
        case 3: ldmatrix_x1_trans(r[0], row); break;
        case 4: ldmatrix_x2_trans(r[0], r[1], row); break;
        default: ldmatrix_x4_trans(r[0], r[1], r[2], r[3], row); break;
        }
        for (int j = 0; j < 4; ++j) {
            dump[(variant * 32 + lane) * 8 + 2 * j] = (float)(r[j] & 0xffffu);
            dump[(variant * 32 + lane) * 8 + 2 * j + 1] = (float)(r[j] >> 16);
        }
    }

    /* mma from the layout tables, f16 then bf16. */
    float *mma = dump + LAYOUT_PROBE_LDMATRIX;
    probe_mma_from_tables<__half>(mma, lane);
    probe_mma_from_tables<__nv_bfloat16>(mma + 32 * 4, lane);

    /* mma from shared memory through ldmatrix, f16 then bf16 (the tiles reuse the same bytes). */
    float *mma_ldsm = mma + LAYOUT_PROBE_MMA;
    probe_mma_from_shared<__half>(mma_ldsm, lane, a_f16, b_f16);
    probe_mma_from_shared<__nv_bfloat16>(mma_ldsm + 32 * 4, lane, reinterpret_cast<__nv_bfloat16 *>(a_f16),
                                         reinterpret_cast<__nv_bfloat16 *>(b_f16));

    /* cp.async: 16 halves of source after the dump (written here, then made visible to the warp). */
    uint16_t *source = reinterpret_cast<uint16_t *>(out + LAYOUT_PROBE_VALUES);
    if (lane < 16) {
        source[lane] = (uint16_t)(1000 + lane);
    }
    __threadfence_block();
    __syncwarp();
    if (lane < 3) {
        const int src_bytes = lane == 0 ? 16 : (lane == 1 ? 8 : 0);
        cp_async_16(landed + lane * 8, source + (lane % 2) * 8, src_bytes);
        cp_async_commit_group();
        cp_async_wait_group<0>();
    }
    __syncwarp();
    float *copies = mma_ldsm + LAYOUT_PROBE_MMA_LDSM;
    if (lane < 24) {
        copies[lane] = (float)landed[lane];
    }
}
