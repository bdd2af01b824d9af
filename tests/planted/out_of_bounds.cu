/*
 * out_of_bounds.cu - planted bugs: an off-by-one read past the end of a global buffer, and an off-by-one
 * write past the end of dynamic shared memory. The checking mode's AddressSanitizer build must report a
 * heap-buffer-overflow for each (the checker's buffers and the emulator's shared memory are exact-size);
 * the _fixed twins must run clean.
 *
 * Launch: 1 block of 64 threads, 64 * 4 bytes of shared memory; p.q holds 64 floats, p.out 64.
 */
#include "include/device_helpers.cuh"

/* out[t] = in[t] + in[t + 1], the last element without a neighbour. */
template <bool FIXED> __device__ void neighbour_sum(const AttentionParams &p) {
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    const int n = blockDim.x;
    const float next = (FIXED && t + 1 >= n) ? 0.0f : in[t + 1];
    out[t] = in[t] + next;
}

/* Each thread stores its value one slot to the right in shared memory. */
template <bool FIXED> __device__ void shift_through_shared(const AttentionParams &p) {
    float *tile = dynamic_shared<float>(); // [blockDim.x]
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    const int n = blockDim.x;
    const int slot = FIXED ? (t + 1) % n : t + 1;
    tile[slot] = in[t];
    __syncthreads();
    out[t] = tile[t];
}

KERNEL_ENTRY(planted_global_out_of_bounds, 64) { neighbour_sum<false>(p); }
KERNEL_ENTRY(planted_global_out_of_bounds_fixed, 64) { neighbour_sum<true>(p); }
KERNEL_ENTRY(planted_shared_out_of_bounds, 64) { shift_through_shared<false>(p); }
KERNEL_ENTRY(planted_shared_out_of_bounds_fixed, 64) { shift_through_shared<true>(p); }
