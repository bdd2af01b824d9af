/*
 * cp_async_before_wait.cu - planted bug: shared memory read after cp.async was issued and before the
 * cp_async_wait_group that lands it. The emulator keeps the destination poisoned (NaN bytes) until the
 * wait, so the output holds NaN; the _fixed twin waits first and its output holds none.
 *
 * Launch: 1 block of 32 threads, 32 * 16 bytes of shared memory; p.q holds 256 floats, p.out 256.
 */
#include "include/device_helpers.cuh"
#include "include/ptx.cuh"

template <bool FIXED> __device__ void copy_through_shared(const AttentionParams &p) {
    float *tile = dynamic_shared<float>(); // [32 chunks][4 floats]
    const float *in = static_cast<const float *>(p.q);
    float *out = static_cast<float *>(p.out);
    const int lane = threadIdx.x;
    for (int half = 0; half < 2; ++half) {
        cp_async_16(tile + lane * 4, in + half * 128 + lane * 4);
        cp_async_commit_group();
        if (FIXED) {
            cp_async_wait_group<0>();
        }
        for (int j = 0; j < 4; ++j) {
            out[half * 128 + lane * 4 + j] = tile[lane * 4 + j];
        }
        cp_async_wait_group<0>();
    }
}

KERNEL_ENTRY(planted_cp_async_before_wait, 32) { copy_through_shared<false>(p); }
KERNEL_ENTRY(planted_cp_async_before_wait_fixed, 32) { copy_through_shared<true>(p); }
