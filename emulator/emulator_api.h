/*
 * emulator_api.h - the C API through which Rust (src/emulator/ffi.rs) drives the CPU emulator.
 *
 * Plain C, scalars and pointers only. Kernel errors come back as a status and a message, never as an
 * abort: the message names the block, the thread and the call site of what the emulator found.
 */
#ifndef CUDA_ATTENTION_EMULATOR_API_H
#define CUDA_ATTENTION_EMULATOR_API_H

#include <stddef.h>
#include <stdint.h>

#include "attention_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Schedules (see docs/emulator.md). */
#define CUDA_EMU_SCHEDULE_ROUND_ROBIN 0
#define CUDA_EMU_SCHEDULE_REVERSED 1
#define CUDA_EMU_SCHEDULE_RANDOM 2

/* Status of cuda_emu_launch. */
#define CUDA_EMU_OK 0
#define CUDA_EMU_KERNEL_ERROR 1   /* the kernel broke a rule the emulator checks; see the message */
#define CUDA_EMU_UNKNOWN_KERNEL 2 /* no kernel of that name in this build */
#define CUDA_EMU_INVALID_LAUNCH 3 /* grid, block or shared memory outside CUDA's limits */

/* Fragments for cuda_emu_fragment_element. */
#define CUDA_EMU_FRAGMENT_MMA_A 0
#define CUDA_EMU_FRAGMENT_MMA_B 1
#define CUDA_EMU_FRAGMENT_MMA_C 2
#define CUDA_EMU_FRAGMENT_LDMATRIX 3
#define CUDA_EMU_FRAGMENT_LDMATRIX_TRANS 4

/* Runs kernel `kernel` over grid x block with `shared_bytes` of dynamic shared memory and `*params`,
 * using `host_threads` host threads (0: one per core). Writes a NUL-terminated message into
 * `message` (truncated to `message_capacity`) unless the status is CUDA_EMU_OK. */
int32_t cuda_emu_launch(const char *kernel, uint32_t grid_x, uint32_t grid_y, uint32_t grid_z, uint32_t block_x,
                        uint32_t block_y, uint32_t block_z, uint32_t shared_bytes, const AttentionParams *params,
                        uint32_t schedule, uint64_t seed, uint32_t host_threads, char *message,
                        size_t message_capacity);

/* Registered kernels, sorted by name. */
uint32_t cuda_emu_kernel_count(void);
const char *cuda_emu_kernel_name(uint32_t index);

/* The matrix element the emulator assigns to `element` of `lane` in `fragment` (the tables its mma and
 * ldmatrix use): mma A -> (row, col) of 16x16 A; B -> (k, n) of 16x8 B; C -> (row, col) of 16x8 C;
 * ldmatrix -> (row, col) of matrix element / 2, half element % 2. Returns 0, or -1 for bad arguments. */
int32_t cuda_emu_fragment_element(uint32_t fragment, uint32_t lane, uint32_t element, uint32_t *row, uint32_t *col);

/* The emulator's 16-bit conversions (round to nearest even), for tests against other implementations. */
uint16_t cuda_emu_float_to_half(float value);
float cuda_emu_half_to_float(uint16_t bits);
uint16_t cuda_emu_float_to_bfloat16(float value);
float cuda_emu_bfloat16_to_float(uint16_t bits);

#ifdef __cplusplus
}
#endif

#endif /* CUDA_ATTENTION_EMULATOR_API_H */
