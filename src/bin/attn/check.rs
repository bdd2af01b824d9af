//! `attn check`: one kernel on random inputs against the f64 CPU reference, by the tolerance rule.

use std::process::ExitCode;

use clap::Args;
use cuda_attention::cli::inputs::Inputs;
use cuda_attention::cli::runner::{Backend, Runner};
use cuda_attention::cli::{buffer_bytes, check_host_memory, reject, CliResult};
use cuda_attention::cpu::{compare, reference};
use cuda_attention::emulator::Schedule;
use cuda_attention::{
    AttentionProblem, AttentionShape, DType, Element, ForwardOptions, Layout, Plan, Tensor,
};
use half::{bf16, f16};

use crate::masks::{self, MaskArgs};

#[derive(Args)]
pub struct CheckArgs {
    /// Where and which kernel: auto (the GPU when there is one, else the CPU backend); gpu, naive or
    /// flash (the GPU, an error without one); emulator, emulator-naive or emulator-flash (the CUDA
    /// kernels run by the CPU emulator: no GPU needed, slow, keep shapes small); cpu (the CPU backend).
    #[arg(long, default_value = "auto")]
    kernel: Runner,
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
    #[command(flatten)]
    masks: MaskArgs,
    /// Memory layout of all tensors: bshd or bhsd.
    #[arg(long, default_value = "bshd", value_parser = parse_layout)]
    layout: Layout,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    match s {
        "bshd" => Ok(Layout::Bshd),
        "bhsd" => Ok(Layout::Bhsd),
        other => Err(format!("unknown layout '{other}': use bshd or bhsd")),
    }
}

pub fn run(args: &CheckArgs) -> CliResult<ExitCode> {
    let shape = AttentionShape {
        batch: args.batch,
        seq_q: args.seq_q,
        seq_k: args.seq_k.unwrap_or(args.seq_q),
        heads_q: args.heads,
        heads_kv: args.heads_kv.unwrap_or(args.heads),
        head_dim: args.head_dim,
    };
    let problem = args.masks.apply(
        AttentionProblem::new(shape).with_layout(args.layout),
        0,
        shape.heads_q,
    )?;
    problem.validate().map_err(reject)?;
    let backend = args.kernel.open_for_command(args.device, args.schedule)?;
    let options = ForwardOptions::default()
        .with_kernel(args.kernel.kernel())
        .with_lse(true);
    let passed = match args.dtype {
        DType::F32 => check::<f32>(&backend, &problem, options, args.seed)?,
        DType::F16 => check::<f16>(&backend, &problem, options, args.seed)?,
        DType::Bf16 => check::<bf16>(&backend, &problem, options, args.seed)?,
    };
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check<T: Element>(
    backend: &Backend,
    problem: &AttentionProblem,
    options: ForwardOptions,
    seed: u64,
) -> CliResult<bool> {
    let plan = backend.plan::<T>(problem, options).map_err(reject)?;
    check_memory::<T>(backend, problem, &plan)?;
    let inputs = Inputs::<T>::random(problem, seed)?;
    let ran = backend.run(problem, options, &inputs.q, &inputs.k, &inputs.v)?;
    let (label, out, lse) = (
        ran.label,
        ran.output.out,
        ran.output.lse.unwrap_or_default(),
    );
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
        masks::describe(problem)
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

/// Refuses, before any work, a check whose host buffers exceed the memory available: the inputs, the
/// run's outputs (and the naive workspace on a host backend), and the f64 reference with its weights and
/// the naive-in-precision output of the tolerance rule (`cpu::reference`, `cpu::tolerance`).
fn check_memory<T: Element>(
    backend: &Backend,
    problem: &AttentionProblem,
    plan: &Plan,
) -> CliResult<()> {
    let s = problem.shape;
    let element = size_of::<T>();
    let len = |tensor| problem.required_len(tensor);
    let (q, k, v) = (len(Tensor::Q)?, len(Tensor::K)?, len(Tensor::V)?);
    let inputs = q.checked_add(k).and_then(|n| n.checked_add(v));
    let out = len(Tensor::Out)?;
    let lse = s.lse_elements()?;
    let workspace = match backend {
        Backend::Gpu(_) => 0,
        _ => plan.workspace_bytes(),
    };
    check_host_memory(
        "attn check",
        &[
            ("inputs", inputs.and_then(|n| n.checked_mul(element))),
            ("output", buffer_bytes(&[out], element)),
            ("logsumexp", buffer_bytes(&[lse], 4)),
            ("naive score workspace", Some(workspace)),
            (
                "f64 reference weights",
                buffer_bytes(&[s.batch, s.heads_q, s.seq_q, s.seq_k], 8),
            ),
            ("f64 reference output", buffer_bytes(&[out], 8)),
            ("f64 reference logsumexp", buffer_bytes(&[lse], 8)),
            ("tolerance rule's output", buffer_bytes(&[out], 4)),
        ],
        "check a smaller shape (the f64 reference keeps every attention weight: batch * heads * seq_q * \
         seq_k * 8 bytes)",
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}
