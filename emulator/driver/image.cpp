/*
 * image.cpp - fatbin, cubin (ELF) and PTX reading for the emulated driver (image.h).
 *
 * Fatbin layout (as nvcc 12/13 writes it; no public specification): a 16-byte header {u32 magic
 * 0xBA55ED50, u16 version, u16 header size, u64 size of the entries}, then entries, each a header {u16
 * kind (1 PTX, 2 ELF), u16 version, u32 header size, u64 payload size, ..., u32 arch at +28 (e.g. 80, 90),
 * ..., u64 flags at +40 (0x2000 and 0x8000: compressed; 0x100000: arch-specific "a" target)} followed by
 * the payload.
 *
 * Cubin attributes (.nv.info.<kernel> sections): a sequence of {u8 format, u8 attribute, ...}: format 1
 * (no value) and 2, 3 (a u16 value) take 4 bytes; format 4 is followed by a u16 size and that many bytes.
 */
#include "image.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace emu_driver {

namespace {

constexpr uint32_t kFatbinMagic = 0xBA55ED50u;
constexpr uint64_t kFlagCompressed = 0x2000 | 0x8000;
constexpr uint64_t kFlagArchSpecific = 0x100000;

/* EIATTR codes. */
constexpr uint8_t kEiattrMaxThreads = 0x05;
constexpr uint8_t kEiattrKparamInfo = 0x17;
constexpr uint8_t kEiattrCbankParamSize = 0x19;
constexpr uint8_t kEiattrRegcount = 0x2f;

template <typename T> T load(const uint8_t *p) {
    T value;
    memcpy(&value, p, sizeof(T));
    return value;
}

bool starts_with(const std::string &s, const char *prefix) { return s.rfind(prefix, 0) == 0; }

/* ---- ELF (64-bit little-endian cubins) ---------------------------------------------------------- */

struct Section {
    std::string name;
    uint32_t type = 0;
    uint64_t offset = 0;
    uint64_t size = 0;
    uint32_t link = 0;
    uint32_t info = 0;
};

bool read_cubin(const uint8_t *data, uint64_t size, ModuleImage *out, std::string *error) {
    if (size < 64 || memcmp(data, "\x7f" "ELF", 4) != 0 || data[4] != 2 /* ELFCLASS64 */) {
        *error = "not a 64-bit ELF cubin";
        return false;
    }
    const uint64_t shoff = load<uint64_t>(data + 0x28);
    const uint16_t shentsize = load<uint16_t>(data + 0x3a);
    const uint16_t shnum = load<uint16_t>(data + 0x3c);
    const uint16_t shstrndx = load<uint16_t>(data + 0x3e);
    if (shentsize < 64 || shoff + uint64_t(shnum) * shentsize > size || shstrndx >= shnum) {
        *error = "the cubin's section headers lie outside the image";
        return false;
    }
    std::vector<Section> sections(shnum);
    for (uint16_t i = 0; i < shnum; ++i) {
        const uint8_t *h = data + shoff + uint64_t(i) * shentsize;
        Section &s = sections[i];
        s.type = load<uint32_t>(h + 4);
        s.offset = load<uint64_t>(h + 0x18);
        s.size = load<uint64_t>(h + 0x20);
        s.link = load<uint32_t>(h + 0x28);
        s.info = load<uint32_t>(h + 0x2c);
        if (s.type != 8 /* NOBITS */ && s.offset + s.size > size) {
            *error = "a cubin section lies outside the image";
            return false;
        }
    }
    const Section &names = sections[shstrndx];
    auto string_at = [&](const Section &table, uint32_t offset) -> std::string {
        if (offset >= table.size) {
            return std::string();
        }
        const char *start = reinterpret_cast<const char *>(data + table.offset + offset);
        return std::string(start, strnlen(start, table.size - offset));
    };
    for (uint16_t i = 0; i < shnum; ++i) {
        sections[i].name = string_at(names, load<uint32_t>(data + shoff + uint64_t(i) * shentsize));
    }

    /* Kernels: global functions of the symbol table. */
    std::map<std::string, KernelImage> kernels;
    std::map<uint32_t, std::string> symbols; /* symbol index -> kernel name */
    for (const Section &s : sections) {
        if (s.type != 2 /* SYMTAB */ || s.link >= shnum) {
            continue;
        }
        for (uint64_t off = 0; off + 24 <= s.size; off += 24) {
            const uint8_t *sym = data + s.offset + off;
            const uint8_t info = sym[4];
            if ((info & 0xf) == 2 /* FUNC */ && (info >> 4) == 1 /* GLOBAL */) {
                const std::string name = string_at(sections[s.link], load<uint32_t>(sym));
                if (!name.empty()) {
                    kernels[name].name = name;
                    symbols[static_cast<uint32_t>(off / 24)] = name;
                }
            }
        }
    }
    for (const Section &s : sections) {
        if (starts_with(s.name, ".text.")) {
            /* sm_80 cubins keep the register count in the top byte of the section's info field. */
            auto it = kernels.find(s.name.substr(6));
            if (it != kernels.end() && it->second.registers == 0) {
                it->second.registers = s.info >> 24;
            }
        } else if (s.name == ".nv.info") {
            /* EIATTR_REGCOUNT {symbol index, registers} (sm_90 cubins keep it only here). */
            const uint8_t *p = data + s.offset;
            for (uint64_t at = 0; at + 4 <= s.size;) {
                const uint8_t format = p[at], attribute = p[at + 1];
                const uint64_t n = format == 4 ? load<uint16_t>(p + at + 2) : 0;
                if (format == 4 && attribute == kEiattrRegcount && n >= 8 && at + 4 + n <= s.size) {
                    auto sym = symbols.find(load<uint32_t>(p + at + 4));
                    if (sym != symbols.end()) {
                        kernels[sym->second].registers = load<uint32_t>(p + at + 8);
                    }
                }
                at += 4 + n;
            }
        } else if (starts_with(s.name, ".nv.shared.")) {
            auto it = kernels.find(s.name.substr(11));
            if (it != kernels.end()) {
                it->second.static_shared = static_cast<uint32_t>(s.size);
            }
        } else if (starts_with(s.name, ".nv.info.")) {
            auto it = kernels.find(s.name.substr(9));
            if (it == kernels.end()) {
                continue;
            }
            KernelImage &k = it->second;
            const uint8_t *p = data + s.offset;
            uint64_t at = 0;
            int kparams = 0;
            while (at + 4 <= s.size) {
                const uint8_t format = p[at], attribute = p[at + 1];
                if (format == 4) {
                    const uint16_t n = load<uint16_t>(p + at + 2);
                    if (at + 4 + n > s.size) {
                        break;
                    }
                    const uint8_t *value = p + at + 4;
                    if (attribute == kEiattrKparamInfo && n >= 12) {
                        const uint16_t ordinal = load<uint16_t>(value + 4);
                        const uint16_t offset = load<uint16_t>(value + 6);
                        const uint32_t bytes = (load<uint32_t>(value + 8) >> 18) & 0x3fff;
                        if (k.params.size() <= ordinal) {
                            k.params.resize(ordinal + 1u);
                        }
                        k.params[ordinal] = {offset, bytes};
                        ++kparams;
                    } else if (attribute == kEiattrMaxThreads && n >= 12) {
                        k.max_threads = load<uint32_t>(value) * load<uint32_t>(value + 4) * load<uint32_t>(value + 8);
                    }
                    at += 4 + n;
                } else {
                    if (attribute == kEiattrCbankParamSize && format == 3) {
                        k.param_bytes = load<uint16_t>(p + at + 2);
                    }
                    at += 4;
                }
            }
            k.param_count = kparams;
            if (k.param_bytes < 0 && kparams == 0) {
                k.param_bytes = 0;
            }
        }
    }
    for (auto &entry : kernels) {
        out->kernels.push_back(entry.second);
    }
    return true;
}

/* ---- PTX ---------------------------------------------------------------------------------------- */

/* Reads `.entry name(params)` and the parameters' sizes. */
void read_ptx(const std::string &text, ModuleImage *out) {
    size_t at = 0;
    while ((at = text.find(".entry", at)) != std::string::npos) {
        at += 6;
        size_t start = text.find_first_not_of(" \t\r\n", at);
        if (start == std::string::npos) {
            break;
        }
        size_t end = text.find_first_of(" \t\r\n(", start);
        if (end == std::string::npos) {
            break;
        }
        KernelImage k;
        k.name = text.substr(start, end - start);
        const size_t open = text.find('(', end);
        const size_t close = open == std::string::npos ? std::string::npos : text.find(')', open);
        int64_t offset = 0;
        k.param_count = 0;
        if (open != std::string::npos && close != std::string::npos && text.find('{', end) > open) {
            const std::string params = text.substr(open + 1, close - open - 1);
            size_t p = 0;
            while ((p = params.find(".param", p)) != std::string::npos) {
                const size_t line_end = std::min(params.find(',', p), params.size());
                const std::string decl = params.substr(p, line_end - p);
                p = line_end;
                uint32_t bytes = 0, align = 1;
                const size_t bracket = decl.find('[');
                if (bracket != std::string::npos) {
                    bytes = static_cast<uint32_t>(strtoul(decl.c_str() + bracket + 1, nullptr, 10));
                } else if (decl.find("64") != std::string::npos) {
                    bytes = 8;
                } else if (decl.find("16") != std::string::npos) {
                    bytes = 2;
                } else if (decl.find("8") != std::string::npos) {
                    bytes = 1;
                } else {
                    bytes = 4;
                }
                const size_t a = decl.find(".align");
                align = a != std::string::npos ? static_cast<uint32_t>(strtoul(decl.c_str() + a + 6, nullptr, 10))
                                               : std::max(1u, std::min(bytes, 8u));
                align = std::max(1u, align);
                offset = (offset + align - 1) / align * align;
                k.params.push_back({static_cast<uint32_t>(offset), bytes});
                offset += bytes;
                ++k.param_count;
            }
        }
        k.param_bytes = offset;
        out->kernels.push_back(k);
        at = end;
    }
}

} /* namespace */

