/*
 * hopper.cpp - the emulator's sm_90a operations: mbarriers, TMA tile loads, warpgroup meetings, wgmma,
 * setmaxnreg and elect.sync (called by the host bodies of kernels/include/ptx_sm90.cuh).
 *
 * mbarrier: a phase completes when its pending arrivals reach 0 and its transaction count is 0; then the
 * phase number advances, arrivals reset to the expected count, and the threads waiting for it go on. A
 * wait for parity P returns once the current phase's parity differs from P (P = 1 on a fresh barrier
 * passes at once: "the preceding phase").
 *
 * TMA: a load is checked and queued on its mbarrier at the issue (its destination reads 0xff, NaN,
 * until it lands). Queued loads land as late as possible: when no thread of the block can run, the copy
 * engine lands every queued load (complete_tx of its box bytes), which may complete phases and wake
 * waiters; only if nothing became ready is it a deadlock. A wgmma that reads bytes of a load not landed
 * yet is an error, as is a block that exits with loads in flight.
 *
 * wgmma: the 128 threads of a warpgroup meet; the last to arrive reads A and B (shared memory through the
 * descriptors, or A from the threads' registers), computes D = A B (+ C) in f32 in k order, and each
 * thread keeps its part of D as a pending result, delivered into its accumulator registers by the
 * wgmma.wait_group that covers its group (the registers hold NaN in between; a later wgmma on the same
 * accumulators takes the pending values as its C, as the hardware chains them).
 *
 * Errors (each naming the thread and the call site): barrier use before init or outside shared memory,
 * more arrivals than expected, a wait that can never complete (deadlock report with every waiter), a TMA
 * destination misaligned or outside shared memory, a tensor map not made by the encode function, a
 * descriptor whose operand reaches outside the block's shared memory or uses a base offset, descriptors
 * that differ between the threads of a warpgroup, a wgmma without a wgmma.fence since the thread's last
 * wait, a warpgroup meeting not every thread reaches, and results or loads left pending at exit.
 */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "float_bits.h" /* emulator/cuda/ */
#include "internal.h"
#include "sanitizer.h"

