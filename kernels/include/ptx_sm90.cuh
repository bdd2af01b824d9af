/*
 * ptx_sm90.cuh - the sm_90a (Hopper) PTX the kernels use, each behind a small inline helper with a
 * device body (inline asm) and a host body for the CPU emulator, as ptx.cuh does for sm_80.
 *
 * The device bodies exist only when nvcc compiles for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); for any other
 * device architecture a helper is a __trap(), and a kernel built on these helpers compiles its body only
 * where SM90_CODE_COMPILED is 1 (sm_90a and the emulator), so the sm_80 build of the same file stays
 * clean. Host bodies call the emulator's runtime (emulator/cuda/hopper_runtime.h, emulator/hopper.cpp),
 * which checks what the hardware leaves undefined (see docs/emulator.md). Layouts: hopper_layout.h.
 *
 *   shared_address(p)                 the shared-window address of a shared-memory pointer
 *   mbarrier_init(bar, count)         mbarrier.init.shared::cta.b64 (then fence_mbarrier_init + a barrier)
 *   mbarrier_arrive(bar)              mbarrier.arrive.shared::cta.b64
 *   mbarrier_arrive_expect_tx(bar, n) mbarrier.arrive.expect_tx.shared::cta.b64 (n transaction bytes)
 *   mbarrier_wait_parity(bar, parity) mbarrier.try_wait.parity in a loop: returns once the phase of that
 *                                     parity has completed
 *   mbarrier_test_parity(bar, parity) mbarrier.test_wait.parity: that test, once, without blocking
 *   fence_mbarrier_init()             fence.mbarrier_init.release.cluster
 *   fence_proxy_async_shared()        fence.proxy.async.shared::cta (generic-proxy smem writes -> TMA/wgmma)
 *   tma_load_2d / tma_load_3d         cp.async.bulk.tensor.{2d,3d}.shared::cluster.global.mbarrier::
 *                                     complete_tx::bytes: a box of a tensor map (coordinates in elements,
 *                                     dimension 0 first) into shared memory, completing on an mbarrier
 *   wgmma_fence / wgmma_commit_group / wgmma_wait_group<N>
 *   wgmma_ss_{f16,bf16}<N, TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate)
 *                                     wgmma.mma_async.sync.aligned.m64nNk16.f32.T.T, A and B in shared memory
 *   wgmma_rs_{f16,bf16}<N, TRANS_B>(d, a, desc_b, accumulate)
 *                                     the same with A from registers (4 x b32, K-major)
 *                                     N in {8, 16, 32, 64, 80, 128, 256}; d: N / 2 f32 accumulators per
 *                                     thread (80: the d256 flash kernel's key tile)
 *   elect_one_sync()                  elect.sync with a full mask: true on one lane of the warp
 *   setmaxnreg_inc<R>() / setmaxnreg_dec<R>()
 *                                     setmaxnreg.{inc,dec}.sync.aligned.u32 R (24..256, multiple of 8);
 *                                     a checked no-op on the emulator
 *
 * Tensor maps are 64-byte-aligned 128-byte CUtensorMap objects in global (or param) memory: made by the
 * driver's cuTensorMapEncodeTiled for a GPU, by cuda_emu_tensor_map_encode_tiled for the emulator.
 */
#ifndef CUDA_ATTENTION_PTX_SM90_CUH
#define CUDA_ATTENTION_PTX_SM90_CUH

#include <stdint.h>

#include "device_helpers.cuh"
#include "hopper_layout.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PTX_SM90_DEVICE 1
#endif

/* Whether sm_90a code is compiled in this pass: nvcc for sm_90a, nvcc's host pass, the emulator. */
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SM90_CODE_COMPILED 1
#else
#define SM90_CODE_COMPILED 0
#endif

#if !defined(__CUDACC__)
#include "hopper_runtime.h" /* emulator/cuda/ */
#endif

/* The host body takes the call site as defaulted trailing parameters; nvcc's bodies take nothing. */
#if defined(__CUDACC__)
#define PTX_SM90_SITE_PARAMS
#define PTX_SM90_SITE_PARAMS_FIRST
#else
#define PTX_SM90_SITE_PARAMS , CUDA_EMU_SITE_PARAMS
#define PTX_SM90_SITE_PARAMS_FIRST CUDA_EMU_SITE_PARAMS
#endif