ImageStatus read_module_image(const void *image, int cc_major, int cc_minor, ModuleImage *out, std::string *error) {
    if (image == nullptr) {
        *error = "no image";
        return ImageStatus::InvalidImage;
    }
    const uint8_t *data = static_cast<const uint8_t *>(image);
    const int cc = cc_major * 10 + cc_minor;

    if (load<uint32_t>(data) == kFatbinMagic) {
        const uint16_t header = load<uint16_t>(data + 6);
        const uint64_t total = load<uint64_t>(data + 8);
        struct Entry {
            uint16_t kind;
            int arch;
            uint64_t flags;
            const uint8_t *payload;
            uint64_t size;
        };
        std::vector<Entry> entries;
        uint64_t at = header;
        while (at + 64 <= header + total) {
            const uint8_t *e = data + at;
            const uint16_t kind = load<uint16_t>(e);
            const uint32_t entry_header = load<uint32_t>(e + 4);
            const uint64_t payload = load<uint64_t>(e + 8);
            if (entry_header < 64 || at + entry_header + payload > header + total) {
                *error = "a fatbin entry lies outside the fatbin";
                return ImageStatus::InvalidImage;
            }
            entries.push_back({kind, static_cast<int>(load<uint32_t>(e + 28)), load<uint64_t>(e + 40),
                               e + entry_header, payload});
            at += entry_header + payload;
        }
        if (entries.empty()) {
            *error = "the fatbin holds no entry";
            return ImageStatus::InvalidImage;
        }
        const Entry *best = nullptr;
        for (const Entry &e : entries) {
            const bool specific = (e.flags & kFlagArchSpecific) != 0;
            const bool runs = e.kind == 2 && e.arch / 10 == cc_major && e.arch <= cc && (!specific || e.arch == cc);
            if (runs && (best == nullptr || e.arch > best->arch)) {
                best = &e;
            }
        }
        if (best == nullptr) {
            for (const Entry &e : entries) {
                if (e.kind == 1 && e.arch <= cc && (best == nullptr || e.arch > best->arch)) {
                    best = &e;
                }
            }
        }
        if (best == nullptr) {
            std::string held;
            for (const Entry &e : entries) {
                held += std::string(held.empty() ? "" : ", ") + (e.kind == 1 ? "compute_" : "sm_") +
                        std::to_string(e.arch) + ((e.flags & kFlagArchSpecific) ? "a" : "");
            }
            *error = "no SASS for sm_" + std::to_string(cc) + " and no PTX at or below compute_" + std::to_string(cc) +
                     " in the fatbin (it holds " + held + ")";
            return ImageStatus::NoBinaryForGpu;
        }
        out->arch = best->arch;
        out->is_ptx = best->kind == 1;
        out->chosen = (out->is_ptx ? "compute_" : "sm_") + std::to_string(best->arch) +
                      ((best->flags & kFlagArchSpecific) ? "a" : "") + (out->is_ptx ? " (PTX, JIT)" : "");
        const bool compressed = (best->flags & kFlagCompressed) != 0;
        if (compressed) {
            out->names_unknown = true;
            out->note = "the chosen fatbin entry (" + out->chosen +
                        ") is compressed: kernel names are taken from the emulator's registry";
            return ImageStatus::Ok;
        }
        if (out->is_ptx) {
            read_ptx(std::string(reinterpret_cast<const char *>(best->payload), strnlen(reinterpret_cast<const char *>(best->payload), best->size)), out);
            return ImageStatus::Ok;
        }
        return read_cubin(best->payload, best->size, out, error) ? ImageStatus::Ok : ImageStatus::InvalidImage;
    }

    if (memcmp(data, "\x7f" "ELF", 4) == 0) {
        /* A bare cubin: its size is where the section headers end. */
        const uint64_t shoff = load<uint64_t>(data + 0x28);
        const uint64_t end = shoff + uint64_t(load<uint16_t>(data + 0x3c)) * load<uint16_t>(data + 0x3a);
        const uint32_t flags = load<uint32_t>(data + 0x30);
        const int arch = static_cast<int>((flags >> 8) & 0xff);
        if (arch / 10 != cc_major || arch > cc) {
            *error = "the cubin is for sm_" + std::to_string(arch) + ", the device is sm_" + std::to_string(cc);
            return ImageStatus::NoBinaryForGpu;
        }
        out->arch = arch;
        out->chosen = "sm_" + std::to_string(arch) + " (cubin)";
        return read_cubin(data, end, out, error) ? ImageStatus::Ok : ImageStatus::InvalidImage;
    }

    const std::string text(reinterpret_cast<const char *>(data));
    if (text.find(".version") != std::string::npos && text.find(".target") != std::string::npos) {
        out->is_ptx = true;
        out->chosen = "PTX (JIT)";
        read_ptx(text, out);
        return ImageStatus::Ok;
    }
    *error = "neither a fatbin, a cubin nor PTX";
    return ImageStatus::InvalidImage;
}

} /* namespace emu_driver */
