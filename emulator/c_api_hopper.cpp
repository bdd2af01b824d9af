/*
 * c_api_hopper.cpp - the sm_90a layout functions of emulator_api.h (hopper_layout.h, exposed so that the
 * tests can hold them to the PTX ISA's statements and CuTe's layouts). The tensor-map encoder is in
 * tensor_map.cpp.
 */
#include "emulator_api.h"
#include "hopper_layout.h"

extern "C" int32_t cuda_emu_wgmma_fragment_element(uint32_t fragment, uint32_t thread, uint32_t element,
                                                   uint32_t *row, uint32_t *col) {
    if (thread >= 128 || row == nullptr || col == nullptr) {
        return -1;
    }
    const int t = static_cast<int>(thread), i = static_cast<int>(element);
    switch (fragment) {
    case CUDA_EMU_WGMMA_FRAGMENT_D:
        if (element >= 128)
            return -1;
        *row = static_cast<uint32_t>(wgmma_d_row(t, i));
        *col = static_cast<uint32_t>(wgmma_d_col(t, i));
        return 0;
    case CUDA_EMU_WGMMA_FRAGMENT_A:
        if (element >= 8)
            return -1;
        *row = static_cast<uint32_t>(wgmma_a_row(t, i));
        *col = static_cast<uint32_t>(wgmma_a_col(t, i));
        return 0;
    default: return -1;
    }
}

extern "C" uint32_t cuda_emu_swizzle_address(uint32_t address, uint32_t span) {
    return swizzle_address(address, span);
}

extern "C" uint64_t cuda_emu_wgmma_descriptor(uint32_t start_address, uint32_t leading_byte_offset,
                                              uint32_t stride_byte_offset, uint32_t swizzle_mode) {
    return wgmma_descriptor(start_address, leading_byte_offset, stride_byte_offset, static_cast<int>(swizzle_mode));
}

extern "C" uint32_t cuda_emu_wgmma_operand_address(uint64_t descriptor, uint32_t mn_major, uint32_t mn, uint32_t k) {
    return wgmma_operand_address(descriptor, static_cast<int>(mn_major), static_cast<int>(mn), static_cast<int>(k));
}
