/*
 * collectives.cpp - warp-wide operations as 32-lane meeting points, and cp.async queues.
 *
 * A lane that calls a collective joins the warp's pending collective whose mask overlaps its own (or opens
 * one), deposits its operands and waits; the lane that completes the mask computes the result once, hands
 * every lane its part, and the lanes go on. Checks, each an error naming the lane and the call site:
 *   - the mask includes the calling lane, names only lanes of the block, and no lane that has exited;
 *   - every lane of an overlapping mask calls the same operation, from the same call site, with the same
 *     mask and width (a divergent collective);
 *   - a lane that exits while lanes wait for it in a collective;
 *   - shuffles read only lanes of the mask; widths are powers of two up to 32;
 *   - mma and ldmatrix need all 32 lanes; ldmatrix rows are 16-byte aligned and inside the block's shared
 *     memory;
 *   - cp.async: 16-byte-aligned destination in shared memory, 16-byte-aligned source outside it,
 *     0 <= src_bytes <= 16.
 * Only __syncwarp orders memory between lanes (for ThreadSanitizer); shuffles, ballots, mma and ldmatrix
 * exchange registers, as on the GPU under independent thread scheduling.
 */
#include <cstdio>
#include <cstring>

#include "float_bits.h" /* emulator/cuda/ */
#include "fragment_layout.h"
#include "internal.h"
#include "sanitizer.h"

