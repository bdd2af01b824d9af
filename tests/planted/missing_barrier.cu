/*
 * missing_barrier.cu - planted bug: shared memory read by other threads without a __syncthreads between
 * the write and the read (read-after-write), and a tile overwritten while neighbours may still read it
 * (write-after-read). The checking mode's ThreadSanitizer build must report a data race on shared memory
 * for each; the _fixed twins must run clean.
 *
 * Launch: 1 block of 64 threads, 64 * 4 bytes of shared memory; p.q holds 128 floats, p.out 64.
 */
#include "include/device_helpers.cuh"

/* out[t] = in[t + 1 mod 64], through shared memory. */
template <bool FIXED> __device__ void rotate_through_shared(const AttentionParams &p) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    tile[t] = in[t];
    if (FIXED) {
        __syncthreads();
    }
    out[t] = tile[(t + 1) % blockDim.x];
}

/* Two tiles through one buffer: the second load must wait until every thread has read the first. */
template <bool FIXED> __device__ void two_tiles(const AttentionParams &p) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    float sum = 0.0f;
    for (int pass = 0; pass < 2; ++pass) {
        tile[t] = in[pass * 64 + t];
        __syncthreads();
        sum += tile[(t + 1) % blockDim.x];
        if (FIXED) {
            __syncthreads();
        }
    }
    out[t] = sum;
}

KERNEL_ENTRY(planted_missing_barrier, 64) { rotate_through_shared<false>(p); }
KERNEL_ENTRY(planted_missing_barrier_fixed, 64) { rotate_through_shared<true>(p); }
KERNEL_ENTRY(planted_missing_second_barrier, 64) { two_tiles<false>(p); }
KERNEL_ENTRY(planted_missing_second_barrier_fixed, 64) { two_tiles<true>(p); }
