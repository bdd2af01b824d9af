/*
 * fragment_layout.h - which matrix element each lane holds in the warp-level fragments of
 * mma.sync.m16n8k16 and ldmatrix.m8n8 (PTX ISA; ../shared/reference/kernel-facts.md).
 *
 * One definition for three users: kernels (to know, e.g., the row of an accumulator element when
 * masking), the CPU emulator's mma and ldmatrix (emulator/collectives.cpp), and the layout self-checks
 * (tests/emulator_layouts.rs compares these tables with the PTX formulas and with CuTe's layouts, and
 * kernels/layout_probe.cu with a real GPU).
 *
 * Notation: lane in 0..31, group = lane / 4, thread_in_group = lane % 4. A fragment element index i
 * counts 16-bit values (or f32 accumulators) in register order: element 2j is the low half of register
 * j, element 2j + 1 its high half.
 *
 *   A (16 x 16, row-major, 8 halves in 4 registers):  row = group + 8 * bit1(i)
 *                                                      col = 2 * thread_in_group + bit0(i) + 8 * bit2(i)
 *   B (16 x 8, k x n, 4 halves in 2 registers):        k   = 2 * thread_in_group + bit0(i) + 8 * bit1(i)
 *                                                      n   = group
 *   C, D (16 x 8 f32, 4 accumulators):                 row = group + 8 * bit1(i)
 *                                                      col = 2 * thread_in_group + bit0(i)
 *   ldmatrix: register j of lane holds matrix j's      row = lane / 4, col = 2 * (lane % 4) + half
 *             (.trans: row and col swapped)
 */
#ifndef CUDA_ATTENTION_FRAGMENT_LAYOUT_H
#define CUDA_ATTENTION_FRAGMENT_LAYOUT_H

#if defined(__CUDACC__)
#define FRAGMENT_LAYOUT_FN __host__ __device__ __forceinline__ constexpr
#else
#define FRAGMENT_LAYOUT_FN inline constexpr
#endif

/* mma.sync.m16n8k16 A operand: element i (0..7) of lane. */
FRAGMENT_LAYOUT_FN int mma_a_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
FRAGMENT_LAYOUT_FN int mma_a_col(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * ((i >> 2) & 1); }

/* mma.sync.m16n8k16 B operand ("col"): element i (0..3) of lane is B[k][n]. */
FRAGMENT_LAYOUT_FN int mma_b_k(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * ((i >> 1) & 1); }
FRAGMENT_LAYOUT_FN int mma_b_n(int lane, int i) { return (lane >> 2) + 0 * i; }

/* mma.sync.m16n8k16 C and D accumulators: element i (0..3) of lane. */
FRAGMENT_LAYOUT_FN int mma_c_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
FRAGMENT_LAYOUT_FN int mma_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

/* ldmatrix.m8n8: half h (0 low, 1 high) of register j holds element (row, col) of matrix j. */
FRAGMENT_LAYOUT_FN int ldmatrix_row(int lane, int half, bool trans) {
    return trans ? 2 * (lane & 3) + half : lane >> 2;
}
FRAGMENT_LAYOUT_FN int ldmatrix_col(int lane, int half, bool trans) {
    return trans ? lane >> 2 : 2 * (lane & 3) + half;
}

/* ldmatrix: the lane whose address gives row r of matrix j. */
FRAGMENT_LAYOUT_FN int ldmatrix_address_lane(int matrix, int row) { return 8 * matrix + row; }

#undef FRAGMENT_LAYOUT_FN

#endif /* CUDA_ATTENTION_FRAGMENT_LAYOUT_H */
