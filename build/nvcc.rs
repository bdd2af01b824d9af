//! Build-script module: the GPU half. Compiles kernels/*.cu with nvcc into one fatbin that the crate
//! embeds.
//!
//! nvcc is looked up in `$NVCC`, `$CUDA_HOME/bin`, `$CUDA_PATH/bin`, `PATH`, `/usr/local/cuda/bin`.
//! Targets come from `CUDA_ATTENTION_ARCHS` (default `80,90a`: SASS for sm_80, which also runs on sm_86
//! and sm_89, and sm_90a) and `CUDA_ATTENTION_PTX` (default `80`: compute_80 PTX that newer GPUs JIT at
//! load; empty for none). Without nvcc the build succeeds with a warning and an empty fatbin: the engine
//! then answers `KernelsNotBuilt`.
//!
//! Outputs in OUT_DIR: `kernels.fatbin` (embedded), `kernels_all.cu` (the unity source),
//! `ptxas-report.txt` (ptxas -v: registers, spills, stack per kernel and architecture) and
//! `kernels_info.rs` (architectures and whether the kernels were built).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_VARS: [&str; 6] = [
    "NVCC",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "CUDA_ATTENTION_ARCHS",
    "CUDA_ATTENTION_PTX",
];

/// Compiles the fatbin (or writes the empty one) and `kernels_info.rs`.
pub fn build() {
    for var in ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fatbin = out_dir.join("kernels.fatbin");
    let report = out_dir.join("ptxas-report.txt");
    let sources = kernel_sources(Path::new("kernels"));
    let archs = list_from_env("CUDA_ATTENTION_ARCHS", "80,90a");
    let ptx = list_from_env("CUDA_ATTENTION_PTX", "80");

    let built = match find_nvcc() {
        Some(nvcc) => {
            compile_fatbin(&nvcc, &sources, &archs, &ptx, &out_dir, &fatbin, &report);
            true
        }
        None => {
            println!(
                "cargo:warning=nvcc not found ($NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin): \
                 building without GPU kernels. Run scripts/install-cuda-toolchain.sh and rebuild to get them."
            );
            fs::write(&fatbin, []).expect("cannot write the empty fatbin");
            fs::write(&report, "").expect("cannot write the empty ptxas report");
            false
        }
    };

    let arch_list = if built {
        archs.join(",")
    } else {
        String::new()
    };
    let ptx_list = if built { ptx.join(",") } else { String::new() };
    fs::write(
        out_dir.join("kernels_info.rs"),
        format!(
            "/// Whether nvcc compiled the kernels into this build.\n\
             pub const KERNELS_BUILT: bool = {built};\n\
             /// SASS architectures in the embedded fatbin, e.g. \"80,90a\".\n\
             pub const SASS_ARCHS: &str = {arch_list:?};\n\
             /// PTX virtual architectures in the embedded fatbin (JIT-compiled by newer drivers).\n\
             pub const PTX_ARCHS: &str = {ptx_list:?};\n"
        ),
    )
    .expect("cannot write kernels_info.rs");
}

/// Every kernels/*.cu, sorted, so the unity source is the same on every machine.
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .expect("cannot read kernels/")
        .map(|entry| entry.expect("cannot read kernels/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    sources.sort();
    sources
}

fn list_from_env(var: &str, default: &str) -> Vec<String> {
    env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .trim_start_matches("sm_")
                .trim_start_matches("compute_")
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn find_nvcc() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(nvcc) = env::var_os("NVCC") {
        candidates.push(PathBuf::from(nvcc));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            candidates.push(PathBuf::from(home).join("bin").join("nvcc"));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("nvcc")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates.into_iter().find(|path| path.is_file())
}

fn compile_fatbin(
    nvcc: &Path,
    sources: &[PathBuf],
    archs: &[String],
    ptx: &[String],
    out_dir: &Path,
    fatbin: &Path,
    report: &Path,
) {
    // One translation unit, so one fatbin holds every kernel family.
    let unity = out_dir.join("kernels_all.cu");
    let includes: String = sources
        .iter()
        .map(|src| {
            let abs = fs::canonicalize(src).expect("cannot resolve kernel path");
            format!("#include \"{}\"\n", abs.display())
        })
        .collect();
    fs::write(&unity, includes).expect("cannot write the unity kernel source");

    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin")
        .args(["-std=c++17", "-O3", "--threads", "0", "-Xptxas", "-v"])
        .arg("-I")
        .arg(fs::canonicalize("kernels").expect("kernels/ exists"));
    for arch in archs {
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{arch},code=sm_{arch}"));
    }
    for arch in ptx {
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{arch},code=compute_{arch}"));
    }
    cmd.arg(&unity).arg("-o").arg(fatbin);

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "nvcc failed to compile the kernels ({}):\n{}\n{stderr}",
            nvcc.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    fs::write(report, stderr.as_bytes()).expect("cannot write the ptxas report");
}
