//! The CUDA kernels (naive and flash) on a real device against the f64 CPU reference and each other.
//! Without a device every test prints "skipped: no CUDA device" and returns.
//!
//! On the emulated driver (docs/emulated-driver.md; `scripts/test.sh` runs this file under it) the
//! device is the CPU emulator: the cases keep to small shapes there (`fits`, `EMULATED_SCORES`) and the
//! bit-identical reruns are one instead of three, so that CI runs the engine's host code in minutes.

mod common;

use cuda_attention::cpu::{compare, reference};
use cuda_attention::gpu::{device_count, driver_present};
use cuda_attention::Tensor;
use cuda_attention::{
    AttentionProblem, AttentionShape, DeviceTensors, Element, Engine, ForwardOptions, KernelChoice,
    KernelKind, Layout, Strides,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn engine() -> Option<Engine> {
    if !driver_present() || device_count().unwrap_or(0) == 0 {
        println!("skipped: no CUDA device");
        return None;
    }
    Some(Engine::new(0).expect("a device is present, so the engine must open"))
}

/// Largest batch * heads * seq_q * seq_k a case may have on the emulated device.
const EMULATED_SCORES: usize = 140_000;

/// Whether `engine` runs on the emulated driver (its device name says so).
fn emulated(engine: &Engine) -> bool {
    engine.device().name.contains("CPU emulator")
}

/// Whether `problem` is small enough for this device (always on a GPU); prints what it skips.
fn fits(engine: &Engine, name: &str, problem: &AttentionProblem) -> bool {
    let s = &problem.shape;
    let fits = !emulated(engine) || s.batch * s.heads_q * s.seq_q * s.seq_k <= EMULATED_SCORES;
    if !fits {
        println!("skipped on the emulated device (too large): {name}");
    }
    fits
}

/// Test shapes: ragged sizes, seq_q != seq_k, fully masked rows, GQA/MQA, layouts.
fn cases() -> Vec<(&'static str, AttentionProblem)> {
    let shape = |b, sq, sk, hq, hkv, d| AttentionShape {
        batch: b,
        seq_q: sq,
        seq_k: sk,
        heads_q: hq,
        heads_kv: hkv,
        head_dim: d,
    };
    let padded = {
        let s = shape(2, 33, 47, 4, 2, 40);
        AttentionProblem::new(s).with_strides(
            Strides {
                batch: 33 * 4 * 48 + 5,
                seq: 4 * 48,
                head: 48,
            },
            Strides {
                batch: 47 * 2 * 40,
                seq: 2 * 40,
                head: 40,
            },
            Strides::bhsd(47, 2, 40),
            Strides {
                batch: 33 * 4 * 64,
                seq: 4 * 64,
                head: 64,
            },
        )
    };
    vec![
        (
            "single token",
            AttentionProblem::new(shape(1, 1, 1, 1, 1, 1)),
        ),
        (
            "ragged 31x33 d59",
            AttentionProblem::new(shape(2, 31, 33, 2, 2, 59)),
        ),
        (
            "113x203 d64 causal",
            AttentionProblem::new(shape(1, 113, 203, 2, 1, 64)).with_causal(true),
        ),
        (
            "sq > sk causal: masked rows",
            AttentionProblem::new(shape(1, 100, 37, 3, 3, 32)).with_causal(true),
        ),
        (
            "1023x1024 d128 bhsd",
            AttentionProblem::new(shape(1, 1023, 1024, 2, 2, 128)).with_layout(Layout::Bhsd),
        ),
        (
            "decode 1x147 GQA d256",
            AttentionProblem::new(shape(3, 1, 147, 8, 2, 256)),
        ),
        ("seq_k 0", AttentionProblem::new(shape(1, 5, 0, 2, 2, 16))),
        ("padded strides GQA", padded),
    ]
}

fn check_all<T: Element>(engine: &Engine, magnitude: f32) {
    for (name, problem) in cases() {
        if !fits(engine, name, &problem) {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(7);
        let q = common::random::<T>(
            &mut rng,
            problem.required_len(Tensor::Q).unwrap(),
            magnitude,
        );
        let k = common::random::<T>(
            &mut rng,
            problem.required_len(Tensor::K).unwrap(),
            magnitude,
        );
        let v = common::random::<T>(&mut rng, problem.required_len(Tensor::V).unwrap(), 1.0);
        let shape = problem.shape;
        let run = run_on_device(engine, &problem, KernelChoice::Naive, &q, &k, &v, true);
        let (out, lse) = (run.out, run.lse);
        let weights = run.weights.expect("the weights were requested");

        let expected = reference::reference(&problem, &q, &k, &v).unwrap();
        let allowed = compare::tolerance(&problem, &q, &k, &v, &expected).unwrap();
        let softmax_allowed = compare::softmax_tolerance(&problem, &q, &k).unwrap();
        let out_error = compare::compare_output(&problem, &out, &expected.out);
        let lse_error = compare::compare_lse(&problem, &lse, &expected.lse);
        let weights_error = compare::compare_weights(
            &problem,
            &weights[..shape.score_elements().unwrap()],
            &expected.weights,
        );
        let label = format!("{name} {}", T::DTYPE);
        assert!(
            out_error.max_abs <= allowed,
            "{label}: out {out_error}, allowed {allowed:.3e}"
        );
        assert!(
            lse_error.max_abs <= softmax_allowed.lse,
            "{label}: lse {lse_error}"
        );
        assert!(
            weights_error.max_abs <= softmax_allowed.weights,
            "{label}: weights {weights_error}"
        );
    }
}

#[test]
fn naive_matches_the_reference_f32() {
    if let Some(engine) = engine() {
        check_all::<f32>(&engine, 1.0);
    }
}

#[test]
fn naive_matches_the_reference_f16() {
    if let Some(engine) = engine() {
        check_all::<f16>(&engine, 1.0);
    }
}

#[test]
fn naive_matches_the_reference_bf16_with_large_logits() {
    if let Some(engine) = engine() {
        check_all::<bf16>(&engine, 1.0);
        check_all::<bf16>(&engine, 8.0);
    }
}

/// Block-sparse masks through the engine (`forward` uploads the mask's lists): flash (listed tiles only)
/// and naive (per element) against the reference, with a query block that lists nothing.
#[test]
fn block_sparse_masks_match_the_reference() {
    use cuda_attention::BlockMask;
    let Some(engine) = engine() else { return };
    let rows = vec![vec![0, 2], vec![], vec![1, 2, 3], vec![0, 3]];
    let mask = BlockMask::from_rows(64, 64, 200, 256, &rows).unwrap();
    let problem = AttentionProblem::new(AttentionShape::new(1, 200, 2, 64).with_seq_k(256))
        .with_causal(true)
        .with_block_mask(mask);
    let mut rng = StdRng::seed_from_u64(21);
    let len = |t| problem.required_len(t).unwrap();
    let (q, k, v) = (
        common::random::<f16>(&mut rng, len(Tensor::Q), 1.0),
        common::random::<f16>(&mut rng, len(Tensor::K), 1.0),
        common::random::<f16>(&mut rng, len(Tensor::V), 1.0),
    );
    let stream = engine.default_stream();
    let (d_q, d_k, d_v) = (
        stream.clone_htod(&q).unwrap(),
        stream.clone_htod(&k).unwrap(),
        stream.clone_htod(&v).unwrap(),
    );
    for kernel in [KernelChoice::Flash, KernelChoice::Naive] {
        let options = ForwardOptions::default().with_lse(true).with_kernel(kernel);
        let result = engine.forward(&problem, options, &d_q, &d_k, &d_v).unwrap();
        let out = stream.clone_dtoh(&result.out).unwrap();
        let lse = stream.clone_dtoh(result.lse.as_ref().unwrap()).unwrap();
        common::assert_matches_reference(
            &problem,
            [&q, &k, &v],
            &out,
            &lse,
            &format!("{kernel:?}"),
        );
    }
}

/// Split-KV and GQA packing through the engine (the split workspace allocated by `forward`, the flash
/// launch over sequence x splits, the combine; group 4 packed as rows of one tile, or not): decode rows
/// with GQA and sinks against the reference.
#[test]
fn split_kv_decode_matches_the_reference() {
    use cuda_attention::GqaPacking;
    let Some(engine) = engine() else { return };
    for (splits, context, packing) in [
        (4, 300, GqaPacking::Auto),
        (7, 65, GqaPacking::Auto),
        (1, 300, GqaPacking::Off),
        (1, 1000, GqaPacking::On),
    ] {
        let problem = AttentionProblem::new(
            AttentionShape::new(2, 2, 8, 64)
                .with_seq_k(context)
                .with_heads_kv(2),
        )
        .with_causal(true)
        .with_sinks(vec![0.5, -1.0, 2.0, 0.0, 1.0, -2.0, 0.25, 3.0]);
        let options = ForwardOptions::default()
            .with_lse(true)
            .with_splits(cuda_attention::Splits::Fixed(splits))
            .with_gqa_packing(packing);
        let plan = engine.plan::<bf16>(&problem, options).unwrap();
        assert_eq!(plan.splits(), splits, "{}", plan.reason());
        let packed = (packing != GqaPacking::Off).then_some(4);
        assert_eq!(plan.gqa_packing(), packed, "{}", plan.reason());
        let mut rng = StdRng::seed_from_u64(splits as u64);
        let len = |t| problem.required_len(t).unwrap();
        let (q, k, v) = (
            common::random::<bf16>(&mut rng, len(Tensor::Q), 1.0),
            common::random::<bf16>(&mut rng, len(Tensor::K), 1.0),
            common::random::<bf16>(&mut rng, len(Tensor::V), 1.0),
        );
        let stream = engine.default_stream();
        let (d_q, d_k, d_v) = (
            stream.clone_htod(&q).unwrap(),
            stream.clone_htod(&k).unwrap(),
            stream.clone_htod(&v).unwrap(),
        );
        let result = engine.forward(&problem, options, &d_q, &d_k, &d_v).unwrap();
        let out = stream.clone_dtoh(&result.out).unwrap();
        let lse = stream.clone_dtoh(result.lse.as_ref().unwrap()).unwrap();
        let expected = reference::reference(&problem, &q, &k, &v).unwrap();
        let allowed = compare::tolerance(&problem, &q, &k, &v, &expected).unwrap();
        let error = compare::compare_output(&problem, &out, &expected.out);
        assert!(error.max_abs <= allowed, "{splits} splits: {error}");
        let lse_allowed = compare::softmax_tolerance(&problem, &q, &k).unwrap().lse;
        let lse_error = compare::compare_lse(&problem, &lse, &expected.lse);
        assert!(
            lse_error.max_abs <= lse_allowed,
            "{splits} splits: lse {lse_error}"
        );
    }
}

#[test]
fn convenient_forward_matches_forward_into_bit_for_bit() {
    let Some(engine) = engine() else { return };
    let problem = AttentionProblem::new(AttentionShape::new(2, 77, 4, 64)).with_causal(true);
    let mut rng = StdRng::seed_from_u64(3);
    let q = common::random::<f16>(&mut rng, problem.required_len(Tensor::Q).unwrap(), 1.0);
    let stream = engine.default_stream();
    let d_q = stream.clone_htod(&q).unwrap();
    let first = engine
        .forward(&problem, ForwardOptions::default(), &d_q, &d_q, &d_q)
        .unwrap();
    let second = engine
        .forward(&problem, ForwardOptions::default(), &d_q, &d_q, &d_q)
        .unwrap();
    let (a, b) = (
        stream.clone_dtoh(&first.out).unwrap(),
        stream.clone_dtoh(&second.out).unwrap(),
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "two runs differ"
    );
    let expected = reference::reference(&problem, &q, &q, &q).unwrap();
    let allowed = compare::tolerance(&problem, &q, &q, &q, &expected).unwrap();
    let error = compare::compare_output(&problem, &a, &expected.out);
    assert!(error.max_abs <= allowed, "{error}");
}

/// Engine::attention_map (flash forward + map kernel on device buffers) against the CPU backend's map,
/// which tests/attention_map.rs holds to the pooled f64 reference weights.
#[test]
fn attention_map_on_the_device_matches_the_cpu_backend() {
    use cuda_attention::attention_map::{BinReduce, MapHeads, MapSpec};
    use cuda_attention::cpu::CpuBackend;
    let Some(engine) = engine() else { return };
    let shape = AttentionShape::new(2, 45, 4, 64)
        .with_seq_k(70)
        .with_heads_kv(2);
    let problems = [
        (
            AttentionProblem::new(shape).with_causal(true),
            MapSpec::new(4, 9),
        ),
        (
            AttentionProblem::new(shape)
                .with_window(Some(20), Some(3))
                .with_alibi_slopes(vec![0.5f32, 0.25, 0.125, 0.0625])
                .with_sinks(vec![0.0f32, 1.0, -1.0, 2.0]),
            MapSpec::new(10, 7)
                .with_heads(MapHeads::Mean)
                .with_reduce(BinReduce::Mean),
        ),
    ];
    for (index, (problem, spec)) in problems.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(40 + index as u64);
        let input = |tensor, rng: &mut StdRng| {
            common::random::<bf16>(rng, problem.required_len(tensor).unwrap(), 1.0)
        };
        let (q, k, v) = (
            input(Tensor::Q, &mut rng),
            input(Tensor::K, &mut rng),
            input(Tensor::V, &mut rng),
        );
        let stream = engine.default_stream();
        let (d_q, d_k, d_v) = (
            stream.clone_htod(&q).unwrap(),
            stream.clone_htod(&k).unwrap(),
            stream.clone_htod(&v).unwrap(),
        );
        let map = engine
            .attention_map(problem, spec, &d_q, &d_k, &d_v)
            .unwrap();
        let values = stream.clone_dtoh(&map.values).unwrap();
        let profile = stream.clone_dtoh(&map.key_profile).unwrap();
        let cpu = CpuBackend::new();
        let expected = cpu.attention_map(problem, spec, &q, &k, &v).unwrap();
        for (what, actual, expected, terms) in [
            (
                "map",
                &values,
                &expected.values,
                spec.bin_q * spec.bin_k * 4,
            ),
            (
                "key profile",
                &profile,
                &expected.key_profile,
                problem.shape.seq_q,
            ),
        ] {
            assert_eq!(actual.len(), expected.len(), "case {index}: {what} length");
            for (at, (&a, &e)) in actual.iter().zip(expected).enumerate() {
                let allowed = 4.0 * (terms as f32 + 8.0) * f32::EPSILON * (1.0 + e.abs());
                assert!(
                    (a - e).abs() <= allowed,
                    "case {index}: {what}[{at}] = {a}, the CPU backend's {e} (allowed {allowed:.3e})"
                );
            }
        }
    }
}

#[test]
fn engine_is_shared_across_threads_with_one_stream_each() {
    let Some(engine) = engine() else { return };
    let problem = AttentionProblem::new(AttentionShape::new(1, 64, 2, 32));
    let mut rng = StdRng::seed_from_u64(5);
    let q = common::random::<bf16>(&mut rng, problem.required_len(Tensor::Q).unwrap(), 1.0);
    let expected = reference::reference(&problem, &q, &q, &q).unwrap();
    let allowed = compare::tolerance(&problem, &q, &q, &q, &expected).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let stream = engine.context().new_stream().unwrap();
                let plan = engine
                    .plan::<bf16>(&problem, ForwardOptions::default())
                    .unwrap();
                let d_q = stream.clone_htod(&q).unwrap();
                let mut out = stream.clone_htod(&vec![bf16::NAN; q.len()]).unwrap();
                // At least 16 bytes: flash needs none, and cuMemAlloc refuses 0 bytes (devices
                // without memory pools).
                let mut workspace = stream
                    .alloc_zeros::<u8>(plan.workspace_bytes().max(16))
                    .unwrap();
                engine
                    .forward_into(
                        &stream,
                        &plan,
                        DeviceTensors {
                            q: &d_q,
                            k: &d_q,
                            v: &d_q,
                            out: &mut out,
                            lse: None,
                            weights: None,
                            workspace: Some(&mut workspace),
                            alibi_slopes: None,
                            sinks: None,
                            cu_seqlens_q: None,
                            cu_seqlens_k: None,
                            seqused_k: None,
                            block_table: None,
                            block_row_offsets: None,
                            block_col_indices: None,
                        },
                    )
                    .unwrap();
                let out = stream.clone_dtoh(&out).unwrap();
                let error = compare::compare_output(&problem, &out, &expected.out);
                assert!(error.max_abs <= allowed, "{error}");
            });
        }
    });
}

