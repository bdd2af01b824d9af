/*
 * flash_traits.cuh - tile sizes and the tensor-core product of the flash family (mma.sync m16n8k16), shared
 * by every flash-family kernel: the one place the tiles are chosen.
 *
 * Four warps per block. Head dims up to 128 give each warp 32 query rows (two 16-row m-tiles: every K and V
 * fragment read from shared memory feeds two mma), wider ones 16 (the O accumulators of 32 rows x 160+
 * columns do not fit in a thread's 255 registers). Key tiles have 64 rows up to head dim 64 and 32 beyond
 * (S accumulators of 32 rows x 64 keys on top of 32 x 96+ O accumulators spill). Shared memory holds one Q,
 * one K and one V tile of 2-byte elements, rows padded by 8 elements (16 bytes: the 8 rows of every ldmatrix
 * land in 8 different bank groups). Head dims are instantiated in steps of kHeadDimStep; smaller ones are
 * zero-padded on load.
 */
#ifndef CUDA_ATTENTION_FLASH_TRAITS_CUH
#define CUDA_ATTENTION_FLASH_TRAITS_CUH

#include "device_helpers.cuh"
#include "ptx.cuh"

template <int HEAD_DIM> struct FlashTraits {
    static constexpr int kHeadDimStep = 32;
    static_assert(HEAD_DIM % kHeadDimStep == 0 && HEAD_DIM <= MAX_HEAD_DIM, "unsupported head dim");
    static constexpr bool kNarrow = HEAD_DIM <= 128;
    static constexpr int kHeadDim = HEAD_DIM;
    static constexpr int kWarps = 4;
    static constexpr int kThreads = kWarps * WARP_SIZE;
    static constexpr int kWarpRows = kNarrow ? 32 : 16;
    static constexpr int kMTiles = kWarpRows / 16; /* 16-row mma tiles per warp */
    static constexpr int kBlockM = kWarps * kWarpRows;
    static constexpr int kBlockN = HEAD_DIM <= 64 ? 64 : 32;
    static constexpr int kNTiles = kBlockN / 8;  /* 8-key accumulator tiles of S */
    static constexpr int kKChunks = kBlockN / 16; /* 16-key chunks of P (A operands of P V) */
    static constexpr int kDTiles = HEAD_DIM / 8;  /* 8-column accumulator tiles of O */
    static constexpr int kRowPadding = 8;
    static constexpr int kRowStride = HEAD_DIM + kRowPadding; /* elements; 16 bytes of padding per row */
    static constexpr int kChunksPerRow = HEAD_DIM / 8;        /* 16-byte chunks */
    static constexpr int kSharedBytes = (kBlockM + 2 * kBlockN) * kRowStride * 2;
    /* cp.async moves 16 bytes: q, k, v strides in multiples of 8 elements, base addresses 16-byte aligned. */
    static constexpr int kStrideMultiple = 8;
    static constexpr int kBaseAlignment = 16;
    static_assert(kWarpRows % 16 == 0, "warps own whole 16-row mma tiles");
    static_assert(kRowPadding * 2 == 16, "ldmatrix rows must stay 16-byte aligned and change bank group");
    static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "mma tiles are 16 deep");
    static_assert(kBlockN * kChunksPerRow % kThreads == 0 && kBlockM * kChunksPerRow % kThreads == 0,
                  "every thread copies the same number of 16-byte chunks of a tile");

    /* The registry record of the instantiation for element type T and a KERNEL_FAMILY_FLASH* family. */
    template <typename T> static constexpr KernelInfo info(int family) {
        static_assert(sizeof(T) == 2, "the tensor-core kernel takes 2-byte elements");
        return make_kernel_info(family, kernel_dtype<T>(), HEAD_DIM - kHeadDimStep + 1, HEAD_DIM,
                                kThreads, 1, kBlockM, kBlockN, kSharedBytes, 0, kStrideMultiple, kBaseAlignment);
    }
};

/* Register packing and tensor-core product per input dtype. */
template <typename T> struct MmaOps;
template <> struct MmaOps<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_half2(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        mma_m16n8k16_f16(d, a, b, d);
    }
};
template <> struct MmaOps<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_bfloat162(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
        mma_m16n8k16_bf16(d, a, b, d);
    }
};

#endif /* CUDA_ATTENTION_FLASH_TRAITS_CUH */