namespace cuda_emu {

namespace {

Warp &warp_of(Thread *t) { return t->block->warps[(size_t)t->index / 32]; }

unsigned lane_bit(const Thread *t) { return 1u << t->context.lane; }

std::string hex(unsigned mask) {
    char buffer[16];
    snprintf(buffer, sizeof buffer, "0x%08x", mask);
    return buffer;
}

/* Joins (or opens) the collective of the calling lane's warp. */
Collective &join(Thread *self, CollectiveOp op, int variant, int width, unsigned mask, Site site,
                 const char *name) {
    Warp &warp = warp_of(self);
    const unsigned bit = lane_bit(self);
    const std::string where = std::string(name) + " at " + format_site(site);
    if (!(mask & bit)) {
        fail_thread(self, where + ": the mask " + hex(mask) + " does not include the calling lane " +
                              std::to_string(self->context.lane));
    }
    if (mask & ~warp.exists) {
        fail_thread(self, where + ": the mask " + hex(mask) + " names lanes " + format_lanes(mask & ~warp.exists) +
                              " that are not threads of this block (this warp has lanes " +
                              format_lanes(warp.exists) + ")");
    }
    if ((op == CollectiveOp::Mma || op == CollectiveOp::Ldmatrix) && warp.exists != 0xffffffffu) {
        fail_thread(self, where + " needs all 32 lanes of a warp, but this warp has only lanes " +
                              format_lanes(warp.exists) + ": make the block size a multiple of 32");
    }
    if (mask & warp.exited) {
        fail_thread(self, where + ": lanes " + format_lanes(mask & warp.exited) +
                              " of the mask have already exited and will never arrive");
    }
    for (Collective &c : warp.pending) {
        if (!(c.mask & mask)) {
            continue;
        }
        if (c.op != op || c.variant != variant || c.width != width || c.mask != mask || !same_site(c.site, site)) {
            fail_thread(self, "divergent warp collective: lane " + std::to_string(self->context.lane) + " called " +
                                  where + " with mask " + hex(mask) + " while lanes " + format_lanes(c.arrived) +
                                  " wait at " + c.name + " at " + format_site(c.site) + " with mask " +
                                  hex(c.mask));
        }
        return c;
    }
    warp.pending.emplace_back();
    Collective &c = warp.pending.back();
    c.op = op;
    c.variant = variant;
    c.width = width;
    c.site = site;
    c.name = name;
    c.mask = mask;
    c.arrived = 0;
    return c;
}

/* Marks the calling lane arrived; the lane that completes the mask runs `compute` (which fills each lane's
 * Thread::result) and releases the others. Returns when the collective is complete. */
template <typename Compute> void arrive(Thread *self, Collective &c, Compute compute) {
    Block *block = self->block;
    c.arrived |= lane_bit(self);
    if (c.arrived != c.mask) {
        self->state = ThreadState::AtCollective;
        wait_for_others(self);
        return;
    }
    compute(c);
    const unsigned mask = c.mask;
    Warp &warp = warp_of(self);
    warp.pending.erase(warp.pending.begin() + (&c - warp.pending.data()));
    /* Release the other lanes in the schedule's order. */
    const int base = self->index & ~31;
    const bool reversed = block->launch->schedule == ScheduleKind::Reversed;
    for (int k = 0; k < 32; ++k) {
        const int lane = reversed ? 31 - k : k;
        if ((mask >> lane & 1u) && base + lane != self->index) {
            make_ready(block, base + lane);
        }
    }
    self->state = ThreadState::Running;
    maybe_yield(self);
}

Thread &lane_thread(Thread *self, int lane) { return self->block->threads[(size_t)((self->index & ~31) + lane)]; }

const char *shuffle_name(Shuffle kind) {
    switch (kind) {
    case Shuffle::Index: return "__shfl_sync";
    case Shuffle::Up: return "__shfl_up_sync";
    case Shuffle::Down: return "__shfl_down_sync";
    case Shuffle::Xor: return "__shfl_xor_sync";
    }
    return "__shfl";
}

/* The lane `lane` reads in a shuffle (CUDA's rules, as PTX shfl.sync defines them with c = width). */
int shuffle_source(Shuffle kind, int lane, int operand, int width) {
    const int first = lane & ~(width - 1);
    const int last = first + width - 1;
    switch (kind) {
    case Shuffle::Index: return first + (operand & (width - 1));
    case Shuffle::Up: {
        const int src = lane - operand;
        return src < first ? lane : src;
    }
    case Shuffle::Down: {
        const int src = lane + operand;
        return src > last ? lane : src;
    }
    case Shuffle::Xor: {
        const int src = lane ^ (operand & 31);
        return src > last ? lane : src;
    }
    }
    return lane;
}

float input_to_float(MmaInput input, uint16_t bits) {
    return input == MmaInput::F16 ? half_bits_to_float(bits) : bfloat16_bits_to_float(bits);
}

uint16_t half_of(uint32_t reg, int half) { return (uint16_t)(reg >> (16 * half)); }

bool in_shared(const Block *block, const void *address, size_t bytes) {
    const uintptr_t a = (uintptr_t)address;
    const uintptr_t base = (uintptr_t)block->shared;
    return block->shared != nullptr && a >= base && a - base + bytes <= block->launch->shared_bytes;
}

std::string address_text(const void *address) {
    char buffer[32];
    snprintf(buffer, sizeof buffer, "%p", address);
    return buffer;
}

} /* namespace */

/* ---- __syncwarp, shuffles, ballot ---------------------------------------------------------------- */

void sync_warp(Site site, unsigned mask) {
    Thread *self = running;
    Warp &warp = warp_of(self);
    Collective &c = join(self, CollectiveOp::SyncWarp, 0, 0, mask, site, "__syncwarp");
    const unsigned generation = warp.syncwarp_generation;
    tsan_release(&warp.tsan_sync[generation & 1]);
    arrive(self, c, [&](Collective &) { warp.syncwarp_generation += 1; });
    tsan_acquire(&warp.tsan_sync[generation & 1]);
}

uint64_t shuffle(Site site, Shuffle kind, unsigned mask, uint64_t value, int operand, int width) {
    Thread *self = running;
    const char *name = shuffle_name(kind);
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
        fail_thread(self, std::string(name) + " at " + format_site(site) + ": width " + std::to_string(width) +
                              " is not a power of two from 1 to 32");
    }
    Collective &c = join(self, CollectiveOp::Shuffle, (int)kind, width, mask, site, name);
    const int lane = (int)self->context.lane;
    c.value[lane] = value;
    c.operand[lane] = operand;
    arrive(self, c, [&](Collective &k) {
        for (int l = 0; l < 32; ++l) {
            if (!(k.mask >> l & 1u)) {
                continue;
            }
            const int src = shuffle_source(kind, l, k.operand[l], k.width);
            if (src != l && !(k.mask >> src & 1u)) {
                fail_thread(self, std::string(name) + " at " + format_site(site) + ": lane " + std::to_string(l) +
                                      " reads lane " + std::to_string(src) + ", which is not in the mask " +
                                      hex(k.mask) + " (its value is undefined)");
            }
            Thread &t = lane_thread(self, l);
            t.result[0] = (uint32_t)k.value[src];
            t.result[1] = (uint32_t)(k.value[src] >> 32);
        }
    });
    return (uint64_t)self->result[0] | ((uint64_t)self->result[1] << 32);
}