namespace cuda_emu {

namespace {

std::string hex32(uint32_t value) {
    char buffer[16];
    snprintf(buffer, sizeof buffer, "0x%x", value);
    return buffer;
}

std::string where(const char *name, Site site) { return std::string(name) + " at " + format_site(site); }

MbarrierState *find_barrier(Block *block, uint32_t address) {
    for (MbarrierState &b : block->hopper.barriers) {
        if (b.address == address) {
            return &b;
        }
    }
    return nullptr;
}

uint32_t barrier_address(Thread *self, Site site, const void *bar, const char *name) {
    const uint32_t address = shared_window_address(site, bar, name);
    if (address % 8 != 0) {
        fail_thread(self, where(name, site) + ": the mbarrier at shared address " + hex32(address) +
                              " is not 8-byte aligned");
    }
    return address;
}

MbarrierState &initialized_barrier(Thread *self, Site site, const void *bar, const char *name) {
    const uint32_t address = barrier_address(self, site, bar, name);
    MbarrierState *b = find_barrier(self->block, address);
    if (b == nullptr) {
        fail_thread(self, where(name, site) + ": the mbarrier at shared address " + hex32(address) +
                              " was never initialised (mbarrier.init)");
    }
    return *b;
}

std::string describe_barrier(const MbarrierState &b) {
    return "the mbarrier at shared address " + hex32(b.address) + " (init at " + format_site(b.init_site) +
           "; phase " + std::to_string(b.phase) + " has " + std::to_string(b.pending) + " of " +
           std::to_string(b.expected) + " arrivals pending and " + std::to_string(b.tx) +
           " transaction bytes outstanding, " + std::to_string(b.loads.size()) + " TMA loads queued)";
}

/* Completes the current phase if nothing is outstanding, waking its waiters. */
void maybe_complete_phase(Block *block, MbarrierState &b) {
    if (b.pending != 0 || b.tx != 0) {
        return;
    }
    const uint32_t completed_parity = b.phase & 1u;
    b.phase += 1;
    b.pending = b.expected;
    HopperState &h = block->hopper;
    make_ready_where(block, [&](const Thread &t) {
        const ThreadHopper &th = h.threads[(size_t)t.index];
        return t.state == ThreadState::AtMbarrier && th.wait_address == b.address &&
               th.wait_parity == completed_parity;
    });
}

void complete_tx(Block *block, MbarrierState &b, uint32_t bytes) {
    b.tx -= bytes;
    maybe_complete_phase(block, b);
}

bool phase_complete(const MbarrierState &b, uint32_t parity) { return (b.phase & 1u) != (parity & 1u); }

const char *wgmma_name(WgmmaInput input, bool a_registers) {
    if (input == WgmmaInput::F16) {
        return a_registers ? "wgmma.mma_async.f16 (A in registers)" : "wgmma.mma_async.f16";
    }
    return a_registers ? "wgmma.mma_async.bf16 (A in registers)" : "wgmma.mma_async.bf16";
}

float element_to_float(WgmmaInput input, uint16_t bits) {
    return input == WgmmaInput::F16 ? half_bits_to_float(bits) : bfloat16_bits_to_float(bits);
}

/* The warpgroup of `self`, after checking that the block holds all 128 of its threads. */
WarpgroupMeeting &warpgroup_of(Thread *self, Site site, const char *name) {
    Block *block = self->block;
    const int group = self->index / 128;
    if ((group + 1) * 128 > block->thread_count) {
        fail_thread(self, where(name, site) + " needs a full warpgroup of 128 threads, but threads " +
                              std::to_string(group * 128) + ".. of this block of " +
                              std::to_string(block->thread_count) + " are not: make the block a multiple of 128");
    }
    for (int w = 0; w < 4; ++w) {
        const Warp &warp = block->warps[(size_t)(group * 4 + w)];
        if (warp.exited != 0) {
            fail_thread(self, where(name, site) + ": lanes " + format_lanes(warp.exited) + " of warp " +
                                  std::to_string(group * 4 + w) +
                                  " have already exited and will never reach this warpgroup operation");
        }
    }
    return block->hopper.meetings[(size_t)group];
}

/* Joins the warpgroup meeting; the last thread runs `compute`. Returns when the meeting is complete. */
template <typename Deposit, typename Compute>
void meet(Thread *self, WarpgroupOp op, int variant, Site site, const char *name, Deposit deposit,
          Compute compute) {
    Block *block = self->block;
    WarpgroupMeeting &m = warpgroup_of(self, site, name);
    if (m.open && (m.op != op || m.variant != variant || !same_site(m.site, site))) {
        fail_thread(self, "divergent warpgroup operation: thread " + std::to_string(self->index) + " reached " +
                              where(name, site) + " while " + std::to_string(m.arrived) + " threads of its warpgroup wait at " +
                              where(m.name, m.site));
    }
    if (!m.open) {
        m.open = true;
        m.op = op;
        m.variant = variant;
        m.site = site;
        m.name = name;
        m.arrived = 0;
    }
    deposit(m, self->index % 128);
    m.arrived += 1;
    if (m.arrived < 128) {
        self->state = ThreadState::AtCollective;
        wait_for_others(self);
        return;
    }
    compute(m);
    m.open = false;
    const int first = self->index / 128 * 128;
    make_ready_where(block, [&](const Thread &t) {
        return t.index >= first && t.index < first + 128 && t.index != self->index &&
               t.state == ThreadState::AtCollective;
    });
    self->state = ThreadState::Running;
    maybe_yield(self);
}

/* The pending value of accumulator array `d` in this thread's undelivered wgmma results, or NULL. */
const std::vector<float> *pending_accumulator(const ThreadHopper &th, const float *d) {
    for (size_t i = th.uncommitted.size(); i-- > 0;) {
        if (th.uncommitted[i].d == d) {
            return &th.uncommitted[i].values;
        }
    }
    for (size_t g = th.groups.size(); g-- > 0;) {
        const std::vector<WgmmaResult> &group = th.groups[g];
        for (size_t i = group.size(); i-- > 0;) {
            if (group[i].d == d) {
                return &group[i].values;
            }
        }
    }
    return nullptr;
}

/* Reads one 16-bit operand element at shared address `address`, checking that it is inside the block's
 * shared memory and not written by a TMA load still in flight. */
uint16_t read_operand(Thread *self, Site site, const char *name, const char *operand, uint64_t desc,
                      uint32_t address) {
    Block *block = self->block;
    const uint32_t bytes = block->launch->shared_bytes;
    if ((uint64_t)address + 2 > bytes) {
        char text[64];
        snprintf(text, sizeof text, "0x%016llx", (unsigned long long)desc);
        fail_thread(self, where(name, site) + ": the " + operand + " descriptor " + text + " reaches shared address " +
                              hex32(address) + ", outside the block's " + std::to_string(bytes) +
                              " bytes of shared memory");
    }
    for (const MbarrierState &b : block->hopper.barriers) {
        for (const QueuedTma &load : b.loads) {
            if (address >= load.copy.dst_address && address < load.copy.dst_address + load.copy.bytes) {
                fail_thread(self, where(name, site) + " reads the " + operand + " operand at shared address " +
                                      hex32(address) + ", which the TMA load issued at " + format_site(load.site) +
                                      " has not finished writing: wait on its mbarrier (" + describe_barrier(b) +
                                      ") before the wgmma");
            }
        }
    }
    uint16_t value;
    memcpy(&value, block->shared + address, sizeof value);
    return value;
}

void check_descriptor(Thread *self, Site site, const char *name, const char *operand, uint64_t desc) {
    if (wgmma_descriptor_base_offset(desc) != 0) {
        fail_thread(self, where(name, site) + ": the " + operand +
                              " descriptor has a non-zero base offset, which the emulator does not model "
                              "(align swizzled tiles to the swizzle's repeat instead)");
    }
}

void compute_wgmma(Thread *self, Site site, const char *name, WarpgroupMeeting &m) {
    const WgmmaCall &call = m.call;
    const int n = call.n, half_n = n / 2;
    std::vector<float> A(64 * 16), B(16 * (size_t)n), C(64 * (size_t)n, 0.0f);
    if (call.a_registers) {
        for (int t = 0; t < 128; ++t) {
            for (int j = 0; j < 8; ++j) {
                const uint16_t bits = (uint16_t)(m.a[(size_t)t * 4 + (size_t)(j / 2)] >> (16 * (j % 2)));
                A[(size_t)wgmma_a_row(t, j) * 16 + (size_t)wgmma_a_col(t, j)] = element_to_float(call.input, bits);
            }
        }
    } else {
        check_descriptor(self, site, name, "A", call.desc_a);
        for (int row = 0; row < 64; ++row) {
            for (int k = 0; k < 16; ++k) {
                const uint32_t address = wgmma_operand_address(call.desc_a, call.trans_a, row, k);
                A[(size_t)row * 16 + (size_t)k] =
                    element_to_float(call.input, read_operand(self, site, name, "A", call.desc_a, address));
            }
        }
    }
    check_descriptor(self, site, name, "B", call.desc_b);
    for (int col = 0; col < n; ++col) {
        for (int k = 0; k < 16; ++k) {
            const uint32_t address = wgmma_operand_address(call.desc_b, call.trans_b, col, k);
            B[(size_t)k * (size_t)n + (size_t)col] =
                element_to_float(call.input, read_operand(self, site, name, "B", call.desc_b, address));
        }
    }
    if (call.scale_d != 0) {
        for (int t = 0; t < 128; ++t) {
            for (int i = 0; i < half_n; ++i) {
                C[(size_t)wgmma_d_row(t, i) * (size_t)n + (size_t)wgmma_d_col(t, i)] =
                    m.c[(size_t)t * (size_t)half_n + (size_t)i];
            }
        }
    }
    /* Products of 16-bit values are exact in f32; the sum runs in f32 in k order (the hardware's order and
     * internal precision are unspecified: compare with a GPU within a tolerance, or with exact integers). */
    m.result.assign(128 * (size_t)half_n, 0.0f);
    for (int t = 0; t < 128; ++t) {
        for (int i = 0; i < half_n; ++i) {
            const int row = wgmma_d_row(t, i), col = wgmma_d_col(t, i);
            float acc = C[(size_t)row * (size_t)n + (size_t)col];
            for (int k = 0; k < 16; ++k) {
                acc += A[(size_t)row * 16 + (size_t)k] * B[(size_t)k * (size_t)n + (size_t)col];
            }
            m.result[(size_t)t * (size_t)half_n + (size_t)i] = acc;
        }
    }
}

} /* namespace */

/* Thread indices {0-31,64} of a block, compactly (hopper_state.h). */
std::string format_threads(const std::vector<int> &indices) {
    std::string out = "{";
    for (size_t i = 0; i < indices.size();) {
        size_t j = i;
        while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) {
            ++j;
        }
        out += (i == 0 ? "" : ",") + std::to_string(indices[i]);
        if (j > i) {
            out += "-" + std::to_string(indices[j]);
        }
        i = j + 1;
    }
    return out + "}";
}

