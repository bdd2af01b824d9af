/*
 * hopper_layout.h - the sm_90a layouts: wgmma register fragments, shared-memory matrix descriptors,
 * the canonical operand layouts they describe, and the shared-memory swizzle that TMA and wgmma share
 * (PTX ISA 9.7.15.5.1-2 and 5.5.7; ../shared/reference/hopper-facts.md sections 1-3).
 *
 * One definition for three users, as fragment_layout.h for sm_80: kernels (to place and read
 * fragments), the CPU emulator's wgmma and TMA (emulator/hopper.cpp, emulator/cuda/tensor_map.h), and
 * the self-checks (tests/emulator_hopper.rs holds these against the PTX statements and CuTe's layouts,
 * kernels/hopper_probe.cu against a GPU).
 *
 * Notation: t = thread in the warpgroup (0..127), w = t / 32, g = (t % 32) / 4, q = t % 4.
 *
 *   D (64 x N f32, m64nNk16), register i in 0..N/2:  row = 16 w + g + 8 bit1(i)
 *                                                     col = 8 (i / 4) + 2 q + bit0(i)
 *   A from registers (64 x 16, 16-bit), element j     row = 16 w + g + 8 bit1(j)
 *   in 0..8 (j / 2 = register, j % 2 = half):         col = 8 bit2(j) + 2 q + bit0(j)
 *
 * Descriptor (64 bits): start address (addr & 0x3FFFF) >> 4 in bits 0-13, leading-dimension byte offset
 * (LBO) >> 4 in 16-29, stride-dimension byte offset (SBO) >> 4 in 32-45, base offset in 49-51, swizzle
 * mode in 62-63 (0 none, 1 128B, 2 64B, 3 32B). Addresses are shared-window addresses.
 *
 * Canonical layouts, 16-bit elements, S = swizzle span in bytes (128, 64, 32): byte address of element
 * (mn, k) of one wgmma operand (M or N rows by 16 k), before the swizzle:
 *   K-major,  swizzled:  start + (mn % 8) S + (mn / 8) SBO + 2 k
 *   K-major,  none:      start + (mn % 8) 16 + (mn / 8) SBO + 2 (k % 8) + (k / 8) LBO
 *   MN-major, swizzled:  start + 2 (mn % (S / 2)) + (mn / (S / 2)) LBO + (k % 8) S + (k / 8) SBO
 *   MN-major, none:      start + 2 (mn % 8) + (mn / 8) SBO + (k % 8) 16 + (k / 8) LBO
 * then physical = swizzle(address): bits 4-6 (128B), 4-5 (64B) or 4 (32B) XOR bits 7-9, 7-8 or 7 of the
 * absolute shared address, repeating every 1024, 512 or 256 bytes (swizzled buffers are aligned to that).
 */
#ifndef CUDA_ATTENTION_HOPPER_LAYOUT_H
#define CUDA_ATTENTION_HOPPER_LAYOUT_H

#include <stdint.h>

#if defined(__CUDACC__)
#define HOPPER_LAYOUT_FN __host__ __device__ __forceinline__ constexpr
#else
#define HOPPER_LAYOUT_FN inline constexpr
#endif

/* Swizzle modes as the wgmma descriptor encodes them (TMA's CUtensorMapSwizzle numbers differ). */
#define WGMMA_SWIZZLE_NONE 0
#define WGMMA_SWIZZLE_128B 1
#define WGMMA_SWIZZLE_64B 2
#define WGMMA_SWIZZLE_32B 3

/* The swizzle span in bytes of a descriptor mode (0 for none). */
HOPPER_LAYOUT_FN uint32_t wgmma_swizzle_bytes(int mode) {
    return mode == WGMMA_SWIZZLE_128B ? 128u
                                      : (mode == WGMMA_SWIZZLE_64B ? 64u : (mode == WGMMA_SWIZZLE_32B ? 32u : 0u));
}

/* The physical byte address of logical shared address `address` under a swizzle of `span` bytes
 * (128, 64, 32; anything else: no swizzle). */
HOPPER_LAYOUT_FN uint32_t swizzle_address(uint32_t address, uint32_t span) {
    return span == 128u ? address ^ (((address >> 7) & 7u) << 4)
                        : (span == 64u ? address ^ (((address >> 7) & 3u) << 4)
                                       : (span == 32u ? address ^ (((address >> 7) & 1u) << 4) : address));
}

