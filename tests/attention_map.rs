//! Attention maps (`cuda_attention::attention_map`) on the emulator (the `attention_map_*` kernels after the
//! flash forward) and the CPU backend, against pooling the full weights: the f64 reference's, with the
//! tolerance rule of the kernel notes (at most twice the error of the naive kernel's f32 weights pooled the
//! same way, plus the f32 rounding of summing a bin's weights in another order), for every mask kind,
//! per head and mean over heads, sums and means, bins that do not divide the sequences.

mod common;

use common::Aligned;
use cuda_attention::attention_map::{BinReduce, HostAttentionMap, MapHeads, MapSpec};
use cuda_attention::cpu::{self, CpuBackend};
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, Element, ForwardOptions, KernelChoice,
    Layout, Tensor,
};
use half::bf16;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// One shape and mask, and the map asked of it.
#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    spec: MapSpec,
    mask: fn(AttentionProblem) -> AttentionProblem,
}

impl Case {
    fn problem(&self) -> AttentionProblem {
        let shape = AttentionShape::new(self.batch, self.seq_q, self.heads_q, self.head_dim)
            .with_seq_k(self.seq_k)
            .with_heads_kv(self.heads_kv);
        (self.mask)(AttentionProblem::new(shape))
    }
}

fn unmasked(p: AttentionProblem) -> AttentionProblem {
    p
}

fn cases() -> Vec<Case> {
    let case = |name, (batch, seq_q, seq_k), (heads_q, heads_kv, head_dim), spec, mask| Case {
        name,
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
        spec,
        mask,
    };
    let per_head_sum = |bq, bk| MapSpec::new(bq, bk);
    let mean_mean = |bq, bk| {
        MapSpec::new(bq, bk)
            .with_heads(MapHeads::Mean)
            .with_reduce(BinReduce::Mean)
    };
    vec![
        case(
            "none",
            (1, 33, 33),
            (2, 2, 16),
            per_head_sum(5, 7),
            unmasked,
        ),
        case(
            "one query",
            (1, 1, 47),
            (2, 2, 8),
            per_head_sum(1, 4),
            unmasked,
        ),
        case("causal", (2, 31, 31), (2, 2, 16), mean_mean(4, 4), |p| {
            p.with_causal(true)
        }),
        case(
            "causal, seq_q < seq_k",
            (1, 17, 45),
            (2, 2, 8),
            per_head_sum(3, 10),
            |p| p.with_causal(true),
        ),
        case(
            "causal, seq_q > seq_k (empty rows)",
            (1, 45, 17),
            (1, 1, 8),
            mean_mean(6, 5),
            |p| p.with_causal(true),
        ),
        case("window", (1, 40, 40), (2, 2, 16), per_head_sum(6, 6), |p| {
            p.with_window(Some(5), Some(3))
        }),
        case(
            "causal window, mean bins",
            (1, 50, 50),
            (2, 2, 8),
            MapSpec::new(7, 9).with_reduce(BinReduce::Mean),
            |p| p.with_causal(true).with_window(Some(9), None),
        ),
        case("soft cap", (1, 33, 20), (2, 2, 16), mean_mean(5, 3), |p| {
            p.with_softcap(0.5).with_scale(1.5)
        }),
        case("ALiBi", (1, 36, 36), (2, 2, 16), per_head_sum(4, 9), |p| {
            p.with_alibi_slopes(vec![0.25f32, 0.0625]).with_causal(true)
        }),
        case("sinks", (1, 29, 29), (2, 2, 8), per_head_sum(4, 4), |p| {
            p.with_sinks(vec![0.5f32, -1.0]).with_causal(true)
        }),
        case(
            "GQA, mean over heads",
            (2, 24, 30),
            (4, 2, 16),
            MapSpec::new(5, 5).with_heads(MapHeads::Mean),
            unmasked,
        ),
        case(
            "bhsd strides",
            (2, 21, 21),
            (2, 1, 16),
            per_head_sum(2, 3),
            |p| p.with_layout(Layout::Bhsd),
        ),
        case(
            "every weight (1 x 1 bins)",
            (1, 9, 13),
            (1, 1, 8),
            per_head_sum(1, 1),
            |p| p.with_causal(true),
        ),
        case(
            "one bin (bins larger than the sequence)",
            (1, 19, 23),
            (2, 2, 8),
            mean_mean(64, 64),
            unmasked,
        ),
        case(
            "ragged 113",
            (1, 113, 113),
            (1, 1, 32),
            per_head_sum(16, 10),
            |p| p.with_causal(true),
        ),
        case(
            "block-sparse, causal, a query block with no key block",
            (1, 200, 200),
            (2, 1, 32),
            per_head_sum(16, 24),
            |p| {
                let rows = [vec![0], vec![], vec![0, 1, 2], vec![1, 3]];
                let mask = cuda_attention::BlockMask::from_rows(64, 64, 200, 200, &rows).unwrap();
                p.with_causal(true).with_block_mask(mask)
            },
        ),
    ]
}

