/*
 * named_barriers.cpp - bar.sync / bar.arrive with a barrier id and a thread count
 * (kernels/include/named_barrier.cuh) on the emulator.
 *
 * Each of a block's barriers 1..15 counts arrivals towards the count its first arrival gave; the arrival
 * that reaches it completes the barrier (the count resets) and releases the threads waiting in bar.sync.
 * Errors, each naming the thread and the call site: an id outside 1..15, a count that is not a multiple
 * of 32 in 32..block size, an arrival with another count than the one in progress. A bar.sync that can
 * never complete shows up in the deadlock report with the barrier's id, count and arrivals.
 * ThreadSanitizer (checking mode): each arrival releases the barrier's happens-before object, each
 * released bar.sync acquires it.
 */
#include <string>
#include <vector>

#include "internal.h"
#include "sanitizer.h"

namespace cuda_emu {

void named_barrier(Site site, int id, int threads, bool wait) {
    Thread *self = running;
    Block *block = self->block;
    const std::string name = std::string(wait ? "bar.sync " : "bar.arrive ") + std::to_string(id);
    const std::string where = name + " at " + format_site(site);
    if (id < 1 || id > 15) {
        fail_thread(self, where + ": barrier id " + std::to_string(id) +
                              " is outside 1..15 (barrier 0 is __syncthreads's)");
    }
    if (threads < 32 || threads % 32 != 0 || threads > block->thread_count) {
        fail_thread(self, where + ": the count " + std::to_string(threads) +
                              " is not a multiple of 32 in 32.." + std::to_string(block->thread_count) +
                              " (whole warps of this block)");
    }
    NamedBarrierState &b = block->hopper.named[id];
    if (b.expected == 0) {
        b.expected = threads;
        b.site = site;
    } else if (b.expected != threads) {
        fail_thread(self, where + " arrives with the count " + std::to_string(threads) + " while " +
                              std::to_string(b.arrived) + " threads arrived with the count " +
                              std::to_string(b.expected) + " (first at " + format_site(b.site) + ")");
    }
    tsan_release(&b.tsan);
    b.arrived += 1;
    if (b.arrived == b.expected) {
        b.expected = 0;
        b.arrived = 0;
        HopperState &h = block->hopper;
        make_ready_where(block, [&](const Thread &t) {
            return t.state == ThreadState::AtNamedBarrier && h.threads[(size_t)t.index].named_wait == id;
        });
        if (wait) {
            tsan_acquire(&b.tsan);
        }
        maybe_yield(self);
        return;
    }
    if (!wait) {
        return;
    }
    ThreadHopper &th = block->hopper.threads[(size_t)self->index];
    th.named_wait = id;
    th.named_site = site;
    self->state = ThreadState::AtNamedBarrier;
    wait_for_others(self);
    tsan_acquire(&b.tsan);
}

std::string describe_named_barrier_waits(Block *block) {
    std::string out;
    const HopperState &h = block->hopper;
    for (int id = 1; id < 16; ++id) {
        std::vector<int> waiting;
        Site site{nullptr, 0};
        for (const Thread &t : block->threads) {
            if (t.state == ThreadState::AtNamedBarrier && h.threads[(size_t)t.index].named_wait == id) {
                waiting.push_back(t.index);
                site = h.threads[(size_t)t.index].named_site;
            }
        }
        if (!waiting.empty()) {
            const NamedBarrierState &b = h.named[id];
            out += (out.empty() ? "" : "; ") + std::string("threads ") + format_threads(waiting) + " wait at bar.sync " +
                   std::to_string(id) + " at " + format_site(site) + ": " + std::to_string(b.arrived) + " of " +
                   std::to_string(b.expected) + " threads have arrived";
        }
    }
    return out;
}

} /* namespace cuda_emu */
