//! `attn bench`: naive vs flash vs the CPU backend over a sweep of sequence lengths.
//!
//! Batch * seq is held constant (default 16k tokens), as FlashAttention reports its numbers. GPU times
//! come from CUDA events around each launch sequence after a warm-up, CPU times from the wall clock;
//! the table shows the median and the range. FLOPs = 4 * batch * heads * seq_q * seq_k * head_dim,
//! halved when causal. Memory is what the call needs on the device: inputs, outputs and workspace.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use cuda_attention::cpu::backend;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, DeviceTensors, Element, Engine,
    ForwardOptions, KernelChoice, KernelKind, Result,
};
use cudarc::driver::sys::CUevent_flags;
use half::{bf16, f16};

use crate::inputs::Inputs;
use crate::target::Target;

/// Sequence lengths of the CPU sweep (no GPU): small enough to finish in about a minute on 2 cores.
const CPU_SEQS: [usize; 5] = [128, 256, 512, 1024, 2048];
/// Tokens per batch of the CPU sweep.
const CPU_TOKENS: usize = 2048;
/// The CPU backend joins a GPU sweep only where one run stays under this many FLOPs (about a second).
const CPU_FLOP_BUDGET: f64 = 2e10;

#[derive(Args)]
pub struct BenchArgs {
    /// Sequence lengths (comma separated). Default: 512..16384 on a GPU, 128..2048 on the CPU.
    #[arg(long, value_delimiter = ',')]
    seqs: Option<Vec<usize>>,
    /// batch * seq, held constant across the sweep. Default: 16384 on a GPU, 2048 on the CPU.
    #[arg(long)]
    tokens: Option<usize>,
    #[arg(long, default_value_t = 16)]
    heads: usize,
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// Element type: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    dtype: DType,
    #[arg(long)]
    causal: bool,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs per kernel and shape (GPU).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Timed runs per shape for the CPU backend.
    #[arg(long, default_value_t = 3)]
    cpu_iters: usize,
    /// Run the CPU backend even when a GPU is present.
    #[arg(long)]
    cpu: bool,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

/// One row of the results table.
struct Row {
    seq: usize,
    batch: usize,
    kernel: String,
    outcome: Outcome,
}

enum Outcome {
    Timed {
        median_ms: f64,
        min_ms: f64,
        max_ms: f64,
        tflops: f64,
        memory_bytes: usize,
    },
    Skipped(String),
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let target = Target::open(args.device, args.cpu)?;
    let (seqs, tokens) = match &target {
        Target::Gpu(engine) => {
            println!(
                "backend: GPU {} ({} SMs)",
                engine.device().name,
                engine.device().sm_count
            );
            (
                args.seqs
                    .clone()
                    .unwrap_or(vec![512, 1024, 2048, 4096, 8192, 16384]),
                args.tokens.unwrap_or(16384),
            )
        }
        Target::Cpu(why) => {
            println!(
                "backend: CPU, no GPU used ({why}); running a reduced sweep on the CPU backend"
            );
            (
                args.seqs.clone().unwrap_or(CPU_SEQS.to_vec()),
                args.tokens.unwrap_or(CPU_TOKENS),
            )
        }
    };
    println!(
        "{} heads, head_dim {}, {}, {}batch * seq = {tokens}",
        args.heads,
        args.head_dim,
        args.dtype,
        if args.causal { "causal, " } else { "" }
    );
    let rows = match args.dtype {
        DType::F32 => sweep::<f32>(&target, args, &seqs, tokens)?,
        DType::F16 => sweep::<f16>(&target, args, &seqs, tokens)?,
        DType::Bf16 => sweep::<bf16>(&target, args, &seqs, tokens)?,
    };
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn sweep<T: Element>(
    target: &Target,
    args: &BenchArgs,
    seqs: &[usize],
    tokens: usize,
) -> Result<Vec<Row>> {
    let kernels: Vec<&str> = match target {
        Target::Gpu(_) => vec!["naive", "flash", "cpu"],
        Target::Cpu(_) => vec!["cpu"],
    };
    let total = seqs.len() * kernels.len();
    let mut rows = Vec::with_capacity(total);
    for (i, &seq) in seqs.iter().enumerate() {
        let batch = (tokens / seq).max(1);
        let shape = AttentionShape::new(batch, seq, args.heads, args.head_dim);
        let problem = AttentionProblem::new(shape).with_causal(args.causal);
        problem.validate()?;
        let inputs = Inputs::<T>::random(&problem, seq as u64)?;
        for (j, &kernel) in kernels.iter().enumerate() {
            eprintln!(
                "[{}/{}] {kernel} seq {seq} batch {batch}",
                i * kernels.len() + j + 1,
                total
            );
            let outcome = match (target, kernel) {
                (Target::Gpu(engine), "naive") => {
                    time_gpu(engine, &problem, KernelChoice::Naive, &inputs, args)?
                }
                (Target::Gpu(engine), "flash") => {
                    time_gpu(engine, &problem, KernelChoice::Flash, &inputs, args)?
                }
                (Target::Gpu(_), _) if shape.flops(args.causal) > CPU_FLOP_BUDGET => {
                    Outcome::Skipped("too slow for the CPU in a GPU sweep".into())
                }
                _ => time_cpu(&problem, &inputs, args)?,
            };
            rows.push(Row {
                seq,
                batch,
                kernel: kernel.to_string(),
                outcome,
            });
        }
    }
    Ok(rows)
}

/// Median and range of `times` (milliseconds), with TFLOP/s from the median.
fn summarise(mut times: Vec<f64>, problem: &AttentionProblem, memory_bytes: usize) -> Outcome {
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    let tflops = problem.shape.flops(problem.causal) / (median_ms * 1e-3) / 1e12;
    Outcome::Timed {
        median_ms,
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        tflops,
        memory_bytes,
    }
}

fn time_cpu<T: Element>(
    problem: &AttentionProblem,
    inputs: &Inputs<T>,
    args: &BenchArgs,
) -> Result<Outcome> {
    let mut out = vec![T::default(); problem.required_len("out")?];
    let run = |out: &mut [T]| {
        backend::attention_into(problem, &inputs.q, &inputs.k, &inputs.v, out, None, None)
    };
    run(&mut out)?;
    let mut times = Vec::with_capacity(args.cpu_iters.max(1));
    for _ in 0..args.cpu_iters.max(1) {
        let start = Instant::now();
        run(&mut out)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarise(times, problem, 0))
}

fn time_gpu<T: Element>(
    engine: &Engine,
    problem: &AttentionProblem,
    kernel: KernelChoice,
    inputs: &Inputs<T>,
    args: &BenchArgs,
) -> Result<Outcome> {
    let plan = match engine.plan::<T>(problem, ForwardOptions::default().with_kernel(kernel)) {
        Ok(plan) => plan,
        Err(e @ AttentionError::KernelUnsupported { .. }) => {
            return Ok(Outcome::Skipped(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    debug_assert!(plan.kernel == KernelKind::Naive || kernel == KernelChoice::Flash);
    let out_len = problem.required_len("out")?;
    let element = std::mem::size_of::<T>();
    let memory_bytes = (inputs.q.len() + inputs.k.len() + inputs.v.len() + out_len) * element
        + plan.workspace_bytes;
    let (free, _) = engine
        .context()
        .mem_get_info()
        .map_err(|source| AttentionError::Driver {
            context: "reading free device memory",
            source,
        })?;
    if memory_bytes > free {
        return Ok(Outcome::Skipped(format!(
            "out of memory: needs {}, {} free",
            mib(memory_bytes),
            mib(free)
        )));
    }

    let driver = |context| move |source| AttentionError::Driver { context, source };
    let stream = engine
        .context()
        .new_stream()
        .map_err(driver("creating a stream"))?;
    let q = stream
        .clone_htod(&inputs.q)
        .map_err(driver("uploading q"))?;
    let k = stream
        .clone_htod(&inputs.k)
        .map_err(driver("uploading k"))?;
    let v = stream
        .clone_htod(&inputs.v)
        .map_err(driver("uploading v"))?;
    let mut out = stream
        .alloc_zeros::<T>(out_len)
        .map_err(driver("allocating the output"))?;
    let mut workspace = stream
        .alloc_zeros::<u8>(plan.workspace_bytes.max(16))
        .map_err(driver("allocating the workspace"))?;
    let mut launch = || {
        engine.forward_into(
            &stream,
            &plan,
            DeviceTensors {
                q: &q,
                k: &k,
                v: &v,
                out: &mut out,
                lse: None,
                weights: None,
                workspace: Some(&mut workspace),
            },
        )
    };
    for _ in 0..args.warmup {
        launch()?;
    }
    let ctx = engine.context();
    let event = || {
        ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("creating an event"))
    };
    let mut pairs = Vec::with_capacity(args.iters.max(1));
    for _ in 0..args.iters.max(1) {
        let (start, end) = (event()?, event()?);
        start
            .record(&stream)
            .map_err(driver("recording an event"))?;
        launch()?;
        end.record(&stream).map_err(driver("recording an event"))?;
        pairs.push((start, end));
    }
    stream
        .synchronize()
        .map_err(driver("waiting for the benchmark"))?;
    let times = pairs
        .iter()
        .map(|(start, end)| {
            start
                .elapsed_ms(end)
                .map(f64::from)
                .map_err(driver("reading an event"))
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(summarise(times, problem, memory_bytes))
}

/// Two decimals on a GPU; three significant digits for the small CPU figures.
fn format_tflops(tflops: f64) -> String {
    if tflops >= 1.0 {
        format!("{tflops:.2}")
    } else {
        format!("{tflops:.3}")
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:>6} {:>6}  {:<6} {:>11} {:>21} {:>9} {:>11}",
        "seq", "batch", "kernel", "median ms", "range ms", "TFLOP/s", "memory"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Timed {
                median_ms,
                min_ms,
                max_ms,
                tflops,
                memory_bytes,
            } => println!(
                "{:>6} {:>6}  {:<6} {:>11.3} {:>21} {:>9} {:>11}",
                row.seq,
                row.batch,
                row.kernel,
                median_ms,
                format!("{min_ms:.3} - {max_ms:.3}"),
                format_tflops(*tflops),
                if *memory_bytes > 0 {
                    mib(*memory_bytes)
                } else {
                    "host".into()
                }
            ),
            Outcome::Skipped(why) => {
                println!(
                    "{:>6} {:>6}  {:<6} skipped: {why}",
                    row.seq, row.batch, row.kernel
                )
            }
        }
    }
}
