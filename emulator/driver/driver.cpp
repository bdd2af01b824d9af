/*
 * driver.cpp - a stand-in for the CUDA driver (libcuda.so.1) that runs the crate's kernels on the CPU
 * emulator. See docs/emulated-driver.md.
 *
 * The library exports the cu* entry points that the crate and cudarc's safe layer call (cudarc resolves
 * each symbol on first use, so a missing one panics with "Missing symbol cuXxx"). Device memory is host
 * memory (a device pointer is a host address, 256-byte aligned, as cuMemAlloc's are); kernels run on the
 * emulator (emulator_api.h) when they are enqueued, in issue order, one at a time (one lock around every
 * call). Streams and events keep a virtual timeline so that event times respect stream order: an operation
 * starts when its stream is ready and the host has issued it, and lasts as long as the emulator took; host
 * waits (synchronisation, copies to pageable memory) advance the host's clock to the stream's. Work on two
 * streams therefore overlaps in the timeline as it may on a GPU, although it ran one after the other.
 *
 * Errors follow the driver: launch configuration errors return at the launch; a kernel that faults (the
 * emulator reports a broken rule, or a tensor extent outside its allocation) returns CUDA_SUCCESS at the
 * launch and leaves a sticky error (CUDA_ERROR_LAUNCH_FAILED, CUDA_ERROR_ILLEGAL_ADDRESS) that every later
 * call in the context returns, until the primary context is released. Stream capture records launches,
 * memsets, device copies, copies with host memory, stream-ordered allocations and host functions into a
 * graph; what the driver refuses during capture is refused here with its error code (see the doc).
 *
 * The emulated device is configured by environment variables, read at cuInit (docs/emulated-driver.md):
 * CUDA_EMU_DEVICE_CC, _SMS, _SHARED_OPTIN, _MEMORY, _L2, _COUNT, _MEMORY_POOLS, _NAME,
 * CUDA_EMU_DRIVER_VERSION, CUDA_EMU_DRIVER_TRACE.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "attention_params.h"
#include "cuda_types.h"
#include "emulator_api.h"
#include "image.h"
#include "kernel_registry.h"

/* ================================================================================================== */
/* Objects behind the opaque handles.                                                                 */
/* ================================================================================================== */

namespace emu_driver {
struct GraphBody;
struct Capture;
} /* namespace emu_driver */

struct CUctx_st {
    int device = 0;
    int refcount = 0;
    CUresult sticky = CUDA_SUCCESS;
    std::string sticky_message;
};

struct CUstream_st {
    CUcontext ctx = nullptr;
    unsigned flags = 0;
    int priority = 0;
    /* Virtual time (ms) at which the work enqueued so far is done. */
    double ready = 0;
    std::shared_ptr<emu_driver::Capture> capture;
};

struct CUevent_st {
    CUcontext ctx = nullptr;
    unsigned flags = 0;
    enum class State { Never, Recorded, Captured } state = State::Never;
    double time = 0;
    std::weak_ptr<emu_driver::Capture> capture;
};

struct CUmod_st {
    CUcontext ctx = nullptr;
    emu_driver::ModuleImage image;
    std::vector<CUfunction> functions;
};

struct CUfunc_st {
    CUmodule module = nullptr;
    emu_driver::KernelImage kernel;
    const KernelInfo *info = nullptr; /* the emulator registry's record */
    int max_dynamic_shared = 48 * 1024;
    int carveout = -1;
};

namespace emu_driver {

/* A recorded operation of a graph. */
struct Node {
    enum class Kind { Kernel, Memset, Copy, Alloc, Free, Host } kind;
    CUfunction function = nullptr;
    uint32_t grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
    uint32_t shared = 0;
    AttentionParams params{};
    CUdeviceptr dst = 0, src = 0;
    void *host_dst = nullptr;
    const void *host_src = nullptr;
    size_t bytes = 0;
    unsigned char value = 0;
    CUhostFn fn = nullptr;
    void *user_data = nullptr;
};

struct GraphBody {
    CUcontext ctx = nullptr;
    std::vector<Node> nodes;
    /* Allocations made by the graph's allocation nodes (stream-ordered allocation during capture). */
    std::vector<CUdeviceptr> owned;
    ~GraphBody();
};

struct Capture {
    uint64_t id = 0;
    CUstream origin = nullptr;
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
    std::thread::id thread;
    bool invalidated = false;
    std::string why;
    std::shared_ptr<GraphBody> body;
};

} /* namespace emu_driver */

struct CUgraph_st {
    std::shared_ptr<emu_driver::GraphBody> body;
};

struct CUgraphExec_st {
    std::shared_ptr<emu_driver::GraphBody> body;
    unsigned long long flags = 0;
};

