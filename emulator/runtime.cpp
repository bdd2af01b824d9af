/*
 * runtime.cpp - launches, blocks, fibers, barriers and schedules of the CPU emulator.
 *
 * A launch runs its blocks on `host_threads` host threads (workers). A worker runs one block at a time to
 * completion: every CUDA thread of the block is a fiber (ucontext) with its own stack, started in the
 * schedule's order; a fiber runs until it reaches a barrier, a warp collective or its end, then switches
 * directly to the next ready fiber. Before a block starts, its dynamic shared memory is allocated with
 * exactly the launched size and filled with 0xff bytes (NaN as f32, f16 and bf16).
 *
 * Checks (each stops the block with an error naming the thread and the call site; the launch reports the
 * error of its lowest-numbered failing block):
 *   - __syncthreads reached at two different call sites at once (divergent barrier);
 *   - a thread that exits while others wait at a barrier, or a barrier reached after some thread exited
 *     (a barrier only some threads reach);
 *   - no thread can continue (deadlock), with what each waiting thread waits for;
 *   - warp collectives: see collectives.cpp.
 *
 * Schedules: round-robin (threads and blocks in index order), reversed (descending order), random
 * (seeded; the next fiber is drawn from all ready ones at every switch, including after a collective or
 * barrier completes, and blocks run in a random order). A correct kernel gives bit-identical results under
 * every schedule.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "internal.h"
#include "launch.h"
#include "sanitizer.h"

namespace cuda_emu {

__thread const ThreadContext *current = nullptr;
__thread Thread *running = nullptr;

/* ---- Kernel registry ----------------------------------------------------------------------------- */

namespace {

struct Registry {
    std::vector<Kernel> kernels;
    std::vector<std::string> duplicates;
};

Registry &registry() {
    static Registry instance;
    return instance;
}

} /* namespace */

KernelRegistration::KernelRegistration(const char *name, int max_threads, KernelFunction function) {
    Registry &r = registry();
    for (const Kernel &kernel : r.kernels) {
        if (kernel.name == name) {
            r.duplicates.push_back(name);
            return;
        }
    }
    r.kernels.push_back(Kernel{name, max_threads, function});
}

const std::vector<const Kernel *> &sorted_kernels() {
    /* Built on first use, after every static registration has run. */
    static const std::vector<const Kernel *> sorted = [] {
        std::vector<const Kernel *> list;
        for (const Kernel &kernel : registry().kernels) {
            list.push_back(&kernel);
        }
        std::sort(list.begin(), list.end(), [](const Kernel *a, const Kernel *b) { return a->name < b->name; });
        return list;
    }();
    return sorted;
}

const Kernel *find_kernel(const char *name) {
    for (const Kernel *kernel : sorted_kernels()) {
        if (kernel->name == name) {
            return kernel;
        }
    }
    return nullptr;
}

/* ---- Messages ------------------------------------------------------------------------------------ */

std::string format_site(Site site) {
    if (site.file == nullptr) {
        return "?";
    }
    const char *slash = strrchr(site.file, '/');
    return std::string(slash ? slash + 1 : site.file) + ":" + std::to_string(site.line);
}

bool same_site(Site a, Site b) {
    return a.line == b.line && (a.file == b.file || (a.file && b.file && strcmp(a.file, b.file) == 0));
}

std::string format_lanes(unsigned mask) {
    std::string out = "{";
    bool first = true;
    for (int lane = 0; lane < 32;) {
        if (!(mask >> lane & 1u)) {
            ++lane;
            continue;
        }
        int end = lane;
        while (end + 1 < 32 && (mask >> (end + 1) & 1u)) {
            ++end;
        }
        out += first ? "" : ",";
        out += std::to_string(lane);
        if (end > lane) {
            out += "-" + std::to_string(end);
        }
        first = false;
        lane = end + 1;
    }
    return out + "}";
}

namespace {

std::string format_index(uint3 v) {
    return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

} /* namespace */

void Launch::record_error(uint64_t block_linear, const std::string &message) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (error.empty() || block_linear < error_block) {
        error = message;
        error_block = block_linear;
    }
    failed.store(true);
}

/* ---- Fiber switching ----------------------------------------------------------------------------- */

