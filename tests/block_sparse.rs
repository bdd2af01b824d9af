//! Block-sparse attention (BlockMask) on the emulated flash and naive kernels and the CPU backend,
//! against the f64 reference: every builder (BigBird, Longformer, arbitrary lists), random masks of
//! density 1% to 100%, query blocks with no key block (0, lse -inf), blocks on the causal diagonal,
//! every head dim and dtype, GQA, ragged and paged batches, split-KV; absent blocks are never read by
//! flash (NaN there changes nothing); the plan's reason and refusals.

mod common;

use common::Aligned;
use cuda_attention::cpu::{self, compare, CpuBackend};
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, BigBird, BlockMask, Element, ForwardOptions,
    GqaPacking, KernelChoice, KernelKind, KeyStorage, Metadata, Paging, Ragged, Splits,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::random_inputs as inputs;

/// Which backend runs a case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Flash,
    Naive,
    Cpu,
}

/// Runs `problem` on `backend`, checks out and lse against the f64 reference; returns the output.
fn check<T: Element>(problem: &AttentionProblem, backend: Backend, seed: u64) -> Vec<f32> {
    check_with::<T>(problem, backend, ForwardOptions::default(), seed)
}

fn check_with<T: Element>(
    problem: &AttentionProblem,
    backend: Backend,
    options: ForwardOptions,
    seed: u64,
) -> Vec<f32> {
    let [q, k, v] = inputs::<T>(problem, seed);
    let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
    let options = options.with_lse(true);
    let got = match backend {
        Backend::Flash | Backend::Naive => {
            let kernel = if backend == Backend::Flash {
                KernelChoice::Flash
            } else {
                KernelChoice::Naive
            };
            let options = options.with_kernel(kernel);
            let emulator = Emulator::new();
            let plan = emulator.plan::<T>(problem, options).unwrap();
            if backend == Backend::Flash && problem.block_mask.is_some() {
                assert!(plan.reason().contains("block-sparse"), "{}", plan.reason());
            }
            emulator.forward(problem, options, q, k, v).unwrap()
        }
        Backend::Cpu => CpuBackend::new()
            .forward(problem, options, q, k, v)
            .unwrap(),
    };
    let label = format!(
        "{backend:?} {:?} mask {:?}",
        problem.shape,
        problem.block_mask.as_ref().map(|m| m.density())
    );
    // Rows the mask leaves without keys: exactly 0 and lse -inf, as the reference.
    let lse = got.lse.as_ref().unwrap();
    common::assert_matches_reference(problem, [q, k, v], &got.out, lse, &label);
    got.out.iter().map(|x| x.to_f32()).collect()
}

fn self_attention(seq: usize, heads: usize, heads_kv: usize, d: usize) -> AttentionProblem {
    AttentionProblem::new(AttentionShape::new(1, seq, heads, d).with_heads_kv(heads_kv))
}

#[test]
fn every_builder_matches_the_reference_on_every_backend() {
    let seq = 513;
    let bigbird = BlockMask::bigbird(
        seq,
        64,
        BigBird {
            window: 1,
            global: 1,
            random: 2,
            seed: 3,
        },
    )
    .unwrap();
    let longformer = BlockMask::longformer(seq, 64, 100, &[5, 400]).unwrap();
    // Arbitrary lists, rectangular 128-row query blocks, a row with no block at all.
    let rows: Vec<Vec<usize>> = (0..5)
        .map(|r| match r {
            3 => vec![],
            r => vec![r, (r * 5) % 9, 8],
        })
        .collect();
    let lists = BlockMask::from_rows(128, 64, seq, seq, &rows).unwrap();
    for mask in [bigbird, longformer, lists] {
        let problem = self_attention(seq, 2, 1, 64).with_block_mask(mask);
        for backend in [Backend::Flash, Backend::Naive, Backend::Cpu] {
            check::<f16>(&problem, backend, 1);
        }
    }
}

/// A random mask of about `density` with query blocks `empty_rows` listing nothing.
fn random_mask(seq_q: usize, seq_k: usize, block: usize, density: f64, seed: u64) -> BlockMask {
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, cols) = (seq_q.div_ceil(block), seq_k.div_ceil(block));
    let lists: Vec<Vec<usize>> = (0..rows)
        .map(|_| (0..cols).filter(|_| rng.random_bool(density)).collect())
        .collect();
    BlockMask::from_rows(block, block, seq_q, seq_k, &lists).unwrap()
}

