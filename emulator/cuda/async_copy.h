/*
 * async_copy.h - how the emulator writes the destination of an asynchronous copy into shared memory
 * (cp.async today; TMA and other bulk copies are to call the same two functions), so that the checking
 * mode's sanitizers see each write as one made by the CUDA thread that issued the copy.
 *
 * On a GPU an asynchronous copy writes its destination at some moment between its issue and the wait that
 * completes it; an access by another thread that no barrier orders against that whole window is a race
 * (reading a tile while the next copy into it is in flight, or before the copy has landed). The emulator
 * writes the destination twice, both times on the issuing thread's fiber:
 *   - at the issue (async_copy_issue): 0xff bytes, NaN as f32, f16 and bf16, so that a read before the
 *     wait shows up as NaN;
 *   - at the wait that completes the copy (async_copy_land): the data, then the zero fill.
 *
 * ThreadSanitizer is told about both writes (and the read of the source) explicitly, with
 * __tsan_write_range / __tsan_read_range: g++ expands a fixed-size memset or memcpy inline after its
 * ThreadSanitizer pass, so the stores themselves can be invisible to it (the 16-byte poison of cp.async
 * was), and a copy engine's writes must be seen whatever the compiler makes of them. The functions are
 * inline and called from the PTX helpers (ptx.cuh), so they are compiled into the kernel's translation
 * unit (instrumented in the checking mode, unlike the runtime): a report names the kernel's call site.
 * AddressSanitizer sees the memset and memcpy through its interceptors.
 *
 * gcc 12's <sanitizer/tsan_interface.h> does not declare the access functions, although libtsan exports
 * them, so the declarations are written out here (as emulator/sanitizer.h does for the fiber API).
 */
#ifndef CUDA_ATTENTION_EMULATOR_ASYNC_COPY_H
#define CUDA_ATTENTION_EMULATOR_ASYNC_COPY_H

#include <stddef.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
extern "C" {
void __tsan_read_range(void *addr, unsigned long size);
void __tsan_write_range(void *addr, unsigned long size);
}
#endif

namespace cuda_emu {

/* Tells ThreadSanitizer that the running CUDA thread reads [source, source + bytes) and writes
 * [destination, destination + bytes) now (no-ops in the other builds). */
inline void announce_async_read(const void *source, size_t bytes) {
#if defined(__SANITIZE_THREAD__)
    if (bytes > 0) {
        __tsan_read_range(const_cast<void *>(source), bytes);
    }
#else
    (void)source;
    (void)bytes;
#endif
}

inline void announce_async_write(void *destination, size_t bytes) {
#if defined(__SANITIZE_THREAD__)
    if (bytes > 0) {
        __tsan_write_range(destination, bytes);
    }
#else
    (void)destination;
    (void)bytes;
#endif
}

/* The issue of an asynchronous copy of `bytes` bytes into shared_dst: the destination is undefined
 * until the copy completes, and written by the copy from now on. */
inline void async_copy_issue(void *shared_dst, size_t bytes) {
    announce_async_write(shared_dst, bytes);
    memset(shared_dst, 0xff, bytes);
}

/* The completion of that copy: src_bytes bytes from global_src, then zeros up to `bytes`. */
inline void async_copy_land(void *shared_dst, const void *global_src, size_t src_bytes, size_t bytes) {
    announce_async_read(global_src, src_bytes);
    announce_async_write(shared_dst, bytes);
    if (src_bytes > 0) {
        memcpy(shared_dst, global_src, src_bytes);
    }
    memset(static_cast<unsigned char *>(shared_dst) + src_bytes, 0, bytes - src_bytes);
}

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_ASYNC_COPY_H */
