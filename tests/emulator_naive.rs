//! The naive kernels (kernels/naive.cu), run on the CPU emulator with exactly the GPU's grids, against
//! the f64 reference: every dtype, ragged sequence lengths (1, 17, 33, 100, and seq_q != seq_k), head dims
//! 1, 40, 64 and 128, causal and not, GQA, two memory orders. Each case runs under two schedules, whose
//! outputs must be bit-identical (a kernel whose result depends on the interleaving has a race), and the
//! output must meet FlashAttention's tolerance rule, the logsumexp and weights the f32 softmax bounds.

mod common;

use common::guarded;

use cuda_attention::cpu::{self, ErrorStats};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::HostTensors;
use cuda_attention::Tensor;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Element, ForwardOptions, KernelChoice,
    Layout,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    causal: bool,
    layout: Layout,
}

/// The table: the cross product of sequence lengths, head dims and causality (with GQA 2:1 and the two
/// layouts alternating), then shapes with seq_q != seq_k, MQA, batches and an empty key sequence.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, &seq) in [1usize, 17, 33, 100].iter().enumerate() {
        for (j, &head_dim) in [1usize, 40, 64, 128].iter().enumerate() {
            for causal in [false, true] {
                let layout = if (i + j) % 2 == 0 {
                    Layout::Bshd
                } else {
                    Layout::Bhsd
                };
                cases.push(Case {
                    batch: 1,
                    seq_q: seq,
                    seq_k: seq,
                    heads_q: 2,
                    heads_kv: 1,
                    head_dim,
                    causal,
                    layout,
                });
            }
        }
    }
    let ragged = |batch, seq_q, seq_k, heads_q, heads_kv, head_dim, causal| Case {
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
        causal,
        layout: Layout::Bshd,
    };
    cases.extend([
        ragged(1, 17, 33, 4, 2, 40, true),
        ragged(1, 33, 17, 4, 2, 40, true), // the first 16 rows see no key
        ragged(2, 1, 100, 4, 1, 64, false),
        ragged(1, 1, 100, 2, 2, 128, true),
        ragged(1, 100, 33, 2, 1, 64, true),
        ragged(2, 33, 100, 3, 1, 1, false),
        ragged(1, 17, 0, 2, 1, 40, false), // no keys: zeros and -inf
    ]);
    cases
}

impl Case {
    fn problem(&self) -> AttentionProblem {
        let shape = AttentionShape::new(self.batch, self.seq_q, self.heads_q, self.head_dim)
            .with_seq_k(self.seq_k)
            .with_heads_kv(self.heads_kv);
        AttentionProblem::new(shape)
            .with_layout(self.layout)
            .with_causal(self.causal)
    }
}

/// Runs every case for dtype `T`; returns the number of cases, panics with the case on the first failure.
fn check_dtype<T: Element>(seed: u64) -> usize {
    let table = cases();
    let options = ForwardOptions::default().with_lse(true).with_weights(true);
    for (index, case) in table.iter().enumerate() {
        let problem = case.problem();
        let mut rng = StdRng::seed_from_u64(seed + index as u64);
        let q = common::random::<T>(&mut rng, problem.required_len(Tensor::Q).unwrap(), 1.0);
        let k = common::random::<T>(&mut rng, problem.required_len(Tensor::K).unwrap(), 1.0);
        let v = common::random::<T>(&mut rng, problem.required_len(Tensor::V).unwrap(), 1.0);
        let expected = cpu::reference(&problem, &q, &k, &v).unwrap();
        let tolerance = cpu::tolerance(&problem, &q, &k, &v, &expected).unwrap();
        let softmax = cpu::softmax_tolerance(&problem, &q, &k).unwrap();

        // Two schedules per case: round-robin, then alternately reversed and a seeded random order.
        let second = if index % 2 == 0 {
            Schedule::Reversed
        } else {
            Schedule::Random {
                seed: 1000 + index as u64,
            }
        };
        let runs: Vec<_> = [Schedule::RoundRobin, second]
            .into_iter()
            .map(|schedule| {
                let label = format!("{} {case:?} under {schedule}", T::DTYPE);
                let emulator = Emulator::new().with_schedule(schedule);
                let result = guarded::forward(&emulator, &problem, options, [&q, &k, &v], &label);
                (schedule, result.unwrap_or_else(|e| panic!("{label}: {e}")))
            })
            .collect();
        let (_, first) = &runs[0];
        for (schedule, run) in &runs[1..] {
            assert!(
                bits(&run.out) == bits(&first.out)
                    && run.lse == first.lse
                    && run.weights.as_ref().map(|w| f32_bits(w)) == first.weights.as_ref().map(|w| f32_bits(w)),
                "{} {case:?}: the output under {schedule} differs from round-robin (a race between threads)",
                T::DTYPE
            );
        }

        let out = cpu::compare_output(&problem, &first.out, &expected.out);
        let lse = cpu::compare_lse(&problem, first.lse.as_ref().unwrap(), &expected.lse);
        let weights =
            cpu::compare_weights(&problem, first.weights.as_ref().unwrap(), &expected.weights);
        let report = |what: &str, stats: &ErrorStats, bound: f64| {
            assert!(
                stats.non_finite == 0 && stats.max_abs <= bound,
                "{} {case:?}: {what} {stats} exceeds {bound:.3e}",
                T::DTYPE
            );
        };
        report("output", &out, tolerance);
        report("logsumexp", &lse, softmax.lse);
        report("weights", &weights, softmax.weights);
    }
    table.len()
}

