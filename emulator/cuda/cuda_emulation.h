/*
 * cuda_emulation.h - what a host C++ compiler needs to compile the kernel files (kernels/NAME.cu) for
 * the CPU emulator.
 *
 * device_helpers.cuh includes this instead of the CUDA headers when the compiler is not nvcc. It gives:
 *   - the CUDA qualifiers (__global__, __device__, __shared__, __launch_bounds__, __align__, ...);
 *   - threadIdx, blockIdx, blockDim, gridDim and warpSize, read from the fiber that runs the CUDA thread;
 *   - __syncthreads (and _count/_and/_or), __syncwarp, __shfl_*_sync, __ballot_sync, __any_sync,
 *     __all_sync, each recording its call site (file:line) for the emulator's error messages;
 *   - __half / __nv_bfloat16 and their conversions (fp16.h), CUDA's vector types (vector_types.h);
 *   - the math intrinsics and integer min/max that device code may use, and atomics;
 *   - the writes of asynchronous copies into shared memory (async_copy.h), for ptx.cuh's cp.async;
 *   - KERNEL_ENTRY(name, max_threads): a host function registered under `name` so that the emulator
 *     (and through it Rust) can launch the kernel by its exported name; ATTENTION_KERNEL also records the
 *     kernel's launch facts in the registry Rust reads (kernel_registry.h).
 *
 * The semantics are CUDA's, checked where a CPU can check them: see emulator/runtime.cpp for what a
 * barrier or a warp collective verifies. Static __shared__ arrays map to one thread_local array per host
 * thread, which runs one block at a time; they are neither exact-size nor poisoned, which is why the
 * project's kernels use dynamic shared memory only (device_helpers.cuh).
 */
#ifndef CUDA_ATTENTION_EMULATOR_CUDA_EMULATION_H
#define CUDA_ATTENTION_EMULATOR_CUDA_EMULATION_H

#if defined(__CUDACC__)
#error "cuda_emulation.h is for host compilers; nvcc uses the CUDA headers"
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "async_copy.h"
#include "attention_params.h"
#include "fp16.h"
#include "runtime.h"
#include "vector_types.h"

/* ---- Qualifiers ---------------------------------------------------------------------------------- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#define __constant__
#define __shared__ thread_local

/* ---- Thread and block indices -------------------------------------------------------------------- */

#define threadIdx (::cuda_emu::this_thread().thread_idx)
#define blockIdx (::cuda_emu::this_thread().block_idx)
#define blockDim (::cuda_emu::this_thread().block_dim)
#define gridDim (::cuda_emu::this_thread().grid_dim)
#define warpSize 32

/* ---- Kernel entry points ------------------------------------------------------------------------- */

#define KERNEL_ENTRY(name, max_threads)                                                                            \
    static void name(const AttentionParams p);                                                                     \
    static const ::cuda_emu::KernelRegistration cuda_emu_registration_##name(#name, (max_threads), &name);         \
    static void name(const AttentionParams p)

/* ATTENTION_KERNEL(name, max_threads, info...): KERNEL_ENTRY plus the kernel's registry record. */
#define ATTENTION_KERNEL(name, max_threads, ...)                                                                   \
    static const ::cuda_emu::KernelInfoRegistration cuda_emu_info_##name(#name, (max_threads), __VA_ARGS__);       \
    KERNEL_ENTRY(name, max_threads)

/* ---- Barriers ------------------------------------------------------------------------------------ */

#define CUDA_EMU_SITE_PARAMS const char *cuda_emu_file = __builtin_FILE(), int cuda_emu_line = __builtin_LINE()
#define CUDA_EMU_SITE (::cuda_emu::Site{cuda_emu_file, cuda_emu_line})

inline void __syncthreads(CUDA_EMU_SITE_PARAMS) {
    ::cuda_emu::sync_threads(CUDA_EMU_SITE, ::cuda_emu::BarrierReduce::None, 0);
}
inline int __syncthreads_count(int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::sync_threads(CUDA_EMU_SITE, ::cuda_emu::BarrierReduce::Count, predicate != 0);
}
inline int __syncthreads_and(int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::sync_threads(CUDA_EMU_SITE, ::cuda_emu::BarrierReduce::And, predicate != 0);
}
inline int __syncthreads_or(int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::sync_threads(CUDA_EMU_SITE, ::cuda_emu::BarrierReduce::Or, predicate != 0);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, CUDA_EMU_SITE_PARAMS) {
    ::cuda_emu::sync_warp(CUDA_EMU_SITE, mask);
}