/// What one device run returned.
struct DeviceRun<T> {
    out: Vec<T>,
    lse: Vec<f32>,
    /// The attention weights, when requested (naive only).
    weights: Option<Vec<f32>>,
    kernel: KernelKind,
}

/// Runs `problem` with `kernel` on the device through `forward_into` on a stream of its own (outputs
/// poisoned with NaN first); returns out, lse and, when asked, the attention weights.
fn run_on_device<T: Element>(
    engine: &Engine,
    problem: &AttentionProblem,
    kernel: KernelChoice,
    q: &[T],
    k: &[T],
    v: &[T],
    with_weights: bool,
) -> DeviceRun<T> {
    let stream = engine.context().new_stream().unwrap();
    let options = ForwardOptions::default()
        .with_kernel(kernel)
        .with_lse(true)
        .with_weights(with_weights);
    let plan = engine.plan::<T>(problem, options).unwrap();
    let (d_q, d_k, d_v) = (
        stream.clone_htod(q).unwrap(),
        stream.clone_htod(k).unwrap(),
        stream.clone_htod(v).unwrap(),
    );
    let mut out = stream
        .clone_htod(&vec![
            T::from_f32(f32::NAN);
            problem.required_len(Tensor::Out).unwrap()
        ])
        .unwrap();
    let mut lse = stream
        .clone_htod(&vec![f32::NAN; problem.shape.lse_elements().unwrap()])
        .unwrap();
    let mut weights = with_weights.then(|| {
        let len = problem.shape.score_elements().unwrap().max(1);
        stream.clone_htod(&vec![f32::NAN; len]).unwrap()
    });
    let mut workspace = stream
        .alloc_zeros::<u8>(plan.workspace_bytes().max(16))
        .unwrap();
    let slopes = problem
        .alibi_slopes
        .as_ref()
        .map(|s| stream.clone_htod(s.as_ref()).unwrap());
    engine
        .forward_into(
            &stream,
            &plan,
            DeviceTensors {
                q: &d_q,
                k: &d_k,
                v: &d_v,
                out: &mut out,
                lse: Some(&mut lse),
                weights: weights
                    .as_mut()
                    .map(|w| w as &mut dyn cudarc::driver::DevicePtrMut<f32>),
                workspace: Some(&mut workspace),
                alibi_slopes: slopes
                    .as_ref()
                    .map(|s| s as &dyn cudarc::driver::DevicePtr<f32>),
                sinks: None,
                cu_seqlens_q: None,
                cu_seqlens_k: None,
                seqused_k: None,
                block_table: None,
                block_row_offsets: None,
                block_col_indices: None,
            },
        )
        .unwrap();
    DeviceRun {
        out: stream.clone_dtoh(&out).unwrap(),
        lse: stream.clone_dtoh(&lse).unwrap(),
        weights: weights.map(|w| stream.clone_dtoh(&w).unwrap()),
        kernel: plan.kernel(),
    }
}

