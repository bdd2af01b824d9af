//! The one call contract: every backend (CPU backend, emulator, and the GPU engine where there is one)
//! runs the same problems through plan / forward and agrees with the f64 reference; the one binding step
//! refuses the same bad buffers with the same typed errors on every host backend; a plan only runs on the
//! kind of backend it was made for.

mod common;

use common::backends::run_everywhere;
use common::Aligned;
use cuda_attention::cpu::{self, CpuBackend};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::host_memory::HostWorkspace;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, Element, ForwardOptions, HostTensors,
    KernelChoice, KernelKind, Layout, Plan, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn inputs<T: Element>(problem: &AttentionProblem, seed: u64) -> [Aligned<T>; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    [Tensor::Q, Tensor::K, Tensor::V]
        .map(|t| Aligned::random(problem.required_len(t).unwrap(), 1.0, &mut rng))
}

/// Every backend, both kernels, against the reference (output by the tolerance rule, lse by the softmax
/// rule).
fn agree<T: Element>(name: &str, problem: &AttentionProblem) {
    let [q, k, v] = inputs::<T>(problem, 7);
    let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
    let expected = cpu::reference(problem, q, k, v).unwrap();
    let tolerance = cpu::tolerance(problem, q, k, v, &expected).unwrap();
    let softmax = cpu::softmax_tolerance(problem, q, k).unwrap();
    let options = ForwardOptions::default().with_lse(true);
    let runs = run_everywhere(
        problem,
        options,
        &[KernelChoice::Naive, KernelChoice::Flash],
        Schedule::Random { seed: 11 },
        [q, k, v],
    );
    assert!(
        runs.len() >= 3,
        "{name}: cpu, emulator naive, emulator flash"
    );
    for run in runs {
        let output = run
            .output
            .unwrap_or_else(|e| panic!("{name} on {}: {e}", run.name));
        let stats = cpu::compare_output(problem, &output.out, &expected.out);
        assert!(
            stats.non_finite == 0 && stats.max_abs <= tolerance,
            "{name} on {} ({}): out {stats} vs {tolerance:e}",
            run.name,
            run.reason
        );
        let lse = cpu::compare_lse(problem, output.lse.as_ref().unwrap(), &expected.lse);
        assert!(
            lse.max_abs <= softmax.lse,
            "{name} on {} ({}): lse {lse} vs {:e}",
            run.name,
            run.reason,
            softmax.lse
        );
    }
}

#[test]
fn every_backend_agrees_with_the_reference() {
    let gqa = AttentionShape::new(2, 33, 4, 64)
        .with_seq_k(113)
        .with_heads_kv(2);
    agree::<bf16>("bf16 gqa", &AttentionProblem::new(gqa).with_causal(true));
    agree::<f16>(
        "f16 bhsd window",
        &AttentionProblem::new(AttentionShape::new(1, 113, 2, 40).with_seq_k(31))
            .with_layout(Layout::Bhsd)
            .with_window(Some(7), Some(3)),
    );
    agree::<f32>(
        "f32 alibi softcap",
        &AttentionProblem::new(AttentionShape::new(1, 31, 3, 59))
            .with_softcap(5.0)
            .with_alibi_slopes(vec![0.5, 0.25, 0.125]),
    );
}

/// `forward_into` on the host backend named `backend`.
fn run(backend: &str, plan: &Plan, tensors: HostTensors<'_, f32>) -> cuda_attention::Result<()> {
    match backend {
        "emulator" => Emulator::new().forward_into(plan, tensors),
        _ => CpuBackend::new().forward_into(plan, tensors),
    }
}

/// The same misuse gives the same typed error on both host backends (one binding step).
#[test]
fn the_binding_step_refuses_the_same_buffers_everywhere() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 8, 2, 32));
    let n = problem.required_len(Tensor::Q).unwrap();
    let [q, k, v] = inputs::<f32>(&problem, 3);
    let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
    let emulator = Emulator::new();
    let cpu = CpuBackend::new();
    let plain = ForwardOptions::default();
    let plans = [
        ("emulator", emulator.plan::<f32>(&problem, plain).unwrap()),
        ("cpu", cpu.plan::<f32>(&problem, plain).unwrap()),
    ];
    for (backend, plan) in &plans {
        // An lse buffer the plan does not write.
        let mut out = vec![0.0f32; n];
        let mut lse = vec![0.0f32; 16];
        let extra = run(
            backend,
            plan,
            HostTensors::new(q, k, v, &mut out).with_lse(&mut lse),
        );
        assert!(
            matches!(extra, Err(AttentionError::InvalidArgument(ref m)) if m.contains("lse") && m.contains("with_lse")),
            "{backend}: {extra:?}"
        );
        // A short output.
        let mut short = vec![0.0f32; n - 1];
        let result = run(backend, plan, HostTensors::new(q, k, v, &mut short));
        assert!(
            matches!(
                result,
                Err(AttentionError::BufferTooSmall { tensor: "out", needed, len }) if needed == n && len == n - 1
            ),
            "{backend}: {result:?}"
        );
    }
    // An output that shares memory with the lse (both carved from one allocation).
    let with_lse = ForwardOptions::default().with_lse(true);
    for (backend, plan) in [
        (
            "emulator",
            emulator.plan::<f32>(&problem, with_lse).unwrap(),
        ),
        ("cpu", cpu.plan::<f32>(&problem, with_lse).unwrap()),
    ] {
        let mut storage = vec![0.0f32; n + 4];
        let (out, rest) = storage.split_at_mut(n);
        assert!(rest.len() < 16, "the lse below reaches into out");
        // SAFETY (test): a second view of the end of `out`, to make the binding step see two
        // overlapping buffers; neither is written because binding refuses the call.
        let lse = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().add(n - 8), 16) };
        let result = run(backend, &plan, HostTensors::new(q, k, v, out).with_lse(lse));
        assert!(
            matches!(result, Err(AttentionError::InvalidArgument(ref m)) if m.contains("overlap")),
            "{backend}: {result:?}"
        );
    }
}

