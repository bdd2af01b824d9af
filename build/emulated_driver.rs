//! Build-script module: the emulated CUDA driver (docs/emulated-driver.md), a shared library named
//! `libcuda.so.1` that stands in for NVIDIA's driver and runs the kernels on the CPU emulator. It holds
//! `emulator/driver/*.cpp` and, linked whole, the emulator's static library (runtime and host-compiled
//! kernels) that `build/emulator.rs` makes, so it needs only the host C++ compiler.
//!
//! Written to `OUT_DIR/emulated-driver/` and copied to `target/<profile>/emulated-driver/` (with a
//! `libcuda.so` link beside it); the crate learns the folder from `CUDA_ATTENTION_EMULATED_DRIVER_DIR`
//! (`env!`). cudarc opens the driver by name, so `LD_LIBRARY_PATH=<that folder>` is all a program needs
//! (`scripts/with-emulated-driver`). Linux only: elsewhere nothing is built and the variable is empty.
//!
//! Only the driver API (`cu[A-Z]*`) is exported (`emulator/driver/exports.map`): the emulator inside
//! stays private, so it does not clash with the copy linked into the crate's binaries.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this target gets the emulated driver.
fn wanted() -> bool {
    env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
}

/// Compiles the driver's own sources (position-independent objects, linked by [`link`]).
pub fn compile() -> Vec<PathBuf> {
    if !wanted() {
        return Vec::new();
    }
    let mut sources: Vec<PathBuf> = fs::read_dir("emulator/driver")
        .expect("cannot read emulator/driver")
        .map(|entry| entry.expect("cannot read a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "cpp"))
        .collect();
    sources.sort();
    build_config().files(&sources).compile_intermediates()
}

fn build_config() -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .pic(true)
        // AttentionParams is 64-byte aligned (it carries TMA tensor maps): g++ notes that passing such a
        // struct by value changed ABI in GCC 4.6, which concerns no interface here.
        .flag_if_supported("-Wno-psabi")
        .include("kernels/include")
        .include("emulator/cuda")
        .include("emulator")
        .include("emulator/driver")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true);
    build
}

/// Links `objects` and the emulator library into `libcuda.so.1` and puts it where programs find it.
pub fn link(objects: &[PathBuf]) {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if !wanted() {
        println!("cargo:rustc-env=CUDA_ATTENTION_EMULATED_DRIVER_DIR=");
        return;
    }
    let dir = out_dir.join("emulated-driver");
    fs::create_dir_all(&dir).expect("cannot create the emulated driver's folder");
    let library = dir.join("libcuda.so.1");
    let emulator = out_dir.join("libcuda_attention_emulator.a");
    let compiler = build_config().get_compiler();
    let mut cmd = Command::new(compiler.path());
    cmd.arg("-shared")
        .arg("-o")
        .arg(&library)
        .args(objects)
        .arg("-Wl,--whole-archive")
        .arg(&emulator)
        .arg("-Wl,--no-whole-archive")
        .arg(format!(
            "-Wl,--version-script={}",
            Path::new("emulator/driver/exports.map").display()
        ))
        .arg("-Wl,-soname,libcuda.so.1")
        .arg("-Wl,--no-undefined")
        .arg("-pthread");
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", compiler.path().display()));
    if !output.status.success() {
        panic!(
            "linking the emulated driver failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    symlink(&dir, "libcuda.so");
    println!(
        "cargo:rustc-env=CUDA_ATTENTION_EMULATED_DRIVER_DIR={}",
        dir.display()
    );

    // target/<profile>/emulated-driver, for scripts and people: OUT_DIR is
    // target/<profile>/build/<package>-<hash>/out.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let public = profile_dir.join("emulated-driver");
        if fs::create_dir_all(&public).is_ok() {
            // Copy to a temporary name, then rename: a program loading the old library never sees half a
            // file.
            let temporary = public.join(".libcuda.so.1.new");
            if fs::copy(&library, &temporary).is_ok() {
                let _ = fs::rename(&temporary, public.join("libcuda.so.1"));
                symlink(&public, "libcuda.so");
            }
        }
    }
}

/// `dir/name` -> `libcuda.so.1` (cudarc tries `libcuda.so` first).
fn symlink(dir: &Path, name: &str) {
    let link = dir.join(name);
    let _ = fs::remove_file(&link);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink("libcuda.so.1", &link);
}