/* A device body for an architecture without these instructions. */
#define PTX_SM90_UNSUPPORTED() __trap()

/* ---- Shared-window addresses ---------------------------------------------------------------------- */

__device__ __forceinline__ uint32_t shared_address(const void *pointer PTX_SM90_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
#elif defined(__CUDACC__)
    return 0;
#else
    return ::cuda_emu::shared_window_address(CUDA_EMU_SITE, pointer, "shared_address");
#endif
}

/* ---- mbarrier --------------------------------------------------------------------------------------- */

__device__ __forceinline__ void mbarrier_init(uint64_t *bar, uint32_t count PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count) : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::mbarrier_init(CUDA_EMU_SITE, bar, count);
#endif
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::mbarrier_arrive(CUDA_EMU_SITE, bar, 0);
#endif
}

/* Adds `bytes` to the transaction count of the current phase, then arrives (bytes > 0). */
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t *bar, uint32_t bytes PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)),
                 "r"(bytes)
                 : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::mbarrier_arrive(CUDA_EMU_SITE, bar, bytes);
#endif
}

/* Whether the phase of parity `parity` has completed (the current phase's parity differs), once. */
__device__ __forceinline__ bool mbarrier_test_parity(uint64_t *bar, uint32_t parity PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    uint32_t done;
    asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(shared_address(bar)), "r"(parity)
                 : "memory");
    return done != 0;
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
    return false;
#elif defined(__CUDACC__)
    return false;
#else
    return ::cuda_emu::mbarrier_test_parity(CUDA_EMU_SITE, bar, parity);
#endif
}

/* Returns once the phase of parity `parity` has completed; the TMA data of that phase is then visible. */
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t *bar, uint32_t parity PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    uint32_t done = 0;
    while (done == 0) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(shared_address(bar)), "r"(parity)
                     : "memory");
    }
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::mbarrier_wait_parity(CUDA_EMU_SITE, bar, parity);
#endif
}

/* Makes mbarrier.init visible to the async proxy (TMA) and other threads; follow it with a barrier. */
__device__ __forceinline__ void fence_mbarrier_init() {
#if defined(PTX_SM90_DEVICE)
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#endif
}

/* Orders this thread's generic-proxy shared-memory accesses before later async-proxy ones (TMA, wgmma). */
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(PTX_SM90_DEVICE)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#endif
}

/* ---- TMA tile loads --------------------------------------------------------------------------------- */

#if !defined(__CUDACC__)
namespace cuda_emu {
/* A queued TMA load lands here, in the kernel's translation unit (see tensor_map.h). */
inline void land_tma(const TmaCopy &copy) {
    tensor_map_land_box(copy.map, copy.coords, this_thread().shared_memory, copy.dst_address);
}
inline void tma_load_emulated(Site site, void *smem_dst, const void *tensor_map, const int32_t *coords, int rank,
                              uint64_t *bar) {
    const uint32_t bytes = tma_load(site, smem_dst, tensor_map, coords, rank, bar, &land_tma);
    async_copy_issue(smem_dst, bytes); /* written by the copy from now on: NaN until it lands */
}
} /* namespace cuda_emu */
#endif

/* Loads the box at (c0, c1) of a 2-d tensor map into shared memory; completes `bytes` of box on `bar`. */
__device__ __forceinline__ void tma_load_2d(void *smem_dst, const void *tensor_map, int32_t c0, int32_t c1,
                                            uint64_t *bar PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], "
                 "[%2];\n" ::"r"(shared_address(smem_dst)),
                 "l"(tensor_map), "r"(shared_address(bar)), "r"(c0), "r"(c1)
                 : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    const int32_t coords[2] = {c0, c1};
    ::cuda_emu::tma_load_emulated(CUDA_EMU_SITE, smem_dst, tensor_map, coords, 2, bar);
#endif
}

