/*
 * runtime.h - the interface between kernels compiled as C++ and the emulator's runtime (the .cpp files
 * in emulator/).
 *
 * Kernel translation units see these declarations through cuda_emulation.h; the runtime implements them.
 * Every function that a CUDA thread calls runs on that thread's fiber. The ones that take a Site may stop
 * the block with an error naming the kernel and that call site; they never return an error code.
 *
 * Memory that a kernel reads or writes through an intrinsic (ldmatrix rows, cp.async copies) is touched
 * by code in the kernel's translation unit (see cuda_emulation.h, async_copy.h and ptx.cuh), never by the
 * runtime, so that the sanitizers of the checking mode attribute each access to the CUDA thread that
 * makes it.
 */
#ifndef CUDA_ATTENTION_EMULATOR_RUNTIME_H
#define CUDA_ATTENTION_EMULATOR_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "attention_params.h"
#include "kernel_registry.h"
#include "vector_types.h"

namespace cuda_emu {

/* A call site in kernel source: file and line, from __builtin_FILE() / __builtin_LINE() defaults. */
struct Site {
    const char *file;
    int line;
};

/* What the current CUDA thread can see of itself without calling into the runtime. */
struct ThreadContext {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned int lane;
    unsigned char *shared_memory; /* the block's dynamic shared memory */
};

/* The CUDA thread running on this host thread (NULL outside kernels). Set by the runtime at each switch. */
extern __thread const ThreadContext *current;

inline const ThreadContext &this_thread() { return *current; }

/* Kernel registry: KERNEL_ENTRY registers each kernel under its exported name at static initialisation. */
typedef void (*KernelFunction)(AttentionParams);
struct KernelRegistration {
    KernelRegistration(const char *name, int max_threads, KernelFunction function);
};
/* ATTENTION_KERNEL's record of launch facts (kernel_registry.h), kept in name order for Rust. */
struct KernelInfoRegistration {
    KernelInfoRegistration(const char *name, int max_threads, KernelInfo info);
};

/* Stops the block with an error at `site` (message without the kernel/thread prefix). */
[[noreturn]] void fail(Site site, const char *message);

/* __syncthreads and its reducing variants: `value` is the thread's predicate or 0. */
enum class BarrierReduce { None, Count, And, Or };
int sync_threads(Site site, BarrierReduce reduce, int value);

/* Warp collectives. Every lane in `mask` must call the same collective from the same site. */
enum class Shuffle { Index, Up, Down, Xor };
void sync_warp(Site site, unsigned mask);
uint64_t shuffle(Site site, Shuffle kind, unsigned mask, uint64_t value, int operand, int width);
unsigned ballot(Site site, unsigned mask, int predicate);

/* mma.sync.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: d = a * b + c over the warp. */
enum class MmaInput { F16, Bf16 };
void mma_m16n8k16(Site site, MmaInput input, const uint32_t a[4], const uint32_t b[2], const float c[4],
                  float d[4]);

/* ldmatrix: `row` is the 16-byte row this lane supplies (NULL for lanes whose address is unused);
 * `matrices` 1, 2 or 4. Fills regs[0..matrices). Call check_matrix_row first, then read the row. */
void check_matrix_row(Site site, const void *address, const char *instruction);
void ldmatrix(Site site, int matrices, bool trans, const uint32_t *row, uint32_t regs[4]);

/* cp.async: check, queue (the caller poisons the destination with async_copy_issue), group, and land
 * copies at a wait (through `land`, which calls async_copy_land in the kernel's translation unit). */
void check_cp_async(Site site, const void *shared_dst, const void *global_src, int src_bytes);
void cp_async_queue(void *shared_dst, const void *global_src, int src_bytes);
void cp_async_commit();
typedef void (*CopyLander)(void *shared_dst, const void *global_src, int src_bytes);
void cp_async_wait(int pending_groups_allowed, CopyLander land);

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_RUNTIME_H */