unsigned ballot(Site site, unsigned mask, int predicate) {
    Thread *self = running;
    Collective &c = join(self, CollectiveOp::Ballot, 0, 0, mask, site, "__ballot_sync");
    c.value[self->context.lane] = predicate != 0;
    arrive(self, c, [&](Collective &k) {
        unsigned bits = 0;
        for (int l = 0; l < 32; ++l) {
            if ((k.mask >> l & 1u) && k.value[l]) {
                bits |= 1u << l;
            }
        }
        for (int l = 0; l < 32; ++l) {
            if (k.mask >> l & 1u) {
                lane_thread(self, l).result[0] = bits;
            }
        }
    });
    return self->result[0];
}

/* ---- mma.sync.m16n8k16 --------------------------------------------------------------------------- */

void mma_m16n8k16(Site site, MmaInput input, const uint32_t a[4], const uint32_t b[2], const float c[4],
                  float d[4]) {
    Thread *self = running;
    const char *name = input == MmaInput::F16 ? "mma.sync.m16n8k16.f16" : "mma.sync.m16n8k16.bf16";
    Collective &k = join(self, CollectiveOp::Mma, (int)input, 0, 0xffffffffu, site, name);
    uint32_t *words = k.words[self->context.lane];
    memcpy(words, a, 4 * sizeof(uint32_t));
    memcpy(words + 4, b, 2 * sizeof(uint32_t));
    memcpy(words + 6, c, 4 * sizeof(float));
    arrive(self, k, [&](Collective &m) {
        float A[16][16], B[16][8], C[16][8];
        for (int lane = 0; lane < 32; ++lane) {
            const uint32_t *w = m.words[lane];
            for (int i = 0; i < 8; ++i) {
                A[mma_a_row(lane, i)][mma_a_col(lane, i)] = input_to_float(input, half_of(w[i >> 1], i & 1));
            }
            for (int i = 0; i < 4; ++i) {
                B[mma_b_k(lane, i)][mma_b_n(lane, i)] = input_to_float(input, half_of(w[4 + (i >> 1)], i & 1));
                C[mma_c_row(lane, i)][mma_c_col(lane, i)] = bits_to_float(w[6 + i]);
            }
        }
        /* Products of 16-bit inputs are exact in f32; the sum runs in f32 in k order (the hardware's order
         * and internal precision are unspecified, so results may differ from a GPU in the last bits). */
        for (int lane = 0; lane < 32; ++lane) {
            Thread &t = lane_thread(self, lane);
            for (int i = 0; i < 4; ++i) {
                const int row = mma_c_row(lane, i), col = mma_c_col(lane, i);
                float acc = C[row][col];
                for (int kk = 0; kk < 16; ++kk) {
                    acc += A[row][kk] * B[kk][col];
                }
                t.result[i] = float_to_bits(acc);
            }
        }
    });
    for (int i = 0; i < 4; ++i) {
        d[i] = bits_to_float(self->result[i]);
    }
}

/* ---- ldmatrix ------------------------------------------------------------------------------------ */

void check_matrix_row(Site site, const void *address, const char *instruction) {
    Thread *self = running;
    const Block *block = self->block;
    const std::string where = std::string(instruction) + " at " + format_site(site) + ": lane " +
                              std::to_string(self->context.lane) + "'s row address " + address_text(address);
    if ((uintptr_t)address % 16 != 0) {
        fail_thread(self, where + " is not 16-byte aligned (each 8 x 16-bit row must start on a 16-byte boundary)");
    }
    if (!in_shared(block, address, 16)) {
        fail_thread(self, where + " is not inside the block's " + std::to_string(block->launch->shared_bytes) +
                              " bytes of shared memory at " + address_text(block->shared));
    }
}

