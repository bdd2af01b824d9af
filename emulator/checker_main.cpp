/*
 * checker_main.cpp - the checking mode's standalone executable: runs named kernels on generated inputs
 * in exact-size buffers and reports what the emulator (and the sanitizer it was built with) finds.
 *
 * Why a separate program: ThreadSanitizer and AddressSanitizer need their runtime initialised first in
 * the process and instrument everything compiled with them; linking sanitized C++ into a Rust test binary
 * (built without sanitizers, with its own allocator use and threads) is fragile and aborts the whole test
 * run on the first report. A child process keeps each report contained: tests/emulator_checking.rs
 * compiles this file with the runtime, the kernels and the planted-bug kernels (g++ -fsanitize=thread or
 * -fsanitize=address, or plain), runs it on a job file and reads its output.
 *
 * Job file (one directive per line, '#' starts a comment):
 *   param NAME VALUE            a non-pointer field of AttentionParams (the names come from the generated
 *                               params_fields.inc, so a field the header lacks is a compile error)
 *   dtype f32|f16|bf16          element type of 2-byte random buffers (f16 or bf16)
 *   buffer NAME ELEMENTS BYTES random|poison
 *                               an exact-size heap buffer for pointer field NAME: random values in [-1, 1)
 *                               (4-byte elements f32, 2-byte elements the dtype) or 0xff bytes (NaN)
 *   schedule round-robin|reversed|random SEED
 *   threads N                   host threads per launch (0: one per core)
 *   launch NAME GX GY GZ BX BY BZ SHARED_BYTES
 *                               run in file order; the first failure stops
 *
 * Output (stdout): "emulator-check: ok: N launches, M NaN outputs" and exit 0 (M counts the elements of
 * buffer "out" still NaN: read before written, or never written); "emulator-check: error in KERNEL: MESSAGE"
 * and exit 1 when the emulator stops a kernel; exit 2 for a bad job. Sanitizer reports go to stderr.
 * `emulator-check --info` prints the sanitizer and sizeof(AttentionParams).
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "float_bits.h" /* emulator/cuda/ */
#include "launch.h"
#include "sanitizer.h"