/* ---- Shared addresses, mbarriers ----------------------------------------------------------------- */

uint32_t shared_window_address(Site site, const void *pointer, const char *what) {
    Thread *self = running;
    const Block *block = self->block;
    const uintptr_t p = (uintptr_t)pointer, base = (uintptr_t)block->shared;
    if (block->shared == nullptr || p < base || p - base >= block->launch->shared_bytes) {
        char text[32];
        snprintf(text, sizeof text, "%p", pointer);
        fail_thread(self, where(what, site) + ": the address " + text + " is not inside the block's " +
                              std::to_string(block->launch->shared_bytes) + " bytes of shared memory");
    }
    return (uint32_t)(p - base);
}

void mbarrier_init(Site site, void *bar, uint32_t count) {
    Thread *self = running;
    const uint32_t address = barrier_address(self, site, bar, "mbarrier.init");
    if (count == 0 || count >= (1u << 20)) {
        fail_thread(self, where("mbarrier.init", site) + ": the expected arrival count " + std::to_string(count) +
                              " is outside 1..2^20-1");
    }
    MbarrierState *b = find_barrier(self->block, address);
    if (b == nullptr) {
        self->block->hopper.barriers.emplace_back();
        b = &self->block->hopper.barriers.back();
    } else if (!b->loads.empty()) {
        fail_thread(self, where("mbarrier.init", site) + " re-initialises " + describe_barrier(*b) +
                              " while TMA loads are queued on it");
    }
    b->address = address;
    b->init_site = site;
    b->expected = count;
    b->pending = count;
    b->tx = 0;
    b->phase = 0;
}

