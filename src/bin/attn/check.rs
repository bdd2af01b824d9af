//! `attn check`: one kernel on random inputs against the f64 CPU reference, by the tolerance rule.

use cuda_attention::Tensor;
use std::process::ExitCode;

use clap::Args;
use cuda_attention::cpu::{backend, compare, reference};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Element, Engine, ForwardOptions,
    KernelChoice, Layout, Result,
};
use half::{bf16, f16};

use cuda_attention::cli::inputs::Inputs;
use cuda_attention::cli::runner::Target;

/// What runs the check.
#[derive(Clone, Copy)]
enum Runner {
    /// The GPU when there is one, else the CPU backend.
    Device,
    Cpu,
    Emulator(Schedule),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Kernel: auto, naive or flash (GPU); cpu for the CPU backend; emulator, emulator-naive or
    /// emulator-flash for the CUDA kernels run by the CPU emulator (no GPU needed; slow, keep shapes
    /// small).
    #[arg(long, default_value = "auto")]
    kernel: String,
    /// Emulator schedule: round-robin, reversed, random or random:SEED.
    #[arg(long, default_value = "round-robin")]
    schedule: Schedule,
    /// Element type: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    dtype: DType,
    #[arg(long, default_value_t = 2)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq_q: usize,
    /// Defaults to seq_q.
    #[arg(long)]
    seq_k: Option<usize>,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Defaults to heads (set it lower for GQA/MQA).
    #[arg(long)]
    heads_kv: Option<usize>,
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// Bottom-right-aligned causal mask.
    #[arg(long)]
    causal: bool,
    /// Memory layout of all tensors: bshd or bhsd.
    #[arg(long, default_value = "bshd", value_parser = parse_layout)]
    layout: Layout,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

fn parse_layout(s: &str) -> std::result::Result<Layout, String> {
    match s {
        "bshd" => Ok(Layout::Bshd),
        "bhsd" => Ok(Layout::Bhsd),
        other => Err(format!("unknown layout '{other}': use bshd or bhsd")),
    }
}

pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let shape = AttentionShape {
        batch: args.batch,
        seq_q: args.seq_q,
        seq_k: args.seq_k.unwrap_or(args.seq_q),
        heads_q: args.heads,
        heads_kv: args.heads_kv.unwrap_or(args.heads),
        head_dim: args.head_dim,
    };
    let problem = AttentionProblem::new(shape)
        .with_layout(args.layout)
        .with_causal(args.causal);
    problem.validate()?;
    let (runner, kernel) = match args.kernel.as_str() {
        "cpu" => (Runner::Cpu, KernelChoice::Auto),
        "emulator" => (Runner::Emulator(args.schedule), KernelChoice::Auto),
        "emulator-naive" => (Runner::Emulator(args.schedule), KernelChoice::Naive),
        "emulator-flash" => (Runner::Emulator(args.schedule), KernelChoice::Flash),
        other => (
            Runner::Device,
            other.parse().map_err(|e: String| {
                AttentionError::InvalidArgument(format!(
                    "{e}, or cpu, emulator, emulator-naive, emulator-flash"
                ))
            })?,
        ),
    };
    let target = match runner {
        Runner::Device => Target::open(args.device, false)?,
        Runner::Cpu => Target::Cpu("--kernel cpu".into()),
        Runner::Emulator(schedule) => Target::Emulator(schedule),
    };
    if let Target::Cpu(why) = &target {
        println!("running the CPU backend ({why})");
    }
    let passed = match args.dtype {
        DType::F32 => check::<f32>(&target, &problem, kernel, args.seed)?,
        DType::F16 => check::<f16>(&target, &problem, kernel, args.seed)?,
        DType::Bf16 => check::<bf16>(&target, &problem, kernel, args.seed)?,
    };
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check<T: Element>(
    target: &Target,
    problem: &AttentionProblem,
    kernel: KernelChoice,
    seed: u64,
) -> Result<bool> {
    let inputs = Inputs::<T>::random(problem, seed)?;
    let (label, out, lse) = match target {
        Target::Gpu(engine) => run_gpu(engine, problem, kernel, &inputs)?,
        Target::Emulator(schedule) => {
            let emulator = Emulator::new().with_schedule(*schedule);
            let options = ForwardOptions::default().with_kernel(kernel).with_lse(true);
            let plan = emulator.plan::<T>(problem, options)?;
            let result = emulator.forward(problem, options, &inputs.q, &inputs.k, &inputs.v)?;
            (
                format!(
                    "emulator-{} ({}; {})",
                    plan.kernel(),
                    emulator.description(),
                    plan.reason()
                ),
                result.out,
                result.lse.unwrap_or_default(),
            )
        }
        Target::Cpu(_) => {
            let result = backend::attention(
                problem,
                ForwardOptions::default().with_lse(true),
                &inputs.q,
                &inputs.k,
                &inputs.v,
            )?;
            (
                "cpu backend".to_string(),
                result.out,
                result.lse.unwrap_or_default(),
            )
        }
    };
    let expected = reference::reference(problem, &inputs.q, &inputs.k, &inputs.v)?;
    let allowed = compare::tolerance(problem, &inputs.q, &inputs.k, &inputs.v, &expected)?;
    let out_error = compare::compare_output(problem, &out, &expected.out);
    let lse_error = compare::compare_lse(problem, &lse, &expected.lse);
    let lse_allowed = compare::softmax_tolerance(problem, &inputs.q, &inputs.k)?.lse;
    let s = problem.shape;
    println!(
        "{label}, {}: batch {} seq_q {} seq_k {} heads {}/{} head_dim {}{}",
        T::DTYPE,
        s.batch,
        s.seq_q,
        s.seq_k,
        s.heads_q,
        s.heads_kv,
        s.head_dim,
        if problem.causal { " causal" } else { "" }
    );
    let out_ok = out_error.max_abs <= allowed;
    let lse_ok = lse_error.max_abs <= lse_allowed;
    println!(
        "  out: {out_error} (allowed {allowed:.3e}) {}",
        verdict(out_ok)
    );
    println!(
        "  lse: {lse_error} (allowed {lse_allowed:.3e}) {}",
        verdict(lse_ok)
    );
    Ok(out_ok && lse_ok)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Runs the kernel on the device with NaN-poisoned outputs; returns (label, out, lse) on the host.
fn run_gpu<T: Element>(
    engine: &Engine,
    problem: &AttentionProblem,
    kernel: KernelChoice,
    inputs: &Inputs<T>,
) -> Result<(String, Vec<T>, Vec<f32>)> {
    use cuda_attention::DeviceTensors;
    let plan = engine.plan::<T>(
        problem,
        ForwardOptions::default().with_kernel(kernel).with_lse(true),
    )?;
    let label = format!(
        "{} on {} ({})",
        plan.kernel(),
        engine.device().name,
        plan.reason()
    );
    let stream = engine.default_stream();
    let driver = |context| move |source| AttentionError::Driver { context, source };
    let q = stream
        .clone_htod(&inputs.q[..])
        .map_err(driver("uploading q"))?;
    let k = stream
        .clone_htod(&inputs.k[..])
        .map_err(driver("uploading k"))?;
    let v = stream
        .clone_htod(&inputs.v[..])
        .map_err(driver("uploading v"))?;
    let poison = vec![T::from_f32(f32::NAN); problem.required_len(Tensor::Out)?];
    let mut out = stream
        .clone_htod(&poison)
        .map_err(driver("uploading the poisoned output"))?;
    let mut lse = stream
        .clone_htod(&vec![f32::NAN; problem.shape.lse_elements()?])
        .map_err(driver("uploading lse"))?;
    let mut workspace = stream
        .alloc_zeros::<u8>(plan.workspace_bytes().max(16))
        .map_err(driver("allocating"))?;
    engine.forward_into(
        stream,
        &plan,
        DeviceTensors {
            q: &q,
            k: &k,
            v: &v,
            out: &mut out,
            lse: Some(&mut lse),
            weights: None,
            workspace: Some(&mut workspace),
            alibi_slopes: None,
        },
    )?;
    let out = stream
        .clone_dtoh(&out)
        .map_err(driver("downloading the output"))?;
    let lse = stream.clone_dtoh(&lse).map_err(driver("downloading lse"))?;
    Ok((label, out, lse))
}