/* The same for a 3-d tensor map (e.g. a 128-byte-wide slice of a wider row, for head dims past 64). */
__device__ __forceinline__ void tma_load_3d(void *smem_dst, const void *tensor_map, int32_t c0, int32_t c1,
                                            int32_t c2, uint64_t *bar PTX_SM90_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, "
                 "%5}], [%2];\n" ::"r"(shared_address(smem_dst)),
                 "l"(tensor_map), "r"(shared_address(bar)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    const int32_t coords[3] = {c0, c1, c2};
    ::cuda_emu::tma_load_emulated(CUDA_EMU_SITE, smem_dst, tensor_map, coords, 3, bar);
#endif
}

/* ---- wgmma: fence, commit, wait ---------------------------------------------------------------------- */

/* Orders this thread's earlier accesses to accumulator and A registers before the next wgmma. */
__device__ __forceinline__ void wgmma_fence(PTX_SM90_SITE_PARAMS_FIRST) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_fence(CUDA_EMU_SITE);
#endif
}

/* Closes the group of this thread's wgmmas issued since the last commit (possibly empty). */
__device__ __forceinline__ void wgmma_commit_group(PTX_SM90_SITE_PARAMS_FIRST) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_commit_group(CUDA_EMU_SITE);
#endif
}

/* Waits until at most N of this thread's committed groups are pending; their accumulators are then
 * written. Fence (wgmma_fence) again before the next wgmma touches registers read or written since. */
template <int N> __device__ __forceinline__ void wgmma_wait_group(PTX_SM90_SITE_PARAMS_FIRST) {
    static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
#if defined(PTX_SM90_DEVICE)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_wait_group(CUDA_EMU_SITE, N);
#endif
}

/* ---- wgmma.mma_async m64nNk16, f16/bf16 inputs, f32 accumulators -------------------------------------- */

#if defined(PTX_SM90_DEVICE)
/* Register lists of the accumulator operands ("%0, ..., %(N/2 - 1)"), one per supported N. */
#define WGMMA_D_REGS_4 "%0, %1, %2, %3"
#define WGMMA_D_REGS_8 "%0, %1, %2, %3, %4, %5, %6, %7"
#define WGMMA_D_REGS_16 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define WGMMA_D_REGS_32 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WGMMA_D_REGS_40 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39"
#define WGMMA_D_REGS_64 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_D_REGS_128 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

/* The matching "+f" constraint lists. */
#define WGMMA_OUT4(o) "+f"(d[(o) + 0]), "+f"(d[(o) + 1]), "+f"(d[(o) + 2]), "+f"(d[(o) + 3])
#define WGMMA_OUT8(o) WGMMA_OUT4(o), WGMMA_OUT4((o) + 4)
#define WGMMA_OUT16(o) WGMMA_OUT8(o), WGMMA_OUT8((o) + 8)
#define WGMMA_OUT32(o) WGMMA_OUT16(o), WGMMA_OUT16((o) + 16)
#define WGMMA_OUT64(o) WGMMA_OUT32(o), WGMMA_OUT32((o) + 32)
#define WGMMA_OUT128(o) WGMMA_OUT64(o), WGMMA_OUT64((o) + 64)
#define WGMMA_D_OUT_4 WGMMA_OUT4(0)
#define WGMMA_D_OUT_8 WGMMA_OUT8(0)
#define WGMMA_D_OUT_16 WGMMA_OUT16(0)
#define WGMMA_D_OUT_32 WGMMA_OUT32(0)
#define WGMMA_D_OUT_40 WGMMA_OUT32(0), WGMMA_OUT8(32)
#define WGMMA_D_OUT_64 WGMMA_OUT64(0)
#define WGMMA_D_OUT_128 WGMMA_OUT128(0)

/* The asm of one shape; HALF = N / 2 accumulators, H0..H6 the operand numbers that follow them. SS: desc_a H0,
 * desc_b H1, scale_d H2, trans_a H3, trans_b H4. RS: a0..a3 H0..H3, desc_b H4, scale_d H5, trans_b H6. */
#define WGMMA_ASM_SS(N, T, HALF, H0, H1, H2, H3, H4)                                                        \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #H2 ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N            \
                 "k16.f32." T "." T " {" WGMMA_D_REGS_##HALF "}, %" #H0 ", %" #H1 ", p, 1, 1, %" #H3 ", %" #H4 ";\n}\n"         \
                 : WGMMA_D_OUT_##HALF                                                                                           \
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B))
#define WGMMA_ASM_RS(N, T, HALF, H0, H1, H2, H3, H4, H5, H6)                                                \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #H5 ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N            \
                 "k16.f32." T "." T " {" WGMMA_D_REGS_##HALF "}, {%" #H0 ", %" #H1 ", %" #H2 ", %" #H3 "}, %" #H4                  \
                 ", p, 1, 1, %" #H6 ";\n}\n"                                                                       \
                 : WGMMA_D_OUT_##HALF                                                                                           \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TRANS_B))