/* Within one block the emulator's threads interleave only at barriers and collectives, and blocks on
 * different host threads share memory like any two host threads: a fence is a host fence. */
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer does not model fences (gcc warns); it sees the ordering of barriers and atomics. */
#define CUDA_EMU_FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#else
#define CUDA_EMU_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif
inline void __threadfence() { CUDA_EMU_FENCE(); }
inline void __threadfence_block() { CUDA_EMU_FENCE(); }
[[noreturn]] inline void __trap(CUDA_EMU_SITE_PARAMS) { ::cuda_emu::fail(CUDA_EMU_SITE, "__trap() called"); }

/* ---- Warp collectives ---------------------------------------------------------------------------- */

namespace cuda_emu {
template <typename T> inline uint64_t to_lane_bits(T value) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "shuffles move values of at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    return bits;
}
template <typename T> inline T from_lane_bits(uint64_t bits) {
    T value;
    memcpy(&value, &bits, sizeof(T));
    return value;
}
} /* namespace cuda_emu */

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::from_lane_bits<T>(::cuda_emu::shuffle(CUDA_EMU_SITE, ::cuda_emu::Shuffle::Index, mask,
                                                             ::cuda_emu::to_lane_bits(var), src_lane, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::from_lane_bits<T>(::cuda_emu::shuffle(CUDA_EMU_SITE, ::cuda_emu::Shuffle::Up, mask,
                                                             ::cuda_emu::to_lane_bits(var), (int)delta, width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::from_lane_bits<T>(::cuda_emu::shuffle(CUDA_EMU_SITE, ::cuda_emu::Shuffle::Down, mask,
                                                             ::cuda_emu::to_lane_bits(var), (int)delta, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::from_lane_bits<T>(::cuda_emu::shuffle(CUDA_EMU_SITE, ::cuda_emu::Shuffle::Xor, mask,
                                                             ::cuda_emu::to_lane_bits(var), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::ballot(CUDA_EMU_SITE, mask, predicate);
}
inline int __any_sync(unsigned mask, int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::ballot(CUDA_EMU_SITE, mask, predicate) != 0;
}
inline int __all_sync(unsigned mask, int predicate, CUDA_EMU_SITE_PARAMS) {
    return ::cuda_emu::ballot(CUDA_EMU_SITE, mask, predicate) == mask;
}

/* ---- Math intrinsics ----------------------------------------------------------------------------- */

inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline float __int_as_float(int x) { return ::cuda_emu::bits_to_float((uint32_t)x); }
inline int __float_as_int(float x) { return (int)::cuda_emu::float_to_bits(x); }
inline float __uint_as_float(unsigned x) { return ::cuda_emu::bits_to_float(x); }
inline unsigned __float_as_uint(float x) { return ::cuda_emu::float_to_bits(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <typename T> inline T __ldg(const T *address) { return *address; }

/* CUDA's device-side min/max: overloaded for every arithmetic type; floats behave as fminf/fmaxf. */
template <typename A, typename B,
          typename = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type R;
    if (std::is_floating_point<R>::value) {
        return (R)fmin((double)a, (double)b);
    }
    return (R)a < (R)b ? (R)a : (R)b;
}
template <typename A, typename B,
          typename = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type R;
    if (std::is_floating_point<R>::value) {
        return (R)fmax((double)a, (double)b);
    }
    return (R)a > (R)b ? (R)a : (R)b;
}

/* ---- Atomics (real host atomics: blocks run in parallel on host threads) ------------------------- */

template <typename T> inline T atomicAdd(T *address, T value) {
    static_assert(std::is_integral<T>::value, "integer atomicAdd");
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline float atomicAdd(float *address, float value) {
    uint32_t *bits = reinterpret_cast<uint32_t *>(address);
    uint32_t old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(bits, &old,
                                        ::cuda_emu::float_to_bits(::cuda_emu::bits_to_float(old) + value), false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return ::cuda_emu::bits_to_float(old);
}
template <typename T> inline T atomicMax(T *address, T value) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old < value &&
           !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T> inline T atomicMin(T *address, T value) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old > value &&
           !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T> inline T atomicExch(T *address, T value) {
    return __atomic_exchange_n(address, value, __ATOMIC_RELAXED);
}
template <typename T> inline T atomicCAS(T *address, T compare, T value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}

#endif /* CUDA_ATTENTION_EMULATOR_CUDA_EMULATION_H */
