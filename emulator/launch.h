/*
 * launch.h - the emulator's C++ launch entry point, used by the C API (c_api.cpp) and the checker.
 */
#ifndef CUDA_ATTENTION_EMULATOR_LAUNCH_H
#define CUDA_ATTENTION_EMULATOR_LAUNCH_H

#include <cstdint>
#include <string>

#include "emulator_api.h"
#include "internal.h"

namespace cuda_emu {

/* Largest dynamic shared memory of one block (emulator_api.h, shared with Rust). */
constexpr uint32_t kMaxSharedBytes = CUDA_EMU_MAX_SHARED_BYTES;

struct LaunchRequest {
    const char *kernel;
    dim3 grid;
    dim3 block;
    uint32_t shared_bytes;
    AttentionParams params;
    ScheduleKind schedule;
    uint64_t seed;
    unsigned host_threads; /* 0: one per core */
};

enum class LaunchStatus { Ok = 0, KernelError = 1, UnknownKernel = 2, InvalidLaunch = 3 };

/* Runs one launch to completion. On failure `message` says what went wrong, and for a kernel error where
 * ("block (x,y,z), thread (x,y,z): <what> at <file>:<line>"). */
LaunchStatus launch_kernel(const LaunchRequest &request, std::string *message);

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_LAUNCH_H */