namespace {

/* Saves the running context in `from` and resumes `to`; returns when something switches back to `from`.
 * `from_finished`: `from` will never be resumed (its thread exited or failed). */
void switch_fiber(Fiber &from, Fiber &to, bool from_finished) {
#if defined(CUDA_EMU_ASAN)
    __sanitizer_start_switch_fiber(from_finished ? nullptr : &from.asan_fake_stack, to.stack_bottom, to.stack_size);
#else
    (void)from_finished;
#endif
#if defined(CUDA_EMU_TSAN)
    __tsan_switch_to_fiber(to.tsan, kTsanSwitchNoSync);
#endif
    swapcontext(&from.context, &to.context);
#if defined(CUDA_EMU_ASAN)
    __sanitizer_finish_switch_fiber(from.asan_fake_stack, nullptr, nullptr);
#endif
}

/* Runs thread `to`; `from` is the running thread, or NULL on the worker's own context. */
void resume(Thread *from, Thread *to, bool from_finished) {
    Block *block = to->block;
    to->state = ThreadState::Running;
    running = to;
    current = &to->context;
    switch_fiber(from ? from->fiber : block->host, to->fiber, from_finished);
}

[[noreturn]] void return_to_worker(Thread *from) {
    Block *block = from->block;
    running = nullptr;
    current = nullptr;
    switch_fiber(from->fiber, block->host, true);
    /* A finished fiber is never resumed. */
    std::abort();
}

int pop_ready(Block *block) {
    if (block->ready_count == 0) {
        return -1;
    }
    const size_t n = block->ready.size();
    if (block->launch->schedule == ScheduleKind::Random && block->ready_count > 1) {
        const size_t pick = (block->ready_head + block->rng() % block->ready_count) % n;
        std::swap(block->ready[pick], block->ready[block->ready_head]);
    }
    const int index = block->ready[block->ready_head];
    block->ready_head = (block->ready_head + 1) % n;
    block->ready_count -= 1;
    return index;
}

std::string describe_waiting(Block *block) {
    std::string out;
    int at_barrier = 0;
    for (const Thread &t : block->threads) {
        at_barrier += t.state == ThreadState::AtBarrier;
    }
    if (at_barrier > 0) {
        out += std::to_string(at_barrier) + " threads wait at __syncthreads at " + format_site(block->barrier_site);
    }
    for (size_t w = 0; w < block->warps.size(); ++w) {
        for (const Collective &c : block->warps[w].pending) {
            out += out.empty() ? "" : "; ";
            out += "lanes " + format_lanes(c.arrived) + " of warp " + std::to_string(w) + " wait at " + c.name +
                   " at " + format_site(c.site) + " for lanes " + format_lanes(c.mask & ~c.arrived);
        }
    }
    const std::string hopper = describe_hopper_waits(block);
    if (!hopper.empty()) {
        out += (out.empty() ? "" : "; ") + hopper;
    }
    if (block->exited > 0) {
        out += (out.empty() ? "" : "; ") + std::to_string(block->exited) + " threads have exited";
    }
    return out;
}

[[noreturn]] void deadlock(Thread *self) {
    fail_thread(self, "deadlock, no thread can continue: " + describe_waiting(self->block));
}

/* What a fiber runs: the kernel, then the exit checks; never returns. */
void thread_exit(Thread *self);

void fiber_main() {
    Thread *self = running;
#if defined(CUDA_EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    tsan_acquire(&self->block->tsan_start);
    const Launch *launch = self->block->launch;
    AttentionParams params = launch->params;
    launch->kernel->function(params);
    thread_exit(self);
}

void thread_exit(Thread *self) {
    Block *block = self->block;
    check_exit_against_collectives(self);
    check_exit_against_hopper(self);
    if (block->arrived > 0) {
        fail_thread(self, "exited while " + std::to_string(block->arrived) + " threads wait at __syncthreads at " +
                              format_site(block->barrier_site) +
                              ": every thread of the block must reach every barrier (a barrier only some threads "
                              "reach)");
    }
    self->state = ThreadState::Exited;
    block->exited += 1;
    block->warps[self->index / 32].exited |= 1u << self->context.lane;
    tsan_release(&block->tsan_done);
    int next = pop_ready(block);
    if (next < 0 && hopper_make_progress(block)) {
        next = pop_ready(block);
    }
    if (next >= 0) {
        resume(self, &block->threads[next], true);
        std::abort(); /* a finished fiber is never resumed */
    }
    if (block->exited == block->thread_count) {
        return_to_worker(self);
    }
    deadlock(self);
}

} /* namespace */

/* ---- Scheduling primitives used by barriers and collectives -------------------------------------- */

