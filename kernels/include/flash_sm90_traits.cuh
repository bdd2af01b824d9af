/*
 * flash_sm90_traits.cuh - tile sizes, shared-memory plan and wgmma operand descriptors of the sm_90a flash
 * forward (flash_sm90.cu): the one place they are chosen. The Rust launcher reads them from the kernel's
 * registry record (info()).
 *
 * A block is three warpgroups: warpgroup 0 the producer (one elected thread of its first warp issues every
 * TMA load), warpgroups 1 and 2 the consumers, each owning kWarpgroupRows = 64 query rows (one wgmma M).
 * Tiles are 128 query rows by kBlockN keys (128; 80 at head dim 256). Shared memory, from a 1024-byte-aligned
 * base (the 128-byte swizzle repeats every 1024 bytes and acts on absolute addresses):
 *
 *   Q        kBlockM x HEAD_DIM, as HEAD_DIM / 64 column blocks of [kBlockM rows][64 elements] (128-byte rows,
 *            128-byte swizzle): exactly what one TMA box of (64, kBlockM) lands, and the K-major SW128
 *            canonical layout of wgmma (8-row groups 1024 bytes apart)
 *   K, V     kStages stages each, kBlockN x HEAD_DIM in the same column-block layout
 *   mbarriers  q_full, then per stage k_full, k_empty, v_full, v_empty
 *
 * Operands: S = Q K^T takes A = Q (K-major: rows of d) and B = K (K-major: keys are B's N, d its K);
 * O = P V takes A = P from registers and B = V, whose rows are keys (B's K) with d (B's N) contiguous:
 * MN-major, leading byte offset = one column block (kBlockN * 128 bytes), stride byte offset = 8 keys.
 */
#ifndef CUDA_ATTENTION_FLASH_SM90_TRAITS_CUH
#define CUDA_ATTENTION_FLASH_SM90_TRAITS_CUH

#include "device_helpers.cuh"
#include "named_barrier.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"
#include "ptx_sm90_tma4d.cuh"

