/*
 * internal.h - the emulator's execution model, shared by its runtime files (not by kernels).
 *
 *   Launch  one kernel launch: kernel, params, grid, block, shared bytes, schedule, first error.
 *   Worker  one host thread of a launch; runs blocks one after another, each to completion.
 *   Block   the state of the block a worker runs: its CUDA threads (fibers), dynamic shared memory,
 *           barrier, warps (pending collectives) and the ready list the schedule picks from.
 *   Thread  one CUDA thread: its fiber, indices, what it waits at, its cp.async queue.
 *
 * A block's fibers all run on its worker's host thread and switch only at barriers, warp collectives
 * and exits, so everything here is touched by one host thread at a time and needs no locks; the only
 * state shared between workers is in Launch (atomics and a mutex).
 */
#ifndef CUDA_ATTENTION_EMULATOR_INTERNAL_H
#define CUDA_ATTENTION_EMULATOR_INTERNAL_H

#include <ucontext.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "hopper_state.h"
#include "runtime.h" /* emulator/cuda/runtime.h */

namespace cuda_emu {

/* The order in which ready CUDA threads (and blocks) run. */
enum class ScheduleKind : uint32_t { RoundRobin = 0, Reversed = 1, Random = 2 };

struct Kernel {
    std::string name;
    int max_threads;
    KernelFunction function;
};

/* The registered kernel called `name`, or NULL. */
const Kernel *find_kernel(const char *name);
/* Every registered kernel, sorted by name. */
const std::vector<const Kernel *> &sorted_kernels();

/* A context to switch to: a fiber's or the worker's own. */
struct Fiber {
    ucontext_t context;
    void *tsan = nullptr;            /* TSan fiber handle (checking mode) */
    void *asan_fake_stack = nullptr; /* ASan fake stack save slot (checking mode) */
    const void *stack_bottom = nullptr;
    size_t stack_size = 0;
};

enum class ThreadState : uint8_t { Ready, Running, AtBarrier, AtCollective, AtMbarrier, AtNamedBarrier, Exited };

struct CopyRecord {
    void *dst;
    const void *src;
    int src_bytes;
};

struct Block;

struct Thread {
    ThreadContext context; /* what the kernel reads through threadIdx & co. */
    Fiber fiber;
    Block *block = nullptr;
    int index = 0; /* linear index in the block: x + y * bx + z * bx * by */
    ThreadState state = ThreadState::Ready;
    int barrier_result = 0;
    uint32_t result[4] = {0, 0, 0, 0}; /* a collective's output for this lane */
    std::vector<CopyRecord> copies;    /* cp.async copies issued and not landed, oldest first */
    std::vector<size_t> group_ends;    /* end (in copies) of each committed, not landed group */
};

/* One warp-wide operation in progress: the lanes of `mask` meet here. */
enum class CollectiveOp : uint8_t { SyncWarp, Shuffle, Ballot, Mma, Ldmatrix };

struct Collective {
    CollectiveOp op;
    int variant; /* shuffle kind, mma input type, ldmatrix matrices + 8 * trans */
    int width;   /* shuffles */
    Site site;
    const char *name;
    unsigned mask;
    unsigned arrived;
    uint64_t value[32];     /* shuffle value, ballot predicate */
    int32_t operand[32];    /* shuffle lane/delta/mask */
    uint32_t words[32][10]; /* mma a[4] b[2] c[4]; ldmatrix row */
};

struct Warp {
    unsigned exists = 0; /* lanes that are threads of the block */
    unsigned exited = 0;
    unsigned syncwarp_generation = 0;
    std::vector<Collective> pending;
    char tsan_sync[2] = {0, 0}; /* __syncwarp happens-before objects, by generation parity */
};

struct Launch {
    const Kernel *kernel = nullptr;
    AttentionParams params{};
    dim3 grid, block;
    uint32_t shared_bytes = 0;
    ScheduleKind schedule = ScheduleKind::RoundRobin;
    uint64_t seed = 0;
    size_t stack_bytes = 0;

    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    uint64_t error_block = UINT64_MAX;
    std::string error;

    /* Keeps the error of the lowest-numbered block, so a failing launch reports the same error whatever
     * the interleaving of its workers. */
    void record_error(uint64_t block_linear, const std::string &message);
};

struct Block {
    Launch *launch = nullptr;
    uint64_t linear = 0;
    uint3 index{0, 0, 0};
    int thread_count = 0;
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    unsigned char *shared = nullptr;

    /* __syncthreads */
    int arrived = 0;
    Site barrier_site{nullptr, 0};
    int reduce_count = 0, reduce_and = 1, reduce_or = 0;
    unsigned generation = 0;
    int exited = 0;
    char tsan_barrier[2] = {0, 0}; /* happens-before objects, by generation parity */
    char tsan_start = 0;           /* the worker releases it before a block; each thread acquires it */
    char tsan_done = 0;            /* every thread releases it at exit; the worker acquires it */

    /* scheduling */
    std::vector<int> ready; /* ring buffer of ready threads, one slot per thread: FIFO, or random picks */
    size_t ready_head = 0;
    size_t ready_count = 0;
    std::mt19937_64 rng;
    Fiber host; /* the worker's own context */
    bool failed = false;

    HopperState hopper; /* mbarriers, TMA loads in flight, wgmma state (hopper.cpp) */
};

/* The CUDA thread running on this host thread (NULL on a worker's own context). */
extern __thread Thread *running;

/* Ready-list operations (runtime.cpp). */
void make_ready(Block *block, int thread_index);
/* Makes every thread `selected` returns true for ready, in the schedule's order. */
template <typename Pred> void make_ready_where(Block *block, Pred selected) {
    const bool reversed = block->launch->schedule == ScheduleKind::Reversed;
    const int n = block->thread_count;
    for (int k = 0; k < n; ++k) {
        const int i = reversed ? n - 1 - k : k;
        if (selected(block->threads[i])) {
            make_ready(block, i);
        }
    }
}

/* Switches from `self`, which has recorded why it waits, to the next ready thread; returns when `self`
 * runs again. Reports a deadlock when no thread is ready. */
void wait_for_others(Thread *self);
/* In the random schedule, lets the scheduler pick who runs next (possibly `self` again). */
void maybe_yield(Thread *self);
/* Stops the block with an error attributed to `self`. */
[[noreturn]] void fail_thread(Thread *self, const std::string &message);

/* Formatting for messages. */
std::string format_site(Site site);
std::string format_lanes(unsigned mask);
bool same_site(Site a, Site b);

/* Collectives (collectives.cpp): called when a lane exits, to report lanes left waiting for it. */
void check_exit_against_collectives(Thread *self);

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_INTERNAL_H */
