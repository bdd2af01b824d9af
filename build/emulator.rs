//! Build-script module: the CPU half. Compiles the emulator's runtime (`emulator/*.cpp`, except the
//! checker's `checker_main.cpp`) and every kernel (`kernels/*.cu`, as C++ through
//! `emulator/cuda/cuda_emulation.h`) into one static library linked into the crate; the kernels'
//! `ATTENTION_KERNEL` records in it are the kernel registry (`kernels/include/kernel_registry.h`). It needs a C++17 compiler (`$CXX`, else `c++`), never the CUDA toolkit,
//! and always optimises (`-O2`) so that `cargo test` without `--release` still emulates at a useful speed.
//!
//! The library is linked whole (`+whole-archive`): each kernel file registers its kernels from a static
//! initialiser that nothing references by name, which a plain static link would drop.

use std::fs;
use std::path::{Path, PathBuf};

/// Compiles and links the emulator library `cuda_attention_emulator`.
pub fn build() {
    println!("cargo:rerun-if-changed=emulator");
    let kernels = files_with_extension(Path::new("kernels"), "cu");
    let runtime: Vec<PathBuf> = files_with_extension(Path::new("emulator"), "cpp")
        .into_iter()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name != "checker_main.cpp")
        })
        .collect();

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        // Kernel files end in .cu, which a host compiler would not take for C++.
        .flag("-x")
        .flag("c++")
        // AttentionParams is 64-byte aligned (it carries TMA tensor maps): g++ notes that passing such a
        // struct by value changed ABI in GCC 4.6, which concerns no interface here.
        .flag_if_supported("-Wno-psabi")
        .include("kernels/include")
        .include("emulator/cuda")
        .include("emulator")
        .include("kernels")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .files(&runtime)
        .files(&kernels)
        .link_lib_modifier("+whole-archive")
        .compile("cuda_attention_emulator");
}

/// Every `dir/*.ext`, sorted.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("cannot read a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}