void mbarrier_expect_tx(Site site, void *bar, uint32_t bytes) {
    Thread *self = running;
    MbarrierState &b = initialized_barrier(self, site, bar, "mbarrier.expect_tx");
    if (b.tx + (int64_t)bytes >= (int64_t)(1u << 20)) {
        fail_thread(self, where("mbarrier.expect_tx", site) + ": " + std::to_string(bytes) +
                              " more transaction bytes exceed 2^20-1 in one phase of " + describe_barrier(b));
    }
    b.tx += bytes;
}

void mbarrier_arrive(Site site, void *bar, uint32_t expect_tx_bytes) {
    Thread *self = running;
    const char *name = expect_tx_bytes > 0 ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive";
    MbarrierState &b = initialized_barrier(self, site, bar, name);
    if (expect_tx_bytes > 0) {
        mbarrier_expect_tx(site, bar, expect_tx_bytes);
    }
    if (b.pending == 0) {
        fail_thread(self, where(name, site) + ": more arrivals than the expected count in one phase of " +
                              describe_barrier(b));
    }
    tsan_release(&b);
    b.pending -= 1;
    maybe_complete_phase(self->block, b);
    maybe_yield(self);
}

void mbarrier_wait_parity(Site site, void *bar, uint32_t parity) {
    Thread *self = running;
    for (;;) {
        MbarrierState &b = initialized_barrier(self, site, bar, "mbarrier.try_wait.parity");
        if (phase_complete(b, parity)) {
            tsan_acquire(&b);
            return;
        }
        ThreadHopper &th = self->block->hopper.threads[(size_t)self->index];
        th.wait_address = b.address;
        th.wait_parity = parity & 1u;
        th.wait_site = site;
        self->state = ThreadState::AtMbarrier;
        wait_for_others(self);
    }
}

bool mbarrier_test_parity(Site site, void *bar, uint32_t parity) {
    Thread *self = running;
    MbarrierState &b = initialized_barrier(self, site, bar, "mbarrier.test_wait.parity");
    const bool done = phase_complete(b, parity);
    if (done) {
        tsan_acquire(&b);
    }
    return done;
}

/* ---- TMA ------------------------------------------------------------------------------------------ */

const TensorMapFields &checked_tensor_map(Site site, const void *tensor_map, int rank) {
    Thread *self = running;
    const TensorMapFields *map = static_cast<const TensorMapFields *>(tensor_map);
    if (tensor_map == nullptr || (uintptr_t)tensor_map % 64 != 0 || map->magic != kTensorMapMagic) {
        fail_thread(self, where("cp.async.bulk.tensor", site) +
                              ": the tensor map is not a 64-byte-aligned map made by cuTensorMapEncodeTiled "
                              "(the emulator's cuda_emu_tensor_map_encode_tiled)");
    }
    if (map->rank != rank) {
        fail_thread(self, where("cp.async.bulk.tensor", site) + ": a " + std::to_string(rank) +
                              "-d load through a tensor map of rank " + std::to_string(map->rank));
    }
    return *map;
}

