/*
 * kernel_registry.cpp - the table of KernelInfo records that ATTENTION_KERNEL registers from each kernel
 * translation unit at static initialisation (kernel_registry.h), and its C accessors for Rust.
 */
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernel_registry.h"
#include "runtime.h"

namespace cuda_emu {

namespace {

struct InfoTable {
    std::vector<KernelInfo> records;
    std::string error;
};

InfoTable &table() {
    static InfoTable instance;
    return instance;
}

/* Sorted by name on first read, after every static registration has run. */
const std::vector<KernelInfo> &sorted_records() {
    static const std::vector<KernelInfo> sorted = [] {
        std::vector<KernelInfo> records = table().records;
        std::sort(records.begin(), records.end(),
                  [](const KernelInfo &a, const KernelInfo &b) { return strcmp(a.name, b.name) < 0; });
        return records;
    }();
    return sorted;
}

} /* namespace */

KernelInfoRegistration::KernelInfoRegistration(const char *name, int max_threads, KernelInfo info) {
    InfoTable &t = table();
    info.name = name;
    for (const KernelInfo &record : t.records) {
        if (strcmp(record.name, name) == 0 && t.error.empty()) {
            t.error = std::string("kernel ") + name + " is registered twice";
        }
    }
    if (info.block_x * info.block_y != static_cast<uint32_t>(max_threads) && t.error.empty()) {
        t.error = std::string("kernel ") + name + ": the record's block " + std::to_string(info.block_x) + " x " +
                  std::to_string(info.block_y) + " differs from its launch bound " + std::to_string(max_threads);
    }
    t.records.push_back(info);
}

} /* namespace cuda_emu */

extern "C" uint32_t attention_kernel_count(void) {
    return static_cast<uint32_t>(cuda_emu::sorted_records().size());
}

extern "C" const KernelInfo *attention_kernel_info(uint32_t index) {
    const std::vector<KernelInfo> &records = cuda_emu::sorted_records();
    return index < records.size() ? &records[index] : nullptr;
}

extern "C" const char *attention_kernel_registry_error(void) {
    const std::string &error = cuda_emu::table().error;
    return error.empty() ? nullptr : error.c_str();
}
