/*
 * hopper_state.h - a block's sm_90a state in the emulator (part of Block, see internal.h):
 *
 *   MbarrierState    one mbarrier.init'ed barrier: phase, pending arrivals, transaction bytes, and the TMA
 *                    loads that will complete on it (not landed yet);
 *   ThreadHopper     per CUDA thread: the mbarrier it waits on, whether it has executed wgmma.fence since
 *                    its last wgmma.wait_group, and its wgmma results not yet delivered (uncommitted, then
 *                    committed groups, oldest first);
 *   WarpgroupMeeting the 128-thread meeting point of one warpgroup (wgmma.mma_async, setmaxnreg);
 *   NamedBarrierState one of the 16 barriers of bar.sync / bar.arrive with an id.
 *
 * Touched only by the block's worker thread, like the rest of Block.
 */
#ifndef CUDA_ATTENTION_EMULATOR_HOPPER_STATE_H
#define CUDA_ATTENTION_EMULATOR_HOPPER_STATE_H

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "hopper_runtime.h" /* emulator/cuda/ */

namespace cuda_emu {

struct QueuedTma {
    TmaCopy copy;
    TmaLander land;
    Site site;
};

struct MbarrierState {
    uint32_t address = 0;
    Site init_site{nullptr, 0};
    uint32_t expected = 0;
    uint32_t pending = 0;
    int64_t tx = 0;
    uint32_t phase = 0; /* phases completed so far; the current phase's parity is phase & 1 */
    std::vector<QueuedTma> loads;
};

struct WgmmaResult {
    float *d;
    std::vector<float> values;
};

struct ThreadHopper {
    int named_wait = 0;        /* the named barrier waited on (ThreadState::AtNamedBarrier) */
    Site named_site{nullptr, 0};
    uint32_t wait_address = 0; /* the mbarrier waited on (ThreadState::AtMbarrier) */
    uint32_t wait_parity = 0;
    Site wait_site{nullptr, 0};
    bool fenced = false;
    std::vector<WgmmaResult> uncommitted;
    std::deque<std::vector<WgmmaResult>> groups;
};

enum class WarpgroupOp : uint8_t { Wgmma, SetMaxNreg };

struct WarpgroupMeeting {
    bool open = false;
    WarpgroupOp op = WarpgroupOp::Wgmma;
    int variant = 0;
    Site site{nullptr, 0};
    const char *name = "";
    int arrived = 0;
    WgmmaCall call{};
    std::vector<float> c;      /* [128][n / 2] accumulator inputs */
    std::vector<uint32_t> a;   /* [128][4] A registers */
    std::vector<float> result; /* [128][n / 2] */
};

/* A named barrier (bar.sync / bar.arrive with an id): the count of the completion in progress. */
struct NamedBarrierState {
    int expected = 0; /* 0: no arrival since the last completion */
    int arrived = 0;
    Site site{nullptr, 0}; /* the first arrival's call site */
    char tsan = 0;         /* happens-before object of the checking mode */
};

struct HopperState {
    std::vector<MbarrierState> barriers;
    NamedBarrierState named[16];
    std::vector<ThreadHopper> threads;
    std::vector<WarpgroupMeeting> meetings;

    void reset(int thread_count) {
        barriers.clear();
        for (NamedBarrierState &n : named) {
            n.expected = 0;
            n.arrived = 0;
        }
        threads.assign((size_t)thread_count, ThreadHopper{});
        meetings.assign((size_t)(thread_count + 127) / 128, WarpgroupMeeting{});
    }
};

struct Block;
struct Thread;

/* Called by the runtime when no thread is ready: lands every queued TMA load (the copy engine runs while
 * all threads wait); true when that made some thread ready. */
bool hopper_make_progress(Block *block);
/* What threads wait for in Hopper operations, for a deadlock report ("" if nothing). */
std::string describe_hopper_waits(Block *block);
/* Thread indices as ranges, "{0-31,64}" (hopper.cpp). */
std::string format_threads(const std::vector<int> &indices);
/* The same for named barriers (named_barriers.cpp). */
std::string describe_named_barrier_waits(Block *block);
/* Exit checks: a thread leaving a warpgroup meeting others wait at, or with wgmma results undelivered;
 * the last thread leaving with TMA loads never waited for. */
void check_exit_against_hopper(Thread *self);

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_HOPPER_STATE_H */