uint32_t tma_load(Site site, void *dst, const void *tensor_map, const int32_t *coords, int rank, void *bar,
                  TmaLander land) {
    Thread *self = running;
    const char *name = "cp.async.bulk.tensor";
    const TensorMapFields &map = checked_tensor_map(site, tensor_map, rank);
    const uint32_t address = shared_window_address(site, dst, name);
    const uint32_t span = tensor_map_swizzle_bytes(map.swizzle);
    const uint32_t alignment = span != 0 ? 8 * span : 16;
    if (address % alignment != 0) {
        fail_thread(self, where(name, site) + ": the destination at shared address " + hex32(address) +
                              " is not " + std::to_string(alignment) + "-byte aligned" +
                              (span != 0 ? " (a swizzled box starts at the swizzle's repeat)" : ""));
    }
    QueuedTma load{};
    load.copy.map = map;
    for (int d = 0; d < rank; ++d) {
        load.copy.coords[d] = coords[d];
    }
    load.copy.dst_address = address;
    load.copy.bytes = tensor_map_box_bytes(map);
    load.land = land;
    load.site = site;
    if ((uint64_t)address + load.copy.bytes > self->block->launch->shared_bytes) {
        fail_thread(self, where(name, site) + ": the " + std::to_string(load.copy.bytes) +
                              "-byte box at shared address " + hex32(address) + " ends outside the block's " +
                              std::to_string(self->block->launch->shared_bytes) + " bytes of shared memory");
    }
    MbarrierState &b = initialized_barrier(self, site, bar, name);
    b.loads.push_back(load);
    return load.copy.bytes;
}

/* ---- Deadlocks, exits ----------------------------------------------------------------------------- */

bool hopper_make_progress(Block *block) {
    const size_t ready_before = block->ready_count;
    for (MbarrierState &b : block->hopper.barriers) {
        while (!b.loads.empty()) {
            const QueuedTma load = b.loads.front();
            b.loads.erase(b.loads.begin());
            load.land(load.copy);
            complete_tx(block, b, load.copy.bytes);
        }
    }
    return block->ready_count > ready_before;
}

std::string describe_hopper_waits(Block *block) {
    std::string out;
    const HopperState &h = block->hopper;
    for (const MbarrierState &b : h.barriers) {
        for (uint32_t parity = 0; parity < 2; ++parity) {
            std::vector<int> waiting;
            Site site{nullptr, 0};
            for (const Thread &t : block->threads) {
                const ThreadHopper &th = h.threads[(size_t)t.index];
                if (t.state == ThreadState::AtMbarrier && th.wait_address == b.address && th.wait_parity == parity) {
                    waiting.push_back(t.index);
                    site = th.wait_site;
                }
            }
            if (!waiting.empty()) {
                out += (out.empty() ? "" : "; ") + std::string("threads ") + format_threads(waiting) +
                       " wait at mbarrier.try_wait.parity at " + format_site(site) + " for the phase of parity " +
                       std::to_string(parity) + " of " + describe_barrier(b) + ", which never completes";
            }
        }
    }
    const std::string named = describe_named_barrier_waits(block);
    if (!named.empty()) {
        out += (out.empty() ? "" : "; ") + named;
    }
    for (size_t g = 0; g < h.meetings.size(); ++g) {
        const WarpgroupMeeting &m = h.meetings[g];
        if (m.open) {
            out += (out.empty() ? "" : "; ") + std::to_string(m.arrived) + " threads of warpgroup " +
                   std::to_string(g) + " wait at " + where(m.name, m.site) + " for the rest of the 128";
        }
    }
    return out;
}

void check_exit_against_hopper(Thread *self) {
    Block *block = self->block;
    HopperState &h = block->hopper;
    const ThreadHopper &th = h.threads[(size_t)self->index];
    if (!th.uncommitted.empty() || !th.groups.empty()) {
        fail_thread(self, "exited with wgmma results never delivered: no wgmma.commit_group and wgmma.wait_group "
                          "cover its last wgmma.mma_async");
    }
    const size_t group = (size_t)self->index / 128;
    if (group < h.meetings.size() && h.meetings[group].open) {
        const WarpgroupMeeting &m = h.meetings[group];
        fail_thread(self, "exited while " + std::to_string(m.arrived) + " threads of its warpgroup wait for it at " +
                              where(m.name, m.site));
    }
    if (block->exited + 1 == block->thread_count) {
        for (const MbarrierState &b : h.barriers) {
            if (!b.loads.empty()) {
                fail_thread(self, "the block ends with the TMA load issued at " + format_site(b.loads.front().site) +
                                      " still in flight: no thread waited on " + describe_barrier(b));
            }
        }
    }
}

