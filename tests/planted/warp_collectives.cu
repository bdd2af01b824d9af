/*
 * warp_collectives.cu - planted bugs in warp-level code. The emulator itself must stop each with an error
 * naming the call site; the _fixed twins must run clean.
 *   planted_divergent_shuffle   the two half-warps call __shfl_xor_sync from two different places
 *   planted_partial_mask        a full-warp mask while half of the warp has already returned
 *
 * Launch: 1 block of 32 threads, no shared memory; p.q holds 32 floats, p.out 32.
 */
#include "include/device_helpers.cuh"

KERNEL_ENTRY(planted_divergent_shuffle, 32) {
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    float x = in[lane];
    if (lane < 16) {
        x += __shfl_xor_sync(FULL_WARP_MASK, x, 1);
    } else {
        x -= __shfl_xor_sync(FULL_WARP_MASK, x, 1);
    }
    out[lane] = x;
}

KERNEL_ENTRY(planted_divergent_shuffle_fixed, 32) {
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    float x = in[lane];
    const float other = __shfl_xor_sync(FULL_WARP_MASK, x, 1);
    x += lane < 16 ? other : -other;
    out[lane] = x;
}

KERNEL_ENTRY(planted_partial_mask, 32) {
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    if (lane >= 16) {
        return;
    }
    out[lane] = warp_sum(in[lane]);
}

KERNEL_ENTRY(planted_partial_mask_fixed, 32) {
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    const float total = warp_sum(lane < 16 ? in[lane] : 0.0f);
    if (lane < 16) {
        out[lane] = total;
    }
}