void make_ready(Block *block, int thread_index) {
    block->threads[thread_index].state = ThreadState::Ready;
    const size_t n = block->ready.size();
    block->ready[(block->ready_head + block->ready_count) % n] = thread_index;
    block->ready_count += 1;
}

void wait_for_others(Thread *self) {
    Block *block = self->block;
    int next = pop_ready(block);
    if (next < 0 && hopper_make_progress(block)) {
        next = pop_ready(block);
    }
    if (next < 0) {
        deadlock(self);
    }
    if (next == self->index) {
        self->state = ThreadState::Running;
        return;
    }
    resume(self, &block->threads[next], false);
}

void maybe_yield(Thread *self) {
    if (self->block->launch->schedule == ScheduleKind::Random) {
        make_ready(self->block, self->index);
        wait_for_others(self);
    }
}

void fail_thread(Thread *self, const std::string &message) {
    Block *block = self->block;
    block->launch->record_error(block->linear, "block " + format_index(block->index) + ", thread " +
                                                   format_index(self->context.thread_idx) + ": " + message);
    block->failed = true;
    tsan_release(&block->tsan_done);
    return_to_worker(self);
}

void fail(Site site, const char *message) {
    fail_thread(running, std::string(message) + " at " + format_site(site));
}

/* ---- __syncthreads -------------------------------------------------------------------------------- */

int sync_threads(Site site, BarrierReduce reduce, int value) {
    Thread *self = running;
    Block *block = self->block;
    if (block->exited > 0) {
        const Thread *gone = nullptr;
        for (const Thread &t : block->threads) {
            if (t.state == ThreadState::Exited) {
                gone = &t;
                break;
            }
        }
        fail_thread(self, "reached __syncthreads at " + format_site(site) + " after thread " +
                              format_index(gone->context.thread_idx) +
                              " exited without reaching it: every thread of the block must reach every barrier "
                              "(a barrier only some threads reach)");
    }
    if (block->arrived == 0) {
        block->barrier_site = site;
        block->reduce_count = 0;
        block->reduce_and = 1;
        block->reduce_or = 0;
    } else if (!same_site(site, block->barrier_site)) {
        fail_thread(self, "divergent barriers: reached __syncthreads at " + format_site(site) + " while " +
                              std::to_string(block->arrived) + " threads wait at __syncthreads at " +
                              format_site(block->barrier_site));
    }
    block->arrived += 1;
    block->reduce_count += value != 0;
    block->reduce_and &= value != 0;
    block->reduce_or |= value != 0;
    const unsigned generation = block->generation;
    tsan_release(&block->tsan_barrier[generation & 1]);

    if (block->arrived == block->thread_count) {
        int result = 0;
        switch (reduce) {
        case BarrierReduce::None: result = 0; break;
        case BarrierReduce::Count: result = block->reduce_count; break;
        case BarrierReduce::And: result = block->reduce_and; break;
        case BarrierReduce::Or: result = block->reduce_or; break;
        }
        block->arrived = 0;
        block->generation += 1;
        for (Thread &t : block->threads) {
            if (t.state == ThreadState::AtBarrier) {
                t.barrier_result = result;
            }
        }
        self->barrier_result = result;
        make_ready_where(block, [](const Thread &t) { return t.state == ThreadState::AtBarrier; });
        maybe_yield(self);
    } else {
        self->state = ThreadState::AtBarrier;
        wait_for_others(self);
    }
    tsan_acquire(&block->tsan_barrier[generation & 1]);
    return self->barrier_result;
}

/* ---- Workers and blocks -------------------------------------------------------------------------- */

