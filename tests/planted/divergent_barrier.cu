/*
 * divergent_barrier.cu - planted bugs: __syncthreads in divergent code. The emulator itself (any build)
 * must stop each with an error naming the barrier's call site; the _fixed twins must run clean.
 *   planted_divergent_barrier     the two halves of the block reach two different __syncthreads
 *   planted_early_return          threads past the data return before a barrier the others wait at
 *
 * Launch: 1 block of 64 threads, 64 * 4 bytes of shared memory; p.q holds 64 floats, p.out 64;
 * p.seq_q = 40 (the number of valid elements).
 */
#include "include/device_helpers.cuh"

KERNEL_ENTRY(planted_divergent_barrier, 64) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    if (t < 32) {
        tile[t] = 2.0f * in[t];
        __syncthreads();
    } else {
        tile[t] = in[t];
        __syncthreads();
    }
    out[t] = tile[63 - t];
}

KERNEL_ENTRY(planted_divergent_barrier_fixed, 64) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    tile[t] = t < 32 ? 2.0f * in[t] : in[t];
    __syncthreads();
    out[t] = tile[63 - t];
}

KERNEL_ENTRY(planted_early_return, 64) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    if (t >= p.seq_q) {
        return;
    }
    tile[t] = in[t];
    __syncthreads();
    out[t] = tile[p.seq_q - 1 - t];
}

KERNEL_ENTRY(planted_early_return_fixed, 64) {
    float *tile = dynamic_shared<float>();
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int t = threadIdx.x;
    if (t < p.seq_q) {
        tile[t] = in[t];
    }
    __syncthreads();
    if (t < p.seq_q) {
        out[t] = tile[p.seq_q - 1 - t];
    }
}