/* ---- wgmma ----------------------------------------------------------------------------------------- */

void wgmma_fence(Site) { running->block->hopper.threads[(size_t)running->index].fenced = true; }

void wgmma_mma_async(Site site, const WgmmaCall &call, float *d, const uint32_t *a) {
    Thread *self = running;
    const char *name = wgmma_name(call.input, call.a_registers);
    ThreadHopper &th = self->block->hopper.threads[(size_t)self->index];
    if (!th.fenced) {
        fail_thread(self, where(name, site) +
                              " without a wgmma.fence since this thread's last wgmma.wait_group (or its start): "
                              "fence the accumulator and A registers before a wgmma uses them");
    }
    const int half_n = call.n / 2;
    const int variant = call.n * 64 + (int)call.input * 16 + (call.a_registers ? 8 : 0) + call.trans_a * 2 + call.trans_b;
    const std::vector<float> *pending = pending_accumulator(th, d);
    meet(
        self, WarpgroupOp::Wgmma, variant, site, name,
        [&](WarpgroupMeeting &m, int t) {
            if (m.arrived == 0) {
                m.call = call;
                m.c.assign(128 * (size_t)half_n, 0.0f);
                m.a.assign(128 * 4, 0u);
            } else if (m.call.desc_a != call.desc_a || m.call.desc_b != call.desc_b ||
                       m.call.scale_d != call.scale_d) {
                fail_thread(self, where(name, site) + ": thread " + std::to_string(self->index) +
                                      " passes other descriptors or scale-d than the first thread of its "
                                      "warpgroup: they must be the same in all 128 threads");
            }
            for (int i = 0; i < half_n; ++i) {
                m.c[(size_t)t * (size_t)half_n + (size_t)i] = pending ? (*pending)[(size_t)i] : d[i];
            }
            if (a != nullptr) {
                memcpy(&m.a[(size_t)t * 4], a, 4 * sizeof(uint32_t));
            }
        },
        [&](WarpgroupMeeting &m) { compute_wgmma(self, site, name, m); });
    WarpgroupMeeting &m = self->block->hopper.meetings[(size_t)self->index / 128];
    const int t = self->index % 128;
    WgmmaResult result{d, std::vector<float>(m.result.begin() + (ptrdiff_t)t * half_n,
                                             m.result.begin() + (ptrdiff_t)(t + 1) * half_n)};
    th.uncommitted.push_back(std::move(result));
    for (int i = 0; i < half_n; ++i) {
        d[i] = std::nanf("");
    }
}

void wgmma_commit_group(Site) {
    ThreadHopper &th = running->block->hopper.threads[(size_t)running->index];
    th.groups.push_back(std::move(th.uncommitted));
    th.uncommitted.clear();
}

void wgmma_wait_group(Site, int pending_allowed) {
    ThreadHopper &th = running->block->hopper.threads[(size_t)running->index];
    while (th.groups.size() > (size_t)pending_allowed) {
        for (const WgmmaResult &r : th.groups.front()) {
            memcpy(r.d, r.values.data(), r.values.size() * sizeof(float));
        }
        th.groups.pop_front();
    }
    th.fenced = false;
}

/* ---- setmaxnreg, elect.sync ------------------------------------------------------------------------ */

void setmaxnreg(Site site, bool increase, int registers) {
    Thread *self = running;
    const char *name = increase ? "setmaxnreg.inc" : "setmaxnreg.dec";
    if (registers < 24 || registers > 256 || registers % 8 != 0) {
        fail_thread(self, where(name, site) + ": " + std::to_string(registers) +
                              " registers is not a multiple of 8 in 24..256");
    }
    meet(
        self, WarpgroupOp::SetMaxNreg, registers * 2 + (increase ? 1 : 0), site, name,
        [](WarpgroupMeeting &, int) {}, [](WarpgroupMeeting &) {});
}

bool elect_one(Site site) {
    const unsigned lanes = ballot(site, 0xffffffffu, 1);
    const unsigned lane = running->context.lane;
    return (lanes & ((1u << lane) - 1u)) == 0;
}

} /* namespace cuda_emu */