template <int HEAD_DIM> struct FlashSm90Traits {
    static constexpr int kHeadDim = HEAD_DIM;
    static constexpr int kWarpgroupThreads = 128;
    static constexpr int kConsumerWarpgroups = 2;
    static constexpr int kThreads = (1 + kConsumerWarpgroups) * kWarpgroupThreads;
    static constexpr int kWarpgroupRows = 64; /* wgmma M */
    static constexpr int kBlockM = kConsumerWarpgroups * kWarpgroupRows;
    /* Keys per tile: 128 up to head dim 128; 80 at 256, where Q (64 KiB) and two stages of K and V
     * (4 x 40 KiB) just fit in 227 KiB and O (128 f32 per thread), S (40) and P (20) in 240 registers. */
    static constexpr int kBlockN = HEAD_DIM <= 128 ? 128 : 80;
    static constexpr int kStages = 2;
    /* Elements of one 128-byte swizzled row: the TMA box width and the column-block width. */
    static constexpr int kBoxCols = 64;
    static constexpr int kRowBytes = kBoxCols * 2;
    static constexpr int kColumnBlocks = HEAD_DIM / kBoxCols;
    static constexpr int kSwizzleRepeat = 1024;
    static constexpr int kQBytes = kBlockM * HEAD_DIM * 2;
    static constexpr int kKvTileBytes = kBlockN * HEAD_DIM * 2;
    static constexpr int kQBoxBytes = kBlockM * kRowBytes;
    static constexpr int kKvBoxBytes = kBlockN * kRowBytes;
    static constexpr int kBarriers = 1 + 4 * kStages;
    /* Alignment slack, Q, K and V stages, mbarriers. */
    static constexpr int kSharedBytes = kSwizzleRepeat + kQBytes + 2 * kStages * kKvTileBytes + 8 * kBarriers;
    /* setmaxnreg: 128 x 24 + 256 x 240 = 64512 registers of the 65536 (FA3's split for two consumers). */
    static constexpr int kProducerRegisters = 24;
    static constexpr int kConsumerRegisters = 240;
    /* TMA: global strides multiples of 16 bytes, base addresses 16-byte aligned. */
    static constexpr int kStrideMultiple = 8;
    static constexpr int kBaseAlignment = 16;
    /* Descriptor fields (bytes): K-major SW128 strides 8-row groups by 1024; MN-major V as above. */
    static constexpr uint32_t kKMajorSbo = 8 * kRowBytes;
    static constexpr uint32_t kVLbo = kBlockN * kRowBytes;
    static constexpr uint32_t kVSbo = 8 * kRowBytes;
    /* Ping-pong (flash_sm90.cu, Turns): the consumer warpgroups take turns issuing their wgmmas, on named
     * barriers kTurnBarrier + 0 and + 1 (one per warpgroup; 0 is __syncthreads's, no other id is used in
     * this kernel), each completed by both warpgroups' 256 threads. Up to head dim 128 only, as FA3 tuned
     * it (its UseSchedulerBarrier for 16-bit types): at 256 the softmax of an 80-key tile is small beside
     * the two 256-deep GEMMs and already runs under the warpgroup's own P V. */
    static constexpr bool kPingPong = HEAD_DIM <= 128;
    static constexpr int kTurnBarrier = 1;
    static constexpr int kTurnThreads = kConsumerWarpgroups * kWarpgroupThreads;

    static_assert(HEAD_DIM == 64 || HEAD_DIM == 128 || HEAD_DIM == 256, "head dims 64, 128 and 256");
    static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "S is one m64nNk16 wgmma per k-block");
    static_assert(kQBoxBytes % kSwizzleRepeat == 0 && kKvBoxBytes % kSwizzleRepeat == 0,
                  "every TMA box starts at the swizzle's repeat");
    static_assert(kSharedBytes <= 232448, "sm_90 allows 227 KiB of shared memory per block");
    static_assert(kProducerRegisters * kWarpgroupThreads + kConsumerRegisters * kWarpgroupThreads *
                          kConsumerWarpgroups <= 65536,
                  "the register file holds every warpgroup after setmaxnreg");
    static_assert(kConsumerWarpgroups == 2 && kTurnBarrier >= 1 && kTurnBarrier + 1 <= 15,
                  "two turn barriers among the ids 1..15");

    /* The registry record for element type T: serves head dims above the next smaller instantiation's
     * (1..64, 65..128, 129..256): the TMA box zero-fills the columns past head_dim. */
    static constexpr int kMinHeadDim = HEAD_DIM <= 64 ? 1 : HEAD_DIM / 2 + 1;
    template <typename T> static constexpr KernelInfo info() {
        static_assert(sizeof(T) == 2, "wgmma here takes 2-byte elements");
        return make_kernel_info(KERNEL_FAMILY_FLASH_SM90, kernel_dtype<T>(), kMinHeadDim, HEAD_DIM,
                                kThreads, 1, kBlockM, kBlockN, kSharedBytes, 0, kStrideMultiple, kBaseAlignment);
    }
};

#if SM90_CODE_COMPILED
/* The wgmmas of one element type: S (SS, both K-major) and O += P V (RS, B MN-major). */
template <typename T> struct Sm90Mma;
template <> struct Sm90Mma<__half> {
    template <int N>
    static __device__ __forceinline__ void qk(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        wgmma_ss_f16<N, 0, 0>(d, desc_a, desc_b, accumulate);
    }
    template <int N>
    static __device__ __forceinline__ void pv(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
        wgmma_rs_f16<N, 1>(d, a, desc_b, true);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_half2(lo, hi); }
};
template <> struct Sm90Mma<__nv_bfloat16> {
    template <int N>
    static __device__ __forceinline__ void qk(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        wgmma_ss_bf16<N, 0, 0>(d, desc_a, desc_b, accumulate);
    }
    template <int N>
    static __device__ __forceinline__ void pv(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
        wgmma_rs_bf16<N, 1>(d, a, desc_b, true);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_bfloat162(lo, hi); }
};
#endif /* SM90_CODE_COMPILED */

#endif /* CUDA_ATTENTION_FLASH_SM90_TRAITS_CUH */
