//! Split-KV (flash-decoding) on the emulated kernels against the f64 reference: decode shapes (seq_q 1, 2,
//! 4, 16; contexts 1, 63, 64, 65, 1000, 4097; GQA groups 1, 4, 7, 8), split counts 1..16 including more
//! splits than key tiles (empty splits), causal with seq_q > 1, sinks, dense, ragged and paged batches,
//! bit-identical reruns for a fixed split count; the split heuristic and the plan's reason.

mod common;

use common::Aligned;
use cuda_attention::cpu::{self, compare};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::plan::{split_heuristic, DeviceCaps};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Element, ForwardOptions, KeyStorage,
    Metadata, Paging, Plan, Ragged, Splits, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Runs `problem` with `splits` on the emulator and checks out and lse against the reference.
fn check_dense<T: Element>(problem: &AttentionProblem, splits: Splits, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let len = |t| problem.required_len(t).unwrap();
    let q = Aligned::<T>::random(len(Tensor::Q), 1.0, &mut rng);
    let k = Aligned::<T>::random(len(Tensor::K), 1.0, &mut rng);
    let v = Aligned::<T>::random(len(Tensor::V), 1.0, &mut rng);
    let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
    let options = ForwardOptions::default().with_lse(true).with_splits(splits);
    let emulator = Emulator::new();
    let plan = emulator.plan::<T>(problem, options).unwrap();
    let label = format!("{:?} splits {splits:?} -> {}", problem.shape, plan.splits());
    let got = emulator.forward(problem, options, q, k, v).unwrap();
    let expected = cpu::reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let error = compare::compare_output(problem, &got.out, &expected.out);
    assert!(
        error.max_abs <= allowed,
        "{label}: {error} (allowed {allowed:.3e})"
    );
    let lse_allowed = compare::softmax_tolerance(problem, q, k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, got.lse.as_ref().unwrap(), &expected.lse);
    assert!(lse_error.max_abs <= lse_allowed, "{label}: lse {lse_error}");
    plan.splits()
}

use common::decode_problem as decode;

#[test]
fn decode_shapes_match_the_reference_for_every_split_count() {
    // Contexts around the 64-key tile of d64, and split counts beyond the tiles (empty splits).
    for (context, splits) in [
        (1, 4),
        (63, 2),
        (64, 3),
        (65, 2),
        (65, 16),
        (1000, 7),
        (1000, 16),
    ] {
        let problem = decode(2, 1, context, 8, 2, 64);
        assert_eq!(
            check_dense::<f16>(&problem, Splits::Fixed(splits), context as u64),
            splits
        );
    }
    // seq_q 2, 4, 16 with the causal mask (each query row sees its own prefix), GQA groups 1, 7, 8.
    for (seq_q, heads_q, heads_kv) in [(2, 4, 4), (4, 7, 1), (16, 8, 1)] {
        let problem = decode(1, seq_q, 300, heads_q, heads_kv, 128).with_causal(true);
        check_dense::<bf16>(&problem, Splits::Fixed(5), seq_q as u64);
    }
}

#[test]
fn a_long_context_splits_on_its_own() {
    let problem = decode(1, 1, 4097, 8, 1, 64).with_causal(true);
    let splits = check_dense::<bf16>(&problem, Splits::Auto, 7);
    assert!(splits > 1, "the heuristic did not split a batch-1 decode");
    let capped = check_dense::<bf16>(&problem, Splits::AtMost(3), 8);
    assert_eq!(capped, 3.min(splits));
}

#[test]
fn sinks_and_masks_are_merged_once() {
    let problem = decode(2, 3, 200, 4, 2, 64)
        .with_causal(true)
        .with_window(Some(100), Some(0))
        .with_softcap(10.0)
        .with_sinks(vec![0.5, -2.0, 4.0, 0.0]);
    check_dense::<f16>(&problem, Splits::Fixed(4), 3);
    // Rows that see no key (seq_q > seq_k, causal) in every split: 0 with lse = the sink.
    let problem = decode(1, 4, 2, 2, 2, 64)
        .with_causal(true)
        .with_sinks(vec![1.5, -0.5]);
    check_dense::<f16>(&problem, Splits::Fixed(3), 4);
}

