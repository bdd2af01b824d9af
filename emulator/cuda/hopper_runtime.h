/*
 * hopper_runtime.h - the emulator's sm_90a operations, called by the host bodies of ptx_sm90.cuh and
 * named_barrier.cuh, implemented in emulator/hopper.cpp (mbarriers, TMA queues, warpgroup collectives,
 * wgmma) and emulator/named_barriers.cpp.
 *
 * Every function runs on the calling CUDA thread's fiber and may stop the block with an error naming
 * the thread and the call site (never an error code). Shared memory is addressed by shared-window
 * address: the block's dynamic shared memory starts at address 0 on the emulator.
 */
#ifndef CUDA_ATTENTION_EMULATOR_HOPPER_RUNTIME_H
#define CUDA_ATTENTION_EMULATOR_HOPPER_RUNTIME_H

#include <stdint.h>

#include "runtime.h"
#include "tensor_map.h"

namespace cuda_emu {

/* The shared-window address of `pointer`, which must lie inside the block's shared memory. */
uint32_t shared_window_address(Site site, const void *pointer, const char *what);

/* mbarrier.init / arrive / expect_tx / arrive.expect_tx on the 8-byte barrier at `bar`. */
void mbarrier_init(Site site, void *bar, uint32_t count);
void mbarrier_arrive(Site site, void *bar, uint32_t expect_tx_bytes);
void mbarrier_expect_tx(Site site, void *bar, uint32_t bytes);

/* A queued TMA load; `land` writes it into shared memory in the kernel's translation unit. */
struct TmaCopy {
    TensorMapFields map;
    int32_t coords[kTensorMapMaxRank];
    uint32_t dst_address;
    uint32_t bytes;
};
typedef void (*TmaLander)(const TmaCopy &copy);

/* Blocks until the phase of parity `parity` of `bar` has completed (try_wait.parity in a loop). Queued
 * TMA loads land when no thread can run; a deadlock is reported when even that lets no thread continue. */
void mbarrier_wait_parity(Site site, void *bar, uint32_t parity);
/* test_wait.parity: whether that phase has completed, without blocking. */
bool mbarrier_test_parity(Site site, void *bar, uint32_t parity);

/* cp.async.bulk.tensor load: checks the map, the destination (alignment, inside shared memory) and the
 * barrier, and queues the copy on the barrier; `land` writes it later. Returns the box bytes; the caller
 * then poisons the destination (async_copy_issue). */
uint32_t tma_load(Site site, void *dst, const void *tensor_map, const int32_t *coords, int rank, void *bar,
                  TmaLander land);
/* Decodes and checks a tensor map handed to a TMA instruction. */
const TensorMapFields &checked_tensor_map(Site site, const void *tensor_map, int rank);

/* wgmma. Operand types and the layout of one call. */
enum class WgmmaInput { F16 = 0, Bf16 = 1 };
struct WgmmaCall {
    WgmmaInput input;
    int n;            /* 8..256, multiple of 8 */
    bool a_registers; /* A from registers (a[4]) instead of a descriptor */
    int trans_a, trans_b;
    uint64_t desc_a, desc_b;
    int scale_d;
};
void wgmma_fence(Site site);
/* Issues d = A B (+ d when scale_d) for the calling thread's warpgroup; d receives the result at the
 * wgmma_wait_group that covers it (NaN until then). */
void wgmma_mma_async(Site site, const WgmmaCall &call, float *d, const uint32_t *a);
void wgmma_commit_group(Site site);
void wgmma_wait_group(Site site, int pending_allowed);

/* setmaxnreg.{inc,dec}: a meeting of the warpgroup, no effect on the emulator. */
void setmaxnreg(Site site, bool increase, int registers);
/* bar.sync (wait) or bar.arrive (no wait) on named barrier `id` (1..15) counting `threads` threads
 * (emulator/named_barriers.cpp). */
void named_barrier(Site site, int id, int threads, bool wait);
/* elect.sync over the full warp: true on exactly one lane (the lowest). */
bool elect_one(Site site);

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_HOPPER_RUNTIME_H */