/* wgmma m64nNk16 f32 accumulator: register i of warpgroup thread t. */
HOPPER_LAYOUT_FN int wgmma_d_row(int t, int i) { return 16 * (t >> 5) + ((t & 31) >> 2) + 8 * ((i >> 1) & 1); }
HOPPER_LAYOUT_FN int wgmma_d_col(int t, int i) { return 8 * (i >> 2) + 2 * (t & 3) + (i & 1); }

/* wgmma A operand from registers (64 x 16, 16-bit): element j (0..7) of warpgroup thread t. */
HOPPER_LAYOUT_FN int wgmma_a_row(int t, int j) { return 16 * (t >> 5) + ((t & 31) >> 2) + 8 * ((j >> 1) & 1); }
HOPPER_LAYOUT_FN int wgmma_a_col(int t, int j) { return 8 * ((j >> 2) & 1) + 2 * (t & 3) + (j & 1); }

/* A shared-memory matrix descriptor from its fields (byte values; the >> 4 encoding is done here). */
HOPPER_LAYOUT_FN uint64_t wgmma_descriptor(uint32_t start_address, uint32_t leading_byte_offset,
                                           uint32_t stride_byte_offset, int swizzle_mode) {
    return (uint64_t)((start_address & 0x3FFFFu) >> 4) | ((uint64_t)((leading_byte_offset & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((stride_byte_offset & 0x3FFFFu) >> 4) << 32) | ((uint64_t)(swizzle_mode & 3) << 62);
}

/* The fields of a descriptor, in bytes. */
HOPPER_LAYOUT_FN uint32_t wgmma_descriptor_start(uint64_t desc) { return (uint32_t)(desc & 0x3FFFu) << 4; }
HOPPER_LAYOUT_FN uint32_t wgmma_descriptor_lbo(uint64_t desc) { return (uint32_t)((desc >> 16) & 0x3FFFu) << 4; }
HOPPER_LAYOUT_FN uint32_t wgmma_descriptor_sbo(uint64_t desc) { return (uint32_t)((desc >> 32) & 0x3FFFu) << 4; }
HOPPER_LAYOUT_FN int wgmma_descriptor_base_offset(uint64_t desc) { return (int)((desc >> 49) & 7u); }
HOPPER_LAYOUT_FN int wgmma_descriptor_swizzle(uint64_t desc) { return (int)(desc >> 62); }

/* The logical (unswizzled) byte address of element (mn, k), k in 0..15, of a 16-bit wgmma operand that
 * `desc` describes; mn_major: the operand's transpose flag (1 = MN-major). */
HOPPER_LAYOUT_FN uint32_t wgmma_operand_logical_address(uint64_t desc, int mn_major, int mn, int k) {
    const uint32_t span = wgmma_swizzle_bytes(wgmma_descriptor_swizzle(desc));
    const uint32_t lbo = wgmma_descriptor_lbo(desc), sbo = wgmma_descriptor_sbo(desc);
    const uint32_t m = (uint32_t)mn, kk = (uint32_t)k;
    uint32_t offset = 0;
    if (mn_major == 0 && span != 0u) {
        offset = (m % 8u) * span + (m / 8u) * sbo + 2u * kk;
    } else if (mn_major == 0) {
        offset = (m % 8u) * 16u + (m / 8u) * sbo + 2u * (kk % 8u) + (kk / 8u) * lbo;
    } else if (span != 0u) {
        offset = 2u * (m % (span / 2u)) + (m / (span / 2u)) * lbo + (kk % 8u) * span + (kk / 8u) * sbo;
    } else {
        offset = 2u * (m % 8u) + (m / 8u) * sbo + 16u * (kk % 8u) + (kk / 8u) * lbo;
    }
    return wgmma_descriptor_start(desc) + offset;
}

/* The physical shared address of that element. */
HOPPER_LAYOUT_FN uint32_t wgmma_operand_address(uint64_t desc, int mn_major, int mn, int k) {
    return swizzle_address(wgmma_operand_logical_address(desc, mn_major, mn, k),
                           wgmma_swizzle_bytes(wgmma_descriptor_swizzle(desc)));
}

#endif /* CUDA_ATTENTION_HOPPER_LAYOUT_H */
