//! The flash kernel, run through the CPU emulator, against the f64 reference by the tolerance rule, and
//! against the naive kernel. Same kernel source as the GPU build.

mod common;

use common::{guarded, shape};

use cuda_attention::cpu::{compare, reference};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::registry::{self, KernelFamily, KernelSpec};
use cuda_attention::Tensor;
use cuda_attention::{
    AttentionProblem, AttentionShape, DType, Element, ForwardOptions, KernelChoice, KernelKind,
    Layout, Strides,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Runs flash (asserting the plan chose it) and checks it against the reference and the naive kernel.
fn check<T: Element>(name: &str, problem: &AttentionProblem, emulator: &Emulator, magnitude: f32) {
    check_with::<T>(name, problem, emulator, magnitude, false)
}

/// As [`check`]; with `rerun`, also requires a second run to be bit-identical.
fn check_with<T: Element>(
    name: &str,
    problem: &AttentionProblem,
    emulator: &Emulator,
    magnitude: f32,
    rerun: bool,
) {
    let mut rng = StdRng::seed_from_u64(11);
    // Elements the strides do not address are NaN; every buffer is guarded (common::guarded).
    let q = guarded::strided_random::<T>(problem, Tensor::Q, &mut rng, magnitude);
    let k = guarded::strided_random::<T>(problem, Tensor::K, &mut rng, magnitude);
    let v = guarded::strided_random::<T>(problem, Tensor::V, &mut rng, 1.0);
    let (q, k, v) = (&q[..], &k[..], &v[..]);
    let options = ForwardOptions::default().with_lse(true);
    let plan = emulator.plan::<T>(problem, options).unwrap();
    assert_eq!(
        plan.kernel(),
        KernelKind::Flash,
        "{name}: {}",
        plan.reason()
    );

    let label = format!("{name} {} {}", T::DTYPE, emulator.description());
    let flash = guarded::forward(emulator, problem, options, [q, k, v], &label)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let expected = reference::reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let out_error = compare::compare_output(problem, &flash.out, &expected.out);
    assert!(
        out_error.max_abs <= allowed,
        "{label}: out {out_error}, allowed {allowed:.3e}"
    );
    let lse_allowed = compare::softmax_tolerance(problem, q, k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, flash.lse.as_ref().unwrap(), &expected.lse);
    assert!(lse_error.max_abs <= lse_allowed, "{label}: lse {lse_error}");

    let naive_options = options.with_kernel(KernelChoice::Naive);
    let naive = guarded::forward(emulator, problem, naive_options, [q, k, v], &label)
        .unwrap_or_else(|e| panic!("{label} naive: {e}"));
    let naive_as_reference: Vec<f64> = (0..problem.shape.batch)
        .flat_map(|b| (0..problem.shape.seq_q).map(move |s| (b, s)))
        .flat_map(|(b, s)| (0..problem.shape.heads_q).map(move |h| (b, s, h)))
        .flat_map(|(b, s, h)| (0..problem.shape.head_dim).map(move |d| (b, s, h, d)))
        .map(|(b, s, h, d)| naive.out[problem.out_strides.offset(b, s, h, d)].to_f64())
        .collect();
    let agreement = compare::compare_output(problem, &flash.out, &naive_as_reference);
    assert!(
        agreement.max_abs <= 2.0 * allowed,
        "{label}: flash vs naive {agreement}"
    );

    if !rerun {
        return;
    }
    let again = guarded::forward(emulator, problem, options, [q, k, v], &label).unwrap();
    let same = flash
        .out
        .iter()
        .zip(&again.out)
        .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
    assert!(same, "{label}: two runs differ");
}

/// Every head dim x dtype on a ragged, causal, GQA shape (both schedules).
#[test]
fn every_head_dim_and_dtype_matches_the_reference() {
    for schedule in [Schedule::RoundRobin, Schedule::Reversed] {
        let emulator = Emulator::new().with_schedule(schedule);
        for head_dim in [32, 64, 96, 128, 160, 192, 224, 256] {
            let problem = AttentionProblem::new(shape(1, 77, 93, 4, 2, head_dim))
                .with_causal(head_dim % 64 == 0);
            check::<f16>(&format!("d{head_dim}"), &problem, &emulator, 1.0);
            check::<bf16>(&format!("d{head_dim}"), &problem, &emulator, 1.0);
        }
    }
}

/// The sequence-length pairs FlashAttention's tests use, causal and not.
#[test]
fn ragged_sequence_pairs_match_the_reference() {
    let emulator = Emulator::new().with_schedule(Schedule::Random { seed: 5 });
    let pairs = [
        (113, 203),
        (128, 217),
        (108, 256),
        (512, 256),
        (1, 147),
        (3, 799),
        (127, 513),
        (33, 17),
        (1, 1),
    ];
    for (seq_q, seq_k) in pairs {
        for causal in [false, true] {
            let problem =
                AttentionProblem::new(shape(1, seq_q, seq_k, 2, 1, 64)).with_causal(causal);
            check::<bf16>(
                &format!("{seq_q}x{seq_k} causal={causal}"),
                &problem,
                &emulator,
                1.0,
            );
        }
    }
}

#[test]
fn long_square_and_off_by_one_sequences() {
    let emulator = Emulator::new();
    for (seq_q, seq_k) in [(1023, 1024), (1024, 1023)] {
        let problem = AttentionProblem::new(shape(1, seq_q, seq_k, 1, 1, 128)).with_causal(true);
        check::<f16>(&format!("{seq_q}x{seq_k}"), &problem, &emulator, 1.0);
    }
}

/// Rows that see no key (seq_q > seq_k, causal) are 0 with lse -inf; no keys at all likewise.
#[test]
fn fully_masked_rows_are_zero_never_nan() {
    let emulator = Emulator::new();
    for (seq_q, seq_k) in [(100, 37), (70, 1), (5, 0)] {
        let problem = AttentionProblem::new(shape(2, seq_q, seq_k, 2, 2, 32)).with_causal(true);
        check::<f16>(&format!("{seq_q}x{seq_k}"), &problem, &emulator, 1.0);
        let q = vec![f16::ONE; problem.required_len(Tensor::Q).unwrap()];
        let kv = vec![f16::ONE; problem.required_len(Tensor::K).unwrap().max(8)];
        let result = guarded::forward(
            &emulator,
            &problem,
            ForwardOptions::default().with_lse(true),
            [&q, &kv, &kv],
            &format!("ones {seq_q}x{seq_k}"),
        )
        .unwrap();
        let lse = result.lse.unwrap();
        let masked_rows = seq_q - seq_k.min(seq_q);
        for b in 0..2 {
            for h in 0..2 {
                for i in 0..masked_rows {
                    assert_eq!(lse[(b * 2 + h) * seq_q + i], f32::NEG_INFINITY, "row {i}");
                    for d in 0..32 {
                        let value = result.out[problem.out_strides.offset(b, i, h, d)];
                        assert!(value.to_bits() == 0, "row {i} col {d}: {value}");
                    }
                }
            }
        }
    }
}

#[test]
fn large_logits_stay_finite_and_match() {
    let emulator = Emulator::new();
    let problem = AttentionProblem::new(shape(1, 65, 130, 2, 2, 64));
    check::<bf16>("large logits", &problem, &emulator, 8.0);
    check::<f16>("large logits", &problem, &emulator, 4.0);
}

/// [b, h, s, d], padded strides (multiples of 8 elements) carrying a head dim that is not one, and MQA.
#[test]
fn strided_layouts_and_padded_head_dims() {
    let emulator = Emulator::new();
    let bhsd = AttentionProblem::new(shape(2, 40, 72, 3, 3, 64))
        .with_layout(Layout::Bhsd)
        .with_causal(true);
    check::<f16>("bhsd", &bhsd, &emulator, 1.0);
    for head_dim in [40, 59, 111] {
        let padded = usize::div_ceil(head_dim, 8) * 8;
        let row = |heads: usize| Strides {
            batch: 50 * heads * padded + 8,
            seq: heads * padded,
            head: padded,
        };
        let problem = AttentionProblem::new(shape(2, 50, 45, 4, 1, head_dim)).with_strides(
            row(4),
            row(1),
            Strides::bhsd(45, 1, padded),
            row(4),
        );
        check::<bf16>(
            &format!("d{head_dim} padded strides MQA"),
            &problem,
            &emulator,
            1.0,
        );
    }
}

/// Sliding windows, soft cap and ALiBi (runtime flags of the same instantiations), alone and together.
#[test]
fn window_softcap_and_alibi_match_the_reference() {
    let emulator = Emulator::new();
    let base = AttentionProblem::new(shape(1, 90, 150, 4, 2, 64));
    let slopes: Vec<f32> = (0..4)
        .map(|h| (-8.0 * (h + 1) as f32 / 4.0).exp2())
        .collect();
    let cases = [
        (
            "window left 20",
            base.clone().with_window(Some(20), None),
            1.0,
        ),
        (
            "window right 5",
            base.clone().with_window(None, Some(5)),
            1.0,
        ),
        (
            "window 17/3",
            base.clone().with_window(Some(17), Some(3)),
            1.0,
        ),
        (
            "local causal 40",
            base.clone()
                .with_causal(true)
                .with_window(Some(40), Some(0)),
            1.0,
        ),
        (
            "softcap 5, large logits",
            base.clone().with_softcap(5.0),
            4.0,
        ),
        (
            "alibi causal",
            base.clone()
                .with_causal(true)
                .with_alibi_slopes(slopes.clone()),
            1.0,
        ),
        (
            "window + softcap + alibi",
            base.clone()
                .with_window(Some(33), Some(7))
                .with_softcap(2.0)
                .with_alibi_slopes(slopes),
            2.0,
        ),
        (
            "seq_q > seq_k, narrow causal window: empty rows",
            AttentionProblem::new(shape(1, 120, 50, 2, 2, 32))
                .with_causal(true)
                .with_window(Some(3), Some(0)),
            1.0,
        ),
    ];
    for (name, problem, magnitude) in cases {
        check::<bf16>(name, &problem, &emulator, magnitude);
        check::<f16>(name, &problem, &emulator, magnitude.min(2.0));
    }
}

/// The f32 flash path (CUDA cores, O(seq) memory): any head dim, no alignment needed.
#[test]
fn f32_flash_matches_the_reference() {
    let emulator = Emulator::new();
    let slopes: Vec<f32> = vec![0.5, 0.25, 0.125, 0.0625];
    let cases = [
        (
            "d59 ragged causal GQA",
            AttentionProblem::new(shape(1, 45, 77, 4, 2, 59)).with_causal(true),
        ),
        (
            "d256 sq > sk causal",
            AttentionProblem::new(shape(1, 70, 33, 2, 1, 256)).with_causal(true),
        ),
        ("d1", AttentionProblem::new(shape(2, 9, 40, 1, 1, 1))),
        (
            "d128 bhsd window",
            AttentionProblem::new(shape(1, 64, 100, 4, 4, 128))
                .with_layout(Layout::Bhsd)
                .with_window(Some(20), Some(4)),
        ),
        (
            "d64 softcap alibi",
            AttentionProblem::new(shape(1, 50, 60, 4, 4, 64))
                .with_softcap(3.0)
                .with_alibi_slopes(slopes),
        ),
        ("seq_k 0", AttentionProblem::new(shape(1, 5, 0, 2, 2, 16))),
    ];
    for (name, problem) in cases {
        check::<f32>(name, &problem, &emulator, 1.0);
    }
}

/// Runs `check` for the element type `dtype` names.
fn check_dtype(dtype: DType, name: &str, problem: &AttentionProblem, magnitude: f32) {
    let emulator = Emulator::new();
    match dtype {
        DType::F32 => check::<f32>(name, problem, &emulator, magnitude),
        DType::F16 => check::<f16>(name, problem, &emulator, magnitude.min(2.0)),
        DType::Bf16 => check::<bf16>(name, problem, &emulator, magnitude),
    }
}

/// The reason of the emulator's plan for `problem` in `dtype` (lse on).
fn plan_reason(dtype: DType, problem: &AttentionProblem) -> String {
    let emulator = Emulator::new();
    let options = ForwardOptions::default().with_lse(true);
    let plan = match dtype {
        DType::F32 => emulator.plan::<f32>(problem, options),
        DType::F16 => emulator.plan::<f16>(problem, options),
        DType::Bf16 => emulator.plan::<bf16>(problem, options),
    };
    plan.map(|p| p.reason().to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", describe(problem)))
}

/// A short description of a problem's shape, masks and layouts, for failure messages.
fn describe(problem: &AttentionProblem) -> String {
    let s = problem.shape;
    let strides = |st: &Strides| format!("({}, {}, {})", st.batch, st.seq, st.head);
    format!(
        "[b {} sq {} sk {} hq {} hkv {} d {}] causal {} window {:?}/{:?} softcap {:?} alibi {} strides q {} k {} v {} \
         out {}",
        s.batch,
        s.seq_q,
        s.seq_k,
        s.heads_q,
        s.heads_kv,
        s.head_dim,
        problem.causal,
        problem.window.left,
        problem.window.right,
        problem.softcap,
        problem.alibi_slopes.is_some(),
        strides(&problem.q_strides),
        strides(&problem.k_strides),
        strides(&problem.v_strides),
        strides(&problem.out_strides),
    )
}

/// Query tiles the sequence does not fill: for the smallest and the largest tensor-core instantiation of
/// each tile height in the registry (128 rows up to head dim 128, 64 beyond), and the f32 kernel (8 rows),
/// seq_q below one tile and one past a whole tile, batch 2 and 3 heads: the rows past seq_q must be neither
/// written (out, lse: the guards and the next head's rows) nor let through into another head's lse.
#[test]
fn partial_query_tiles_write_only_their_rows() {
    let flash: Vec<&KernelSpec> = registry::kernels()
        .iter()
        .filter(|k| k.family == KernelFamily::Flash)
        .collect();
    let mut picked: Vec<&KernelSpec> = Vec::new();
    for spec in &flash {
        let group: Vec<&&KernelSpec> = flash
            .iter()
            .filter(|k| k.dtype == spec.dtype && k.tile_rows == spec.tile_rows)
            .collect();
        let smallest = group.iter().min_by_key(|k| k.head_dims.end()).unwrap();
        let largest = group.iter().max_by_key(|k| k.head_dims.end()).unwrap();
        if spec.name == smallest.name || spec.name == largest.name {
            picked.push(spec);
        }
    }
    assert!(
        picked.len() >= 5,
        "the registry has too few flash kernels: {picked:?}"
    );
    for spec in picked {
        let dtype = spec.dtype.unwrap();
        let rows = spec.tile_rows as usize;
        // A head dim the instantiation zero-pads (a multiple of 8, as contiguous rows must be for
        // 16-byte loads); 59 for the any-head-dim f32 kernel.
        let (first, last) = (*spec.head_dims.start(), *spec.head_dims.end());
        let head_dim = if last - first < 32 { last - 8 } else { 59 };
        for (seq_q, causal) in [(rows / 2 + 3, false), (rows + 1, true)] {
            let problem =
                AttentionProblem::new(shape(2, seq_q, 47, 3, 1, head_dim)).with_causal(causal);
            let reason = plan_reason(dtype, &problem);
            assert!(
                reason.contains(&format!(": {} (", spec.name)),
                "{}: {reason}",
                spec.name
            );
            let name = format!(
                "{} ({rows} rows per tile): {}",
                spec.name,
                describe(&problem)
            );
            check_dtype(dtype, &name, &problem, 1.0);
        }
    }
}

/// Strides with gaps everywhere: each row padded past head_dim to a multiple of 8 and then 8 more
/// elements, and gaps between heads (`bshd`: heads side by side in a row; else heads of whole sequences)
/// and between batches.
fn gapped(seq: usize, heads: usize, head_dim: usize, bshd: bool) -> Strides {
    let row = head_dim.next_multiple_of(8) + 8;
    if bshd {
        let seq_stride = heads * row + 8;
        Strides {
            batch: seq * seq_stride + 16,
            seq: seq_stride,
            head: row,
        }
    } else {
        let head = seq * row + 8;
        Strides {
            batch: heads * head + 24,
            seq: row,
            head,
        }
    }
}

/// Padding that is never read: every element the strides do not address (head-dim padding, row gaps,
/// head gaps, batch gaps) is NaN, and the buffers end in NaN guards, so a kernel that loads K's (or Q's,
/// V's) columns past head_dim, or rows past a sequence, shows NaN in the output. Head dims that are not
/// instantiations (the tensor-core kernels zero-pad them on load), f16, bf16 and f32, causal, GQA, and
/// out with gaps (which must keep its fill).
#[test]
fn padding_and_gaps_are_never_read() {
    for (i, head_dim) in [40usize, 59, 111].into_iter().enumerate() {
        let (batch, seq_q, seq_k, heads_q, heads_kv) = (2, 45, 70, 4, 2);
        // Alternate the layouts between tensors and head dims.
        let bshd = |t: usize| (i + t) % 2 == 0;
        let problem =
            AttentionProblem::new(shape(batch, seq_q, seq_k, heads_q, heads_kv, head_dim))
                .with_strides(
                    gapped(seq_q, heads_q, head_dim, bshd(0)),
                    gapped(seq_k, heads_kv, head_dim, bshd(1)),
                    gapped(seq_k, heads_kv, head_dim, bshd(0)),
                    gapped(seq_q, heads_q, head_dim, bshd(1)),
                )
                .with_causal(true);
        let name = format!("NaN padding and gaps: {}", describe(&problem));
        for dtype in [DType::F16, DType::Bf16, DType::F32] {
            check_dtype(dtype, &name, &problem, 1.0);
        }
    }
}

/// The ALiBi slopes `2^(-8 (h + 1) / heads)`.
fn slopes(heads: usize) -> Vec<f32> {
    (0..heads)
        .map(|h| (-8.0 * (h + 1) as f32 / heads as f32).exp2())
        .collect()
}

/// One row of [`masks_scores_and_layouts_on_several_shapes`]: a name, the inputs' magnitude, the problem
/// of a shape, and the (shape, causal) pairs it runs on.
struct Case {
    name: &'static str,
    magnitude: f32,
    build: Box<dyn Fn(AttentionShape) -> AttentionProblem>,
    shapes: Vec<(AttentionShape, bool)>,
}

impl Case {
    fn new(
        name: &'static str,
        magnitude: f32,
        build: impl Fn(AttentionShape) -> AttentionProblem + 'static,
        shapes: Vec<(AttentionShape, bool)>,
    ) -> Self {
        Case {
            name,
            magnitude,
            build: Box::new(build),
            shapes,
        }
    }
}

/// Each mask, score adjustment and layout case on at least two shapes in f16 and bf16 (tensor cores), and
/// one of them in f32 (CUDA cores), each against the reference and the naive kernel, the failure naming
/// the case and the shape: non-causal ALiBi, the right edge of a window, the soft cap alone, batches
/// beyond 2 with gapped batch strides, GQA ratios 3, 4, 8 and MQA.
#[test]
fn masks_scores_and_layouts_on_several_shapes() {
    let alibi = |s: AttentionShape| AttentionProblem::new(s).with_alibi_slopes(slopes(s.heads_q));
    let window =
        |left, right| move |s: AttentionShape| AttentionProblem::new(s).with_window(left, right);
    let batch_gaps = |bshd: bool| {
        move |s: AttentionShape| {
            let mut p = AttentionProblem::new(s);
            if !bshd {
                p = p.with_layout(Layout::Bhsd);
            }
            let gap = |st: Strides, seq: usize, heads: usize| Strides {
                batch: seq * heads * s.head_dim + 24,
                ..st
            };
            let (q, k, v, out) = (p.q_strides, p.k_strides, p.v_strides, p.out_strides);
            p.with_strides(
                gap(q, s.seq_q, s.heads_q),
                gap(k, s.seq_k, s.heads_kv),
                gap(v, s.seq_k, s.heads_kv),
                gap(out, s.seq_q, s.heads_q),
            )
        }
    };
    let plain = AttentionProblem::new;
    let cases = [
        Case::new(
            "ALiBi, not causal",
            1.0,
            alibi,
            vec![
                (shape(1, 90, 150, 4, 2, 64), false),
                (shape(2, 37, 61, 3, 3, 96), false),
            ],
        ),
        Case::new(
            "window (None, Some(3)): right edge only",
            1.0,
            window(None, Some(3)),
            vec![
                (shape(1, 70, 110, 2, 1, 64), false),
                (shape(1, 120, 45, 2, 2, 128), false),
            ],
        ),
        Case::new(
            "window (Some(5), Some(0)): narrow band ending on the diagonal",
            1.0,
            window(Some(5), Some(0)),
            vec![
                (shape(1, 64, 64, 2, 2, 32), false),
                (shape(2, 50, 93, 2, 1, 80), false),
            ],
        ),
        Case::new(
            "soft cap 5 alone, large logits",
            4.0,
            |s: AttentionShape| AttentionProblem::new(s).with_softcap(5.0),
            vec![
                (shape(1, 60, 100, 2, 2, 64), false),
                (shape(1, 33, 150, 2, 1, 128), false),
            ],
        ),
        Case::new(
            "batch 3, gapped batch stride, bshd",
            1.0,
            batch_gaps(true),
            vec![
                (shape(3, 41, 57, 2, 1, 64), false),
                (shape(3, 31, 33, 2, 2, 96), true),
            ],
        ),
        Case::new(
            "batch 5, gapped batch stride, bhsd",
            1.0,
            batch_gaps(false),
            vec![
                (shape(5, 31, 40, 2, 1, 32), false),
                (shape(5, 33, 31, 1, 1, 64), true),
            ],
        ),
        Case::new(
            "GQA 3:1 per group",
            1.0,
            plain,
            vec![
                (shape(1, 40, 50, 6, 2, 64), false),
                (shape(1, 33, 31, 9, 3, 32), true),
            ],
        ),
        Case::new(
            "GQA 4:1 per group",
            1.0,
            plain,
            vec![
                (shape(1, 40, 50, 8, 2, 64), false),
                (shape(1, 31, 45, 12, 3, 32), true),
            ],
        ),
        Case::new(
            "GQA 8:1 per group",
            1.0,
            plain,
            vec![
                (shape(1, 35, 40, 16, 2, 32), false),
                (shape(1, 33, 37, 8, 1, 64), true),
            ],
        ),
        Case::new(
            "MQA",
            1.0,
            plain,
            vec![
                (shape(1, 45, 60, 3, 1, 64), false),
                (shape(2, 31, 50, 5, 1, 96), true),
            ],
        ),
    ];
    for Case {
        name: case,
        magnitude,
        build,
        shapes,
    } in &cases
    {
        assert!(shapes.len() >= 2, "{case}: at least two shapes");
        for (i, &(s, causal)) in shapes.iter().enumerate() {
            let problem = build(s).with_causal(causal);
            let name = format!("{case}, shape {}: {}", i + 1, describe(&problem));
            // The tensor-core kernels on every shape; the f32 kernel (8 query rows per block, the
            // slowest to emulate) on the second.
            let dtypes: &[DType] = if i == 1 {
                &[DType::F16, DType::Bf16, DType::F32]
            } else {
                &[DType::F16, DType::Bf16]
            };
            for &dtype in dtypes {
                check_dtype(dtype, &name, &problem, *magnitude);
            }
        }
    }
}