/// Flash on the device: reference by the tolerance rule, agreement with naive, bit-identical reruns.
fn check_flash<T: Element>(
    engine: &Engine,
    name: &str,
    problem: &AttentionProblem,
    magnitude: f32,
) {
    let mut rng = StdRng::seed_from_u64(13);
    let q = common::random::<T>(
        &mut rng,
        problem.required_len(Tensor::Q).unwrap(),
        magnitude,
    );
    let k = common::random::<T>(
        &mut rng,
        problem.required_len(Tensor::K).unwrap(),
        magnitude,
    );
    let v = common::random::<T>(&mut rng, problem.required_len(Tensor::V).unwrap(), 1.0);
    let label = format!("{name} {}", T::DTYPE);
    let DeviceRun {
        out, lse, kernel, ..
    } = run_on_device(engine, problem, KernelChoice::Flash, &q, &k, &v, false);
    assert_eq!(kernel, KernelKind::Flash, "{label}");
    let expected = reference::reference(problem, &q, &k, &v).unwrap();
    let allowed = compare::tolerance(problem, &q, &k, &v, &expected).unwrap();
    let error = compare::compare_output(problem, &out, &expected.out);
    assert!(
        error.max_abs <= allowed,
        "{label}: out {error}, allowed {allowed:.3e}"
    );
    let lse_allowed = compare::softmax_tolerance(problem, &q, &k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, &lse, &expected.lse);
    assert!(lse_error.max_abs <= lse_allowed, "{label}: lse {lse_error}");
    let naive = run_on_device(engine, problem, KernelChoice::Naive, &q, &k, &v, false).out;
    let naive_error = compare::compare_output(problem, &naive, &expected.out);
    assert!(
        naive_error.max_abs <= allowed,
        "{label}: naive {naive_error}"
    );
    let reruns = if emulated(engine) { 1 } else { 3 };
    for _ in 0..reruns {
        let again = run_on_device(engine, problem, KernelChoice::Flash, &q, &k, &v, false).out;
        let same = out
            .iter()
            .zip(&again)
            .all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(same, "{label}: reruns differ");
    }
}

