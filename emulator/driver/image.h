/*
 * image.h - what the emulated driver reads from a module image (cuModuleLoadData): a fatbin (the crate
 * embeds one), a bare cubin (ELF) or PTX text.
 *
 * From a fatbin it picks the entry the real driver would: SASS of the device's major version and a minor
 * version not above the device's (an arch-specific "a" target only on exactly its device), else the
 * newest PTX not above the device's compute capability (which the driver would JIT), else
 * CUDA_ERROR_NO_BINARY_FOR_GPU. From a cubin it reads, per kernel (global function): the parameter
 * count and size (EIATTR_KPARAM_INFO, EIATTR_CBANK_PARAM_SIZE), the __launch_bounds__ limit
 * (EIATTR_MAX_THREADS), the registers per thread (the .text section's info field) and the static shared
 * memory (.nv.shared.<kernel>). From uncompressed PTX it reads the .entry names and parameter sizes. A
 * compressed entry (nvcc compresses the PTX of a fatbin) cannot be read without a decompressor: its kernel
 * names are then the emulator's registry (noted in `note`).
 */
#ifndef CUDA_ATTENTION_EMULATED_DRIVER_IMAGE_H
#define CUDA_ATTENTION_EMULATED_DRIVER_IMAGE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace emu_driver {

struct KernelImage {
    std::string name;
    /* Parameters: count and total bytes (-1: unknown). */
    int param_count = -1;
    int64_t param_bytes = -1;
    /* Offsets and sizes of each parameter, in order (empty: unknown). */
    std::vector<std::pair<uint32_t, uint32_t>> params;
    /* __launch_bounds__ (0: none recorded). */
    uint32_t max_threads = 0;
    /* Registers per thread (0: unknown). */
    uint32_t registers = 0;
    /* Static shared memory bytes, as the ELF section holds them. */
    uint32_t static_shared = 0;
};

struct ModuleImage {
    /* Which entry was chosen: "sm_80", "sm_90a", "compute_80 (PTX, JIT)", ... */
    std::string chosen;
    /* Architecture of the chosen entry, e.g. 80 or 90. */
    int arch = 0;
    bool is_ptx = false;
    /* Kernels could not be listed (compressed entry): any registered kernel name is accepted. */
    bool names_unknown = false;
    std::vector<KernelImage> kernels;
    /* Something worth telling (printed under CUDA_EMU_DRIVER_TRACE). */
    std::string note;
};

enum class ImageStatus { Ok, InvalidImage, NoBinaryForGpu, InvalidPtx };

/* Reads `image` for a device of compute capability cc_major.cc_minor. A fatbin and a cubin carry their
 * sizes in their headers; PTX text is NUL-terminated. */
ImageStatus read_module_image(const void *image, int cc_major, int cc_minor, ModuleImage *out, std::string *error);

} /* namespace emu_driver */

#endif /* CUDA_ATTENTION_EMULATED_DRIVER_IMAGE_H */