namespace emu_driver {
namespace {

/* ================================================================================================== */
/* Configuration and state.                                                                           */
/* ================================================================================================== */

struct DeviceConfig {
    int count = 1;
    int cc_major = 9, cc_minor = 0;
    int sms = 132;
    int shared_per_block = 48 * 1024;
    int shared_optin = 232448;
    int shared_per_sm = 233472;
    int reserved_shared = 1024;
    size_t total_memory = size_t(4) << 30;
    int l2_bytes = 50 << 20;
    bool memory_pools = true;
    int driver_version = 13000;
    std::string name;
    bool trace = false;
};

struct Allocation {
    size_t size = 0;
    CUcontext ctx = nullptr;
    /* Made by a graph's allocation node: kept until the graph is gone. */
    GraphBody *graph = nullptr;
    bool freed_by_user = false;
};

struct State {
    std::recursive_mutex mutex;
    bool initialised = false;
    CUresult init_result = CUDA_ERROR_NOT_INITIALIZED;
    DeviceConfig config;
    std::vector<std::unique_ptr<CUctx_st>> contexts; /* primary contexts, one per device */
    std::set<CUstream> streams;
    std::set<CUevent> events;
    std::set<CUmodule> modules;
    std::set<CUfunction> functions;
    std::set<CUgraph> graphs;
    std::set<CUgraphExec> execs;
    std::map<uintptr_t, Allocation> allocations;
    size_t used = 0;
    /* The legacy NULL stream of each context. */
    std::map<CUcontext, std::unique_ptr<CUstream_st>> null_streams;
    std::vector<std::shared_ptr<Capture>> captures;
    uint64_t next_capture = 1;
    /* Virtual host clock: wall time minus the time spent executing device work, plus waits. */
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    double credit_ms = 0;
};

State &state() {
    static State *instance = new State(); /* never destroyed: calls may come during process exit */
    return *instance;
}

thread_local CUcontext t_current = nullptr;
thread_local CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

void trace(const char *format, ...) {
    if (!state().config.trace) {
        return;
    }
    va_list args;
    va_start(args, format);
    fprintf(stderr, "cuda-emulated-driver: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
}

/* Always printed: what a real driver would not say, but a developer needs (why a kernel faulted). */
void report(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "cuda-emulated-driver: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
}

double wall_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - state().start).count();
}

double host_now() { return wall_ms() - state().credit_ms; }

/* The host waits until virtual time `t`. */
void host_wait_until(double t) {
    const double now = host_now();
    if (t > now) {
        state().credit_ms -= t - now;
    }
}

/* ---- Environment -------------------------------------------------------------------------------- */

bool env_size(const char *name, size_t *out) {
    const char *text = getenv(name);
    if (text == nullptr || *text == '\0') {
        return false;
    }
    char *end = nullptr;
    double value = strtod(text, &end);
    switch (end != nullptr ? *end : '\0') {
    case 'k': case 'K': value *= 1024.0; break;
    case 'm': case 'M': value *= 1024.0 * 1024.0; break;
    case 'g': case 'G': value *= 1024.0 * 1024.0 * 1024.0; break;
    default: break;
    }
    if (value < 0) {
        return false;
    }
    *out = static_cast<size_t>(value);
    return true;
}

bool env_int(const char *name, int *out) {
    size_t value = 0;
    if (!env_size(name, &value)) {
        return false;
    }
    *out = static_cast<int>(std::min<size_t>(value, 0x7fffffff));
    return true;
}

DeviceConfig read_config(std::string *error) {
    DeviceConfig c;
    if (const char *cc = getenv("CUDA_EMU_DEVICE_CC"); cc != nullptr && *cc != '\0') {
        int major = 0, minor = 0;
        if (sscanf(cc, "%d.%d", &major, &minor) != 2 || major < 7 || major > 12 || minor < 0 || minor > 9) {
            *error = std::string("CUDA_EMU_DEVICE_CC=") + cc + ": expected e.g. 8.0 or 9.0 (7.0 to 12.x)";
        }
        c.cc_major = major;
        c.cc_minor = minor;
    }
    /* Defaults of the device the compute capability suggests: A100 (8.x), H100 (9.0 and newer), V100/T4
     * (7.x). */
    if (c.cc_major == 8) {
        c.sms = 108;
        c.shared_optin = 166912;
        c.shared_per_sm = 167936;
        c.l2_bytes = 40 << 20;
    } else if (c.cc_major == 7) {
        c.sms = 80;
        c.shared_optin = 98304;
        c.shared_per_sm = 98304;
        c.reserved_shared = 0;
        c.l2_bytes = 6 << 20;
    }
    env_int("CUDA_EMU_DEVICE_SMS", &c.sms);
    env_int("CUDA_EMU_DEVICE_SHARED_OPTIN", &c.shared_optin);
    env_int("CUDA_EMU_DEVICE_L2", &c.l2_bytes);
    env_int("CUDA_EMU_DEVICE_COUNT", &c.count);
    env_int("CUDA_EMU_DRIVER_VERSION", &c.driver_version);
    env_size("CUDA_EMU_DEVICE_MEMORY", &c.total_memory);
    int pools = 1;
    if (env_int("CUDA_EMU_DEVICE_MEMORY_POOLS", &pools)) {
        c.memory_pools = pools != 0;
    }
    if (c.shared_optin > CUDA_EMU_MAX_SHARED_BYTES) {
        *error = "CUDA_EMU_DEVICE_SHARED_OPTIN above the emulator's limit of " +
                 std::to_string(CUDA_EMU_MAX_SHARED_BYTES) + " bytes";
    }
    c.shared_optin = std::max(c.shared_optin, c.shared_per_block);
    c.shared_per_sm = std::max(c.shared_per_sm, c.shared_optin + c.reserved_shared);
    c.sms = std::max(c.sms, 1);
    const char *name = getenv("CUDA_EMU_DEVICE_NAME");
    c.name = name != nullptr && *name != '\0'
                 ? std::string(name)
                 : "Emulated CUDA device (sm_" + std::to_string(c.cc_major * 10 + c.cc_minor) +
                       ", cuda-attention CPU emulator)";
    const char *trace_env = getenv("CUDA_EMU_DRIVER_TRACE");
    c.trace = trace_env != nullptr && *trace_env != '\0' && strcmp(trace_env, "0") != 0;
    return c;
}

/* ---- Error names -------------------------------------------------------------------------------- */

struct ErrorText {
    CUresult code;
    const char *name;
    const char *text;
};

const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_CONTEXT_IS_DESTROYED, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_MERGE, "CUDA_ERROR_STREAM_CAPTURE_MERGE", "operation would result in a merge of separate capture sequences"},
    {CUDA_ERROR_STREAM_CAPTURE_UNMATCHED, "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED", "capture was not ended in the same stream as it began"},
    {CUDA_ERROR_STREAM_CAPTURE_UNJOINED, "CUDA_ERROR_STREAM_CAPTURE_UNJOINED", "capturing stream has unjoined work"},
    {CUDA_ERROR_STREAM_CAPTURE_ISOLATION, "CUDA_ERROR_STREAM_CAPTURE_ISOLATION", "dependency created on uncaptured work in another stream"},
    {CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", "operation would make the legacy stream depend on a capturing blocking stream"},
    {CUDA_ERROR_CAPTURED_EVENT, "CUDA_ERROR_CAPTURED_EVENT", "operation not permitted on an event last recorded in a capturing stream"},
    {CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", "attempt to terminate a thread-local capture sequence from another thread"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

const ErrorText *error_text(CUresult code) {
    for (const ErrorText &e : kErrors) {
        if (e.code == code) {
            return &e;
        }
    }
    return nullptr;
}

const char *error_name(CUresult code) {
    const ErrorText *e = error_text(code);
    return e != nullptr ? e->name : "CUDA_ERROR_UNKNOWN";
}

/* Every entry point returns through here: traced when CUDA_EMU_DRIVER_TRACE is set. */
CUresult done(const char *function, CUresult result) {
    if (state().config.trace) {
        trace("%s -> %s", function, error_name(result));
    }
    return result;
}

/* ---- Contexts ----------------------------------------------------------------------------------- */

CUresult require_init() {
    State &s = state();
    if (!s.initialised) {
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    return s.init_result;
}

/* The calling thread's context, which must be active and free of a sticky error. */
CUresult current_context(CUcontext *ctx) {
    if (CUresult r = require_init(); r != CUDA_SUCCESS) {
        return r;
    }
    CUcontext c = t_current;
    if (c == nullptr || c->refcount <= 0) {
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    if (c->sticky != CUDA_SUCCESS) {
        return c->sticky;
    }
    *ctx = c;
    return CUDA_SUCCESS;
}

/* A context an object belongs to, checked the same way. */
CUresult usable(CUcontext c) {
    if (c == nullptr || c->refcount <= 0) {
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    }
    return c->sticky;
}

void set_sticky(CUcontext ctx, CUresult code, const std::string &message) {
    if (ctx->sticky == CUDA_SUCCESS) {
        ctx->sticky = code;
        ctx->sticky_message = message;
    }
    report("%s (%s): every later call in this context returns %s", message.c_str(), error_name(code),
           error_name(code));
}

const DeviceConfig &cfg() { return state().config; }

/* ---- Memory ------------------------------------------------------------------------------------- */

/* The live allocation containing [ptr, ptr + bytes), or null. */
Allocation *find_allocation(CUdeviceptr ptr, size_t bytes, uintptr_t *base = nullptr) {
    State &s = state();
    auto it = s.allocations.upper_bound(static_cast<uintptr_t>(ptr));
    if (it == s.allocations.begin()) {
        return nullptr;
    }
    --it;
    const uintptr_t start = it->first;
    if (ptr < start || ptr - start > it->second.size || bytes > it->second.size - (ptr - start)) {
        return nullptr;
    }
    if (it->second.freed_by_user && it->second.graph == nullptr) {
        return nullptr;
    }
    if (base != nullptr) {
        *base = start;
    }
    return &it->second;
}

CUresult allocate(CUcontext ctx, size_t bytes, CUdeviceptr *out, GraphBody *graph) {
    State &s = state();
    if (bytes > cfg().total_memory - std::min(s.used, cfg().total_memory)) {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *p = nullptr;
    if (posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) != 0 || p == nullptr) {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    Allocation a;
    a.size = bytes;
    a.ctx = ctx;
    a.graph = graph;
    s.allocations[reinterpret_cast<uintptr_t>(p)] = a;
    s.used += bytes;
    *out = reinterpret_cast<CUdeviceptr>(p);
    if (graph != nullptr) {
        graph->owned.push_back(*out);
    }
    return CUDA_SUCCESS;
}

void release_storage(uintptr_t base) {
    State &s = state();
    auto it = s.allocations.find(base);
    if (it == s.allocations.end()) {
        return;
    }
    s.used -= std::min(s.used, it->second.size);
    free(reinterpret_cast<void *>(base));
    s.allocations.erase(it);
}

/* Frees an allocation by its base address (as cuMemFree and cuMemFreeAsync take it). */
CUresult free_allocation(CUdeviceptr ptr) {
    State &s = state();
    auto it = s.allocations.find(static_cast<uintptr_t>(ptr));
    if (it == s.allocations.end() || it->second.freed_by_user) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (it->second.graph != nullptr) {
        it->second.freed_by_user = true; /* the graph's allocation node may still replay */
        return CUDA_SUCCESS;
    }
    release_storage(it->first);
    return CUDA_SUCCESS;
}

void release_context(CUcontext ctx);

/* ---- Captures ----------------------------------------------------------------------------------- */

void invalidate(const std::shared_ptr<Capture> &capture, const std::string &why) {
    if (capture && !capture->invalidated) {
        capture->invalidated = true;
        capture->why = why;
        trace("capture %llu invalidated: %s", static_cast<unsigned long long>(capture->id), why.c_str());
    }
}

bool active(const std::shared_ptr<Capture> &capture) {
    State &s = state();
    return std::find(s.captures.begin(), s.captures.end(), capture) != s.captures.end();
}

/* Captures that forbid this thread "potentially unsafe" calls (synchronous allocation, free, copies):
 * its own captures not begun in relaxed mode, and other threads' global-mode captures, unless this thread
 * exchanged its mode to relaxed (cuThreadExchangeStreamCaptureMode). */
std::vector<std::shared_ptr<Capture>> prohibiting_captures(CUcontext ctx) {
    std::vector<std::shared_ptr<Capture>> found;
    if (t_capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED) {
        return found;
    }
    const std::thread::id me = std::this_thread::get_id();
    for (const auto &c : state().captures) {
        if (c->origin->ctx != ctx) {
            continue;
        }
        const bool own = c->thread == me && c->mode != CU_STREAM_CAPTURE_MODE_RELAXED;
        const bool global = c->thread != me && c->mode == CU_STREAM_CAPTURE_MODE_GLOBAL &&
                            t_capture_mode == CU_STREAM_CAPTURE_MODE_GLOBAL;
        if (own || global) {
            found.push_back(c);
        }
    }
    return found;
}

/* A potentially unsafe call during capture: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and the captures that
 * forbid it are invalidated. */
CUresult check_unsafe_call(CUcontext ctx, const char *what) {
    auto found = prohibiting_captures(ctx);
    if (found.empty()) {
        return CUDA_SUCCESS;
    }
    for (const auto &c : found) {
        invalidate(c, std::string(what) + " during stream capture");
    }
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

/* Using the legacy NULL stream while a blocking stream (created without CU_STREAM_NON_BLOCKING) captures
 * would make it depend on captured work: CUDA_ERROR_STREAM_CAPTURE_IMPLICIT. */
CUresult check_legacy_use(CUcontext ctx) {
    CUresult result = CUDA_SUCCESS;
    for (const auto &c : state().captures) {
        if (c->origin->ctx == ctx && (c->origin->flags & CU_STREAM_NON_BLOCKING) == 0) {
            invalidate(c, "the legacy stream was used during capture");
            result = CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
        }
    }
    return result;
}

/* ---- Streams ------------------------------------------------------------------------------------ */

bool is_null_stream(CUstream s) { return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD; }

/* Resolves a stream handle (NULL: the context's legacy stream). */
CUresult resolve_stream(CUstream handle, CUstream *out, CUcontext *ctx_out) {
    State &s = state();
    if (is_null_stream(handle)) {
        CUcontext ctx = nullptr;
        if (CUresult r = current_context(&ctx); r != CUDA_SUCCESS) {
            return r;
        }
        auto &null_stream = s.null_streams[ctx];
        if (!null_stream) {
            null_stream.reset(new CUstream_st());
            null_stream->ctx = ctx;
        }
        *out = null_stream.get();
        *ctx_out = ctx;
        return CUDA_SUCCESS;
    }
    if (s.streams.count(handle) == 0) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    if (CUresult r = usable(handle->ctx); r != CUDA_SUCCESS) {
        return r;
    }
    *out = handle;
    *ctx_out = handle->ctx;
    return CUDA_SUCCESS;
}

bool is_legacy(CUstream s) {
    auto it = state().null_streams.find(s->ctx);
    return it != state().null_streams.end() && it->second.get() == s;
}

/* When an operation enqueued now on `s` may start: after the stream's earlier work, after the host
 * issued it, and with the legacy stream's implicit synchronisation with blocking streams. */
double start_time(CUstream s) {
    State &st = state();
    double t = std::max(s->ready, host_now());
    if (is_legacy(s)) {
        for (CUstream other : st.streams) {
            if (other->ctx == s->ctx && (other->flags & CU_STREAM_NON_BLOCKING) == 0) {
                t = std::max(t, other->ready);
            }
        }
    } else if ((s->flags & CU_STREAM_NON_BLOCKING) == 0) {
        auto it = st.null_streams.find(s->ctx);
        if (it != st.null_streams.end()) {
            t = std::max(t, it->second->ready);
        }
    }
    return t;
}

/* Runs `work` as an operation of stream `s` and advances the timeline by its duration. */
template <typename Work> void execute_on(CUstream s, Work &&work) {
    const double start = start_time(s);
    const auto begin = std::chrono::steady_clock::now();
    work();
    const double took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
    state().credit_ms += took;
    s->ready = start + took;
}

/* Everything the context has enqueued is done (for synchronous calls). */
double context_ready(CUcontext ctx) {
    double t = 0;
    for (CUstream s : state().streams) {
        if (s->ctx == ctx) {
            t = std::max(t, s->ready);
        }
    }
    auto it = state().null_streams.find(ctx);
    if (it != state().null_streams.end()) {
        t = std::max(t, it->second->ready);
    }
    return t;
}

/* ---- Kernels ------------------------------------------------------------------------------------ */

const KernelInfo *registry_info(const std::string &name) {
    for (uint32_t i = 0; i < attention_kernel_count(); ++i) {
        const KernelInfo *info = attention_kernel_info(i);
        if (info != nullptr && name == info->name) {
            return info;
        }
    }
    return nullptr;
}

bool emulator_has(const std::string &name) {
    for (uint32_t i = 0; i < cuda_emu_kernel_count(); ++i) {
        if (name == cuda_emu_kernel_name(i)) {
            return true;
        }
    }
    return false;
}

/* Elements spanned by a [b, s, h, d] tensor with these strides (0 when empty; -1 when a stride is
 * negative, which the check then skips). */
int64_t extent(int64_t b, int64_t s, int64_t h, int64_t d, int64_t bs, int64_t ss, int64_t hs) {
    if (b <= 0 || s <= 0 || h <= 0 || d <= 0) {
        return 0;
    }
    if (bs < 0 || ss < 0 || hs < 0) {
        return -1;
    }
    return (b - 1) * bs + (s - 1) * ss + (h - 1) * hs + d;
}

/* The tensors a kernel of `info`'s family reads and writes lie inside live allocations: what the GPU's
 * memory protection would enforce (at allocation granularity, so less strictly). Empty when they do. */
std::string check_extents(const KernelInfo *info, const AttentionParams &p) {
    if (info == nullptr) {
        return std::string();
    }
    const int64_t elem = info->dtype == KERNEL_DTYPE_F32 ? 4 : 2;
    struct Region {
        const char *name;
        const void *ptr;
        int64_t bytes;
    };
    std::vector<Region> regions;
    regions.reserve(13);
    const int family = info->family;
    const bool varlen = family == KERNEL_FAMILY_FLASH_VARLEN;
    /* A ragged batch's buffers: q and out [total_q, heads, d], k and v packed [total_k, heads, d] or paged
     * [num_pages, page_size, heads, d] (batch stride = page stride). */
    const int64_t q_rows = varlen ? p.total_q : p.seq_q;
    const int64_t q_batch = varlen ? 1 : p.batch;
    const bool paged = varlen && p.block_table != nullptr;
    const int64_t k_rows = !varlen ? p.seq_k : paged ? p.page_size : p.total_k;
    const int64_t k_batch = !varlen ? p.batch : paged ? p.num_pages : 1;
    const int64_t q = extent(q_batch, q_rows, p.heads_q, p.head_dim, p.q_batch_stride, p.q_seq_stride, p.q_head_stride);
    const int64_t k = extent(k_batch, k_rows, p.heads_kv, p.head_dim, p.k_batch_stride, p.k_seq_stride, p.k_head_stride);
    const int64_t v = extent(k_batch, k_rows, p.heads_kv, p.head_dim, p.v_batch_stride, p.v_seq_stride, p.v_head_stride);
    const int64_t out = extent(q_batch, q_rows, p.heads_q, p.head_dim, p.out_batch_stride, p.out_seq_stride,
                               p.out_head_stride);
    const int64_t rows = int64_t(p.batch) * p.heads_q * p.seq_q;
    const int64_t scores = rows * p.seq_k * 4;
    const bool flash = family == KERNEL_FAMILY_FLASH || varlen;
    if (family == KERNEL_FAMILY_APPEND_KV) {
        /* New rows [new_rows, heads_kv, d] into the paged caches [num_pages, page_size, heads_kv, d]. */
        const int64_t rows =
            extent(p.new_rows, 1, p.heads_kv, p.head_dim, p.new_seq_stride, 0, p.new_head_stride);
        const int64_t cache_k =
            extent(p.num_pages, p.page_size, p.heads_kv, p.head_dim, p.k_batch_stride, p.k_seq_stride, p.k_head_stride);
        const int64_t cache_v =
            extent(p.num_pages, p.page_size, p.heads_kv, p.head_dim, p.v_batch_stride, p.v_seq_stride, p.v_head_stride);
        regions.push_back({"k_new", p.k_new, rows * elem});
        regions.push_back({"v_new", p.v_new, rows * elem});
        regions.push_back({"slot_mapping", p.slot_mapping, int64_t(p.new_rows) * 8});
        regions.push_back({"k_cache", p.k_cache, cache_k * elem});
        regions.push_back({"v_cache", p.v_cache, cache_v * elem});
    } else if (family == KERNEL_FAMILY_MERGE_STATES) {
        /* Two states [total_q, heads, d] with lse [heads, total_q] into out and lse. */
        const int64_t states =
            extent(1, p.total_q, p.heads_q, p.head_dim, 0, p.state_row_stride, p.state_head_stride);
        const int64_t merged = extent(1, p.total_q, p.heads_q, p.head_dim, 0, p.out_seq_stride, p.out_head_stride);
        const int64_t lse_bytes = int64_t(p.heads_q) * p.total_q * 4;
        regions.push_back({"state_a", p.state_a, states * elem});
        regions.push_back({"state_b", p.state_b, states * elem});
        regions.push_back({"lse_a", p.lse_a, lse_bytes});
        regions.push_back({"lse_b", p.lse_b, lse_bytes});
        regions.push_back({"out", p.out, merged * elem});
        if (p.lse != nullptr) {
            regions.push_back({"lse", p.lse, lse_bytes});
        }
    } else if (!flash && family != KERNEL_FAMILY_NAIVE_SCORES && family != KERNEL_FAMILY_NAIVE_SOFTMAX &&
               family != KERNEL_FAMILY_NAIVE_PV && family != KERNEL_FAMILY_COMBINE) {
        return std::string();
    }
    /* Split-KV partial states, written by a splitting flash launch and read by the combine. */
    const bool combine = family == KERNEL_FAMILY_COMBINE;
    if (combine || (flash && p.num_splits > 1)) {
        const int64_t splits = p.num_splits;
        regions.push_back({"partial_lse", p.partial_lse, splits * p.heads_q * p.partial_rows * 4});
        regions.push_back({"partial_out", p.partial_out, splits * p.partial_rows * p.heads_q * p.head_dim * 4});
    }
    if (combine) {
        regions.push_back({"out", p.out, out * elem});
        if (p.lse != nullptr) {
            const int64_t lse = p.cu_seqlens_q != nullptr ? (int64_t(p.heads_q) - 1) * p.lse_head_stride + p.total_q : rows;
            regions.push_back({"lse", p.lse, lse * 4});
        }
        if (p.cu_seqlens_q != nullptr) {
            regions.push_back({"cu_seqlens_q", p.cu_seqlens_q, (int64_t(p.batch) + 1) * 4});
        }
    }
    if (flash || family == KERNEL_FAMILY_NAIVE_SCORES) {
        regions.push_back({"q", p.q, q * elem});
        regions.push_back({"k", p.k, k * elem});
    }
    if (family == KERNEL_FAMILY_NAIVE_SCORES || family == KERNEL_FAMILY_NAIVE_SOFTMAX || family == KERNEL_FAMILY_NAIVE_PV) {
        regions.push_back({"scores", p.scores, scores});
    }
    if (flash || family == KERNEL_FAMILY_NAIVE_PV) {
        regions.push_back({"v", p.v, v * elem});
        regions.push_back({"out", p.out, out * elem});
    }
    if (p.lse != nullptr && (flash || family == KERNEL_FAMILY_NAIVE_SOFTMAX)) {
        const int64_t lse = varlen ? (int64_t(p.heads_q) - 1) * p.lse_head_stride + p.total_q : rows;
        regions.push_back({"lse", p.lse, lse * 4});
    }
    if (p.alibi_slopes != nullptr) {
        regions.push_back({"alibi_slopes", p.alibi_slopes, int64_t(p.heads_q) * 4});
    }
    if (p.sinks != nullptr) {
        regions.push_back({"sinks", p.sinks, int64_t(p.heads_q) * 4});
    }
    if (p.block_row_offsets != nullptr && (flash || family == KERNEL_FAMILY_NAIVE_SCORES ||
                                           family == KERNEL_FAMILY_NAIVE_SOFTMAX)) {
        regions.push_back({"block_row_offsets", p.block_row_offsets, (int64_t(p.block_rows) + 1) * 4});
        regions.push_back({"block_col_indices", p.block_col_indices, int64_t(p.block_nnz) * 4});
    }
    if (varlen) {
        regions.push_back({"cu_seqlens_q", p.cu_seqlens_q, (int64_t(p.batch) + 1) * 4});
        if (!paged) {
            regions.push_back({"cu_seqlens_k", p.cu_seqlens_k, (int64_t(p.batch) + 1) * 4});
        } else {
            regions.push_back(
                {"block_table", p.block_table, ((int64_t(p.batch) - 1) * p.block_table_stride + p.pages_per_seq) * 4});
        }
        if (p.seqused_k != nullptr) {
            regions.push_back({"seqused_k", p.seqused_k, int64_t(p.batch) * 4});
        }
    }
    for (const Region &r : regions) {
        if (r.bytes <= 0) {
            continue; /* empty, or a negative stride: not checked */
        }
        if (r.ptr == nullptr) {
            return std::string("parameter ") + r.name + " is NULL but the kernel reads or writes " +
                   std::to_string(r.bytes) + " bytes there";
        }
        uintptr_t base = 0;
        const CUdeviceptr at = reinterpret_cast<CUdeviceptr>(r.ptr);
        if (find_allocation(at, static_cast<size_t>(r.bytes), &base) == nullptr) {
            if (find_allocation(at, 1, &base) != nullptr) {
                const Allocation &a = state().allocations[base];
                return std::string("parameter ") + r.name + " spans " + std::to_string(r.bytes) + " bytes from offset " +
                       std::to_string(at - base) + " of a " + std::to_string(a.size) + "-byte allocation";
            }
            char text[64];
            snprintf(text, sizeof text, "%p", r.ptr);
            return std::string("parameter ") + r.name + " = " + text + " is not in any live device allocation";
        }
    }
    return std::string();
}

/* Runs one kernel now (on the emulator). Faults become the context's sticky error. */
void run_kernel(CUcontext ctx, const Node &node) {
    if (ctx->sticky != CUDA_SUCCESS) {
        return;
    }
    const std::string name = node.function->kernel.name;
    const std::string bad = check_extents(node.function->info, node.params);
    if (!bad.empty()) {
        set_sticky(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, name + ": " + bad);
        return;
    }
    char message[2048] = {0};
    const int32_t status =
        cuda_emu_launch(name.c_str(), node.grid[0], node.grid[1], node.grid[2], node.block[0], node.block[1],
                        node.block[2], node.shared, &node.params, CUDA_EMU_SCHEDULE_ROUND_ROBIN, 0, 0, message,
                        sizeof message);
    if (status != CUDA_EMU_OK) {
        set_sticky(ctx, CUDA_ERROR_LAUNCH_FAILED, name + ": " + message);
    }
}

void run_node(CUcontext ctx, const Node &node) {
    switch (node.kind) {
    case Node::Kind::Kernel: run_kernel(ctx, node); break;
    case Node::Kind::Memset: memset(reinterpret_cast<void *>(node.dst), node.value, node.bytes); break;
    case Node::Kind::Copy: {
        void *dst = node.host_dst != nullptr ? node.host_dst : reinterpret_cast<void *>(node.dst);
        const void *src = node.host_src != nullptr ? node.host_src : reinterpret_cast<const void *>(node.src);
        memmove(dst, src, node.bytes);
        break;
    }
    case Node::Kind::Alloc:
    case Node::Kind::Free: break; /* the graph keeps its allocations for its lifetime */
    case Node::Kind::Host: node.fn(node.user_data); break;
    }
}

/* Enqueues `node` on stream `s`: captured when the stream captures, else run now in stream order. */
CUresult enqueue(CUstream s, Node node) {
    if (s->capture) {
        if (s->capture->invalidated) {
            return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        }
        s->capture->body->nodes.push_back(node);
        return CUDA_SUCCESS;
    }
    if (is_legacy(s)) {
        if (CUresult r = check_legacy_use(s->ctx); r != CUDA_SUCCESS) {
            return r;
        }
    }
    CUcontext ctx = s->ctx;
    execute_on(s, [&] { run_node(ctx, node); });
    return CUDA_SUCCESS;
}

/* Device range [ptr, ptr + bytes) inside one live allocation (0 bytes: anything goes). */
bool device_range(CUdeviceptr ptr, size_t bytes) { return bytes == 0 || find_allocation(ptr, bytes) != nullptr; }

/* ---- Contexts (destruction) --------------------------------------------------------------------- */

void release_context(CUcontext ctx) {
    State &s = state();
    for (auto it = s.captures.begin(); it != s.captures.end();) {
        it = (*it)->origin->ctx == ctx ? s.captures.erase(it) : it + 1;
    }
    for (auto it = s.execs.begin(); it != s.execs.end();) {
        if ((*it)->body->ctx == ctx) {
            delete *it;
            it = s.execs.erase(it);
        } else {
            ++it;
        }
    }
    for (auto it = s.graphs.begin(); it != s.graphs.end();) {
        if ((*it)->body->ctx == ctx) {
            delete *it;
            it = s.graphs.erase(it);
        } else {
            ++it;
        }
    }
    for (auto it = s.streams.begin(); it != s.streams.end();) {
        if ((*it)->ctx == ctx) {
            delete *it;
            it = s.streams.erase(it);
        } else {
            ++it;
        }
    }
    s.null_streams.erase(ctx);
    for (auto it = s.events.begin(); it != s.events.end();) {
        if ((*it)->ctx == ctx) {
            delete *it;
            it = s.events.erase(it);
        } else {
            ++it;
        }
    }
    for (auto it = s.modules.begin(); it != s.modules.end();) {
        if ((*it)->ctx == ctx) {
            for (CUfunction f : (*it)->functions) {
                s.functions.erase(f);
                delete f;
            }
            delete *it;
            it = s.modules.erase(it);
        } else {
            ++it;
        }
    }
    std::vector<uintptr_t> mine;
    for (auto &entry : s.allocations) {
        if (entry.second.ctx == ctx) {
            mine.push_back(entry.first);
        }
    }
    for (uintptr_t base : mine) {
        release_storage(base);
    }
    ctx->sticky = CUDA_SUCCESS;
    ctx->sticky_message.clear();
}

} /* namespace */

GraphBody::~GraphBody() {
    State &s = state();
    for (CUdeviceptr ptr : owned) {
        auto it = s.allocations.find(static_cast<uintptr_t>(ptr));
        if (it == s.allocations.end() || it->second.graph != this) {
            continue;
        }
        if (it->second.freed_by_user) {
            release_storage(it->first);
        } else {
            it->second.graph = nullptr; /* not freed: it outlives the graph, as the driver's do */
        }
    }
}

} /* namespace emu_driver */

/* ================================================================================================== */
/* The driver API.                                                                                    */
/* ================================================================================================== */

using namespace emu_driver;

#define EXPORT extern "C" __attribute__((visibility("default")))
#define LOCK std::lock_guard<std::recursive_mutex> lock_(state().mutex)
#define RETURN(result) return done(__func__, (result))
#define TRY(expr)                                                                                                  \
    do {                                                                                                           \
        CUresult r_ = (expr);                                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                                  \
            RETURN(r_);                                                                                            \
        }                                                                                                          \
    } while (0)

/* ---- Initialisation, version, errors ------------------------------------------------------------ */

EXPORT CUresult cuInit(unsigned int flags) {
    LOCK;
    State &s = state();
    if (flags != 0) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (!s.initialised) {
        std::string error;
        s.config = read_config(&error);
        s.initialised = true;
        if (!error.empty()) {
            report("%s", error.c_str());
            s.init_result = CUDA_ERROR_INVALID_VALUE;
        } else if (const char *bad = attention_kernel_registry_error(); bad != nullptr) {
            report("the emulator's kernel registry is inconsistent: %s", bad);
            s.init_result = CUDA_ERROR_UNKNOWN;
        } else {
            s.init_result = s.config.count > 0 ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
        }
        for (int i = 0; i < std::max(s.config.count, 0); ++i) {
            s.contexts.emplace_back(new CUctx_st());
            s.contexts.back()->device = i;
        }
        trace("cuInit: %d device(s), %s, %d SMs, %d bytes shared per block with opt-in, %zu bytes of memory",
              s.config.count, s.config.name.c_str(), s.config.sms, s.config.shared_optin, s.config.total_memory);
    }
    RETURN(s.init_result);
}

EXPORT CUresult cuDriverGetVersion(int *version) {
    LOCK;
    if (version == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    /* Answered before cuInit too, as the driver does; the configuration may not be read yet. */
    int v = state().initialised ? cfg().driver_version : 13000;
    if (!state().initialised) {
        env_int("CUDA_EMU_DRIVER_VERSION", &v);
    }
    *version = v;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **out) {
    const ErrorText *e = error_text(error);
    if (out == nullptr || e == nullptr) {
        if (out != nullptr) {
            *out = nullptr;
        }
        return CUDA_ERROR_INVALID_VALUE;
    }
    *out = e->name;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **out) {
    const ErrorText *e = error_text(error);
    if (out == nullptr || e == nullptr) {
        if (out != nullptr) {
            *out = nullptr;
        }
        return CUDA_ERROR_INVALID_VALUE;
    }
    *out = e->text;
    return CUDA_SUCCESS;
}

/* ---- Devices ------------------------------------------------------------------------------------ */

EXPORT CUresult cuDeviceGetCount(int *count) {
    LOCK;
    if (count == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(require_init());
    *count = cfg().count;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    LOCK;
    if (device == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(require_init());
    if (ordinal < 0 || ordinal >= cfg().count) {
        RETURN(CUDA_ERROR_INVALID_DEVICE);
    }
    *device = ordinal;
    RETURN(CUDA_SUCCESS);
}

static CUresult check_device(CUdevice device) {
    if (CUresult r = require_init(); r != CUDA_SUCCESS) {
        return r;
    }
    return device >= 0 && device < cfg().count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

EXPORT CUresult cuDeviceGetName(char *name, int length, CUdevice device) {
    LOCK;
    if (name == nullptr || length <= 0) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(check_device(device));
    snprintf(name, static_cast<size_t>(length), "%s", cfg().name.c_str());
    RETURN(CUDA_SUCCESS);
}

static CUresult device_uuid(CUuuid *uuid, CUdevice device) {
    LOCK;
    if (uuid == nullptr) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (CUresult r = check_device(device); r != CUDA_SUCCESS) {
        return r;
    }
    memset(uuid->bytes, 0, sizeof uuid->bytes);
    memcpy(uuid->bytes, "cuda-emu", 8);
    uuid->bytes[15] = static_cast<char>(device);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice device) { return done(__func__, device_uuid(uuid, device)); }
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice device) { return done(__func__, device_uuid(uuid, device)); }

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device) {
    LOCK;
    if (bytes == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(check_device(device));
    *bytes = cfg().total_memory;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice device) {
    LOCK;
    if (major == nullptr || minor == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(check_device(device));
    *major = cfg().cc_major;
    *minor = cfg().cc_minor;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
    LOCK;
    if (value == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(check_device(device));
    const DeviceConfig &c = cfg();
    int v = 0;
    switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = 0x7fffffff; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = c.shared_per_block; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = 1000000; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = c.sms; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: v = device + 1; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: v = 1000000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = 5120; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: v = c.l2_bytes; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: v = 2048; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: v = 2; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = c.cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = c.cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: v = c.shared_per_sm; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: v = 0; break; /* not modelled */
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: v = c.shared_optin; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: v = c.reserved_shared; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: v = c.memory_pools ? 1 : 0; break;
    default:
        trace("cuDeviceGetAttribute: attribute %d is not modelled", attribute);
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    *value = v;
    RETURN(CUDA_SUCCESS);
}

/* ---- Contexts ----------------------------------------------------------------------------------- */

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice device) {
    LOCK;
    if (ctx == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(check_device(device));
    CUcontext c = state().contexts[static_cast<size_t>(device)].get();
    c->refcount += 1;
    *ctx = c;
    RETURN(CUDA_SUCCESS);
}

static CUresult primary_release(CUdevice device) {
    LOCK;
    if (CUresult r = check_device(device); r != CUDA_SUCCESS) {
        return r;
    }
    CUcontext c = state().contexts[static_cast<size_t>(device)].get();
    if (c->refcount <= 0) {
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    c->refcount -= 1;
    if (c->refcount == 0) {
        trace("primary context of device %d released: its memory, streams, events and modules are gone", device);
        release_context(c);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) { return done(__func__, primary_release(device)); }
EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice device) { return done(__func__, primary_release(device)); }

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
    LOCK;
    TRY(require_init());
    if (ctx != nullptr) {
        bool known = false;
        for (auto &c : state().contexts) {
            known = known || c.get() == ctx;
        }
        if (!known) {
            RETURN(CUDA_ERROR_INVALID_CONTEXT);
        }
    }
    t_current = ctx;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx) {
    LOCK;
    if (ctx == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    TRY(require_init());
    *ctx = t_current;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (device == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    *device = ctx->device;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuCtxSynchronize(void) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    /* Synchronising a context with a stream in capture is invalid. */
    CUresult result = CUDA_SUCCESS;
    for (const auto &c : state().captures) {
        if (c->origin->ctx == ctx) {
            invalidate(c, "cuCtxSynchronize during stream capture");
            result = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        }
    }
    TRY(result);
    host_wait_until(context_ready(ctx));
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (least != nullptr) {
        *least = 0;
    }
    if (greatest != nullptr) {
        *greatest = -5;
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
    LOCK;
    if (mode == nullptr || *mode > CU_STREAM_CAPTURE_MODE_RELAXED) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    std::swap(*mode, t_capture_mode);
    RETURN(CUDA_SUCCESS);
}

/* ---- Memory ------------------------------------------------------------------------------------- */

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (free_bytes == nullptr || total_bytes == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    *total_bytes = cfg().total_memory;
    *free_bytes = cfg().total_memory - std::min(state().used, cfg().total_memory);
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (ptr == nullptr || bytes == 0) {
        RETURN(CUDA_ERROR_INVALID_VALUE); /* cuMemAlloc: "If bytesize is 0, returns CUDA_ERROR_INVALID_VALUE" */
    }
    TRY(check_unsafe_call(ctx, "cuMemAlloc"));
    TRY(allocate(ctx, bytes, ptr, nullptr));
    trace("cuMemAlloc(%zu) = %#llx", bytes, *ptr);
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (ptr == 0) {
        RETURN(CUDA_SUCCESS);
    }
    TRY(check_unsafe_call(ctx, "cuMemFree"));
    /* cuMemFree synchronises: the memory may still be in use by enqueued work. */
    host_wait_until(context_ready(ctx));
    RETURN(free_allocation(ptr));
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *ptr, size_t bytes, CUstream handle) {
    LOCK;
    if (ptr == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (!cfg().memory_pools) {
        RETURN(CUDA_ERROR_NOT_SUPPORTED); /* a device without memory pools */
    }
    if (bytes == 0) {
        *ptr = 0;
        RETURN(CUDA_SUCCESS);
    }
    if (s->capture) {
        /* A memory allocation node: the graph owns the memory (allocated now, kept while it lives). */
        if (s->capture->invalidated) {
            RETURN(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        TRY(allocate(ctx, bytes, ptr, s->capture->body.get()));
        Node node{Node::Kind::Alloc};
        node.dst = *ptr;
        node.bytes = bytes;
        s->capture->body->nodes.push_back(node);
        RETURN(CUDA_SUCCESS);
    }
    if (is_legacy(s)) {
        TRY(check_legacy_use(ctx));
    }
    TRY(allocate(ctx, bytes, ptr, nullptr));
    trace("cuMemAllocAsync(%zu) = %#llx", bytes, *ptr);
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream handle) {
    LOCK;
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (ptr == 0) {
        RETURN(CUDA_SUCCESS);
    }
    if (s->capture) {
        if (s->capture->invalidated) {
            RETURN(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        if (state().allocations.count(static_cast<uintptr_t>(ptr)) == 0) {
            RETURN(CUDA_ERROR_INVALID_VALUE);
        }
        Node node{Node::Kind::Free};
        node.dst = ptr;
        s->capture->body->nodes.push_back(node);
        RETURN(CUDA_SUCCESS);
    }
    if (is_legacy(s)) {
        TRY(check_legacy_use(ctx));
    }
    /* Stream-ordered: everything before it on the stream has run already (work runs when enqueued). */
    RETURN(free_allocation(ptr));
}

/* Memset and copies, synchronous and asynchronous. */
static CUresult memset_on(CUstream handle, CUdeviceptr dst, unsigned char value, size_t bytes, bool sync) {
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    if (CUresult r = resolve_stream(handle, &s, &ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (sync) {
        if (CUresult r = check_unsafe_call(ctx, "a synchronous memset"); r != CUDA_SUCCESS) {
            return r;
        }
    }
    if (!device_range(dst, bytes)) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    Node node{Node::Kind::Memset};
    node.dst = dst;
    node.value = value;
    node.bytes = bytes;
    if (CUresult r = enqueue(s, node); r != CUDA_SUCCESS) {
        return r;
    }
    if (sync) {
        host_wait_until(s->ready);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream) {
    LOCK;
    RETURN(memset_on(stream, dst, value, n, false));
}

EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    LOCK;
    RETURN(memset_on(nullptr, dst, value, n, true));
}

enum class Direction { HtoD, DtoH, DtoD };

static CUresult copy_on(CUstream handle, Direction direction, void *host_dst, CUdeviceptr dst, const void *host_src,
                        CUdeviceptr src, size_t bytes, bool sync) {
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    if (CUresult r = resolve_stream(handle, &s, &ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (sync) {
        if (CUresult r = check_unsafe_call(ctx, "a synchronous copy"); r != CUDA_SUCCESS) {
            return r;
        }
    }
    if (bytes == 0) {
        return CUDA_SUCCESS;
    }
    const bool dst_ok = direction == Direction::DtoH ? host_dst != nullptr : device_range(dst, bytes);
    const bool src_ok = direction == Direction::HtoD ? host_src != nullptr : device_range(src, bytes);
    if (!dst_ok || !src_ok) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    Node node{Node::Kind::Copy};
    node.dst = dst;
    node.src = src;
    node.host_dst = host_dst;
    node.host_src = host_src;
    node.bytes = bytes;
    if (CUresult r = enqueue(s, node); r != CUDA_SUCCESS) {
        return r;
    }
    /* Synchronous copies, and copies into pageable host memory, return once the copy is done. */
    if ((sync || direction == Direction::DtoH) && !s->capture) {
        host_wait_until(s->ready);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream stream) {
    LOCK;
    RETURN(copy_on(stream, Direction::HtoD, nullptr, dst, src, 0, n, false));
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream stream) {
    LOCK;
    RETURN(copy_on(stream, Direction::DtoH, dst, 0, nullptr, src, n, false));
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream) {
    LOCK;
    RETURN(copy_on(stream, Direction::DtoD, nullptr, dst, nullptr, src, n, false));
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    LOCK;
    RETURN(copy_on(nullptr, Direction::HtoD, nullptr, dst, src, 0, n, true));
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    LOCK;
    RETURN(copy_on(nullptr, Direction::DtoH, dst, 0, nullptr, src, n, true));
}

EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    LOCK;
    RETURN(copy_on(nullptr, Direction::DtoD, nullptr, dst, nullptr, src, n, true));
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr ptr) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    uintptr_t start = 0;
    Allocation *a = find_allocation(ptr, 0, &start);
    if (a == nullptr) {
        RETURN(CUDA_ERROR_NOT_FOUND);
    }
    if (base != nullptr) {
        *base = start;
    }
    if (size != nullptr) {
        *size = a->size;
    }
    RETURN(CUDA_SUCCESS);
}

/* ---- Modules and functions ---------------------------------------------------------------------- */

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (module == nullptr || image == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    ModuleImage parsed;
    std::string error;
    switch (read_module_image(image, cfg().cc_major, cfg().cc_minor, &parsed, &error)) {
    case ImageStatus::Ok: break;
    case ImageStatus::NoBinaryForGpu: report("cuModuleLoadData: %s", error.c_str()); RETURN(CUDA_ERROR_NO_BINARY_FOR_GPU);
    case ImageStatus::InvalidPtx: report("cuModuleLoadData: %s", error.c_str()); RETURN(CUDA_ERROR_INVALID_PTX);
    case ImageStatus::InvalidImage: report("cuModuleLoadData: %s", error.c_str()); RETURN(CUDA_ERROR_INVALID_IMAGE);
    }
    trace("cuModuleLoadData: %s, %zu kernels%s%s", parsed.chosen.c_str(), parsed.kernels.size(),
          parsed.note.empty() ? "" : "; ", parsed.note.c_str());
    CUmodule m = new CUmod_st();
    m->ctx = ctx;
    m->image = std::move(parsed);
    state().modules.insert(m);
    *module = m;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuModuleUnload(CUmodule module) {
    LOCK;
    if (state().modules.count(module) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    for (CUfunction f : module->functions) {
        state().functions.erase(f);
        delete f;
    }
    state().modules.erase(module);
    delete module;
    RETURN(CUDA_SUCCESS);
}

/* Static shared memory a kernel declares (the 1 KiB that sm_90 cubins list as .nv.shared.<kernel> is the
 * driver's per-block reservation, CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, not the kernel's). */
static int static_shared(CUfunction f) {
    const int reserved = f->module->image.arch >= 90 ? cfg().reserved_shared : 0;
    return std::max(0, static_cast<int>(f->kernel.static_shared) - reserved);
}

/* Threads per block the function can be launched with: its __launch_bounds__ and its registers. */
static int function_max_threads(CUfunction f) {
    int limit = 1024;
    if (f->kernel.max_threads > 0) {
        limit = static_cast<int>(f->kernel.max_threads);
    } else if (f->info != nullptr) {
        limit = static_cast<int>(f->info->block_x * f->info->block_y); /* no cubin to read: the registry's */
    }
    if (f->kernel.registers > 0) {
        /* Registers are allocated per warp in units of 256. */
        const int per_warp = (static_cast<int>(f->kernel.registers) * 32 + 255) / 256 * 256;
        limit = std::min(limit, 65536 / per_warp * 32);
    }
    return std::min(limit, 1024);
}

EXPORT CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name) {
    LOCK;
    if (function == nullptr || name == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (state().modules.count(module) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(module->ctx));
    for (CUfunction f : module->functions) {
        if (f->kernel.name == name) {
            *function = f;
            RETURN(CUDA_SUCCESS);
        }
    }
    const ModuleImage &image = module->image;
    KernelImage kernel;
    bool found = false;
    for (const KernelImage &k : image.kernels) {
        if (k.name == name) {
            kernel = k;
            found = true;
        }
    }
    if (!found && image.names_unknown && emulator_has(name)) {
        kernel.name = name;
        kernel.param_count = 1;
        kernel.param_bytes = sizeof(AttentionParams);
        kernel.params = {{0u, static_cast<uint32_t>(sizeof(AttentionParams))}};
        found = true;
    }
    if (!found) {
        trace("cuModuleGetFunction: no kernel %s in the module (%s)", name, image.chosen.c_str());
        RETURN(CUDA_ERROR_NOT_FOUND);
    }
    if (!emulator_has(name)) {
        report("cuModuleGetFunction: %s is in the module but not in the emulator's registry: it cannot run here",
               name);
        RETURN(CUDA_ERROR_NOT_FOUND);
    }
    /* The parameter's own size where the module records it: a 64-byte-aligned struct (AttentionParams carries
     * TMA tensor maps) starts at an aligned offset of the parameter bank, whose total then includes padding. */
    const int64_t module_bytes =
        kernel.params.size() == 1 && kernel.params[0].second > 0 ? kernel.params[0].second : kernel.param_bytes;
    if (kernel.param_bytes >= 0 && module_bytes != static_cast<int64_t>(sizeof(AttentionParams))) {
        report("cuModuleGetFunction: %s takes %lld bytes of parameters in the module, but the emulator's "
               "AttentionParams has %zu: the device and host builds disagree on the parameter struct",
               name, static_cast<long long>(module_bytes), sizeof(AttentionParams));
        RETURN(CUDA_ERROR_INVALID_IMAGE);
    }
    CUfunction f = new CUfunc_st();
    f->module = module;
    f->kernel = kernel;
    f->info = registry_info(name);
    f->max_dynamic_shared = cfg().shared_per_block - static_shared(f); /* 48 KiB until the opt-in */
    module->functions.push_back(f);
    state().functions.insert(f);
    *function = f;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuFuncGetAttribute(int *value, int attribute, CUfunction f) {
    LOCK;
    if (value == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(f->module->ctx));
    const int arch = f->module->image.arch > 0 ? f->module->image.arch : cfg().cc_major * 10 + cfg().cc_minor;
    switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = function_max_threads(f); break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *value = static_shared(f); break;
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *value = static_cast<int>(f->kernel.registers); break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: *value = arch; break;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *value = cfg().cc_major * 10 + cfg().cc_minor; break;
    case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *value = 0; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = f->max_dynamic_shared; break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *value = f->carveout; break;
    default: RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuFuncSetAttribute(CUfunction f, int attribute, int value) {
    LOCK;
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(f->module->ctx));
    switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
        /* At most the opt-in limit less the kernel's static shared memory. */
        if (value < 0 || value > cfg().shared_optin - static_shared(f)) {
            trace("cuFuncSetAttribute(%s, MAX_DYNAMIC_SHARED_SIZE_BYTES, %d): the device allows %d", f->kernel.name.c_str(),
                  value, cfg().shared_optin - static_shared(f));
            RETURN(CUDA_ERROR_INVALID_VALUE);
        }
        f->max_dynamic_shared = value;
        break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
        if (value < -1 || value > 100) {
            RETURN(CUDA_ERROR_INVALID_VALUE);
        }
        f->carveout = value;
        break;
    default: RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuFuncSetCacheConfig(CUfunction f, int config) {
    LOCK;
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    (void)config;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuFuncGetParamInfo(CUfunction f, size_t index, size_t *offset, size_t *size) {
    LOCK;
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    if (index >= f->kernel.params.size()) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (offset != nullptr) {
        *offset = f->kernel.params[index].first;
    }
    if (size != nullptr) {
        *size = f->kernel.params[index].second;
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuFuncGetName(const char **name, CUfunction f) {
    LOCK;
    if (name == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    *name = f->kernel.name.c_str();
    RETURN(CUDA_SUCCESS);
}

/* ---- Launch ------------------------------------------------------------------------------------- */

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int grid_x, unsigned int grid_y, unsigned int grid_z,
                               unsigned int block_x, unsigned int block_y, unsigned int block_z,
                               unsigned int shared_bytes, CUstream handle, void **kernel_params, void **extra) {
    LOCK;
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (f->module->ctx != ctx) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    const std::string &name = f->kernel.name;
    /* Geometry: the device's limits and the kernel's own. */
    const uint64_t threads = uint64_t(block_x) * block_y * block_z;
    if (grid_x == 0 || grid_y == 0 || grid_z == 0 || block_x == 0 || block_y == 0 || block_z == 0 ||
        grid_x > 0x7fffffffu || grid_y > 65535 || grid_z > 65535 || block_x > 1024 || block_y > 1024 ||
        block_z > 64 || threads > 1024) {
        report("cuLaunchKernel(%s): grid (%u,%u,%u), block (%u,%u,%u) outside the device's limits", name.c_str(), grid_x,
               grid_y, grid_z, block_x, block_y, block_z);
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (threads > static_cast<uint64_t>(function_max_threads(f))) {
        /* More threads than __launch_bounds__ (or the registers) allow: the driver's "too many resources
         * requested for launch". */
        report("cuLaunchKernel(%s): %llu threads per block, the kernel allows %d (%u registers per thread)",
               name.c_str(), static_cast<unsigned long long>(threads), function_max_threads(f), f->kernel.registers);
        RETURN(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    }
    if (static_cast<int64_t>(shared_bytes) > f->max_dynamic_shared ||
        static_cast<int64_t>(shared_bytes) + static_shared(f) > cfg().shared_optin) {
        report("cuLaunchKernel(%s): %u bytes of dynamic shared memory, the kernel's limit is %d%s", name.c_str(),
               shared_bytes, f->max_dynamic_shared,
               shared_bytes > static_cast<unsigned>(cfg().shared_per_block)
                   ? " (above 48 KiB needs cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES))"
                   : "");
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    /* Parameters: kernelParams (one pointer per parameter) or extra (one buffer), not both. */
    Node node{Node::Kind::Kernel};
    if (kernel_params != nullptr && extra != nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    const size_t expected = sizeof(AttentionParams);
    if (extra != nullptr) {
        const void *buffer = nullptr;
        const size_t *size = nullptr;
        for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
                buffer = extra[i + 1];
            } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
                size = static_cast<const size_t *>(extra[i + 1]);
            } else {
                RETURN(CUDA_ERROR_INVALID_VALUE);
            }
        }
        if (buffer == nullptr || size == nullptr || *size != expected) {
            report("cuLaunchKernel(%s): the parameter buffer holds %zu bytes, the kernel takes %zu", name.c_str(),
                   size != nullptr ? *size : size_t(0), expected);
            RETURN(CUDA_ERROR_INVALID_VALUE);
        }
        memcpy(&node.params, buffer, expected);
    } else {
        if (kernel_params == nullptr || kernel_params[0] == nullptr) {
            report("cuLaunchKernel(%s): no kernel parameters, the kernel takes one AttentionParams", name.c_str());
            RETURN(CUDA_ERROR_INVALID_VALUE);
        }
        memcpy(&node.params, kernel_params[0], expected);
    }
    node.function = f;
    node.grid[0] = grid_x;
    node.grid[1] = grid_y;
    node.grid[2] = grid_z;
    node.block[0] = block_x;
    node.block[1] = block_y;
    node.block[2] = block_z;
    node.shared = shared_bytes;
    trace("cuLaunchKernel(%s, grid (%u,%u,%u), block (%u,%u,%u), %u bytes shared)%s", name.c_str(), grid_x, grid_y,
          grid_z, block_x, block_y, block_z, shared_bytes, s->capture ? " captured" : "");
    RETURN(enqueue(s, node));
}

EXPORT CUresult cuLaunchHostFunc(CUstream handle, CUhostFn fn, void *user_data) {
    LOCK;
    if (fn == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    Node node{Node::Kind::Host};
    node.fn = fn;
    node.user_data = user_data;
    RETURN(enqueue(s, node));
}

/* ---- Streams ------------------------------------------------------------------------------------ */

static CUresult create_stream(CUstream *out, unsigned flags, int priority) {
    CUcontext ctx = nullptr;
    if (CUresult r = current_context(&ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (out == nullptr || (flags & ~1u) != 0) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUstream s = new CUstream_st();
    s->ctx = ctx;
    s->flags = flags;
    s->priority = priority;
    s->ready = host_now();
    state().streams.insert(s);
    *out = s;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(CUstream *stream, unsigned int flags) {
    LOCK;
    RETURN(create_stream(stream, flags, 0));
}

EXPORT CUresult cuStreamCreateWithPriority(CUstream *stream, unsigned int flags, int priority) {
    LOCK;
    RETURN(create_stream(stream, flags, std::max(-5, std::min(0, priority))));
}

EXPORT CUresult cuStreamDestroy_v2(CUstream handle) {
    LOCK;
    if (is_null_stream(handle) || state().streams.count(handle) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    if (handle->capture) {
        invalidate(handle->capture, "the capturing stream was destroyed");
        auto &caps = state().captures;
        caps.erase(std::remove(caps.begin(), caps.end(), handle->capture), caps.end());
    }
    state().streams.erase(handle);
    delete handle;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuStreamGetFlags(CUstream handle, unsigned int *flags) {
    LOCK;
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (flags == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    *flags = s->flags;
    RETURN(CUDA_SUCCESS);
}

static CUresult wait_for_stream(CUstream handle, const char *what) {
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    if (CUresult r = resolve_stream(handle, &s, &ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (s->capture) {
        /* Synchronising or querying a capturing stream is invalid and invalidates the capture. */
        invalidate(s->capture, std::string(what) + " on the capturing stream");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (is_legacy(s)) {
        if (CUresult r = check_legacy_use(ctx); r != CUDA_SUCCESS) {
            return r;
        }
    }
    host_wait_until(start_time(s));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream stream) {
    LOCK;
    RETURN(wait_for_stream(stream, "cuStreamSynchronize"));
}

EXPORT CUresult cuStreamQuery(CUstream handle) {
    LOCK;
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (s->capture) {
        invalidate(s->capture, "cuStreamQuery on the capturing stream");
        RETURN(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    if (is_legacy(s)) {
        TRY(check_legacy_use(ctx));
    }
    /* The work has run, but in the timeline it is done only when the host's clock reaches its end: a
     * polling loop sees CUDA_ERROR_NOT_READY for as long as the work took. */
    RETURN(start_time(s) > host_now() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);
}

EXPORT CUresult cuStreamWaitEvent(CUstream handle, CUevent event, unsigned int flags) {
    LOCK;
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (state().events.count(event) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    if (flags & ~1u) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    auto captured_in = event->capture.lock();
    const bool event_captured = event->state == CUevent_st::State::Captured && captured_in && active(captured_in);
    if (s->capture) {
        if (s->capture->invalidated) {
            RETURN(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        if (event_captured) {
            if (captured_in != s->capture) {
                invalidate(s->capture, "waited on an event of another capture");
                RETURN(CUDA_ERROR_STREAM_CAPTURE_MERGE);
            }
            RETURN(CUDA_SUCCESS); /* a join within the capture: the graph is a chain already */
        }
        if (event->state == CUevent_st::State::Recorded && (flags & CU_EVENT_WAIT_EXTERNAL) == 0) {
            /* "It is invalid to wait on a non-captured event from a stream which is being captured
             * without specifying the cudaEventWaitExternal flag" (CUDA programming guide). */
            invalidate(s->capture, "waited on an event recorded outside the capture");
            RETURN(CUDA_ERROR_STREAM_CAPTURE_ISOLATION);
        }
        RETURN(CUDA_SUCCESS);
    }
    if (flags & CU_EVENT_WAIT_EXTERNAL) {
        RETURN(CUDA_ERROR_INVALID_VALUE); /* only meaningful during capture */
    }
    if (event_captured) {
        /* Joining an uncaptured stream into a capture (a fork) is not modelled. */
        report("cuStreamWaitEvent: a stream waiting on an event of an active capture (a fork of the capture) is not "
               "supported by the emulated driver");
        RETURN(CUDA_ERROR_NOT_SUPPORTED);
    }
    if (is_legacy(s)) {
        TRY(check_legacy_use(ctx));
    }
    if (event->state == CUevent_st::State::Recorded) {
        s->ready = std::max(s->ready, event->time);
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuStreamBeginCapture_v2(CUstream handle, CUstreamCaptureMode mode) {
    LOCK;
    if (is_null_stream(handle)) {
        CUcontext ctx = nullptr;
        TRY(current_context(&ctx));
        RETURN(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED); /* the legacy stream cannot be captured */
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (mode > CU_STREAM_CAPTURE_MODE_RELAXED) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (s->capture) {
        RETURN(CUDA_ERROR_ILLEGAL_STATE);
    }
    auto capture = std::make_shared<Capture>();
    capture->id = state().next_capture++;
    capture->origin = s;
    capture->mode = mode;
    capture->thread = std::this_thread::get_id();
    capture->body = std::make_shared<GraphBody>();
    capture->body->ctx = ctx;
    s->capture = capture;
    state().captures.push_back(capture);
    trace("capture %llu begins", static_cast<unsigned long long>(capture->id));
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuStreamBeginCapture(CUstream handle, CUstreamCaptureMode mode) {
    return cuStreamBeginCapture_v2(handle, mode);
}

EXPORT CUresult cuStreamEndCapture(CUstream handle, CUgraph *graph) {
    LOCK;
    if (graph == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    auto capture = s->capture;
    if (!capture) {
        RETURN(CUDA_ERROR_ILLEGAL_STATE);
    }
    if (capture->origin != s) {
        RETURN(CUDA_ERROR_STREAM_CAPTURE_UNMATCHED);
    }
    if (capture->mode != CU_STREAM_CAPTURE_MODE_RELAXED && capture->thread != std::this_thread::get_id()) {
        RETURN(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
    }
    s->capture.reset();
    auto &caps = state().captures;
    caps.erase(std::remove(caps.begin(), caps.end(), capture), caps.end());
    if (capture->invalidated) {
        trace("capture %llu ended invalidated (%s)", static_cast<unsigned long long>(capture->id), capture->why.c_str());
        *graph = nullptr;
        RETURN(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    }
    CUgraph g = new CUgraph_st();
    g->body = capture->body;
    state().graphs.insert(g);
    *graph = g;
    trace("capture %llu ended: %zu nodes", static_cast<unsigned long long>(capture->id), g->body->nodes.size());
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuStreamIsCapturing(CUstream handle, CUstreamCaptureStatus *status) {
    LOCK;
    if (status == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (is_legacy(s)) {
        /* The legacy stream is "capturing" when a blocking stream is (its use would be invalid). */
        for (const auto &c : state().captures) {
            if (c->origin->ctx == ctx && (c->origin->flags & CU_STREAM_NON_BLOCKING) == 0) {
                RETURN(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT);
            }
        }
        *status = CU_STREAM_CAPTURE_STATUS_NONE;
        RETURN(CUDA_SUCCESS);
    }
    *status = !s->capture ? CU_STREAM_CAPTURE_STATUS_NONE
              : s->capture->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                        : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    RETURN(CUDA_SUCCESS);
}

/* ---- Events ------------------------------------------------------------------------------------- */

EXPORT CUresult cuEventCreate(CUevent *event, unsigned int flags) {
    LOCK;
    CUcontext ctx = nullptr;
    TRY(current_context(&ctx));
    if (event == nullptr || (flags & ~7u) != 0) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUevent e = new CUevent_st();
    e->ctx = ctx;
    e->flags = flags;
    state().events.insert(e);
    *event = e;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuEventDestroy_v2(CUevent event) {
    LOCK;
    if (state().events.count(event) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    state().events.erase(event);
    delete event;
    RETURN(CUDA_SUCCESS);
}

static CUresult record_event(CUevent event, CUstream handle, unsigned flags) {
    if (state().events.count(event) == 0) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    if (CUresult r = resolve_stream(handle, &s, &ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (event->ctx != ctx) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    if (s->capture) {
        if (s->capture->invalidated) {
            return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        }
        if (flags & CU_EVENT_RECORD_EXTERNAL) {
            report("cuEventRecordWithFlags(CU_EVENT_RECORD_EXTERNAL) during capture is not modelled");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
        event->state = CUevent_st::State::Captured;
        event->capture = s->capture;
        return CUDA_SUCCESS;
    }
    if (is_legacy(s)) {
        if (CUresult r = check_legacy_use(ctx); r != CUDA_SUCCESS) {
            return r;
        }
    }
    event->state = CUevent_st::State::Recorded;
    event->capture.reset();
    event->time = start_time(s);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent event, CUstream stream) {
    LOCK;
    RETURN(record_event(event, stream, 0));
}

EXPORT CUresult cuEventRecordWithFlags(CUevent event, CUstream stream, unsigned int flags) {
    LOCK;
    RETURN(record_event(event, stream, flags));
}

/* Querying, synchronising on or timing an event last recorded in an active capture is invalid (and
 * invalidates the capture). */
static CUresult check_not_captured(CUevent event) {
    if (event->state != CUevent_st::State::Captured) {
        return CUDA_SUCCESS;
    }
    auto capture = event->capture.lock();
    if (capture && active(capture)) {
        invalidate(capture, "an event recorded in the capture was queried or waited for by the host");
        return CUDA_ERROR_CAPTURED_EVENT;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventQuery(CUevent event) {
    LOCK;
    if (state().events.count(event) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(event->ctx));
    TRY(check_not_captured(event));
    /* Done when the host's clock has reached the event's time (as cuStreamQuery). */
    if (event->state == CUevent_st::State::Recorded && event->time > host_now()) {
        RETURN(CUDA_ERROR_NOT_READY);
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuEventSynchronize(CUevent event) {
    LOCK;
    if (state().events.count(event) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(event->ctx));
    TRY(check_not_captured(event));
    if (event->state == CUevent_st::State::Recorded) {
        host_wait_until(event->time);
    }
    RETURN(CUDA_SUCCESS);
}

static CUresult elapsed(float *ms, CUevent start, CUevent end) {
    LOCK;
    if (ms == nullptr) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (state().events.count(start) == 0 || state().events.count(end) == 0) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    if (CUresult r = usable(start->ctx); r != CUDA_SUCCESS) {
        return r;
    }
    if (CUresult r = check_not_captured(start); r != CUDA_SUCCESS) {
        return r;
    }
    if (CUresult r = check_not_captured(end); r != CUDA_SUCCESS) {
        return r;
    }
    /* Timing needs two recorded events created without CU_EVENT_DISABLE_TIMING. */
    if ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    if (start->state != CUevent_st::State::Recorded || end->state != CUevent_st::State::Recorded) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    *ms = static_cast<float>(end->time - start->time);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end) { return done(__func__, elapsed(ms, start, end)); }
EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end) { return done(__func__, elapsed(ms, start, end)); }

/* ---- Graphs ------------------------------------------------------------------------------------- */

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph graph, unsigned long long flags) {
    LOCK;
    if (exec == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (state().graphs.count(graph) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    TRY(usable(graph->body->ctx));
    const unsigned long long known = CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH | CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD |
                                     CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH |
                                     CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY;
    if ((flags & ~known) != 0 || (flags & CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH) != 0) {
        /* Device launch is not modelled; with auto-free the driver refuses it too. */
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    CUgraphExec e = new CUgraphExec_st();
    e->body = graph->body;
    e->flags = flags;
    state().execs.insert(e);
    *exec = e;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGraphLaunch(CUgraphExec exec, CUstream handle) {
    LOCK;
    if (state().execs.count(exec) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    if (exec->body->ctx != ctx) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    if (s->capture) {
        report("cuGraphLaunch into a capturing stream (a child graph) is not modelled");
        RETURN(CUDA_ERROR_NOT_SUPPORTED);
    }
    if (is_legacy(s)) {
        TRY(check_legacy_use(ctx));
    }
    for (const Node &node : exec->body->nodes) {
        if (node.kind == Node::Kind::Kernel && state().functions.count(node.function) == 0) {
            RETURN(CUDA_ERROR_INVALID_HANDLE); /* its module was unloaded */
        }
    }
    trace("cuGraphLaunch: %zu nodes", exec->body->nodes.size());
    for (const Node &node : exec->body->nodes) {
        execute_on(s, [&] { run_node(ctx, node); });
    }
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGraphUpload(CUgraphExec exec, CUstream handle) {
    LOCK;
    if (state().execs.count(exec) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    CUstream s = nullptr;
    CUcontext ctx = nullptr;
    TRY(resolve_stream(handle, &s, &ctx));
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec) {
    LOCK;
    if (state().execs.count(exec) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    state().execs.erase(exec);
    delete exec;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGraphDestroy(CUgraph graph) {
    LOCK;
    if (state().graphs.count(graph) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    state().graphs.erase(graph);
    delete graph;
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuGraphGetNodes(CUgraph graph, void **nodes, size_t *count) {
    LOCK;
    if (state().graphs.count(graph) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    if (count == nullptr) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (nodes != nullptr) {
        /* Node handles are not modelled: only the count is answered. */
        RETURN(CUDA_ERROR_NOT_SUPPORTED);
    }
    *count = graph->body->nodes.size();
    RETURN(CUDA_SUCCESS);
}

/* ---- Occupancy (answered from the kernel's threads, registers and shared memory) ------------------ */

EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, CUfunction f, int block_size,
                                                                      size_t dynamic_shared, unsigned int flags) {
    LOCK;
    (void)flags;
    if (blocks == nullptr || block_size <= 0) {
        RETURN(CUDA_ERROR_INVALID_VALUE);
    }
    if (state().functions.count(f) == 0) {
        RETURN(CUDA_ERROR_INVALID_HANDLE);
    }
    const int warps = (block_size + 31) / 32;
    int n = std::min(32, 2048 / (warps * 32));
    if (f->kernel.registers > 0) {
        const int per_warp = (static_cast<int>(f->kernel.registers) * 32 + 255) / 256 * 256;
        n = std::min(n, 65536 / (per_warp * warps));
    }
    const size_t shared = dynamic_shared + static_cast<size_t>(static_shared(f)) + static_cast<size_t>(cfg().reserved_shared);
    if (shared > 0) {
        n = std::min<int>(n, static_cast<int>(static_cast<size_t>(cfg().shared_per_sm) / shared));
    }
    *blocks = std::max(0, n);
    RETURN(CUDA_SUCCESS);
}

EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, CUfunction f, int block_size,
                                                            size_t dynamic_shared) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, f, block_size, dynamic_shared, 0);
}