/// The f64 reference's weights `[batch, heads_q, seq_q, seq_k]` pooled as `spec` says: (values, profile).
fn pool(problem: &AttentionProblem, spec: &MapSpec, weights: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let s = problem.shape;
    let layout = spec.layout(problem).unwrap();
    let mut values = vec![0.0f64; layout.values];
    let mut profile = vec![0.0f64; layout.profile];
    let heads_factor = if spec.heads == MapHeads::Mean {
        1.0 / s.heads_q as f64
    } else {
        1.0
    };
    for b in 0..s.batch {
        for h in 0..s.heads_q {
            let map = if spec.heads == MapHeads::Mean {
                b
            } else {
                b * s.heads_q + h
            };
            for i in 0..s.seq_q {
                for j in 0..s.seq_k {
                    let w = weights[((b * s.heads_q + h) * s.seq_q + i) * s.seq_k + j];
                    let (bin_row, bin_col) = (i / spec.bin_q, j / spec.bin_k);
                    let positions = if spec.reduce == BinReduce::Mean {
                        let rows = ((bin_row + 1) * spec.bin_q).min(s.seq_q) - bin_row * spec.bin_q;
                        let cols = ((bin_col + 1) * spec.bin_k).min(s.seq_k) - bin_col * spec.bin_k;
                        (rows * cols) as f64
                    } else {
                        1.0
                    };
                    values[(map * layout.bins_q + bin_row) * layout.bins_k + bin_col] +=
                        w * heads_factor / positions;
                    profile[(b * s.heads_q + h) * s.seq_k + j] += w;
                }
            }
        }
    }
    (values, profile)
}

/// Largest absolute difference, infinite for a length mismatch or a non-finite value.
fn max_error(actual: &[f32], expected: &[f64]) -> (f64, usize) {
    if actual.len() != expected.len() {
        return (f64::INFINITY, 0);
    }
    let mut worst = (0.0f64, 0usize);
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let error = (f64::from(a) - e).abs();
        let error = if error.is_finite() {
            error
        } else {
            f64::INFINITY
        };
        if error > worst.0 {
            worst = (error, index);
        }
    }
    worst
}

fn max_error_f64(actual: &[f64], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f64::max)
}

/// The tolerance rule: twice the error of the naive kernel's weights pooled the same way, plus the f32
/// rounding of summing up to `terms` positive weights (relative `terms * 2^-24` of the largest value).
fn bound(baseline: f64, expected: &[f64], terms: usize) -> f64 {
    let magnitude = expected.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    2.0 * baseline + (terms as f64 + 8.0) * f64::from(f32::EPSILON) * (1.0 + magnitude)
}

type MapFn<'a, T> = dyn Fn(&AttentionProblem, &MapSpec, &[T], &[T], &[T]) -> cuda_attention::Result<HostAttentionMap>
    + 'a;