namespace {

#if defined(CUDA_EMU_TSAN)
/* TSan fibers outlive workers: creating one costs more than running a small block (TSan maps and clears
 * its per-thread state), so finished workers hand theirs back for the next launch. A fiber taken by
 * another host thread is ordered after its last use by the pool's mutex and by each block's tsan_start. */
class TsanFiberPool {
  public:
    void *take() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (free_.empty()) {
            return __tsan_create_fiber(0);
        }
        void *fiber = free_.back();
        free_.pop_back();
        return fiber;
    }
    void give(void *fiber, bool reusable) {
        if (!reusable) {
            __tsan_destroy_fiber(fiber);
            return;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        free_.push_back(fiber);
    }

  private:
    std::mutex mutex_;
    std::vector<void *> free_;
};

/* Constructed before main (a function-local static would be initialised by whichever worker comes first,
 * through a guard that this uninstrumented file reads without telling TSan). */
TsanFiberPool tsan_fiber_pool;

TsanFiberPool &tsan_fibers() { return tsan_fiber_pool; }
#endif

/* Fiber stacks of one worker: one mapping, a PROT_NONE guard page below each stack, so an overflow stops
 * with SIGSEGV instead of corrupting a neighbour. Pages are committed only when touched. */
class StackArena {
  public:
    StackArena(size_t count, size_t stack_bytes) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        stack_bytes_ = (stack_bytes + page - 1) / page * page;
        stride_ = stack_bytes_ + page;
        bytes_ = stride_ * count;
        void *base =
            mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            throw std::runtime_error("cannot map " + std::to_string(bytes_) + " bytes of fiber stacks");
        }
        base_ = static_cast<char *>(base);
        for (size_t i = 0; i < count; ++i) {
            mprotect(base_ + i * stride_, page, PROT_NONE);
        }
        page_ = page;
    }
    ~StackArena() { munmap(base_, bytes_); }
    StackArena(const StackArena &) = delete;
    StackArena &operator=(const StackArena &) = delete;

    char *bottom(size_t i) const { return base_ + i * stride_ + page_; }
    size_t size() const { return stack_bytes_; }

  private:
    size_t stack_bytes_ = 0, stride_ = 0, bytes_ = 0, page_ = 0;
    char *base_ = nullptr;
};