#[test]
fn flash_every_head_dim_and_dtype() {
    let Some(engine) = engine() else { return };
    // On the emulated device: the same ragged, GQA, two-batch case, smaller.
    let (seq_q, seq_k, heads_q) = if emulated(&engine) {
        (45, 70, 2)
    } else {
        (177, 301, 4)
    };
    for head_dim in [32, 64, 96, 128, 160, 192, 224, 256] {
        let problem = AttentionProblem::new(AttentionShape {
            batch: 2,
            seq_q,
            seq_k,
            heads_q,
            heads_kv: heads_q / 2,
            head_dim,
        })
        .with_causal(head_dim % 64 == 0);
        check_flash::<f16>(&engine, &format!("d{head_dim}"), &problem, 1.0);
        check_flash::<bf16>(&engine, &format!("d{head_dim}"), &problem, 1.0);
    }
}

#[test]
fn flash_ragged_pairs_masks_and_layouts() {
    let Some(engine) = engine() else { return };
    let shape = |sq, sk, d| AttentionShape {
        batch: 1,
        seq_q: sq,
        seq_k: sk,
        heads_q: 2,
        heads_kv: 1,
        head_dim: d,
    };
    for (sq, sk) in [
        (113, 203),
        (128, 217),
        (108, 256),
        (512, 256),
        (1023, 1024),
        (1024, 1023),
        (1, 147),
        (3, 799),
        (127, 513),
    ] {
        for causal in [false, true] {
            let problem = AttentionProblem::new(shape(sq, sk, 128)).with_causal(causal);
            if !fits(&engine, &format!("{sq}x{sk}"), &problem) {
                continue;
            }
            check_flash::<bf16>(
                &engine,
                &format!("{sq}x{sk} causal={causal}"),
                &problem,
                1.0,
            );
        }
    }
    let slopes: Vec<f32> = vec![0.25, 0.0625];
    let masked = [
        (
            "sq > sk causal",
            AttentionProblem::new(shape(100, 37, 64)).with_causal(true),
        ),
        (
            "bhsd",
            AttentionProblem::new(shape(300, 300, 64))
                .with_layout(Layout::Bhsd)
                .with_causal(true),
        ),
        (
            "window",
            AttentionProblem::new(shape(200, 260, 64)).with_window(Some(40), Some(8)),
        ),
        (
            "softcap alibi",
            AttentionProblem::new(shape(150, 190, 64))
                .with_softcap(4.0)
                .with_alibi_slopes(slopes),
        ),
    ];
    for (name, problem) in masked {
        if !fits(&engine, name, &problem) {
            continue;
        }
        check_flash::<f16>(&engine, name, &problem, 2.0);
    }
}

#[test]
fn flash_f32_on_cuda_cores() {
    let Some(engine) = engine() else { return };
    for head_dim in [1, 59, 128, 256] {
        let problem = AttentionProblem::new(AttentionShape {
            batch: 1,
            seq_q: 150,
            seq_k: 203,
            heads_q: 2,
            heads_kv: 2,
            head_dim,
        })
        .with_causal(true);
        check_flash::<f32>(&engine, &format!("f32 d{head_dim}"), &problem, 1.0);
    }
}
