/*
 * named_barrier.cuh - the 16 hardware barriers of a block by id: bar.sync (arrive and wait) and
 * bar.arrive (arrive only) with a thread count, as warp-specialised kernels synchronise a subset of
 * warps (FlashAttention-3's producer/consumer and ping-pong barriers). Any architecture (sm_70+).
 *
 * id 1..15 (0 is __syncthreads's barrier); `threads` counts every participating thread, a multiple of
 * 32 (whole warps, each with all its lanes). A barrier completes when `threads` threads have arrived;
 * bar.sync callers then go on, bar.arrive callers never wait. Every arrival at one completion must give
 * the same count. The emulator parks waiting threads and reports a count mismatch, an id or count out of
 * range, and a wait that can never complete (emulator/named_barriers.cpp).
 */
#ifndef CUDA_ATTENTION_NAMED_BARRIER_CUH
#define CUDA_ATTENTION_NAMED_BARRIER_CUH

#include "device_helpers.cuh"

#if !defined(__CUDACC__)
#include "hopper_runtime.h" /* emulator/cuda/ */
#define NAMED_BARRIER_SITE_PARAMS , CUDA_EMU_SITE_PARAMS
#else
#define NAMED_BARRIER_SITE_PARAMS
#endif

/* Arrives at barrier `id` and waits until `threads` threads have arrived. */
__device__ __forceinline__ void named_barrier_sync(int id, int threads NAMED_BARRIER_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#elif !defined(__CUDACC__)
    ::cuda_emu::named_barrier(CUDA_EMU_SITE, id, threads, true);
#endif
}

/* Arrives at barrier `id` (counting towards `threads`) without waiting. */
__device__ __forceinline__ void named_barrier_arrive(int id, int threads NAMED_BARRIER_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#elif !defined(__CUDACC__)
    ::cuda_emu::named_barrier(CUDA_EMU_SITE, id, threads, false);
#endif
}

#undef NAMED_BARRIER_SITE_PARAMS

#endif /* CUDA_ATTENTION_NAMED_BARRIER_CUH */