#[test]
fn random_masks_of_every_density_with_causal_and_element_masks() {
    for (i, density) in [0.01, 0.1, 0.3, 0.6, 1.0].into_iter().enumerate() {
        let mask = random_mask(700, 900, 64, density, i as u64);
        // Blocks on the causal diagonal are partly covered: per-element mask inside them.
        let mut problem =
            AttentionProblem::new(AttentionShape::new(1, 700, 2, 128).with_seq_k(900))
                .with_causal(i % 2 == 0)
                .with_block_mask(mask);
        if i == 3 {
            problem = problem.with_softcap(20.0);
        }
        if i == 4 {
            problem = problem.with_window(Some(300), Some(10));
        }
        check::<bf16>(&problem, Backend::Flash, 10 + i as u64);
        check::<bf16>(&problem, Backend::Cpu, 10 + i as u64);
    }
}

#[test]
fn a_dense_mask_changes_no_bit() {
    let problem = self_attention(500, 2, 2, 64).with_causal(true);
    let masked = problem
        .clone()
        .with_block_mask(BlockMask::dense(64, 64, 500, 500).unwrap());
    let plain = check::<f16>(&problem, Backend::Flash, 4);
    let dense = check::<f16>(&masked, Backend::Flash, 4);
    assert!(plain
        .iter()
        .zip(&dense)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn absent_blocks_are_never_read_by_flash() {
    // Key blocks 2 and 5 are listed by no query block: NaN in their K and V changes nothing.
    let (seq, d) = (512, 64);
    let rows: Vec<Vec<usize>> = (0..8)
        .map(|r| {
            (0..8)
                .filter(|&c| c != 2 && c != 5 && (c + r) % 3 != 0)
                .collect()
        })
        .collect();
    let mask = BlockMask::from_rows(64, 64, seq, seq, &rows).unwrap();
    let problem = self_attention(seq, 2, 1, d).with_block_mask(mask);
    let [q, k, v] = inputs::<bf16>(&problem, 5);
    let (mut k, mut v) = (k.as_slice().to_vec(), v.as_slice().to_vec());
    for j in (2 * 64..3 * 64).chain(5 * 64..6 * 64) {
        for x in 0..d {
            let at = problem.k_strides.offset(0, j, 0, x);
            k[at] = bf16::NAN;
            v[at] = bf16::NAN;
        }
    }
    let (k, v) = (Aligned::from_slice(&k), Aligned::from_slice(&v));
    let options = ForwardOptions::default().with_kernel(KernelChoice::Flash);
    let got = Emulator::new()
        .forward(&problem, options, q.as_slice(), k.as_slice(), v.as_slice())
        .unwrap();
    assert!(got.out.iter().all(|x| x.to_f32().is_finite()));
    let expected = cpu::reference(&problem, q.as_slice(), k.as_slice(), v.as_slice()).unwrap();
    let allowed = compare::tolerance(
        &problem,
        q.as_slice(),
        k.as_slice(),
        v.as_slice(),
        &expected,
    )
    .unwrap();
    let error = compare::compare_output(&problem, &got.out, &expected.out);
    assert!(error.max_abs <= allowed, "{error}");
}

#[test]
fn every_head_dim_and_dtype() {
    for d in [32, 64, 96, 128, 160, 192, 224, 256] {
        let mask = random_mask(200, 300, 64, 0.5, d as u64);
        let problem = AttentionProblem::new(
            AttentionShape::new(1, 200, 4, d)
                .with_seq_k(300)
                .with_heads_kv(2),
        )
        .with_causal(true)
        .with_block_mask(mask);
        check::<f16>(&problem, Backend::Flash, d as u64);
        check::<bf16>(&problem, Backend::Flash, d as u64 + 1);
    }
}

#[test]
fn split_kv_and_gqa_with_a_mask() {
    let mask = BlockMask::bigbird(
        1000,
        64,
        BigBird {
            window: 1,
            global: 2,
            random: 1,
            seed: 9,
        },
    )
    .unwrap();
    let problem = self_attention(1000, 4, 1, 128).with_block_mask(mask);
    let options = ForwardOptions::default().with_splits(Splits::Fixed(3));
    check_with::<bf16>(&problem, Backend::Flash, options, 6);
    // GQA packing is off with a mask: Auto runs unpacked, On says why not.
    let plan = Emulator::new()
        .plan::<bf16>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(plan.gqa_packing(), None);
    let refused = Emulator::new().plan::<bf16>(
        &problem,
        ForwardOptions::default().with_gqa_packing(GqaPacking::On),
    );
    assert!(
        matches!(&refused, Err(AttentionError::KernelUnsupported { reason, .. }) if reason.contains("block-sparse")),
        "{refused:?}"
    );
}

#[test]
fn ragged_and_paged_batches_take_the_mask_per_sequence() {
    let (batch, bound) = (3usize, 300usize);
    let mask = random_mask(bound, bound, 64, 0.4, 77);
    let lens = [300usize, 130, 1];
    let mut cu = vec![0i32];
    for &l in &lens {
        cu.push(cu.last().unwrap() + l as i32);
    }
    let total = *cu.last().unwrap() as usize;
    let paging = Paging::new(batch * bound.div_ceil(64), 64, bound);
    for keys in [
        KeyStorage::Packed { total_k: total },
        KeyStorage::Paged(paging),
    ] {
        let problem = AttentionProblem::ragged(
            AttentionShape::new(batch, bound, 2, 64),
            Ragged {
                total_q: total,
                keys,
                seqused_k: matches!(keys, KeyStorage::Paged(_)),
            },
        )
        .with_causal(true)
        .with_block_mask(mask.clone());
        let [q, k, v] = inputs::<f16>(&problem, 8);
        let used: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let table: Vec<i32> = (0..batch * paging.block_table_stride)
            .map(|i| i as i32)
            .collect();
        let paged = matches!(keys, KeyStorage::Paged(_));
        let metadata = Metadata {
            cu_seqlens_q: &cu,
            cu_seqlens_k: (!paged).then_some(&cu[..]),
            seqused_k: paged.then_some(&used[..]),
            block_table: paged.then_some(&table[..]),
        };
        let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
        let expected = cpu::reference_ragged(&problem, q, k, v, &metadata).unwrap();
        let allowed = cpu::ragged::tolerance_ragged(&problem, &metadata, q, k, v).unwrap();
        let options = ForwardOptions::default();
        let flash = Emulator::new()
            .forward_ragged(&problem, options, q, k, v, &metadata)
            .unwrap();
        let host = CpuBackend::new()
            .forward_ragged(&problem, options, q, k, v, &metadata)
            .unwrap();
        for (name, out) in [("flash", &flash.out), ("cpu", &host.out)] {
            let out: Vec<f32> = out.iter().map(|x| x.to_f32()).collect();
            let error = compare::compare_contiguous(&out, &expected.out);
            assert!(
                error.max_abs <= allowed,
                "{keys:?} {name}: {error} (allowed {allowed:.3e})"
            );
        }
    }
}

#[test]
fn the_plan_names_the_mask_and_refuses_what_cannot_honour_it() {
    let mask = BlockMask::longformer(256, 64, 64, &[0]).unwrap();
    let problem = self_attention(256, 2, 2, 64).with_block_mask(mask.clone());
    let emulator = Emulator::new();
    let plan = emulator
        .plan::<f16>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(plan.kernel(), KernelKind::Flash);
    assert!(
        plan.reason()
            .contains("block-sparse: 14 of 16 blocks of 64x64 listed"),
        "{}",
        plan.reason()
    );
    // The f32 flash path does not read masks: Auto falls back to naive and says why; Flash is refused.
    let plan = emulator
        .plan::<f32>(&problem, ForwardOptions::default())
        .unwrap();
    assert_eq!(plan.kernel(), KernelKind::Naive);
    assert!(plan.reason().contains("block-sparse"), "{}", plan.reason());
    check::<f32>(&problem, Backend::Naive, 2);
    let refused = emulator.plan::<f32>(
        &problem,
        ForwardOptions::default().with_kernel(KernelChoice::Flash),
    );
    assert!(matches!(
        refused,
        Err(AttentionError::KernelUnsupported {
            kernel: "flash",
            ..
        })
    ));
    // A mask smaller than the problem.
    let small = self_attention(320, 2, 2, 64).with_block_mask(mask);
    assert!(matches!(
        small.validate(),
        Err(AttentionError::InvalidArgument(m)) if m.contains("block mask covers 256 x 256")
    ));
}

#[test]
fn visible_keys_counts_what_visible_sees() {
    let mut rng = StdRng::seed_from_u64(41);
    for (seq_q, seq_k, causal, window) in [
        (300usize, 300usize, false, (None, None)),
        (300, 300, true, (None, None)),
        (200, 333, true, (Some(70), None)),
        (333, 200, false, (Some(5), Some(90))),
    ] {
        let rows: Vec<Vec<usize>> = (0..seq_q.div_ceil(64))
            .map(|_| {
                (0..seq_k.div_ceil(64))
                    .filter(|_| rng.random_bool(0.4))
                    .collect()
            })
            .collect();
        let mask = BlockMask::from_rows(64, 64, seq_q, seq_k, &rows).unwrap();
        let problem = AttentionProblem::new(AttentionShape::new(1, seq_q, 1, 64).with_seq_k(seq_k))
            .with_causal(causal)
            .with_window(window.0, window.1);
        let masked = problem.clone().with_block_mask(mask);
        for i in 0..seq_q {
            let count = |p: &AttentionProblem| (0..seq_k).filter(|&j| p.visible(i, j)).count();
            assert_eq!(masked.visible_keys(i), count(&masked), "row {i}");
            assert_eq!(problem.visible_keys(i), count(&problem), "row {i}");
        }
    }
}