fn bits<T: Element>(values: &[T]) -> Vec<u32> {
    values.iter().map(|x| x.to_f32().to_bits()).collect()
}

fn f32_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn naive_kernels_f32_match_the_reference() {
    assert!(check_dtype::<f32>(1) >= 39);
}

#[test]
fn naive_kernels_f16_match_the_reference() {
    assert!(check_dtype::<f16>(2) >= 39);
}

#[test]
fn naive_kernels_bf16_match_the_reference() {
    assert!(check_dtype::<bf16>(3) >= 39);
}

/// Strided views (a padded layout) and a caller-provided output with gaps: the kernels write only the
/// tensor's own elements.
#[test]
fn strided_output_leaves_the_gaps_alone() {
    let shape = AttentionShape::new(2, 33, 2, 40).with_seq_k(17);
    let q_strides = cuda_attention::Strides {
        batch: 33 * 100 + 7,
        seq: 100,
        head: 45,
    };
    let kv = cuda_attention::Strides {
        batch: 2 * 17 * 41 + 3,
        seq: 41,
        head: 17 * 41,
    };
    let problem = AttentionProblem::new(shape)
        .with_strides(q_strides, kv, kv, q_strides)
        .with_causal(true);
    let mut rng = StdRng::seed_from_u64(9);
    // The elements between the strided rows are NaN: a kernel that reads them fails the comparison.
    let q = guarded::strided_random::<f16>(&problem, Tensor::Q, &mut rng, 1.0);
    let k = guarded::strided_random::<f16>(&problem, Tensor::K, &mut rng, 1.0);
    let v = guarded::strided_random::<f16>(&problem, Tensor::V, &mut rng, 1.0);
    let sentinel = f16::from_f32(12345.0);
    let emulator = Emulator::new().with_schedule(Schedule::Random { seed: 3 });
    let plan = emulator
        .plan::<f16>(&problem, ForwardOptions::default())
        .unwrap();
    assert!(plan.workspace_bytes() > 0);
    // Guarded buffers (out's gaps hold the sentinel, the workspace is guarded too).
    let mut call = guarded::GuardedCall::new(&plan, [&q, &k, &v]).with_out_fill(sentinel);
    emulator.forward_into(&plan, call.tensors()).unwrap();
    call.assert_intact("strided output");
    let out = call.out.interior();
    let expected = cpu::reference(&problem, &q, &k, &v).unwrap();
    let stats = cpu::compare_output(&problem, out, &expected.out);
    assert!(
        stats.max_abs <= cpu::tolerance(&problem, &q, &k, &v, &expected).unwrap(),
        "{stats}"
    );
    let written = 2 * 33 * 2 * 40;
    let untouched = out.iter().filter(|&&x| x == sentinel).count();
    assert_eq!(
        untouched,
        out.len() - written,
        "the kernels wrote outside the strided output"
    );
}