class Worker {
  public:
    explicit Worker(Launch &launch)
        : launch_(launch), stacks_((size_t)launch.block.x * launch.block.y * launch.block.z, launch.stack_bytes) {
        Block &b = block_;
        const dim3 bd = launch.block;
        b.launch = &launch;
        b.thread_count = (int)(bd.x * bd.y * bd.z);
        b.threads.resize((size_t)b.thread_count);
        b.ready.assign((size_t)b.thread_count, 0);
        b.warps.resize((size_t)(b.thread_count + 31) / 32);
        for (Warp &w : b.warps) {
            w.pending.reserve(32); /* never reallocated by a fiber (TSan would see the free as a race) */
        }
        for (int i = 0; i < b.thread_count; ++i) {
            Thread &t = b.threads[(size_t)i];
            t.block = &b;
            t.index = i;
            t.context.thread_idx =
                uint3{(unsigned)i % bd.x, (unsigned)i / bd.x % bd.y, (unsigned)i / (bd.x * bd.y)};
            t.context.block_dim = bd;
            t.context.grid_dim = launch.grid;
            t.context.lane = (unsigned)i % 32;
            t.fiber.stack_bottom = stacks_.bottom((size_t)i);
            t.fiber.stack_size = stacks_.size();
            t.copies.reserve(64);
            t.group_ends.reserve(16);
            b.warps[(size_t)i / 32].exists |= 1u << (i % 32);
        }
#if defined(CUDA_EMU_ASAN)
        pthread_attr_t attr;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            void *bottom = nullptr;
            size_t size = 0;
            pthread_attr_getstack(&attr, &bottom, &size);
            b.host.stack_bottom = bottom;
            b.host.stack_size = size;
            pthread_attr_destroy(&attr);
        }
#endif
#if defined(CUDA_EMU_TSAN)
        b.host.tsan = __tsan_get_current_fiber();
        for (Thread &t : b.threads) {
            t.fiber.tsan = tsan_fibers().take();
        }
#endif
    }

    ~Worker() {
#if defined(CUDA_EMU_TSAN)
        /* A failed block's fibers were abandoned mid-kernel (their TSan call stacks never unwound). */
        for (Thread &t : block_.threads) {
            tsan_fibers().give(t.fiber.tsan, !failed_);
        }
#endif
    }
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    /* Runs one block to completion; false when it failed (the launch holds the error). */
    bool run_block(uint64_t linear) {
        const bool ok = run_block_once(linear);
        failed_ = failed_ || !ok;
        return ok;
    }

  private:
    bool run_block_once(uint64_t linear) {
        Block &b = block_;
        const dim3 grid = launch_.grid;
        b.linear = linear;
        b.index = uint3{(unsigned)(linear % grid.x), (unsigned)(linear / grid.x % grid.y),
                        (unsigned)(linear / ((uint64_t)grid.x * grid.y))};
        b.arrived = 0;
        b.generation = 0;
        b.exited = 0;
        b.failed = false;
        b.ready_head = 0;
        b.ready_count = 0;
        b.rng.seed(launch_.seed ^ (linear * 0x9e3779b97f4a7c15ull) ^ 0x5851f42d4c957f2dull);
        b.hopper.reset(b.thread_count);

        const size_t shared_bytes = launch_.shared_bytes;
        void *shared = nullptr;
        if (shared_bytes > 0) {
            /* Exactly the launched size (ASan's redzones then catch any access past it), 16-byte aligned. */
            if (posix_memalign(&shared, 16, shared_bytes) != 0) {
                throw std::bad_alloc();
            }
            memset(shared, 0xff, shared_bytes);
        }
        b.shared = static_cast<unsigned char *>(shared);

        for (Warp &w : b.warps) {
            w.exited = 0;
            w.syncwarp_generation = 0;
            w.pending.clear();
        }
        for (Thread &t : b.threads) {
            t.state = ThreadState::Ready;
            t.copies.clear();
            t.group_ends.clear();
            t.context.block_idx = b.index;
            t.context.shared_memory = b.shared;
            getcontext(&t.fiber.context);
            t.fiber.context.uc_stack.ss_sp = const_cast<void *>(t.fiber.stack_bottom);
            t.fiber.context.uc_stack.ss_size = t.fiber.stack_size;
            t.fiber.context.uc_link = nullptr;
            makecontext(&t.fiber.context, fiber_main, 0);
#if defined(CUDA_EMU_ASAN)
            /* ASan's swapcontext interceptor clears the shadow of the target's uc_stack on every switch
             * (128 KiB per MiB of stack); the start/finish_switch_fiber annotations tell it the stack
             * instead. makecontext has consumed uc_stack already. Stacks are never reused after a failure
             * (the worker stops), so no stale redzones remain from abandoned frames. */
            t.fiber.context.uc_stack.ss_sp = nullptr;
            t.fiber.context.uc_stack.ss_size = 0;
            t.fiber.asan_fake_stack = nullptr;
#endif
#if defined(CUDA_EMU_TSAN)
            const std::string name = "thread " + format_index(t.context.thread_idx) + " block " +
                                     format_index(b.index) + " " + launch_.kernel->name;
            __tsan_set_fiber_name(t.fiber.tsan, name.c_str());
#endif
        }
        make_ready_where(&b, [](const Thread &) { return true; });
        /* Everything the worker did before (the previous block, the shared memory fill) happens before
         * this block's threads start (each acquires it in fiber_main). */
        tsan_release(&b.tsan_start);

        const int first = pop_ready(&b);
        resume(nullptr, &b.threads[(size_t)first], false);
        /* Back on the worker's context: every thread exited, or one failed. */
        running = nullptr;
        current = nullptr;
        tsan_acquire(&b.tsan_done);
        /* After a failure, threads abandoned at a barrier or collective never released what they wrote:
         * tearing the block down would look like a race against them. */
        if (b.failed) {
            tsan_ignore_begin();
        }
        free(shared);
        b.shared = nullptr;
        if (b.failed) {
            tsan_ignore_end();
        }
        return !b.failed;
    }

    Launch &launch_;
    StackArena stacks_;
    Block block_;
    bool failed_ = false;
};

