//! Build script: the kernels, twice from the same `kernels/*.cu` source, on threads side by side.
//!
//! - `build/nvcc.rs`: nvcc compiles them into one fatbin that the crate embeds (sm_80 and sm_90a SASS and
//!   compute_80 PTX by default; without nvcc, an empty fatbin and a warning: the engine then answers
//!   `KernelsNotBuilt`), with the ptxas report the tests read.
//! - `build/emulator.rs`: the host C++ compiler builds the CPU emulator and the same kernels as C++ into a
//!   static library (always: it also holds the kernel registry every backend reads).
//! - `build/emulated_driver.rs`: a stand-in for the CUDA driver (`libcuda.so.1`) made of that library and
//!   `emulator/driver/`, so that the GPU engine's host code runs without a GPU (docs/emulated-driver.md).

#[path = "build/emulated_driver.rs"]
mod emulated_driver;
#[path = "build/emulator.rs"]
mod emulator;
#[path = "build/nvcc.rs"]
mod nvcc;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    let emulator = std::thread::spawn(emulator::build);
    let driver = std::thread::spawn(emulated_driver::compile);
    nvcc::build();
    if let Err(panic) = emulator.join() {
        std::panic::resume_unwind(panic);
    }
    match driver.join() {
        Ok(objects) => emulated_driver::link(&objects),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
