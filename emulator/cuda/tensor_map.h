/*
 * tensor_map.h - the emulator's readable encoding of a CUDA tensor map (CUtensorMap, 128 opaque bytes),
 * and the landing of a TMA tile load (cp.async.bulk.tensor) into shared memory.
 *
 * On a GPU the driver's cuTensorMapEncodeTiled fills the 128 bytes and the kernel hands their address to
 * cp.async.bulk.tensor. On the emulator the encode function (emulator/tensor_map.cpp, C API
 * cuda_emu_tensor_map_encode_tiled) validates the same arguments with the driver's rules and writes this
 * struct instead; the kernel's TMA load (ptx_sm90.cuh) reads it back. The enum values are the driver's.
 *
 * A tile load copies the box whose first element is at `coords` (elements, dimension 0 innermost) into
 * shared memory densely (dimension 0 fastest), each byte at swizzle(destination + dense offset) on the
 * absolute shared address; box elements outside the tensor are zeros. It lands when no thread of the
 * block can run (emulator/hopper.cpp), on the thread that ran out of work, through async_copy.h's
 * announcements (0xff at the issue, the data at the landing).
 */
#ifndef CUDA_ATTENTION_EMULATOR_TENSOR_MAP_H
#define CUDA_ATTENTION_EMULATOR_TENSOR_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "async_copy.h"
#include "hopper_layout.h" /* kernels/include/ */

namespace cuda_emu {

/* "TMAP" little-endian: written by the encode function, checked by every load. */
constexpr uint32_t kTensorMapMagic = 0x50414d54u;
constexpr int kTensorMapMaxRank = 5;

/* CUtensorMapSwizzle values. */
enum TensorMapSwizzle : uint8_t { TmaSwizzleNone = 0, TmaSwizzle32B = 1, TmaSwizzle64B = 2, TmaSwizzle128B = 3 };

struct TensorMapFields {
    uint32_t magic;
    uint8_t rank;          /* 1..5 */
    uint8_t data_type;     /* CUtensorMapDataType */
    uint8_t element_bytes; /* 1, 2, 4 or 8 */
    uint8_t swizzle;       /* CUtensorMapSwizzle: 0 none, 1 32B, 2 64B, 3 128B */
    uint8_t interleave;    /* CUtensorMapInterleave (always 0 here) */
    uint8_t l2_promotion;  /* CUtensorMapL2promotion (no effect on the emulator) */
    uint8_t oob_fill;      /* CUtensorMapFloatOOBfill (always 0: zeros) */
    uint8_t reserved0;
    uint64_t global_address;
    uint64_t global_dim[kTensorMapMaxRank];     /* elements */
    uint64_t global_strides[kTensorMapMaxRank]; /* bytes; [0] is the element size (implicit in the driver) */
    uint16_t box_dim[kTensorMapMaxRank];        /* elements, 1..256 */
    uint8_t element_strides[kTensorMapMaxRank]; /* 1..8 */
    uint8_t reserved1;
};
static_assert(sizeof(TensorMapFields) <= 128, "a tensor map is 128 bytes");

/* The swizzle span in bytes of a CUtensorMapSwizzle value (0: none). */
inline uint32_t tensor_map_swizzle_bytes(uint8_t swizzle) {
    return swizzle == TmaSwizzle128B ? 128u : (swizzle == TmaSwizzle64B ? 64u : (swizzle == TmaSwizzle32B ? 32u : 0u));
}

/* Bytes of one box. */
inline uint32_t tensor_map_box_bytes(const TensorMapFields &map) {
    uint32_t bytes = map.element_bytes;
    for (int d = 0; d < map.rank; ++d) {
        bytes *= map.box_dim[d];
    }
    return bytes;
}

/* Lands the box at `coords` into shared memory: `shared_base` is the block's shared memory (shared
 * address 0) and `dst_address` the box's shared address. Runs in the kernel's translation unit, on the
 * thread the runtime lands the copy on, so the sanitizers see the reads and writes as that thread's. */
inline void tensor_map_land_box(const TensorMapFields &map, const int32_t *coords, unsigned char *shared_base,
                                uint32_t dst_address) {
    const uint32_t span = tensor_map_swizzle_bytes(map.swizzle);
    const uint32_t box_bytes = tensor_map_box_bytes(map);
    const uint32_t elements = box_bytes / map.element_bytes;
    for (uint32_t e = 0; e < elements; ++e) {
        uint32_t rest = e;
        bool inside = true;
        uint64_t source_offset = 0;
        for (int d = 0; d < map.rank; ++d) {
            const int64_t c = (int64_t)coords[d] + (int64_t)(rest % map.box_dim[d]);
            rest /= map.box_dim[d];
            inside = inside && c >= 0 && (uint64_t)c < map.global_dim[d];
            source_offset += inside ? (uint64_t)c * map.global_strides[d] : 0;
        }
        const uint32_t logical = dst_address + e * map.element_bytes;
        unsigned char *target = shared_base + swizzle_address(logical, span);
        if (inside) {
            const unsigned char *source = (const unsigned char *)(uintptr_t)map.global_address + source_offset;
            announce_async_read(source, map.element_bytes);
            announce_async_write(target, map.element_bytes);
            memcpy(target, source, map.element_bytes);
        } else {
            announce_async_write(target, map.element_bytes);
            memset(target, 0, map.element_bytes);
        }
    }
}

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_TENSOR_MAP_H */
