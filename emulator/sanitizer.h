/*
 * sanitizer.h - the fiber annotations of the checking mode, as no-ops in the ordinary build.
 *
 * The checking mode (see docs/emulator.md) builds a standalone checker executable twice:
 *   - with ThreadSanitizer: kernel code instrumented, this runtime not (its own bookkeeping is shared by
 *     all fibers of a block and would look like races), compiled with -DCUDA_EMU_TSAN. Each CUDA thread
 *     is a TSan fiber; switches carry no synchronisation (__tsan_switch_to_fiber_no_sync), so only the
 *     release/acquire pairs placed at barriers and __syncwarp order memory between CUDA threads, and a
 *     missing __syncthreads shows up as a data race on shared memory.
 *   - with AddressSanitizer: everything instrumented, -DCUDA_EMU_ASAN; each switch tells ASan which stack
 *     is about to run (__sanitizer_start/finish_switch_fiber), and shared memory and the checker's global
 *     buffers are exact-size heap blocks, so any out-of-bounds access hits a redzone.
 *
 * gcc 12's <sanitizer/tsan_interface.h> does not declare the fiber API, although Debian's libtsan2
 * exports it, so the declarations are written out here.
 *
 * Memory accesses are never annotated here: the runtime is not instrumented, so an access it made would
 * be attributed to no kernel line. The one explicit access annotation, the writes of asynchronous copies
 * (cp.async, later TMA), lives in emulator/cuda/async_copy.h and is compiled into the kernels.
 */
#ifndef CUDA_ATTENTION_EMULATOR_SANITIZER_H
#define CUDA_ATTENTION_EMULATOR_SANITIZER_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__) && !defined(CUDA_EMU_ASAN)
#define CUDA_EMU_ASAN 1
#endif

#if defined(CUDA_EMU_TSAN)
extern "C" {
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_set_fiber_name(void *fiber, const char *name);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
}
#endif

#if defined(CUDA_EMU_ASAN)
extern "C" {
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
void __sanitizer_set_death_callback(void (*callback)(void));
}
#endif

namespace cuda_emu {

/* Flag of __tsan_switch_to_fiber: the switch itself does not synchronise the two fibers. */
constexpr unsigned kTsanSwitchNoSync = 1;

/* Happens-before edges for ThreadSanitizer: release by every thread that arrives, acquire by every thread
 * that leaves. `sync` is any address that stands for the synchronisation object. */
inline void tsan_release(void *sync) {
#if defined(CUDA_EMU_TSAN)
    __tsan_release(sync);
#else
    (void)sync;
#endif
}

inline void tsan_acquire(void *sync) {
#if defined(CUDA_EMU_TSAN)
    __tsan_acquire(sync);
#else
    (void)sync;
#endif
}

/* Memory accesses (and frees) the calling thread makes between these two calls are not checked: used
 * only to tear down a block whose threads were abandoned by an error, which never released what they
 * wrote. */
inline void tsan_ignore_begin() {
#if defined(CUDA_EMU_TSAN)
    __tsan_ignore_thread_begin();
#endif
}

inline void tsan_ignore_end() {
#if defined(CUDA_EMU_TSAN)
    __tsan_ignore_thread_end();
#endif
}

/* Which sanitizer this build of the runtime cooperates with, for reports. */
inline const char *sanitizer_name() {
#if defined(CUDA_EMU_TSAN)
    return "thread";
#elif defined(CUDA_EMU_ASAN)
    return "address";
#else
    return "none";
#endif
}

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_SANITIZER_H */
