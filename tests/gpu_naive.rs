//! The naive CUDA kernels on a real device against the f64 CPU reference. Without a device every test
//! prints "skipped: no CUDA device" and returns.

use cuda_attention::cpu::{compare, reference};
use cuda_attention::gpu::{device_count, driver_present};
use cuda_attention::{
    AttentionProblem, AttentionShape, DeviceTensors, Element, Engine, ForwardOptions, KernelChoice,
    Layout, Strides,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn engine() -> Option<Engine> {
    if !driver_present() || device_count().unwrap_or(0) == 0 {
        println!("skipped: no CUDA device");
        return None;
    }
    Some(Engine::new(0).expect("a device is present, so the engine must open"))
}

fn random<T: Element>(len: usize, magnitude: f32, rng: &mut StdRng) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32(rng.random_range(-magnitude..magnitude)))
        .collect()
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
    let stream = engine.context().new_stream().unwrap();
    for (name, problem) in cases() {
        let mut rng = StdRng::seed_from_u64(7);
        let q = random::<T>(problem.required_len("q").unwrap(), magnitude, &mut rng);
        let k = random::<T>(problem.required_len("k").unwrap(), magnitude, &mut rng);
        let v = random::<T>(problem.required_len("v").unwrap(), 1.0, &mut rng);
        let options = ForwardOptions::default()
            .with_kernel(KernelChoice::Naive)
            .with_lse(true)
            .with_weights(true);
        let plan = engine.plan::<T>(&problem, options).unwrap();
        let (d_q, d_k, d_v) = (
            stream.clone_htod(&q).unwrap(),
            stream.clone_htod(&k).unwrap(),
            stream.clone_htod(&v).unwrap(),
        );
        let shape = problem.shape;
        let mut out = stream
            .clone_htod(&vec![
                T::from_f32(f32::NAN);
                problem.required_len("out").unwrap()
            ])
            .unwrap();
        let mut lse = stream
            .clone_htod(&vec![f32::NAN; shape.lse_elements().unwrap()])
            .unwrap();
        let mut weights = stream
            .clone_htod(&vec![f32::NAN; shape.score_elements().unwrap().max(1)])
            .unwrap();
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
                    weights: Some(&mut weights),
                    workspace: None,
                },
            )
            .unwrap();
        let out = stream.clone_dtoh(&out).unwrap();
        let lse = stream.clone_dtoh(&lse).unwrap();
        let weights = stream.clone_dtoh(&weights).unwrap();

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

#[test]
fn convenient_forward_matches_forward_into_bit_for_bit() {
    let Some(engine) = engine() else { return };
    let problem = AttentionProblem::new(AttentionShape::new(2, 77, 4, 64)).with_causal(true);
    let mut rng = StdRng::seed_from_u64(3);
    let q = random::<f16>(problem.required_len("q").unwrap(), 1.0, &mut rng);
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

#[test]
fn engine_is_shared_across_threads_with_one_stream_each() {
    let Some(engine) = engine() else { return };
    let problem = AttentionProblem::new(AttentionShape::new(1, 64, 2, 32));
    let mut rng = StdRng::seed_from_u64(5);
    let q = random::<bf16>(problem.required_len("q").unwrap(), 1.0, &mut rng);
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
                let mut workspace = stream.alloc_zeros::<u8>(plan.workspace_bytes).unwrap();
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
