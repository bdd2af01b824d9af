/*
 * c_api.cpp - the C API of emulator_api.h over the C++ runtime. No C++ exception crosses it.
 */
#include <cstring>
#include <exception>
#include <string>

#include "float_bits.h" /* emulator/cuda/ */
#include "emulator_api.h"
#include "fragment_layout.h"
#include "launch.h"

namespace {

void write_message(const std::string &text, char *message, size_t capacity) {
    if (message == nullptr || capacity == 0) {
        return;
    }
    const size_t n = text.size() < capacity - 1 ? text.size() : capacity - 1;
    memcpy(message, text.data(), n);
    message[n] = '\0';
}

} /* namespace */

extern "C" int32_t cuda_emu_launch(const char *kernel, uint32_t grid_x, uint32_t grid_y, uint32_t grid_z,
                                   uint32_t block_x, uint32_t block_y, uint32_t block_z, uint32_t shared_bytes,
                                   const AttentionParams *params, uint32_t schedule, uint64_t seed,
                                   uint32_t host_threads, char *message, uint64_t message_capacity) {
    try {
        if (kernel == nullptr || params == nullptr || schedule > CUDA_EMU_SCHEDULE_RANDOM) {
            write_message("invalid arguments to cuda_emu_launch", message, message_capacity);
            return CUDA_EMU_INVALID_LAUNCH;
        }
        cuda_emu::LaunchRequest request{kernel,
                                        dim3(grid_x, grid_y, grid_z),
                                        dim3(block_x, block_y, block_z),
                                        shared_bytes,
                                        *params,
                                        static_cast<cuda_emu::ScheduleKind>(schedule),
                                        seed,
                                        host_threads};
        std::string text;
        const cuda_emu::LaunchStatus status = cuda_emu::launch_kernel(request, &text);
        if (status != cuda_emu::LaunchStatus::Ok) {
            write_message(text, message, message_capacity);
        }
        return static_cast<int32_t>(status);
    } catch (const std::exception &e) {
        write_message(std::string("the emulator itself failed: ") + e.what(), message, message_capacity);
        return CUDA_EMU_INVALID_LAUNCH;
    }
}

extern "C" uint32_t cuda_emu_kernel_count(void) { return static_cast<uint32_t>(cuda_emu::sorted_kernels().size()); }

extern "C" const char *cuda_emu_kernel_name(uint32_t index) {
    const auto &kernels = cuda_emu::sorted_kernels();
    return index < kernels.size() ? kernels[index]->name.c_str() : nullptr;
}

extern "C" int32_t cuda_emu_fragment_element(uint32_t fragment, uint32_t lane, uint32_t element, uint32_t *row,
                                             uint32_t *col) {
    if (lane >= 32 || row == nullptr || col == nullptr) {
        return -1;
    }
    const int l = static_cast<int>(lane), i = static_cast<int>(element);
    switch (fragment) {
    case CUDA_EMU_FRAGMENT_MMA_A:
        if (element >= 8)
            return -1;
        *row = static_cast<uint32_t>(mma_a_row(l, i));
        *col = static_cast<uint32_t>(mma_a_col(l, i));
        return 0;
    case CUDA_EMU_FRAGMENT_MMA_B:
        if (element >= 4)
            return -1;
        *row = static_cast<uint32_t>(mma_b_k(l, i));
        *col = static_cast<uint32_t>(mma_b_n(l, i));
        return 0;
    case CUDA_EMU_FRAGMENT_MMA_C:
        if (element >= 4)
            return -1;
        *row = static_cast<uint32_t>(mma_c_row(l, i));
        *col = static_cast<uint32_t>(mma_c_col(l, i));
        return 0;
    case CUDA_EMU_FRAGMENT_LDMATRIX:
    case CUDA_EMU_FRAGMENT_LDMATRIX_TRANS: {
        if (element >= 8)
            return -1;
        const bool trans = fragment == CUDA_EMU_FRAGMENT_LDMATRIX_TRANS;
        *row = static_cast<uint32_t>(ldmatrix_row(l, i & 1, trans));
        *col = static_cast<uint32_t>(ldmatrix_col(l, i & 1, trans));
        return 0;
    }
    default: return -1;
    }
}

extern "C" uint16_t cuda_emu_float_to_half(float value) { return cuda_emu::float_to_half_bits(value); }
extern "C" float cuda_emu_half_to_float(uint16_t bits) { return cuda_emu::half_bits_to_float(bits); }
extern "C" uint16_t cuda_emu_float_to_bfloat16(float value) { return cuda_emu::float_to_bfloat16_bits(value); }
extern "C" float cuda_emu_bfloat16_to_float(uint16_t bits) { return cuda_emu::bfloat16_bits_to_float(bits); }
