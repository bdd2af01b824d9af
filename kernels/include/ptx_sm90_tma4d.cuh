/*
 * ptx_sm90_tma4d.cuh - the 4-d TMA tile load, beside ptx_sm90.cuh's 2-d and 3-d ones (same device body
 * pattern, same emulator path): cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.
 * The flash sm_90a kernel addresses q, k and v as (head_dim, seq, heads, batch) boxes with it, so that rows
 * past a sequence's end are zero-filled per (batch, head) by the TMA unit itself.
 */
#ifndef CUDA_ATTENTION_PTX_SM90_TMA4D_CUH
#define CUDA_ATTENTION_PTX_SM90_TMA4D_CUH

#include "ptx_sm90.cuh"

#if defined(__CUDACC__)
#define PTX_SM90_TMA4D_SITE_PARAMS
#else
#define PTX_SM90_TMA4D_SITE_PARAMS , CUDA_EMU_SITE_PARAMS
#endif

/* Loads the box at (c0, c1, c2, c3) (elements, dimension 0 first) of a 4-d tensor map into shared memory;
 * the box's bytes complete on `bar`. */
__device__ __forceinline__ void tma_load_4d(void *smem_dst, const void *tensor_map, int32_t c0, int32_t c1,
                                            int32_t c2, int32_t c3, uint64_t *bar PTX_SM90_TMA4D_SITE_PARAMS) {
#if defined(PTX_SM90_DEVICE)
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, "
                 "%5, %6}], [%2];\n" ::"r"(shared_address(smem_dst)),
                 "l"(tensor_map), "r"(shared_address(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                 : "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#elif !defined(__CUDACC__)
    const int32_t coords[4] = {c0, c1, c2, c3};
    ::cuda_emu::tma_load_emulated(CUDA_EMU_SITE, smem_dst, tensor_map, coords, 4, bar);
#endif
}

#undef PTX_SM90_TMA4D_SITE_PARAMS

#endif /* CUDA_ATTENTION_PTX_SM90_TMA4D_CUH */
