/*
 * tensor_map.cpp - the emulated driver's cuTensorMapEncodeTiled: the emulator's encoder
 * (emulator/tensor_map.cpp, the driver's argument rules, the emulator's readable 128-byte encoding), so
 * that host code written for the real driver builds tensor maps that the emulated TMA loads read.
 * Device pointers of the emulated driver are host addresses, so the global address is stored as given.
 * The enums are passed as their cuda.h values (plain ints at the ABI level).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_types.h"
#include "emulator_api.h"

extern "C" __attribute__((visibility("default"))) CUresult
cuTensorMapEncodeTiled(void *tensor_map, int data_type, uint32_t rank, void *global_address, const uint64_t *global_dim,
                       const uint64_t *global_strides, const uint32_t *box_dim, const uint32_t *element_strides,
                       int interleave, int swizzle, int l2_promotion, int oob_fill) {
    char message[512];
    const int32_t status = cuda_emu_tensor_map_encode_tiled(
        tensor_map, (uint32_t)data_type, rank, global_address, global_dim, global_strides, box_dim, element_strides,
        (uint32_t)interleave, (uint32_t)swizzle, (uint32_t)l2_promotion, (uint32_t)oob_fill, message, sizeof message);
    if (status != CUDA_EMU_TENSOR_MAP_OK) {
        const char *trace = getenv("CUDA_EMU_DRIVER_TRACE");
        if (trace != nullptr && *trace != '\0' && strcmp(trace, "0") != 0) {
            fprintf(stderr, "cuda-emulated-driver: %s\n", message);
        }
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}
