/*
 * ptx.cuh - every piece of inline PTX the kernels use, each behind a small inline helper.
 *
 * Each helper has a device body (inline asm, compiled by nvcc) and a host body that runs the same
 * operation on the CPU emulator (compiled as C++ by g++): warp-wide operations become the emulator's
 * 32-lane meeting points, which also check what the hardware leaves undefined (full mask, one call site,
 * 16-byte-aligned shared-memory rows, cp.async reads before the wait). Kernel files call only these
 * helpers and contain no emulator-specific code.
 *
 * Registers are uint32_t holding two 16-bit values (element 2j in the low half of register j); shared
 * memory is passed as an ordinary pointer (the device body converts it to a shared-window address).
 * Fragment layouts: fragment_layout.h.
 *
 *   mma_m16n8k16_f16 / _bf16   D (16x8 f32) = A (16x16) * B (16x8) + C, sm_80+
 *   ldmatrix_x1/x2/x4[_trans]  one, two or four 8x8 b16 matrices from shared memory into fragments
 *   cp_async_16                16-byte global -> shared copy with zero-fill, landing at a wait
 *   cp_async_16_full           the same copy of all 16 bytes (no source-size operand)
 *   cp_async_commit_group, cp_async_wait_group<N>, cp_async_wait_all
 *   ex2_approx_ftz             2^x (approximate, subnormals flushed)
 *   pack_half2 / pack_bfloat162  two floats rounded into one register
 */
#ifndef CUDA_ATTENTION_PTX_CUH
#define CUDA_ATTENTION_PTX_CUH

#include <stdint.h>
#include <string.h>

#include "device_helpers.cuh"
#include "fragment_layout.h"

/* The host body takes the call site as defaulted trailing parameters; nvcc's bodies take nothing. */
#if defined(__CUDACC__)
#define PTX_SITE_PARAMS
#else
#define PTX_SITE_PARAMS , CUDA_EMU_SITE_PARAMS
#endif

/* ---- Register packing ---------------------------------------------------------------------------- */

/* Two floats rounded to f16 into one register: lo in bits 0-15, hi in bits 16-31. */
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &h, sizeof bits);
    return bits;
}

/* Two floats rounded to bf16 into one register: lo in bits 0-15, hi in bits 16-31. */
__device__ __forceinline__ uint32_t pack_bfloat162(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &h, sizeof bits);
    return bits;
}

/* ---- ex2.approx.ftz.f32 -------------------------------------------------------------------------- */

#if !defined(__CUDACC__)
namespace cuda_emu {
/* Flush a subnormal to a zero of the same sign, as .ftz does on input and output. */
inline float flush_subnormal(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }
} /* namespace cuda_emu */
#endif

/* 2^x with subnormal inputs and results flushed to zero (max relative error 2^-22 on the GPU). */
__device__ __forceinline__ float ex2_approx_ftz(float x) {
#if defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#elif defined(__CUDACC__)
    return exp2f(x); /* nvcc's host pass: never runs */
#else
    return ::cuda_emu::flush_subnormal(exp2f(::cuda_emu::flush_subnormal(x)));
#endif
}

/* ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 ------------------------------ */

/* d = a * b + c for the whole warp (every lane must call it, from the same place, with a full warp).
 * a: 4 registers of A (16x16, row-major), b: 2 registers of B (16x8), c and d: 4 f32 accumulators.
 * d may be the same array as c. */
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4] PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#elif !defined(__CUDACC__)
    ::cuda_emu::mma_m16n8k16(CUDA_EMU_SITE, ::cuda_emu::MmaInput::F16, a, b, c, d);
#endif
}

/* As mma_m16n8k16_f16 with bf16 inputs. */
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4] PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#elif !defined(__CUDACC__)
    ::cuda_emu::mma_m16n8k16(CUDA_EMU_SITE, ::cuda_emu::MmaInput::Bf16, a, b, c, d);
#endif
}

/* ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 ------------------------------------ */
/* Lane 8m + r passes the address of row r of matrix m (16 bytes, 16-byte aligned, in shared memory);
 * .x1 uses the addresses of lanes 0-7, .x2 of lanes 0-15, .x4 of all lanes. Register j of each lane
 * receives matrix j in the fragment layout of fragment_layout.h. */

#if !defined(__CUDACC__)
namespace cuda_emu {
/* Each lane that supplies an address reads its own row here, in the kernel's translation unit, so that
 * the sanitizers see the read as that CUDA thread's; the runtime then hands the rows out. */
inline void ldmatrix_emulated(Site site, int matrices, bool trans, const void *row, uint32_t regs[4],
                              const char *instruction) {
    uint32_t data[4];
    const bool supplies = this_thread().lane < 8u * (unsigned)matrices;
    if (supplies) {
        check_matrix_row(site, row, instruction);
        memcpy(data, row, sizeof data);
    }
    ldmatrix(site, matrices, trans, supplies ? data : nullptr, regs);
}
} /* namespace cuda_emu */
#endif

