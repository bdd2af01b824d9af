//! The typed errors every CPU entry point (attention, attention into buffers, reference, naive baseline,
//! tolerances) reports: invalid shapes, strides, scale, soft cap, ALiBi slopes and window, and short
//! buffers named with the lengths.

mod common;

use common::cpu_support::cases::{geometric_slopes, inputs};
use common::cpu_support::check::cpu_into;
use cuda_attention::cpu::{self, ReferenceOutput};
use cuda_attention::Tensor;
use cuda_attention::{AttentionError, AttentionProblem, AttentionShape, ForwardOptions, Strides};
use half::f16;

/// The shape most error cases start from: batch 2, seq 8, 4 heads over 2 kv heads, head_dim 16.
fn base_shape() -> AttentionShape {
    AttentionShape::new(2, 8, 4, 16)
        .with_heads_kv(2)
        .with_seq_k(10)
}

/// Calls every CPU entry point with buffers of the problem's own lengths (at least 1 element each).
fn every_entry_point(
    problem: &AttentionProblem,
) -> Vec<(&'static str, cuda_attention::Result<()>)> {
    let len = |t| problem.required_len(t).unwrap_or(0).clamp(1, 1 << 16);
    let q = vec![0.5f32; len(Tensor::Q)];
    let k = vec![0.5f32; len(Tensor::K)];
    let v = vec![0.5f32; len(Tensor::V)];
    let mut out = vec![0.0f32; len(Tensor::Out)];
    vec![
        (
            "attention",
            cpu::attention(
                problem,
                ForwardOptions::default().with_lse(true).with_weights(true),
                &q,
                &k,
                &v,
            )
            .map(drop),
        ),
        (
            "attention_into",
            cpu_into(problem, &q, &k, &v, &mut out, None, None),
        ),
        ("reference", cpu::reference(problem, &q, &k, &v).map(drop)),
        (
            "naive_in_precision",
            cpu::naive_in_precision(problem, &q, &k, &v).map(drop),
        ),
        (
            "softmax_tolerance",
            cpu::softmax_tolerance(problem, &q, &k).map(drop),
        ),
    ]
}

/// Whether an error is the expected variant.
type ErrorCheck = fn(&AttentionError) -> bool;

#[test]
fn invalid_problems_give_their_specific_error_everywhere() {
    let shape = base_shape();
    let overlapping = {
        let p = AttentionProblem::new(shape);
        let out = Strides {
            seq: 0,
            ..p.out_strides
        };
        p.clone()
            .with_strides(p.q_strides, p.k_strides, p.v_strides, out)
    };
    let huge = {
        let p = AttentionProblem::new(shape);
        let q = Strides {
            batch: usize::MAX / 2,
            ..p.q_strides
        };
        p.clone()
            .with_strides(q, p.k_strides, p.v_strides, p.out_strides)
    };
    let cases: Vec<(&str, AttentionProblem, ErrorCheck)> = vec![
        (
            "heads_q 3 over heads_kv 2",
            AttentionProblem::new(AttentionShape {
                heads_q: 3,
                ..shape
            }),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadsNotMultiple {
                        heads_q: 3,
                        heads_kv: 2
                    }
                )
            },
        ),
        (
            "head_dim 0",
            AttentionProblem::new(AttentionShape {
                head_dim: 0,
                ..shape
            }),
            |e| matches!(e, AttentionError::EmptyDimension { name: "head_dim" }),
        ),
        (
            "head_dim 257",
            AttentionProblem::new(AttentionShape {
                head_dim: 257,
                ..shape
            }),
            |e| {
                matches!(
                    e,
                    AttentionError::HeadDimUnsupported {
                        head_dim: 257,
                        max: 256
                    }
                )
            },
        ),
        (
            "batch 0",
            AttentionProblem::new(AttentionShape { batch: 0, ..shape }),
            |e| matches!(e, AttentionError::EmptyDimension { name: "batch" }),
        ),
        ("overlapping out", overlapping, |e| {
            matches!(e, AttentionError::InvalidStrides { tensor: "out", .. })
        }),
        ("huge q strides", huge, |e| {
            matches!(e, AttentionError::SizeOverflow { what: "q", .. })
        }),
        (
            "NaN scale",
            AttentionProblem::new(shape).with_scale(f32::NAN),
            |e| matches!(e, AttentionError::InvalidScale { .. }),
        ),
    ];
    for (name, problem, expected) in cases {
        for (entry, result) in every_entry_point(&problem) {
            match result {
                Err(ref e) if expected(e) => {}
                other => panic!("{name} through {entry}: got {other:?}"),
            }
        }
    }
}

