//! `attn info`: what this machine and this build can do.

use std::process::ExitCode;

use clap::Args;
use cuda_attention::gpu::{build_info, device_count, device_info, driver_present};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, ForwardOptions, Plan,
};

#[derive(Args)]
pub struct InfoArgs {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

pub fn run(args: &InfoArgs) -> Result<ExitCode, AttentionError> {
    println!("cuda-attention {}", env!("CARGO_PKG_VERSION"));
    if build_info::KERNELS_BUILT {
        println!(
            "kernels in this build: {} (SASS {}; PTX {})",
            build_info::kernel_families().join(", "),
            list_or_none(build_info::SASS_ARCHS, "sm_"),
            list_or_none(build_info::PTX_ARCHS, "compute_"),
        );
    } else {
        println!(
            "kernels in this build: none ({})",
            AttentionError::KernelsNotBuilt
        );
    }
    println!(
        "CPU backend: {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
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