template <int N> struct WgmmaAsm;
#define WGMMA_DEFINE_SHAPE(N, HALF, H0, H1, H2, H3, H4, H5, H6)                                              \
    template <> struct WgmmaAsm<N> {                                                                               \
        template <int TRANS_A, int TRANS_B>                                                                        \
        static __device__ __forceinline__ void ss_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,         \
                                                      uint32_t scale_d) {                                          \
            WGMMA_ASM_SS(N, "f16", HALF, H0, H1, H2, H3, H4);                                                 \
        }                                                                                                          \
        template <int TRANS_A, int TRANS_B>                                                                        \
        static __device__ __forceinline__ void ss_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,        \
                                                       uint32_t scale_d) {                                         \
            WGMMA_ASM_SS(N, "bf16", HALF, H0, H1, H2, H3, H4);                                                \
        }                                                                                                          \
        template <int TRANS_B>                                                                                     \
        static __device__ __forceinline__ void rs_f16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,  \
                                                      uint32_t scale_d) {                                          \
            WGMMA_ASM_RS(N, "f16", HALF, H0, H1, H2, H3, H4, H5, H6);                                         \
        }                                                                                                          \
        template <int TRANS_B>                                                                                     \
        static __device__ __forceinline__ void rs_bf16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, \
                                                       uint32_t scale_d) {                                         \
            WGMMA_ASM_RS(N, "bf16", HALF, H0, H1, H2, H3, H4, H5, H6);                                        \
        }                                                                                                          \
    };

WGMMA_DEFINE_SHAPE(8, 4, 4, 5, 6, 7, 8, 9, 10)
WGMMA_DEFINE_SHAPE(16, 8, 8, 9, 10, 11, 12, 13, 14)
WGMMA_DEFINE_SHAPE(32, 16, 16, 17, 18, 19, 20, 21, 22)
WGMMA_DEFINE_SHAPE(64, 32, 32, 33, 34, 35, 36, 37, 38)
WGMMA_DEFINE_SHAPE(80, 40, 40, 41, 42, 43, 44, 45, 46)
WGMMA_DEFINE_SHAPE(128, 64, 64, 65, 66, 67, 68, 69, 70)
WGMMA_DEFINE_SHAPE(256, 128, 128, 129, 130, 131, 132, 133, 134)
#endif /* PTX_SM90_DEVICE */

/* N (8..256, a multiple of 8) with a device body above. */
template <int N> struct WgmmaShapeSupported {
    static constexpr bool value = N == 8 || N == 16 || N == 32 || N == 64 || N == 80 || N == 128 || N == 256;
};

#if !defined(__CUDACC__)
namespace cuda_emu {
inline WgmmaCall wgmma_call(WgmmaInput input, int n, bool a_registers, int trans_a, int trans_b, uint64_t desc_a,
                            uint64_t desc_b, bool accumulate) {
    WgmmaCall call{};
    call.input = input;
    call.n = n;
    call.a_registers = a_registers;
    call.trans_a = trans_a;
    call.trans_b = trans_b;
    call.desc_a = desc_a;
    call.desc_b = desc_b;
    call.scale_d = accumulate ? 1 : 0;
    return call;
}
} /* namespace cuda_emu */
#endif

/* d (64 x N, this thread's N/2 f32 in the layout of hopper_layout.h) = A B (+ d when accumulate), A (64 x 16)
 * and B (16 x N) in shared memory described by desc_a and desc_b; TRANS_A/TRANS_B: 0 K-major, 1 MN-major.
 * Every thread of the warpgroup calls it with the same descriptors; d is undefined until a
 * wgmma_wait_group covers the group (the emulator writes NaN until then). */
template <int N, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_ss_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                             bool accumulate PTX_SM90_SITE_PARAMS) {
    static_assert(WgmmaShapeSupported<N>::value, "wgmma N: 8, 16, 32, 64, 80, 128 or 256");
#if defined(PTX_SM90_DEVICE)
    WgmmaAsm<N>::template ss_f16<TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate ? 1u : 0u);
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_mma_async(CUDA_EMU_SITE,
                                ::cuda_emu::wgmma_call(::cuda_emu::WgmmaInput::F16, N, false, TRANS_A, TRANS_B,
                                                       desc_a, desc_b, accumulate),
                                d, nullptr);