uint64_t gcd(uint64_t a, uint64_t b) {
    while (b != 0) {
        const uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Default fiber stack: room for a kernel's register arrays at -O0 and sanitizer frames. */
size_t default_stack_bytes() {
    if (const char *env = getenv("CUDA_EMU_STACK_KIB")) {
        const long kib = atol(env);
        if (kib > 0) {
            return (size_t)kib * 1024;
        }
    }
#if defined(CUDA_EMU_ASAN) || defined(CUDA_EMU_TSAN)
    return 1024 * 1024;
#else
    return 256 * 1024;
#endif
}

#if defined(CUDA_EMU_ASAN)
/* AddressSanitizer names host threads only: say which CUDA thread made the access it reports. */
void report_cuda_thread() {
    if (const Thread *t = running) {
        fprintf(stderr, "cuda-emulator: the access above was made by thread %s of block %s of kernel %s\n",
                format_index(t->context.thread_idx).c_str(), format_index(t->block->index).c_str(),
                t->block->launch->kernel->name.c_str());
    }
}
#endif

} /* namespace */

/* ---- Launch -------------------------------------------------------------------------------------- */

LaunchStatus launch_kernel(const LaunchRequest &request, std::string *message) {
    if (!registry().duplicates.empty()) {
        *message = "kernel " + registry().duplicates.front() + " is defined twice in this build";
        return LaunchStatus::InvalidLaunch;
    }
    const Kernel *kernel = find_kernel(request.kernel);
    if (kernel == nullptr) {
        std::string known;
        for (const Kernel *k : sorted_kernels()) {
            known += (known.empty() ? "" : ", ") + k->name;
        }
        *message = std::string("no kernel named '") + request.kernel + "' in this build (known: " + known + ")";
        return LaunchStatus::UnknownKernel;
    }
    const dim3 g = request.grid, b = request.block;
    const uint64_t threads = (uint64_t)b.x * b.y * b.z;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024) {
        *message = "block " + format_index(uint3{b.x, b.y, b.z}) +
                   " is not a valid CUDA block: every dimension at least 1, x and y at most 1024, z at most 64, "
                   "at most 1024 threads";
        return LaunchStatus::InvalidLaunch;
    }
    if (threads > (uint64_t)kernel->max_threads) {
        *message = "block of " + std::to_string(threads) + " threads exceeds " + kernel->name +
                   "'s __launch_bounds__ of " + std::to_string(kernel->max_threads);
        return LaunchStatus::InvalidLaunch;
    }
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
        *message = "grid " + format_index(uint3{g.x, g.y, g.z}) +
                   " is not a valid CUDA grid: x from 1 to 2^31 - 1, y and z from 1 to 65535";
        return LaunchStatus::InvalidLaunch;
    }
    if (request.shared_bytes > kMaxSharedBytes) {
        *message = std::to_string(request.shared_bytes) + " bytes of dynamic shared memory exceed the " +
                   std::to_string(kMaxSharedBytes) + " a block can have (227 KiB on sm_90)";
        return LaunchStatus::InvalidLaunch;
    }

#if defined(CUDA_EMU_ASAN)
    static const bool death_callback_set = (__sanitizer_set_death_callback(report_cuda_thread), true);
    (void)death_callback_set;
#endif
    Launch launch;
    launch.kernel = kernel;
    launch.params = request.params;
    launch.grid = g;
    launch.block = b;
    launch.shared_bytes = request.shared_bytes;
    launch.schedule = request.schedule;
    launch.seed = request.seed;
    launch.stack_bytes = default_stack_bytes();

    const uint64_t blocks = (uint64_t)g.x * g.y * g.z;
    /* Block order: identity, reversed, or a random affine permutation i -> (a i + c) mod blocks. */
    uint64_t a = 1, c = 0;
    if (request.schedule == ScheduleKind::Random) {
        std::mt19937_64 rng(request.seed ^ 0xb10c5eedull);
        c = rng() % blocks;
        do {
            a = rng() % blocks | 1u;
        } while (gcd(a, blocks) != 1);
    }
    const auto order = [&](uint64_t i) -> uint64_t {
        switch (request.schedule) {
        case ScheduleKind::Reversed: return blocks - 1 - i;
        case ScheduleKind::Random: return (uint64_t)(((unsigned __int128)a * i + c) % blocks);
        default: return i;
        }
    };

    std::atomic<uint64_t> next{0};
    const auto work = [&]() {
        try {
            std::unique_ptr<Worker> worker(new Worker(launch));
            bool failed_here = false;
            while (!launch.failed.load()) {
                const uint64_t i = next.fetch_add(1);
                if (i >= blocks) {
                    break;
                }
                failed_here = !worker->run_block(order(i));
            }
            /* As in run_block: the thread states of a failed block were last touched by abandoned fibers. */
            if (failed_here) {
                tsan_ignore_begin();
            }
            worker.reset();
            if (failed_here) {
                tsan_ignore_end();
            }
        } catch (const std::exception &e) {
            launch.record_error(0, std::string("the emulator itself failed: ") + e.what());
        }
    };
    unsigned workers =
        request.host_threads > 0 ? request.host_threads : std::max(1u, std::thread::hardware_concurrency());
    workers = (unsigned)std::min<uint64_t>(workers, blocks);
    std::vector<std::thread> helpers;
    for (unsigned i = 1; i < workers; ++i) {
        helpers.emplace_back(work);
    }
    work();
    for (std::thread &t : helpers) {
        t.join();
    }
    if (launch.failed.load()) {
        *message = launch.error;
        return LaunchStatus::KernelError;
    }
    return LaunchStatus::Ok;
}

} /* namespace cuda_emu */
