//! `attn`: inspect the device, benchmark the kernels, check them against the CPU reference, and draw
//! attention weights.
//!
//! One file or folder per command: `info`, `check`, `bench/` (timing loops, plots, run facts),
//! `weights/` (.npy input, heatmap); `masks` the score flags check and weights share; `draw/` holds the font and PNG encoding both pictures use. What the
//! tests also use (runner vocabulary, inputs, results schema, sweep, sampled-row check, tables) is the
//! library's [`cuda_attention::cli`].

mod bench;
mod check;
mod draw;
mod info;
mod masks;
mod weights;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cuda_attention::cli::CliResult;

/// Exact attention on NVIDIA GPUs: device info, benchmarks, correctness checks, attention pictures.
///
/// Exit codes: 0 done (and every check passed); 1 a check failed or a run failed; 2 refused before any
/// work (an invalid flag or input file, a problem too large for this machine's memory, an output path
/// that cannot be written).
#[derive(Parser)]
#[command(name = "attn", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Driver, device, kernels in this build, and what Auto would pick. Exits 0 without a driver.
    Info(info::InfoArgs),
    /// Times naive vs flash (vs the CPU backend, the emulator, PyTorch) over a sweep of sequence
    /// lengths: table, results.json and plots (the main job).
    Bench(bench::BenchArgs),
    /// Runs one kernel on random inputs and compares it with the f64 CPU reference.
    Check(check::CheckArgs),
    /// Draws one (batch, head)'s attention weights as a heatmap PNG (naive path; random or .npy inputs).
    Weights(weights::WeightsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: CliResult<ExitCode> = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Weights(args) => weights::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