#[test]
fn a_plan_runs_only_on_the_backend_kind_it_was_made_for() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 4, 1, 8));
    let x = vec![0.5f32; problem.required_len(Tensor::Q).unwrap()];
    let mut out = vec![0.0f32; x.len()];
    let emulator = Emulator::new();
    let cpu_plan = CpuBackend::new()
        .plan::<f32>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(cpu_plan.kernel(), KernelKind::Cpu);
    let result = emulator.forward_into(&cpu_plan, HostTensors::new(&x, &x, &x, &mut out));
    assert!(
        matches!(result, Err(AttentionError::InvalidArgument(ref m)) if m.contains("Emulator::plan")),
        "{result:?}"
    );
    let device_plan = emulator
        .plan::<f32>(&problem, ForwardOptions::default())
        .unwrap();
    let result =
        CpuBackend::new().forward_into(&device_plan, HostTensors::new(&x, &x, &x, &mut out));
    assert!(
        matches!(result, Err(AttentionError::InvalidArgument(ref m)) if m.contains("CpuBackend::plan")),
        "{result:?}"
    );
    // A plan for f32 does not run on f16 buffers.
    let h = vec![f16::from_f32(0.5); x.len()];
    let mut h_out = h.clone();
    let result = emulator.forward_into(&device_plan, HostTensors::new(&h, &h, &h, &mut h_out));
    assert!(
        matches!(result, Err(AttentionError::InvalidArgument(ref m)) if m.contains("made for f32")),
        "{result:?}"
    );
    // The CPU backend names its one kernel when asked for a device kernel.
    let naive = CpuBackend::new().plan::<f32>(
        &problem,
        ForwardOptions::default().with_kernel(KernelChoice::Naive),
    );
    assert!(
        matches!(
            naive,
            Err(AttentionError::KernelUnsupported {
                kernel: "naive",
                ..
            })
        ),
        "{naive:?}"
    );
}

/// Auto's tensor-core plan states the input alignment up front, and binding refuses a misaligned q with
/// that reason (it does not silently fall back: the plan has no naive workspace).
#[test]
fn auto_states_the_alignment_it_needs_and_binding_enforces_it() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 16, 2, 64));
    let emulator = Emulator::new();
    let plan = emulator
        .plan::<bf16>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(plan.kernel(), KernelKind::Flash);
    assert_eq!(plan.input_alignment(), 16);
    assert!(
        plan.reason().contains("16-byte aligned"),
        "{}",
        plan.reason()
    );
    let n = problem.required_len(Tensor::Q).unwrap();
    let storage = Aligned::<bf16>::random(n + 8, 1.0, &mut StdRng::seed_from_u64(1));
    let misaligned = &storage.as_slice()[1..n + 1];
    let aligned = &storage.as_slice()[..n];
    let mut out = vec![bf16::ZERO; n];
    let result = emulator.forward_into(
        &plan,
        HostTensors::new(misaligned, aligned, aligned, &mut out),
    );
    assert!(
        matches!(result, Err(AttentionError::KernelUnsupported { kernel: "flash", ref reason }) if reason.contains("q buffer") && reason.contains("16-byte")),
        "{result:?}"
    );
    // The naive plan takes the same buffers, with a workspace.
    let naive = emulator
        .plan::<bf16>(
            &problem,
            ForwardOptions::default().with_kernel(KernelChoice::Naive),
        )
        .unwrap();
    let mut workspace = HostWorkspace::new(naive.workspace_bytes()).unwrap();
    emulator
        .forward_into(
            &naive,
            HostTensors::new(misaligned, aligned, aligned, &mut out)
                .with_workspace(workspace.as_bytes_mut()),
        )
        .unwrap();
}