fn check_backend<T: Element>(label: &str, seed: u64, run: &MapFn<'_, T>) {
    for (index, case) in cases().iter().enumerate() {
        let problem = case.problem();
        let mut rng = StdRng::seed_from_u64(seed + index as u64);
        let input = |tensor, rng: &mut StdRng| {
            Aligned::<T>::random(problem.required_len(tensor).unwrap(), 1.0, rng)
        };
        let (q, k, v) = (
            input(Tensor::Q, &mut rng),
            input(Tensor::K, &mut rng),
            input(Tensor::V, &mut rng),
        );
        let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
        let reference = cpu::reference(&problem, q, k, v).unwrap();
        let (values, profile) = pool(&problem, &case.spec, &reference.weights);
        // The naive kernel's f32 weights, pooled in f64: the baseline of the rule.
        let naive = Emulator::new()
            .forward(
                &problem,
                ForwardOptions::default()
                    .with_kernel(KernelChoice::Naive)
                    .with_weights(true),
                q,
                k,
                v,
            )
            .unwrap();
        let naive_weights: Vec<f64> = naive
            .weights
            .unwrap()
            .iter()
            .map(|&w| f64::from(w))
            .collect();
        let (naive_values, naive_profile) = pool(&problem, &case.spec, &naive_weights);

        let map = run(&problem, &case.spec, q, k, v)
            .unwrap_or_else(|e| panic!("{label} {}: {e}", case.name));
        let layout = case.spec.layout(&problem).unwrap();
        assert_eq!(
            (map.batch, map.heads, map.bins_q, map.bins_k),
            (layout.batch, layout.heads, layout.bins_q, layout.bins_k),
            "{label} {}: sizes",
            case.name
        );
        let s = problem.shape;
        let bin_terms = case.spec.bin_q
            * case.spec.bin_k
            * if case.spec.heads == MapHeads::Mean {
                s.heads_q
            } else {
                1
            };
        for (what, actual, expected, naive, terms) in [
            ("map", &map.values, &values, &naive_values, bin_terms),
            (
                "key profile",
                &map.key_profile,
                &profile,
                &naive_profile,
                s.seq_q,
            ),
        ] {
            let (error, at) = max_error(actual, expected);
            let allowed = bound(max_error_f64(naive, expected), expected, terms);
            assert!(
                error <= allowed,
                "{label} {} ({case:?}): {what} error {error:.3e} at index {at} (got {}, expected {}) exceeds \
                 {allowed:.3e}",
                case.name,
                actual.get(at).copied().unwrap_or(f32::NAN),
                expected.get(at).copied().unwrap_or(f64::NAN),
            );
        }
    }
}

#[test]
fn emulated_kernel_matches_pooled_reference_weights_f32() {
    let emulator = Emulator::new();
    check_backend::<f32>("emulator f32", 10, &|p, spec, q, k, v| {
        emulator.attention_map(p, spec, q, k, v)
    });
}

#[test]
fn emulated_kernel_matches_pooled_reference_weights_bf16() {
    let emulator =
        Emulator::new().with_schedule(cuda_attention::emulator::Schedule::Random { seed: 3 });
    check_backend::<bf16>("emulator bf16", 20, &|p, spec, q, k, v| {
        emulator.attention_map(p, spec, q, k, v)
    });
}

#[test]
fn cpu_backend_matches_pooled_reference_weights() {
    check_backend::<f32>("cpu f32", 30, &|p, spec, q, k, v| {
        CpuBackend::new().attention_map(p, spec, q, k, v)
    });
    check_backend::<bf16>("cpu bf16", 40, &|p, spec, q, k, v| {
        CpuBackend::new().attention_map(p, spec, q, k, v)
    });
}

/// Each query row's weights sum to 1 without sinks, so a head's key profile sums to the rows that see a
/// key; with a sink each row loses exactly exp(sink - lse).
#[test]
fn key_profile_sums_to_the_rows_that_see_a_key() {
    let problem =
        AttentionProblem::new(AttentionShape::new(1, 60, 1, 16).with_seq_k(40)).with_causal(true);
    let mut rng = StdRng::seed_from_u64(5);
    let q = Aligned::<f32>::random(problem.required_len(Tensor::Q).unwrap(), 1.0, &mut rng);
    let k = Aligned::<f32>::random(problem.required_len(Tensor::K).unwrap(), 1.0, &mut rng);
    let spec = MapSpec::new(8, 8);
    let map = CpuBackend::new()
        .attention_map(&problem, &spec, q.as_slice(), k.as_slice(), k.as_slice())
        .unwrap();
    // 60 queries over 40 keys, causal bottom-right: the first 20 rows see nothing.
    let total: f32 = map.key_profile.iter().sum();
    assert!(
        (total - 40.0).abs() < 1e-4,
        "profile sums to {total}, expected 40"
    );
    let total: f32 = map.values.iter().sum();
    assert!(
        (total - 40.0).abs() < 1e-4,
        "map sums to {total}, expected 40"
    );
    // Bin rows 0 and 1 hold rows 0..16: no key seen.
    assert!(map.values[..2 * map.bins_k].iter().all(|&x| x == 0.0));
}

