//! `attn`: inspect the device, benchmark the kernels, check them against the CPU reference.

mod bench;
mod check;
mod info;
mod inputs;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exact attention on NVIDIA GPUs: device info, benchmarks and correctness checks.
#[derive(Parser)]
#[command(name = "attn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Driver, device, kernels in this build, and what Auto would pick. Exits 0 without a driver.
    Info(info::InfoArgs),
    /// Times naive vs flash vs the CPU backend over a sweep of sequence lengths (the main job).
    Bench(bench::BenchArgs),
    /// Runs one kernel on random inputs and compares it with the f64 CPU reference.
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
