//! Running the CPU backend into caller buffers and checking out, lse and weights against the reference
//! (FlashAttention's tolerance rule), the rows that see no key, hidden keys and untouched padding.

use cuda_attention::cpu::{self, ErrorStats};
use cuda_attention::Tensor;
use cuda_attention::{AttentionProblem, Element, ForwardOptions, HostTensors};

use super::cases::{inputs, Case};
use super::streaming::{hidden, sees_nothing};

/// The CPU backend into caller buffers, planned for the outputs passed (the lse and weights options follow
/// the buffers).
pub fn cpu_into<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
) -> cuda_attention::Result<()> {
    let options = ForwardOptions::default()
        .with_lse(lse.is_some())
        .with_weights(weights.is_some());
    let backend = cpu::CpuBackend::new();
    let plan = backend.plan::<T>(problem, options)?;
    let mut tensors = HostTensors::new(q, k, v, out);
    tensors.lse = lse;
    tensors.weights = weights;
    backend.forward_into(&plan, tensors)
}

/// Runs the backend on one case in precision `T` and checks out, lse and weights against the
/// reference; returns the output tolerance used.
pub fn check_backend<T: Element>(case: &Case, seed: u64) -> f64 {
    check_problem::<T>(
        &format!("{case:?}"),
        case.problem(),
        seed,
        1.0,
        case.fully_masked_rows(),
    )
}

/// Runs the backend on `problem` (inputs uniform in `[-range, range)`, rounded to `T`) and checks out,
/// lse and weights against the reference, that exactly `empty_rows` rows per (batch, head) see no key
/// (by the independent mask test) and give 0 and -inf, and that hidden keys get exactly 0 weight;
/// returns the output tolerance used.
pub fn check_problem<T: Element>(
    case: &str,
    problem: AttentionProblem,
    seed: u64,
    range: f32,
    empty_rows: usize,
) -> f64 {
    let (q, k, v) = inputs::<T>(&problem, seed, range);
    let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
    let tolerance = cpu::tolerance(&problem, &q, &k, &v, &reference).unwrap();
    let softmax = cpu::softmax_tolerance(&problem, &q, &k).unwrap();
    let dtype = T::DTYPE;

    // Sentinels everywhere: the padding of out must survive, every lse/weight must be written.
    let sentinel = T::from_f32(7.0);
    let mut out = vec![sentinel; problem.required_len(Tensor::Out).unwrap()];
    let mut lse = vec![f32::NAN; problem.shape.lse_elements().unwrap()];
    let mut weights = vec![f32::NAN; problem.shape.score_elements().unwrap()];
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

    let report = |what: &str, stats: &ErrorStats, bound: f64| {
        assert!(
            stats.non_finite == 0 && stats.max_abs <= bound,
            "{dtype} {case} {what}: {stats} exceeds {bound:e}"
        );
    };
    report(
        "out",
        &cpu::compare_output(&problem, &out, &reference.out),
        tolerance,
    );
    report(
        "lse",
        &cpu::compare_lse(&problem, &lse, &reference.lse),
        softmax.lse,
    );
    report(
        "weights",
        &cpu::compare_weights(&problem, &weights, &reference.weights),
        softmax.weights,
    );

    // Rows that see no key: exactly 0 and -inf; every other row a finite lse. Hidden keys: weight 0.
    let s = problem.shape;
    let st = problem.out_strides;
    let empty: Vec<usize> = (0..s.seq_q)
        .filter(|&i| sees_nothing(&problem, i))
        .collect();
    assert_eq!(empty.len(), empty_rows, "{case}: rows that see no key");
    for b in 0..s.batch {
        for h in 0..s.heads_q {
            for i in 0..s.seq_q {
                let row = (b * s.heads_q + h) * s.seq_q + i;
                if empty.contains(&i) {
                    assert_eq!(lse[row], f32::NEG_INFINITY, "{case} row {i}");
                    for x in 0..s.head_dim {
                        assert_eq!(out[st.offset(b, i, h, x)].to_f32(), 0.0, "{dtype} {case}");
                    }
                } else {
                    assert!(lse[row].is_finite(), "{case} row {i}: lse {}", lse[row]);
                }
                for j in (0..s.seq_k).filter(|&j| hidden(&problem, i, j)) {
                    assert_eq!(
                        weights[row * s.seq_k + j],
                        0.0,
                        "{case} [{b}, {h}, {i}, {j}]"
                    );
                }
            }
        }
    }
    // Padding between strided output rows is untouched.
    let mut written = vec![false; out.len()];
    for b in 0..s.batch {
        for i in 0..s.seq_q {
            for h in 0..s.heads_q {
                for x in 0..s.head_dim {
                    written[st.offset(b, i, h, x)] = true;
                }
            }
        }
    }
    for (n, value) in out.iter().enumerate().filter(|&(n, _)| !written[n]) {
        assert_eq!(value.to_f32(), 7.0, "{case}: padding at {n} overwritten");
    }
    // The allocating entry point agrees bit for bit.
    let again = cpu::attention(
        &problem,
        ForwardOptions::default().with_lse(true).with_weights(true),
        &q,
        &k,
        &v,
    )
    .unwrap();
    assert!(written
        .iter()
        .zip(out.iter().zip(&again.out))
        .all(|(&w, (a, b))| !w || a.to_f32() == b.to_f32()));
    assert_eq!(
        again
            .lse
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    tolerance
}