#[test]
fn ragged_and_paged_batches_split() {
    let mut rng = StdRng::seed_from_u64(40);
    let (batch, d, page_size, max_k) = (3usize, 64usize, 16usize, 200usize);
    let lens = [(1usize, 200usize), (2, 17), (1, 0)];
    let paging = Paging::new(batch * max_k.div_ceil(page_size), page_size, max_k);
    for keys in [
        KeyStorage::Packed {
            total_k: batch * max_k,
        },
        KeyStorage::Paged(paging),
    ] {
        let total_q = 5;
        let problem = AttentionProblem::ragged(
            AttentionShape::new(batch, 2, 4, d)
                .with_seq_k(max_k)
                .with_heads_kv(1),
            Ragged {
                total_q,
                keys,
                seqused_k: true,
            },
        )
        .with_causal(true);
        let q = Aligned::<f16>::random(problem.required_len(Tensor::Q).unwrap(), 1.0, &mut rng);
        let k = Aligned::<f16>::random(problem.required_len(Tensor::K).unwrap(), 1.0, &mut rng);
        let v = Aligned::<f16>::random(problem.required_len(Tensor::V).unwrap(), 1.0, &mut rng);
        let cu_q = [0, 1, 3, 4];
        let cu_k: Vec<i32> = (0..=batch as i32).map(|b| b * max_k as i32).collect();
        let used: Vec<i32> = lens.iter().map(|l| l.1 as i32).collect();
        let table: Vec<i32> = (0..batch * paging.block_table_stride)
            .map(|i| i as i32)
            .collect();
        let paged = matches!(keys, KeyStorage::Paged(_));
        let metadata = Metadata {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: (!paged).then_some(&cu_k[..]),
            seqused_k: Some(&used),
            block_table: paged.then_some(&table[..]),
        };
        let options = ForwardOptions::default()
            .with_lse(true)
            .with_splits(Splits::Fixed(6));
        let emulator = Emulator::new();
        let got = emulator
            .forward_ragged(
                &problem,
                options,
                q.as_slice(),
                k.as_slice(),
                v.as_slice(),
                &metadata,
            )
            .unwrap();
        let expected = cpu::reference_ragged(
            &problem,
            q.as_slice(),
            k.as_slice(),
            v.as_slice(),
            &metadata,
        )
        .unwrap();
        let rows = cu_q[batch] as usize * 4 * d;
        let got_out: Vec<f32> = got.out[..rows].iter().map(|x| x.to_f32()).collect();
        let error = compare::compare_contiguous(&got_out, &expected.out[..rows]);
        let allowed = cuda_attention::cpu::ragged::tolerance_ragged(
            &problem,
            &metadata,
            q.as_slice(),
            k.as_slice(),
            v.as_slice(),
        )
        .unwrap();
        assert!(
            error.max_abs <= allowed,
            "{keys:?}: {error} (allowed {allowed:.3e})"
        );
        // The row past the last sequence is never written (zero-filled by forward).
        assert!(got.out[rows..].iter().all(|x| x.to_f32() == 0.0));
    }
}

#[test]
fn fixed_splits_rerun_bit_identically() {
    let problem = decode(2, 1, 777, 8, 2, 128);
    let mut rng = StdRng::seed_from_u64(50);
    let len = |t| problem.required_len(t).unwrap();
    let q = Aligned::<bf16>::random(len(Tensor::Q), 1.0, &mut rng);
    let k = Aligned::<bf16>::random(len(Tensor::K), 1.0, &mut rng);
    let v = Aligned::<bf16>::random(len(Tensor::V), 1.0, &mut rng);
    let options = ForwardOptions::default()
        .with_lse(true)
        .with_splits(Splits::Fixed(9));
    let run = |schedule| {
        Emulator::new()
            .with_schedule(schedule)
            .forward(&problem, options, q.as_slice(), k.as_slice(), v.as_slice())
            .unwrap()
    };
    let (a, b) = (run(Schedule::RoundRobin), run(Schedule::Random { seed: 5 }));
    assert!(a
        .out
        .iter()
        .zip(&b.out)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a
        .lse
        .unwrap()
        .iter()
        .zip(&b.lse.unwrap())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn the_heuristic_splits_only_a_grid_that_does_not_fill_the_device() {
    // A full grid: no split.
    assert_eq!(split_heuristic(400, 132, 64, 128), 1);
    assert_eq!(split_heuristic(212, 132, 64, 128), 1); // 212 >= 0.8 * 264
                                                       // One key tile: nothing to split.
    assert_eq!(split_heuristic(8, 132, 1, 128), 1);
    // Batch 1, 8 heads on 132 SMs (264 slots): 33 splits would fill one wave exactly (efficiency 1); the
    // smallest count within 85% of that is 29 (232 / 264 = 0.88).
    assert_eq!(split_heuristic(8, 132, 512, 128), 29);
    // The cap and the key tiles bound it.
    assert_eq!(split_heuristic(8, 132, 512, 4), 4);
    assert!(split_heuristic(8, 132, 5, 128) <= 5);
}

#[test]
fn the_plan_says_how_many_splits_and_why() {
    let caps = DeviceCaps {
        compute_capability: (9, 0),
        shared_memory_per_block_optin: 227 * 1024,
        multiprocessors: 132,
    };
    let problem = decode(1, 1, 32768, 32, 8, 128);
    let plan = Plan::new(&problem, DType::Bf16, ForwardOptions::default(), caps).unwrap();
    assert!(plan.splits() > 1);
    assert!(plan.reason().contains("split-KV"), "{}", plan.reason());
    assert!(plan.workspace_bytes() > 0);
    assert_eq!(plan.launches().len(), 2, "the flash launch and the combine");
    // A prefill that fills the device does not split.
    let prefill = decode(4, 4096, 4096, 32, 8, 128);
    let plan = Plan::new(&prefill, DType::Bf16, ForwardOptions::default(), caps).unwrap();
    assert_eq!(plan.splits(), 1);
    assert!(!plan.reason().contains("split-KV"));
    // Fixed counts are checked.
    let bad = Plan::new(
        &problem,
        DType::Bf16,
        ForwardOptions::default().with_splits(Splits::Fixed(0)),
        caps,
    );
    assert!(matches!(bad, Err(AttentionError::InvalidArgument(m)) if m.contains("splits")));
    let f32_split = Plan::new(
        &problem,
        DType::F32,
        ForwardOptions::default().with_splits(Splits::Fixed(2)),
        caps,
    );
    assert!(matches!(
        f32_split,
        Err(AttentionError::KernelUnsupported {
            kernel: "flash",
            ..
        })
    ));
}