namespace {

[[noreturn]] void usage_error(const std::string &message) {
    fprintf(stdout, "emulator-check: bad job: %s\n", message.c_str());
    exit(2);
}

struct Buffer {
    void *data = nullptr;
    size_t elements = 0;
    size_t element_bytes = 0;
    std::vector<int64_t> values; /* integer contents ("values": metadata such as cu_seqlens, slots) */
};

/* Exact-size heap buffer (AddressSanitizer puts redzones right after it). */
void *allocate(size_t bytes) {
    if (bytes == 0) {
        return nullptr;
    }
    void *p = nullptr;
    if (posix_memalign(&p, 16, bytes) != 0) {
        usage_error("cannot allocate " + std::to_string(bytes) + " bytes");
    }
    return p;
}

void fill_random(const Buffer &buffer, const std::string &dtype, std::mt19937 &rng) {
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (size_t i = 0; i < buffer.elements; ++i) {
        const float x = uniform(rng);
        if (buffer.element_bytes == 4) {
            static_cast<float *>(buffer.data)[i] = x;
        } else if (dtype == "f16") {
            static_cast<uint16_t *>(buffer.data)[i] = cuda_emu::float_to_half_bits(x);
        } else {
            static_cast<uint16_t *>(buffer.data)[i] = cuda_emu::float_to_bfloat16_bits(x);
        }
    }
}

float element_value(const Buffer &buffer, size_t i, const std::string &dtype) {
    if (buffer.element_bytes == 4) {
        return static_cast<const float *>(buffer.data)[i];
    }
    const uint16_t bits = static_cast<const uint16_t *>(buffer.data)[i];
    return dtype == "f16" ? cuda_emu::half_bits_to_float(bits) : cuda_emu::bfloat16_bits_to_float(bits);
}

/* Setting one field of AttentionParams by name: a value (integers, floats) or a buffer (pointers). */
template <typename T> bool assign_value(T &field, const std::string &text) {
    if constexpr (std::is_pointer<T>::value) {
        (void)field;
        (void)text;
        return true; /* pointers come from buffers */
    } else if constexpr (std::is_floating_point<T>::value) {
        field = static_cast<T>(strtod(text.c_str(), nullptr));
        return true;
    } else {
        field = static_cast<T>(strtoll(text.c_str(), nullptr, 10));
        return true;
    }
}

template <typename T> bool assign_pointer(T &field, void *pointer) {
    if constexpr (std::is_pointer<T>::value) {
        field = static_cast<T>(pointer);
        return true;
    } else {
        (void)field;
        (void)pointer;
        return false;
    }
}

struct Field {
    const char *name;
    bool (*value)(AttentionParams &, const std::string &);
    bool (*pointer)(AttentionParams &, void *);
};

/* params_fields.inc is generated by the test harness from the Rust mirror's fields. */
#define CUDA_EMU_PARAM(field)                                                                                      \
    Field{#field, [](AttentionParams &p, const std::string &text) { return assign_value(p.field, text); },         \
          [](AttentionParams &p, void *buffer) { return assign_pointer(p.field, buffer); }},
const Field kFields[] = {
#include "params_fields.inc"
};
#undef CUDA_EMU_PARAM

const Field *find_field(const std::string &name) {
    for (const Field &field : kFields) {
        if (name == field.name) {
            return &field;
        }
    }
    return nullptr;
}

struct Launch {
    std::string name;
    unsigned grid[3], block[3], shared;
};

} /* namespace */

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--info") == 0) {
        printf("emulator-check: sanitizer %s, sizeof(AttentionParams) %zu\n", cuda_emu::sanitizer_name(),
               sizeof(AttentionParams));
        return 0;
    }
    if (argc != 2) {
        usage_error("usage: emulator-check JOB_FILE | --info");
    }
    std::ifstream file(argv[1]);
    if (!file) {
        usage_error(std::string("cannot read ") + argv[1]);
    }

    AttentionParams params;
    memset(&params, 0, sizeof params);
    std::string dtype = "f32";
    std::map<std::string, Buffer> buffers;
    std::vector<std::pair<std::string, bool>> buffer_order; /* name, an input (random or values) */
    cuda_emu::ScheduleKind schedule = cuda_emu::ScheduleKind::RoundRobin;
    uint64_t seed = 0;
    unsigned threads = 0;
    std::vector<Launch> launches;

    std::string line;
    while (std::getline(file, line)) {
        std::istringstream in(line);
        std::string word;
        if (!(in >> word) || word[0] == '#') {
            continue;
        }
        if (word == "param") {
            std::string name, value;
            in >> name >> value;
            const Field *field = find_field(name);
            if (field == nullptr || !field->value(params, value)) {
                usage_error("unknown parameter " + name + ": rebuild the checker");
            }
        } else if (word == "dtype") {
            in >> dtype;
            if (dtype != "f32" && dtype != "f16" && dtype != "bf16") {
                usage_error("unknown dtype " + dtype);
            }
        } else if (word == "buffer") {
            std::string name, fill;
            Buffer buffer;
            in >> name >> buffer.elements >> buffer.element_bytes >> fill;
            const bool sized = buffer.element_bytes == 2 || buffer.element_bytes == 4;
            const bool integers = (buffer.element_bytes == 4 || buffer.element_bytes == 8) && fill == "values";
            if (!in || !(integers || (sized && (fill == "random" || fill == "poison")))) {
                usage_error("buffer needs NAME ELEMENTS 2|4 random|poison, or NAME ELEMENTS 4|8 values V...: " + line);
            }
            if (integers) {
                int64_t value = 0;
                while (in >> value) {
                    buffer.values.push_back(value);
                }
                if (buffer.values.size() != buffer.elements) {
                    usage_error("buffer " + name + " needs exactly ELEMENTS values: " + line);
                }
            }
            buffers[name] = buffer;
            buffer_order.emplace_back(name, fill != "poison");
        } else if (word == "schedule") {
            std::string kind;
            in >> kind;
            if (kind == "round-robin") {
                schedule = cuda_emu::ScheduleKind::RoundRobin;
            } else if (kind == "reversed") {
                schedule = cuda_emu::ScheduleKind::Reversed;
            } else if (kind == "random") {
                schedule = cuda_emu::ScheduleKind::Random;
                in >> seed;
            } else {
                usage_error("unknown schedule " + kind);
            }
        } else if (word == "threads") {
            in >> threads;
        } else if (word == "launch") {
            Launch l;
            in >> l.name >> l.grid[0] >> l.grid[1] >> l.grid[2] >> l.block[0] >> l.block[1] >> l.block[2] >>
                l.shared;
            if (!in) {
                usage_error("launch needs NAME GX GY GZ BX BY BZ SHARED_BYTES: " + line);
            }
            launches.push_back(l);
        } else {
            usage_error("unknown directive: " + line);
        }
    }

    std::mt19937 rng(12345);
    for (const auto &entry : buffer_order) {
        Buffer &buffer = buffers[entry.first];
        buffer.data = allocate(buffer.elements * buffer.element_bytes);
        if (buffer.data != nullptr) {
            if (!buffer.values.empty()) {
                for (size_t i = 0; i < buffer.elements; ++i) {
                    if (buffer.element_bytes == 8) {
                        static_cast<int64_t *>(buffer.data)[i] = buffer.values[i];
                    } else {
                        static_cast<int32_t *>(buffer.data)[i] = static_cast<int32_t>(buffer.values[i]);
                    }
                }
            } else if (entry.second) {
                fill_random(buffer, dtype, rng);
            } else {
                memset(buffer.data, 0xff, buffer.elements * buffer.element_bytes);
            }
        }
        const Field *field = find_field(entry.first);
        if (field == nullptr || !field->pointer(params, buffer.data)) {
            usage_error("buffer " + entry.first + " is not a pointer field of AttentionParams");
        }
    }

    for (const Launch &l : launches) {
        cuda_emu::LaunchRequest request{l.name.c_str(),
                                        dim3(l.grid[0], l.grid[1], l.grid[2]),
                                        dim3(l.block[0], l.block[1], l.block[2]),
                                        l.shared,
                                        params,
                                        schedule,
                                        seed,
                                        threads};
        std::string message;
        const cuda_emu::LaunchStatus status = cuda_emu::launch_kernel(request, &message);
        if (status == cuda_emu::LaunchStatus::KernelError) {
            printf("emulator-check: error in %s: %s\n", l.name.c_str(), message.c_str());
            return 1;
        }
        if (status != cuda_emu::LaunchStatus::Ok) {
            usage_error(l.name + ": " + message);
        }
    }
    /* NaN left in the output: a value read before it was written (shared memory and poisoned buffers
     * start as NaN bytes, cp.async destinations stay NaN until their wait), or never written. */
    size_t nan_outputs = 0;
    if (buffers.count("out")) {
        const Buffer &out = buffers["out"];
        for (size_t i = 0; i < out.elements; ++i) {
            const float x = element_value(out, i, dtype);
            nan_outputs += x != x;
        }
    }
    printf("emulator-check: ok: %zu launches, %zu NaN outputs\n", launches.size(), nan_outputs);
    for (auto &entry : buffers) {
        free(entry.second.data);
    }
    return 0;
}