/// The emulator validates like the CPU backend, before any kernel runs.
#[test]
fn invalid_calls_are_rejected_before_launching() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 4, 2, 8));
    let n = problem.required_len(Tensor::Q).unwrap();
    let x = vec![0.5f32; n];
    let mut out = vec![0.0f32; n];
    let emulator = Emulator::new();
    let plan = |options| emulator.plan::<f32>(&problem, options).unwrap();
    let flash = plan(ForwardOptions::default().with_kernel(KernelChoice::Flash));
    let short = emulator.forward_into(&flash, HostTensors::new(&x[1..], &x, &x, &mut out));
    assert!(
        matches!(
            short,
            Err(AttentionError::BufferTooSmall { tensor: "q", .. })
        ),
        "{short:?}"
    );
    let mut lse = vec![0.0f32; 3];
    let with_lse = plan(
        ForwardOptions::default()
            .with_kernel(KernelChoice::Flash)
            .with_lse(true),
    );
    let small_lse = emulator.forward_into(
        &with_lse,
        HostTensors::new(&x, &x, &x, &mut out).with_lse(&mut lse),
    );
    assert!(matches!(
        small_lse,
        Err(AttentionError::BufferTooSmall {
            tensor: "lse",
            needed: 8,
            len: 3
        })
    ));
    let weights = plan(ForwardOptions::default().with_weights(true));
    let missing = emulator.forward_into(&weights, HostTensors::new(&x, &x, &x, &mut out));
    assert!(
        matches!(missing, Err(AttentionError::InvalidArgument(ref m)) if m.contains("weights")),
        "{missing:?}"
    );
    let naive = plan(ForwardOptions::default().with_kernel(KernelChoice::Naive));
    let no_workspace = emulator.forward_into(&naive, HostTensors::new(&x, &x, &x, &mut out));
    assert!(
        matches!(no_workspace, Err(AttentionError::InvalidArgument(ref m)) if m.contains("workspace")),
        "{no_workspace:?}"
    );
    let bad = AttentionProblem::new(AttentionShape::new(1, 4, 3, 8).with_heads_kv(2));
    let unsupported = emulator.forward(&bad, ForwardOptions::default(), &x, &x, &x);
    assert!(
        matches!(unsupported, Err(AttentionError::HeadsNotMultiple { .. })),
        "{unsupported:?}"
    );
    assert_eq!(DType::ALL.len(), 3);
}

/// Tiles the sequences do not fill: seq_q one past a tile of the naive kernels' rows and a few short of two
/// tiles, seq_k not a multiple of a tile's columns either (sizes read from the kernel registry), batch 2
/// and 3 query heads, every dtype, each with lse (the scores in the guarded workspace) and then with
/// weights too: out, the lse of every head and the weights must match the reference, and no buffer may be
/// written past its end (common::guarded).
#[test]
fn partial_tiles_write_only_their_rows() {
    let scores = cuda_attention::registry::kernels()
        .iter()
        .find(|k| k.family == cuda_attention::registry::KernelFamily::NaiveScores)
        .expect("a naive scores kernel in the registry");
    let (rows, cols) = (scores.tile_rows as usize, scores.tile_cols as usize);
    let mut ran = 0;
    for (index, (seq_q, seq_k, causal)) in [
        (rows + 1, cols + cols / 2 - 1, false),
        (2 * rows - 5, cols + 1, true),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = AttentionShape::new(2, seq_q, 3, 40)
            .with_seq_k(seq_k)
            .with_heads_kv(1);
        let problem = AttentionProblem::new(shape).with_causal(causal);
        for weights in [false, true] {
            let options = ForwardOptions::default()
                .with_lse(true)
                .with_weights(weights);
            ran += partial_case::<f32>(&problem, options, index);
            ran += partial_case::<f16>(&problem, options, index);
            ran += partial_case::<bf16>(&problem, options, index);
        }
    }
    assert_eq!(ran, 12);
}

fn partial_case<T: Element>(
    problem: &AttentionProblem,
    options: ForwardOptions,
    index: usize,
) -> usize {
    let label = format!(
        "{} {:?} causal {} weights {}",
        T::DTYPE,
        problem.shape,
        problem.causal,
        options.return_weights
    );
    let mut rng = StdRng::seed_from_u64(40 + index as u64);
    let q = common::random::<T>(&mut rng, problem.required_len(Tensor::Q).unwrap(), 1.0);
    let k = common::random::<T>(&mut rng, problem.required_len(Tensor::K).unwrap(), 1.0);
    let v = common::random::<T>(&mut rng, problem.required_len(Tensor::V).unwrap(), 1.0);
    let emulator = Emulator::new().with_schedule(Schedule::Reversed);
    let options = options.with_kernel(KernelChoice::Naive);
    let result = guarded::forward(&emulator, problem, options, [&q, &k, &v], &label)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let expected = cpu::reference(problem, &q, &k, &v).unwrap();
    let tolerance = cpu::tolerance(problem, &q, &k, &v, &expected).unwrap();
    let softmax = cpu::softmax_tolerance(problem, &q, &k).unwrap();
    let report = |what: &str, stats: &ErrorStats, bound: f64| {
        assert!(
            stats.non_finite == 0 && stats.max_abs <= bound,
            "{label}: {what} {stats} exceeds {bound:.3e}"
        );
    };
    report(
        "output",
        &cpu::compare_output(problem, &result.out, &expected.out),
        tolerance,
    );
    report(
        "logsumexp",
        &cpu::compare_lse(problem, result.lse.as_ref().unwrap(), &expected.lse),
        softmax.lse,
    );
    if let Some(weights) = &result.weights {
        report(
            "weights",
            &cpu::compare_weights(problem, weights, &expected.weights),
            softmax.weights,
        );
    }
    1
}