#endif
}

template <int N, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_ss_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                              bool accumulate PTX_SM90_SITE_PARAMS) {
    static_assert(WgmmaShapeSupported<N>::value, "wgmma N: 8, 16, 32, 64, 80, 128 or 256");
#if defined(PTX_SM90_DEVICE)
    WgmmaAsm<N>::template ss_bf16<TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate ? 1u : 0u);
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_mma_async(CUDA_EMU_SITE,
                                ::cuda_emu::wgmma_call(::cuda_emu::WgmmaInput::Bf16, N, false, TRANS_A, TRANS_B,
                                                       desc_a, desc_b, accumulate),
                                d, nullptr);
#endif
}

/* As wgmma_ss_*, with A (64 x 16, K-major) from registers: a[r] holds elements 2r (low) and 2r + 1. */
template <int N, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_rs_f16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                             bool accumulate PTX_SM90_SITE_PARAMS) {
    static_assert(WgmmaShapeSupported<N>::value, "wgmma N: 8, 16, 32, 64, 80, 128 or 256");
#if defined(PTX_SM90_DEVICE)
    WgmmaAsm<N>::template rs_f16<TRANS_B>(d, a, desc_b, accumulate ? 1u : 0u);
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_mma_async(
        CUDA_EMU_SITE,
        ::cuda_emu::wgmma_call(::cuda_emu::WgmmaInput::F16, N, true, 0, TRANS_B, 0, desc_b, accumulate), d, a);
#endif
}

template <int N, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_rs_bf16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                              bool accumulate PTX_SM90_SITE_PARAMS) {
    static_assert(WgmmaShapeSupported<N>::value, "wgmma N: 8, 16, 32, 64, 80, 128 or 256");
#if defined(PTX_SM90_DEVICE)
    WgmmaAsm<N>::template rs_bf16<TRANS_B>(d, a, desc_b, accumulate ? 1u : 0u);
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::wgmma_mma_async(
        CUDA_EMU_SITE,
        ::cuda_emu::wgmma_call(::cuda_emu::WgmmaInput::Bf16, N, true, 0, TRANS_B, 0, desc_b, accumulate), d, a);
#endif
}

/* ---- elect.sync, setmaxnreg ---------------------------------------------------------------------------- */

/* True on exactly one lane of the (full) warp. */
__device__ __forceinline__ bool elect_one_sync(PTX_SM90_SITE_PARAMS_FIRST) {
#if defined(PTX_SM90_DEVICE)
    uint32_t elected;
    asm volatile("{\n.reg .pred p;\n.reg .b32 r;\nelect.sync r|p, 0xffffffff;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(elected));
    return elected != 0;
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
    return false;
#elif defined(__CUDACC__)
    return false;
#else
    return ::cuda_emu::elect_one(CUDA_EMU_SITE);
#endif
}

/* Raises this warpgroup's per-thread register limit to R (all four warps call it). */
template <int R> __device__ __forceinline__ void setmaxnreg_inc(PTX_SM90_SITE_PARAMS_FIRST) {
    static_assert(R >= 24 && R <= 256 && R % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#if defined(PTX_SM90_DEVICE)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::setmaxnreg(CUDA_EMU_SITE, true, R);
#endif
}

/* Lowers it to R. */
template <int R> __device__ __forceinline__ void setmaxnreg_dec(PTX_SM90_SITE_PARAMS_FIRST) {
    static_assert(R >= 24 && R <= 256 && R % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#if defined(PTX_SM90_DEVICE)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
#elif defined(__CUDA_ARCH__)
    PTX_SM90_UNSUPPORTED();
#elif !defined(__CUDACC__)
    ::cuda_emu::setmaxnreg(CUDA_EMU_SITE, false, R);
#endif
}

#undef PTX_SM90_SITE_PARAMS
#undef PTX_SM90_SITE_PARAMS_FIRST
#undef PTX_SM90_UNSUPPORTED

#endif /* CUDA_ATTENTION_PTX_SM90_CUH */