void ldmatrix(Site site, int matrices, bool trans, const uint32_t *row, uint32_t regs[4]) {
    Thread *self = running;
    static const char *const names[2][5] = {
        {"", "ldmatrix.x1", "ldmatrix.x2", "", "ldmatrix.x4"},
        {"", "ldmatrix.x1.trans", "ldmatrix.x2.trans", "", "ldmatrix.x4.trans"},
    };
    Collective &c = join(self, CollectiveOp::Ldmatrix, matrices + 8 * trans, 0, 0xffffffffu, site,
                         names[trans ? 1 : 0][matrices]);
    if (row != nullptr) {
        memcpy(c.words[self->context.lane], row, 16);
    }
    arrive(self, c, [&](Collective &k) {
        for (int l = 0; l < 32; ++l) {
            Thread &t = lane_thread(self, l);
            for (int j = 0; j < 4; ++j) {
                uint32_t reg = 0;
                if (j < matrices) {
                    for (int h = 0; h < 2; ++h) {
                        const int r = ldmatrix_row(l, h, trans), col = ldmatrix_col(l, h, trans);
                        const uint32_t *source = k.words[ldmatrix_address_lane(j, r)];
                        reg |= (uint32_t)half_of(source[col >> 1], col & 1) << (16 * h);
                    }
                }
                t.result[j] = reg;
            }
        }
    });
    memcpy(regs, self->result, 4 * sizeof(uint32_t));
}

/* ---- cp.async ------------------------------------------------------------------------------------ */

void check_cp_async(Site site, const void *shared_dst, const void *global_src, int src_bytes) {
    Thread *self = running;
    const Block *block = self->block;
    const std::string where = "cp.async at " + format_site(site);
    if (src_bytes < 0 || src_bytes > 16) {
        fail_thread(self, where + ": src_bytes " + std::to_string(src_bytes) + " is outside 0..16");
    }
    if ((uintptr_t)shared_dst % 16 != 0 || !in_shared(block, shared_dst, 16)) {
        fail_thread(self, where + ": the destination " + address_text(shared_dst) +
                              " is not a 16-byte-aligned address inside the block's " +
                              std::to_string(block->launch->shared_bytes) + " bytes of shared memory");
    }
    if ((uintptr_t)global_src % 16 != 0) {
        fail_thread(self, where + ": the source " + address_text(global_src) + " is not 16-byte aligned");
    }
    if (in_shared(block, global_src, 1)) {
        fail_thread(self, where + ": the source " + address_text(global_src) +
                              " is in shared memory; cp.async copies from global memory");
    }
}

void cp_async_queue(void *shared_dst, const void *global_src, int src_bytes) {
    running->copies.push_back(CopyRecord{shared_dst, global_src, src_bytes});
}

void cp_async_commit() { running->group_ends.push_back(running->copies.size()); }

void cp_async_wait(int pending_groups_allowed, CopyLander land) {
    Thread *self = running;
    const size_t committed = self->group_ends.size();
    if (committed <= (size_t)pending_groups_allowed) {
        return;
    }
    const size_t landing_groups = committed - (size_t)pending_groups_allowed;
    const size_t end = self->group_ends[landing_groups - 1];
    for (size_t i = 0; i < end; ++i) {
        const CopyRecord &copy = self->copies[i];
        land(copy.dst, copy.src, copy.src_bytes);
    }
    self->copies.erase(self->copies.begin(), self->copies.begin() + (ptrdiff_t)end);
    self->group_ends.erase(self->group_ends.begin(), self->group_ends.begin() + (ptrdiff_t)landing_groups);
    for (size_t &group_end : self->group_ends) {
        group_end -= end;
    }
}

/* ---- Exits --------------------------------------------------------------------------------------- */

void check_exit_against_collectives(Thread *self) {
    const Warp &warp = warp_of(self);
    for (const Collective &c : warp.pending) {
        if (c.mask & lane_bit(self)) {
            fail_thread(self, "exited while lanes " + format_lanes(c.arrived) + " wait for it at " + c.name +
                                  " at " + format_site(c.site) + " (mask " + hex(c.mask) + ")");
        }
    }
}

} /* namespace cuda_emu */