#if defined(__CUDA_ARCH__)
#define PTX_SHARED_ADDRESS(pointer) static_cast<uint32_t>(__cvta_generic_to_shared(pointer))
#endif

__device__ __forceinline__ void ldmatrix_x1(uint32_t &r0, const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                 : "=r"(r0)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 1, false, smem_row, regs, "ldmatrix.x1");
    r0 = regs[0];
#endif
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t &r0, uint32_t &r1, const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r0), "=r"(r1)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 2, false, smem_row, regs, "ldmatrix.x2");
    r0 = regs[0];
    r1 = regs[1];
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                            const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 4, false, smem_row, regs, "ldmatrix.x4");
    r0 = regs[0];
    r1 = regs[1];
    r2 = regs[2];
    r3 = regs[3];
#endif
}

__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t &r0, const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r0)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 1, true, smem_row, regs, "ldmatrix.x1.trans");
    r0 = regs[0];
#endif
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t &r0, uint32_t &r1,
                                                  const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r0), "=r"(r1)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 2, true, smem_row, regs, "ldmatrix.x2.trans");
    r0 = regs[0];
    r1 = regs[1];
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                                  const void *smem_row PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(PTX_SHARED_ADDRESS(smem_row)));
#elif !defined(__CUDACC__)
    uint32_t regs[4];
    ::cuda_emu::ldmatrix_emulated(CUDA_EMU_SITE, 4, true, smem_row, regs, "ldmatrix.x4.trans");
    r0 = regs[0];
    r1 = regs[1];
    r2 = regs[2];
    r3 = regs[3];
#endif
}

/* ---- cp.async.cg.shared.global (16 bytes), commit_group, wait_group ----------------------------- */

#if !defined(__CUDACC__)
namespace cuda_emu {
/* A queued copy lands here, on the issuing thread's fiber and in the kernel's translation unit (so the
 * sanitizers see the global read and the shared write as that thread's): src_bytes bytes, then zeros. */
inline void land_cp_async(void *shared_dst, const void *global_src, int src_bytes) {
    async_copy_land(shared_dst, global_src, (size_t)src_bytes, 16);
}
} /* namespace cuda_emu */
#endif

/* Starts copying src_bytes (0..16) bytes from global memory to shared memory and zero-fills the rest of
 * the 16 destination bytes; both addresses 16-byte aligned. src_bytes = 0 reads nothing (the usual way to
 * load zeros past the end of a tensor with a clamped, still valid, source pointer). The destination is
 * undefined until a cp_async_wait_group that covers the copy's group: the emulator fills it with NaN
 * bytes until then, and its sanitizers see the destination written by the issuing thread both at the
 * issue and at that wait (emulator/cuda/async_copy.h). */
__device__ __forceinline__ void cp_async_16(void *smem_dst, const void *gmem_src,
                                            int src_bytes = 16 PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(PTX_SHARED_ADDRESS(smem_dst)),
                 "l"(gmem_src), "r"(src_bytes));
#elif !defined(__CUDACC__)
    ::cuda_emu::check_cp_async(CUDA_EMU_SITE, smem_dst, gmem_src, src_bytes);
    ::cuda_emu::async_copy_issue(smem_dst, 16); /* written by the copy from now on: NaN until it lands */
    ::cuda_emu::cp_async_queue(smem_dst, gmem_src, src_bytes);
#endif
}

/* Closes the group of this thread's cp.async copies issued since the last commit (possibly empty). */
__device__ __forceinline__ void cp_async_commit_group() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;\n" ::);
#elif !defined(__CUDACC__)
    ::cuda_emu::cp_async_commit();
#endif
}

/* Waits until at most N of this thread's committed groups are still in flight. Other threads see the
 * copied data only after a barrier that follows their issuers' waits. */
template <int N> __device__ __forceinline__ void cp_async_wait_group() {
    static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif !defined(__CUDACC__)
    ::cuda_emu::cp_async_wait(N, &::cuda_emu::land_cp_async);
#endif
}

/* Commits the open group and waits for every copy of this thread. */
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#elif !defined(__CUDACC__)
    ::cuda_emu::cp_async_commit();
    ::cuda_emu::cp_async_wait(0, &::cuda_emu::land_cp_async);
#endif
}

/* cp_async_16 of all 16 bytes: no source-size operand, so no zero-fill arithmetic around the LDGSTS. */
__device__ __forceinline__ void cp_async_16_full(void *smem_dst, const void *gmem_src PTX_SITE_PARAMS) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(PTX_SHARED_ADDRESS(smem_dst)), "l"(gmem_src));
#elif !defined(__CUDACC__)
    cp_async_16(smem_dst, gmem_src, 16, cuda_emu_file, cuda_emu_line);
#endif
}

#undef PTX_SITE_PARAMS
#if defined(PTX_SHARED_ADDRESS)
#undef PTX_SHARED_ADDRESS
#endif

#endif /* CUDA_ATTENTION_PTX_CUH */