#[test]
fn with_bins_cuts_the_sequences_into_at_most_that_many_bins() {
    let shape = AttentionShape::new(1, 100, 1, 8).with_seq_k(7);
    let spec = MapSpec::with_bins(&shape, 8, 512).unwrap();
    assert_eq!((spec.bin_q, spec.bin_k), (13, 1));
    let layout = spec.layout(&AttentionProblem::new(shape)).unwrap();
    assert_eq!((layout.bins_q, layout.bins_k), (8, 7));
}

#[test]
fn bad_specs_are_typed_errors() {
    let shape = AttentionShape::new(1, 16, 2, 8);
    let problem = AttentionProblem::new(shape);
    let invalid = |result: cuda_attention::Result<_>, words: &str| match result {
        Err(AttentionError::InvalidMapSpec { detail }) => {
            assert!(detail.contains(words), "{detail}")
        }
        other => panic!("expected InvalidMapSpec ({words}), got {other:?}"),
    };
    invalid(
        MapSpec::with_bins(&shape, 0, 4).map(|_| ()),
        "at least one bin",
    );
    invalid(
        MapSpec::new(0, 4).layout(&problem).map(|_| ()),
        "bin_q is 0",
    );
    invalid(
        MapSpec::new(4, 0).layout(&problem).map(|_| ()),
        "bin_k is 0",
    );
    let q = vec![0.0f32; problem.required_len(Tensor::Q).unwrap()];
    invalid(
        CpuBackend::new()
            .attention_map(&problem, &MapSpec::new(0, 1), &q, &q, &q)
            .map(|_| ()),
        "bin_q is 0",
    );
    invalid(
        Emulator::new()
            .attention_map(&problem, &MapSpec::new(1, 0), &q, &q, &q)
            .map(|_| ()),
        "bin_k is 0",
    );
    // Ragged batches are refused with what to do instead.
    let ragged = AttentionProblem::ragged(
        AttentionShape::new(2, 16, 2, 8),
        cuda_attention::Ragged {
            total_q: 20,
            keys: cuda_attention::KeyStorage::Packed { total_k: 20 },
            seqused_k: false,
        },
    );
    invalid(
        MapSpec::new(4, 4).layout(&ragged).map(|_| ()),
        "dense batches",
    );
    // A bad problem is the problem's own error; short inputs are BufferTooSmall.
    let bad = AttentionProblem::new(AttentionShape::new(1, 16, 3, 8).with_heads_kv(2));
    assert!(matches!(
        MapSpec::new(1, 1).layout(&bad),
        Err(AttentionError::HeadsNotMultiple { .. })
    ));
    assert!(matches!(
        CpuBackend::new().attention_map(&problem, &MapSpec::new(4, 4), &q[1..], &q, &q),
        Err(AttentionError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        Emulator::new().attention_map(&problem, &MapSpec::new(4, 4), &q, &q[1..], &q),
        Err(AttentionError::BufferTooSmall { .. })
    ));
}

/// No keys (seq_k = 0): an empty map and profile, on both backends.
#[test]
fn no_keys_give_an_empty_map() {
    let problem = AttentionProblem::new(AttentionShape::new(1, 5, 2, 8).with_seq_k(0));
    let q = vec![0.5f32; problem.required_len(Tensor::Q).unwrap()];
    let spec = MapSpec::new(2, 2);
    let cpu = CpuBackend::new()
        .attention_map(&problem, &spec, &q, &[], &[])
        .unwrap();
    let emulated = Emulator::new()
        .attention_map(&problem, &spec, &q, &[], &[])
        .unwrap();
    for map in [cpu, emulated] {
        assert_eq!(
            (
                map.bins_q,
                map.bins_k,
                map.values.len(),
                map.key_profile.len()
            ),
            (3, 0, 0, 0)
        );
    }
}

/// The kernel is registered as its own family, for every dtype and head dim.
#[test]
fn map_kernels_are_registered() {
    use cuda_attention::registry::{find, KernelFamily};
    for dtype in [
        cuda_attention::DType::F32,
        cuda_attention::DType::F16,
        cuda_attention::DType::Bf16,
    ] {
        for head_dim in [1, 64, 256] {
            assert!(
                find(KernelFamily::AttentionMap, dtype, head_dim).is_some(),
                "{dtype} {head_dim}"
            );
        }
    }
}
