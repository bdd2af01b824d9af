//! What this build of the crate holds: the embedded fatbin and the architectures nvcc compiled it for.

include!(concat!(env!("OUT_DIR"), "/kernels_info.rs"));

/// The fatbin nvcc produced from kernels/*.cu (empty when the build had no nvcc).
pub static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernels.fatbin"));

/// The ptxas resource report (`-Xptxas -v`) of this build's kernels (empty without nvcc).
pub static PTXAS_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas-report.txt"));

/// Kernel families this build can launch on a GPU.
pub fn kernel_families() -> &'static [&'static str] {
    if KERNELS_BUILT {
        &["naive", "flash (f16, bf16)"]
    } else {
        &[]
    }
}