#[test]
fn short_buffers_give_buffer_too_small_naming_the_buffer() {
    let problem = AttentionProblem::new(base_shape()).with_causal(true);
    let (q, k, v) = inputs::<f16>(&problem, 3, 1.0);
    let out_len = problem.required_len(Tensor::Out).unwrap();
    let lse_len = problem.shape.lse_elements().unwrap();
    let weights_len = problem.shape.score_elements().unwrap();
    let mut out = vec![f16::ZERO; out_len];
    let mut lse = vec![0.0f32; lse_len];
    let mut weights = vec![0.0f32; weights_len];
    let cut = |x: &[f16]| x[..x.len() - 1].to_vec();
    let (q1, k1, v1) = (cut(&q), cut(&k), cut(&v));

    let expect = |result: cuda_attention::Result<()>, tensor: &str, needed: usize| match result {
        Err(AttentionError::BufferTooSmall {
            tensor: t,
            needed: n,
            len,
        }) => {
            assert_eq!((t, n, len), (tensor, needed, needed - 1));
        }
        other => panic!("short {tensor}: got {other:?}"),
    };
    expect(
        cpu_into(&problem, &q1, &k, &v, &mut out, None, None),
        "q",
        q.len(),
    );
    expect(
        cpu_into(&problem, &q, &k1, &v, &mut out, None, None),
        "k",
        k.len(),
    );
    expect(
        cpu_into(&problem, &q, &k, &v1, &mut out, None, None),
        "v",
        v.len(),
    );
    expect(
        cpu_into(&problem, &q, &k, &v, &mut out[..out_len - 1], None, None),
        "out",
        out_len,
    );
    expect(
        cpu_into(
            &problem,
            &q,
            &k,
            &v,
            &mut out,
            Some(&mut lse[..lse_len - 1]),
            None,
        ),
        "lse",
        lse_len,
    );
    expect(
        cpu_into(
            &problem,
            &q,
            &k,
            &v,
            &mut out,
            Some(&mut lse),
            Some(&mut weights[..weights_len - 1]),
        ),
        "weights",
        weights_len,
    );
    expect(
        cpu::attention(&problem, ForwardOptions::default(), &q, &k1, &v).map(drop),
        "k",
        k.len(),
    );
    expect(
        cpu::reference(&problem, &q, &k, &v1).map(drop),
        "v",
        v.len(),
    );
    expect(
        cpu::naive_in_precision(&problem, &q1, &k, &v).map(drop),
        "q",
        q.len(),
    );
    // Exactly the needed lengths work.
    cpu_into(
        &problem,
        &q,
        &k,
        &v,
        &mut out,
        Some(&mut lse),
        Some(&mut weights),
    )
    .unwrap();
}

#[test]
fn invalid_softcap_alibi_and_window_give_their_specific_error_everywhere() {
    let problem = AttentionProblem::new(base_shape()).with_causal(true);
    let heads = problem.shape.heads_q;
    assert_eq!(heads, 4);
    let softcap_message: ErrorCheck = |e| {
        matches!(e, AttentionError::InvalidArgument(m)
            if m.contains("softcap") && m.contains("finite") && m.contains("above 0"))
    };
    let alibi_message: ErrorCheck = |e| {
        matches!(e, AttentionError::InvalidArgument(m)
            if m.contains("ALiBi") && m.contains("4 finite slopes") && m.contains("query head"))
    };
    let window: ErrorCheck = |e| {
        matches!(e, AttentionError::SizeOverflow { what: "window", detail }
            if detail.contains("None"))
    };
    let cases: Vec<(&str, AttentionProblem, ErrorCheck)> = vec![
        (
            "softcap 0",
            problem.clone().with_softcap(0.0),
            softcap_message,
        ),
        (
            "softcap -0",
            problem.clone().with_softcap(-0.0),
            softcap_message,
        ),
        (
            "softcap -1",
            problem.clone().with_softcap(-1.0),
            softcap_message,
        ),
        (
            "softcap NaN",
            problem.clone().with_softcap(f32::NAN),
            softcap_message,
        ),
        (
            "softcap inf",
            problem.clone().with_softcap(f32::INFINITY),
            softcap_message,
        ),
        (
            "no slopes",
            problem.clone().with_alibi_slopes(Vec::new()),
            alibi_message,
        ),
        (
            "3 slopes",
            problem.clone().with_alibi_slopes(geometric_slopes(3)),
            alibi_message,
        ),
        (
            "5 slopes",
            problem.clone().with_alibi_slopes(geometric_slopes(5)),
            alibi_message,
        ),
        (
            "NaN slope",
            problem
                .clone()
                .with_alibi_slopes(vec![0.5, f32::NAN, 0.1, 0.2]),
            alibi_message,
        ),
        (
            "infinite slope",
            problem
                .clone()
                .with_alibi_slopes(vec![0.5, 0.25, f32::NEG_INFINITY, 0.2]),
            alibi_message,
        ),
        (
            "huge window",
            problem.clone().with_window(Some(usize::MAX), None),
            window,
        ),
    ];
    for (name, problem, expected) in cases {
        for (entry, result) in every_entry_point(&problem) {
            match result {
                Err(ref e) if expected(e) => {}
                other => panic!("{name} through {entry}: got {other:?}"),
            }
        }
        let q = vec![0.5f32; problem.required_len(Tensor::Q).unwrap()];
        match cpu::tolerance(
            &problem,
            &q,
            &q,
            &q,
            &ReferenceOutput {
                out: Vec::new(),
                lse: Vec::new(),
                weights: Vec::new(),
            },
        ) {
            Err(ref e) if expected(e) => {}
            other => panic!("{name} through tolerance: got {other:?}"),
        }
    }
}
