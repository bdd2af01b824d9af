/*
 * tensor_map.cpp - cuTensorMapEncodeTiled for the emulator: checks the arguments with the driver's rules
 * (cuda.h 13.0; ../shared/reference/hopper-facts.md section 3) and writes the emulator's readable
 * encoding (emulator/cuda/tensor_map.h) into the 128-byte map.
 *
 * Emulated: ranks 1-5, every data type, no interleave, swizzle none/32B/64B/128B, element strides 1,
 * zero fill out of bounds. Refused with a message (the driver would accept them): interleaved layouts,
 * element strides above 1, the 128B swizzles with 32B/64B atomicity, NaN fill.
 */
#include <cstdint>
#include <cstring>
#include <string>

#include "emulator_api.h"
#include "tensor_map.h" /* emulator/cuda/ */

namespace {

int element_bytes(uint32_t data_type) {
    static const int bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
    return data_type < sizeof bytes / sizeof bytes[0] ? bytes[data_type] : 0;
}

/* The reason the arguments are refused, or "" when they are valid. */
std::string check(const void *tensor_map, uint32_t data_type, uint32_t rank, const void *global_address,
                  const uint64_t *global_dim, const uint64_t *global_strides, const uint32_t *box_dim,
                  const uint32_t *element_strides, uint32_t interleave, uint32_t swizzle, uint32_t l2_promotion,
                  uint32_t oob_fill) {
    if (tensor_map == nullptr || (uintptr_t)tensor_map % 64 != 0) {
        return "the tensor map must be a 64-byte-aligned 128-byte buffer";
    }
    const int size = element_bytes(data_type);
    if (size == 0) {
        return "data type " + std::to_string(data_type) + " is not a CUtensorMapDataType (0..12)";
    }
    if (rank < 1 || rank > 5) {
        return "rank " + std::to_string(rank) + " is outside 1..5";
    }
    if (global_dim == nullptr || box_dim == nullptr || element_strides == nullptr ||
        (rank > 1 && global_strides == nullptr)) {
        return "globalDim, globalStrides (rank > 1), boxDim and elementStrides must be given";
    }
    if (global_address == nullptr || (uintptr_t)global_address % 16 != 0) {
        return "the global address must be 16-byte aligned";
    }
    if (interleave != 0) {
        return "interleaved layouts are not emulated (CU_TENSOR_MAP_INTERLEAVE_NONE only)";
    }
    if (swizzle > 3) {
        return "swizzle " + std::to_string(swizzle) + " is not emulated (none, 32B, 64B, 128B)";
    }
    if (l2_promotion > 3) {
        return "L2 promotion " + std::to_string(l2_promotion) + " is outside 0..3";
    }
    if (oob_fill != 0) {
        return "out-of-bounds fill " + std::to_string(oob_fill) + " is not emulated (zeros only)";
    }
    /* Strides need not grow with the dimension: an attention tensor [batch, seq, heads, head_dim] mapped as
     * (head_dim, seq, heads, batch) has a head stride below the seq extent, as FlashAttention-3 maps Q. */
    for (uint32_t d = 0; d < rank; ++d) {
        const std::string dim = "dimension " + std::to_string(d);
        if (global_dim[d] < 1 || global_dim[d] > (1ull << 32)) {
            return dim + ": globalDim " + std::to_string(global_dim[d]) + " is outside 1..2^32";
        }
        if (d > 0) {
            const uint64_t stride = global_strides[d - 1];
            if (stride % 16 != 0 || stride >= (1ull << 40)) {
                return dim + ": globalStrides " + std::to_string(stride) + " is not a multiple of 16 below 2^40";
            }
        }
        if (box_dim[d] < 1 || box_dim[d] > 256) {
            return dim + ": boxDim " + std::to_string(box_dim[d]) + " is outside 1..256";
        }
        if (element_strides[d] != 1) {
            return dim + ": elementStrides " + std::to_string(element_strides[d]) + " is not emulated (1 only)";
        }
    }
    const uint64_t inner_bytes = (uint64_t)box_dim[0] * (uint64_t)size;
    if (inner_bytes % 16 != 0) {
        return "boxDim[0] * element size = " + std::to_string(inner_bytes) + " bytes is not a multiple of 16";
    }
    const uint32_t span = cuda_emu::tensor_map_swizzle_bytes((uint8_t)swizzle);
    if (span != 0 && inner_bytes > span) {
        return "the inner box dimension is " + std::to_string(inner_bytes) + " bytes, more than the " +
               std::to_string(span) + "-byte swizzle span";
    }
    return "";
}

void write_message(const std::string &text, char *message, uint64_t capacity) {
    if (message == nullptr || capacity == 0) {
        return;
    }
    const size_t n = text.size() < capacity - 1 ? text.size() : (size_t)capacity - 1;
    memcpy(message, text.data(), n);
    message[n] = '\0';
}

} /* namespace */

extern "C" int32_t cuda_emu_tensor_map_encode_tiled(void *tensor_map, uint32_t data_type, uint32_t rank,
                                                    const void *global_address, const uint64_t *global_dim,
                                                    const uint64_t *global_strides, const uint32_t *box_dim,
                                                    const uint32_t *element_strides, uint32_t interleave,
                                                    uint32_t swizzle, uint32_t l2_promotion, uint32_t oob_fill,
                                                    char *message, uint64_t message_capacity) {
    const std::string reason = check(tensor_map, data_type, rank, global_address, global_dim, global_strides,
                                     box_dim, element_strides, interleave, swizzle, l2_promotion, oob_fill);
    if (!reason.empty()) {
        write_message("cuTensorMapEncodeTiled: " + reason, message, message_capacity);
        return CUDA_EMU_TENSOR_MAP_INVALID_VALUE;
    }
    cuda_emu::TensorMapFields map;
    memset(&map, 0, sizeof map);
    map.magic = cuda_emu::kTensorMapMagic;
    map.rank = (uint8_t)rank;
    map.data_type = (uint8_t)data_type;
    map.element_bytes = (uint8_t)element_bytes(data_type);
    map.swizzle = (uint8_t)swizzle;
    map.interleave = (uint8_t)interleave;
    map.l2_promotion = (uint8_t)l2_promotion;
    map.oob_fill = (uint8_t)oob_fill;
    map.global_address = (uint64_t)(uintptr_t)global_address;
    map.global_strides[0] = map.element_bytes;
    for (uint32_t d = 0; d < rank; ++d) {
        map.global_dim[d] = global_dim[d];
        map.global_strides[d] = d == 0 ? map.element_bytes : global_strides[d - 1];
        map.box_dim[d] = (uint16_t)box_dim[d];
        map.element_strides[d] = (uint8_t)element_strides[d];
    }
    memset(tensor_map, 0, CUDA_EMU_TENSOR_MAP_BYTES);
    memcpy(tensor_map, &map, sizeof map);
    return CUDA_EMU_TENSOR_MAP_OK;
}
