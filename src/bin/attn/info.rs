//! `attn info`: what this machine and this build can do.

use std::process::ExitCode;

use clap::Args;
use cuda_attention::cli::CliResult;
use cuda_attention::gpu::{build_info, device_count, device_info, driver_present};
use cuda_attention::registry::{self, KernelFamily};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, ForwardOptions, Plan,
};

#[derive(Args)]
pub struct InfoArgs {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

pub fn run(args: &InfoArgs) -> CliResult<ExitCode> {
    println!("cuda-attention {}", env!("CARGO_PKG_VERSION"));
    if build_info::KERNELS_BUILT {
        println!(
            "kernels in this build: {} (SASS {}; PTX {})",
            families(),
            list_or_none(build_info::SASS_ARCHS, "sm_"),
            list_or_none(build_info::PTX_ARCHS, "compute_"),
        );
    } else {
        println!(
            "kernels in this build: none ({})",
            AttentionError::KernelsNotBuilt
        );
    }
    print_registry();
    println!(
        "CPU backend: {} threads, tiled on the gemm crate, softmax vectorised for {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cuda_attention::cpu::simd_level()
    );

    if !driver_present() {
        println!(
            "driver: not found (libcuda.so could not be loaded); the CPU backend runs instead"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let count = match device_count() {
        Ok(count) => count,
        Err(e) => {
            println!("driver: found, but {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("driver: found, {count} device(s)");
    let info = match device_info(args.device) {
        Ok(info) => info,
        Err(e) => {
            println!("device {}: {e}", args.device);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (major, minor) = info.compute_capability;
    println!("device {}: {}", info.ordinal, info.name);
    println!(
        "  compute capability {major}.{minor}, {} SMs",
        info.sm_count
    );
    println!(
        "  shared memory per block {} KiB ({} KiB with opt-in), memory {:.1} GiB",
        info.shared_memory_per_block / 1024,
        info.shared_memory_per_block_optin / 1024,
        info.total_memory as f64 / (1u64 << 30) as f64
    );
    println!(
        "  driver CUDA version {}.{}",
        info.driver_version / 1000,
        (info.driver_version % 1000) / 10
    );

    let problem = AttentionProblem::new(AttentionShape::new(1, 4096, 16, 128));
    let caps = info.caps();
    match Plan::new(&problem, DType::Bf16, ForwardOptions::default(), caps) {
        Ok(plan) => println!(
            "auto (bf16, head_dim 128, seq 4096): {} ({})",
            plan.kernel(),
            plan.reason()
        ),
        Err(e) => println!("auto (bf16, head_dim 128, seq 4096): {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn list_or_none(list: &str, prefix: &str) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.split(',')
            .map(|a| format!("{prefix}{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The kernel families of the registry with their dtypes, e.g. `naive (f32, f16, bf16), flash (f32,
/// f16, bf16)`.
fn families() -> String {
    let mut naive = Vec::new();
    let mut flash = Vec::new();
    for k in registry::kernels() {
        let list = match k.family {
            KernelFamily::Flash => &mut flash,
            KernelFamily::NaiveScores => &mut naive,
            _ => continue,
        };
        if let Some(dtype) = k.dtype.filter(|d| !list.contains(d)) {
            list.push(dtype);
        }
    }
    let words = |list: &mut Vec<DType>| {
        list.sort_by_key(|d| DType::ALL.iter().position(|a| a == d));
        list.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "naive ({}), flash ({})",
        words(&mut naive),
        words(&mut flash)
    )
}

/// Every kernel of the registry (`registry::kernels()`, read from the kernel source) with its launch
/// facts: one line each.
fn print_registry() {
    let kernels = registry::kernels();
    println!(
        "kernel registry (from the kernel source): {} kernels; {}",
        kernels.len(),
        if build_info::KERNELS_BUILT {
            "this build runs them on a GPU and on the CPU emulator"
        } else {
            "this build has no GPU kernels, the CPU emulator runs them"
        }
    );
    if let Some(error) = registry::registry_error() {
        println!("  registry error: {error}");
    }
    println!(
        "  {:<24} {:<13} {:<5} {:>9} {:>7} {:>9} {:>14} {:>6} {:>5}",
        "kernel",
        "family",
        "dtype",
        "head dims",
        "threads",
        "tile",
        "shared (max d)",
        "stride",
        "align"
    );
    for k in kernels {
        let family = match k.family {
            KernelFamily::NaiveScores => "naive scores",
            KernelFamily::NaiveSoftmax => "naive softmax",
            KernelFamily::NaivePv => "naive P V",
            KernelFamily::Flash => "flash",
            KernelFamily::FlashVarlen => "flash varlen",
            KernelFamily::AppendKv => "append K/V",
            KernelFamily::Combine => "split combine",
            KernelFamily::MergeStates => "merge states",
            KernelFamily::AttentionMap => "attention map",
            KernelFamily::FlashSm90 => "flash sm_90a",
        };
        println!(
            "  {:<24} {:<13} {:<5} {:>9} {:>7} {:>9} {:>14} {:>6} {:>5}",
            k.name,
            family,
            k.dtype.map_or("-", |d| d.name()),
            format!("{}..{}", k.head_dims.start(), k.head_dims.end()),
            k.threads(),
            format!("{}x{}", k.tile_rows, k.tile_cols),
            format!("{} B", k.shared_bytes_for(*k.head_dims.end())),
            k.stride_multiple,
            format!("{} B", k.base_alignment),
        );
    }
}
