//! GQA packing (decode): the query heads that share a key/value head run as rows of one query tile, on
//! the emulated flash kernels against the f64 reference: seq_q 1, 2, 4, 16; contexts 1, 63, 64, 65, 1000,
//! 4097; groups 4, 7, 8; causal with seq_q > 1, the window, soft cap, ALiBi and sinks (each row's own
//! position and head); strided layouts; dense, ragged and paged batches, with and without split-KV. At one
//! split a packed run equals the unpacked one bit for bit: each row's arithmetic is the same, only the
//! tile it shares changes. The plan: when Auto packs, what the reason says, On and Off.

mod common;

use common::Aligned;
use cuda_attention::cpu::{self, compare};
use cuda_attention::emulator::Emulator;
use cuda_attention::plan::{packs_gqa, DeviceCaps};
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DType, Element, ForwardOptions, GqaPacking,
    KeyStorage, Layout, Metadata, Paging, Plan, Ragged, Splits, Tensor,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn decode(
    batch: usize,
    seq_q: usize,
    context: usize,
    heads_q: usize,
    heads_kv: usize,
    d: usize,
) -> AttentionProblem {
    AttentionProblem::new(
        AttentionShape::new(batch, seq_q, heads_q, d)
            .with_seq_k(context)
            .with_heads_kv(heads_kv),
    )
}

/// Random q, k, v of `problem`.
fn inputs<T: Element>(problem: &AttentionProblem, seed: u64) -> [Aligned<T>; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    [Tensor::Q, Tensor::K, Tensor::V]
        .map(|t| Aligned::<T>::random(problem.required_len(t).unwrap(), 1.0, &mut rng))
}

/// Runs `problem` on the emulator with `options` (and the lse), checks out and lse against the f64
/// reference, and returns the plan's packing and splits with the output and lse bits.
fn check_dense<T: Element>(
    problem: &AttentionProblem,
    options: ForwardOptions,
    seed: u64,
) -> (Option<usize>, usize, Vec<u32>) {
    let [q, k, v] = inputs::<T>(problem, seed);
    let (q, k, v) = (q.as_slice(), k.as_slice(), v.as_slice());
    let options = options.with_lse(true);
    let emulator = Emulator::new();
    let plan = emulator.plan::<T>(problem, options).unwrap();
    let label = format!("{:?} {options:?}: {}", problem.shape, plan.reason());
    let got = emulator.forward(problem, options, q, k, v).unwrap();
    let expected = cpu::reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let error = compare::compare_output(problem, &got.out, &expected.out);
    assert!(error.max_abs <= allowed, "{label}: {error} (allowed {allowed:.3e})");
    let lse = got.lse.unwrap();
    let lse_allowed = compare::softmax_tolerance(problem, q, k).unwrap().lse;
    let lse_error = compare::compare_lse(problem, &lse, &expected.lse);
    assert!(lse_error.max_abs <= lse_allowed, "{label}: lse {lse_error}");
    let bits = got
        .out
        .iter()
        .map(|x| x.to_f32().to_bits())
        .chain(lse.iter().map(|x| x.to_bits()))
        .collect();
    (plan.gqa_packing(), plan.splits(), bits)
}

#[test]
fn packed_decode_shapes_match_the_reference() {
    let on = ForwardOptions::default().with_gqa_packing(GqaPacking::On);
    // (seq_q, context, heads_q, heads_kv, head_dim, causal): groups 4, 7 and 8, contexts around the key
    // tiles (64 keys at d64, 32 at d128), split-KV as the heuristic picks it.
    for (seq_q, context, heads_q, heads_kv, d, causal) in [
        (1, 1, 8, 2, 64, false),
        (1, 63, 28, 4, 64, false),
        (1, 64, 8, 1, 128, false),
        (1, 65, 32, 4, 128, true),
        (2, 1000, 8, 1, 64, true),
        (4, 4097, 7, 1, 64, true),
        (16, 65, 8, 1, 128, true),
        (16, 1000, 16, 2, 64, false),
    ] {
        let problem = decode(2, seq_q, context, heads_q, heads_kv, d).with_causal(causal);
        let seed = (seq_q * 10_000 + context) as u64;
        let (packed, _, _) = if d == 64 {
            check_dense::<f16>(&problem, on, seed)
        } else {
            check_dense::<bf16>(&problem, on, seed)
        };
        assert_eq!(packed, Some(heads_q / heads_kv), "{:?}", problem.shape);
    }
}

#[test]
fn packing_changes_no_bit_at_one_split() {
    let one = ForwardOptions::default().with_splits(Splits::Fixed(1));
    let cases = [
        // Every per-row term: the causal diagonal and the window by position, soft cap, ALiBi slopes and
        // sinks by head (group 4, 3 queries: a warp holds rows of several positions and heads).
        decode(2, 3, 200, 8, 2, 64)
            .with_causal(true)
            .with_window(Some(90), Some(0))
            .with_softcap(8.0)
            .with_alibi_slopes((0..8).map(|h| 0.01 * (h + 1) as f32).collect::<Vec<_>>())
            .with_sinks((0..8).map(|h| h as f32 - 4.0).collect::<Vec<_>>()),
        // seq_q > seq_k under causal: the first positions see no key (0, lse -inf) in every head.
        decode(1, 6, 3, 6, 2, 64).with_causal(true),
        // 100 queries x group 3: 300 packed rows over three query tiles, causal.
        decode(1, 100, 300, 3, 1, 128).with_causal(true),
        // Head-major (BHSD) q and out: rows of one tile come from strided heads.
        decode(2, 5, 130, 8, 2, 64)
            .with_causal(true)
            .with_layout(Layout::Bhsd),
    ];
    for (i, problem) in cases.iter().enumerate() {
        let seed = 100 + i as u64;
        let on = one.with_gqa_packing(GqaPacking::On);
        let off = one.with_gqa_packing(GqaPacking::Off);
        let (packed, _, packed_bits) = check_dense::<bf16>(problem, on, seed);
        let (unpacked, _, unpacked_bits) = check_dense::<bf16>(problem, off, seed);
        assert_eq!(packed, Some(problem.heads_ratio()));
        assert_eq!(unpacked, None);
        assert!(packed_bits == unpacked_bits, "case {i}: packed != unpacked");
    }
}

/// A ragged batch of three sequences (1, 2 and 1 queries; 200, 17 and 0 keys) with group 4, its keys
/// packed or in pages of `page_size` (16: pages do not hold a key tile and rows are gathered).
fn ragged_case(keys: KeyStorage) -> AttentionProblem {
    AttentionProblem::ragged(
        AttentionShape::new(3, 2, 8, 64)
            .with_seq_k(200)
            .with_heads_kv(2),
        Ragged {
            total_q: 5,
            keys,
            seqused_k: true,
        },
    )
    .with_causal(true)
    .with_sinks(vec![0.5, -1.0, 2.0, 0.0, 1.0, -3.0, 0.25, 0.0])
}

#[test]
fn ragged_and_paged_batches_pack() {
    let (batch, max_k) = (3usize, 200usize);
    for keys in [
        KeyStorage::Packed {
            total_k: batch * max_k,
        },
        KeyStorage::Paged(Paging::new(batch * max_k.div_ceil(16), 16, max_k)),
        KeyStorage::Paged(Paging::new(batch * max_k.div_ceil(64), 64, max_k)),
    ] {
        let problem = ragged_case(keys);
        let [q, k, v] = inputs::<f16>(&problem, 7);
        let cu_q = [0, 1, 3, 4];
        let cu_k: Vec<i32> = (0..=batch as i32).map(|b| b * max_k as i32).collect();
        let used = [200, 17, 0];
        let paged = problem.paging();
        let table: Vec<i32> = paged.map_or(Vec::new(), |p| {
            (0..batch * p.block_table_stride)
                .rev()
                .map(|i| i as i32)
                .collect()
        });
        let metadata = Metadata {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: paged.is_none().then_some(&cu_k[..]),
            seqused_k: Some(&used),
            block_table: paged.is_some().then_some(&table[..]),
        };
        let expected =
            cpu::reference_ragged(&problem, q.as_slice(), k.as_slice(), v.as_slice(), &metadata)
                .unwrap();
        let allowed = cpu::ragged::tolerance_ragged(
            &problem,
            &metadata,
            q.as_slice(),
            k.as_slice(),
            v.as_slice(),
        )
        .unwrap();
        let rows = cu_q[batch] as usize * 8 * 64;
        let run = |options: ForwardOptions| {
            let emulator = Emulator::new();
            let plan = emulator.plan::<f16>(&problem, options).unwrap();
            let got = emulator
                .forward_ragged(
                    &problem,
                    options.with_lse(true),
                    q.as_slice(),
                    k.as_slice(),
                    v.as_slice(),
                    &metadata,
                )
                .unwrap();
            let out: Vec<f32> = got.out[..rows].iter().map(|x| x.to_f32()).collect();
            let error = compare::compare_contiguous(&out, &expected.out[..rows]);
            assert!(
                error.max_abs <= allowed,
                "{keys:?} {options:?}: {error} (allowed {allowed:.3e})"
            );
            (plan.gqa_packing(), out)
        };
        let auto = ForwardOptions::default();
        let (packed, packed_out) = run(auto.with_splits(Splits::Fixed(1)));
        let (unpacked, unpacked_out) =
            run(auto.with_splits(Splits::Fixed(1)).with_gqa_packing(GqaPacking::Off));
        assert_eq!((packed, unpacked), (Some(4), None), "{keys:?}");
        assert!(
            packed_out.iter().zip(&unpacked_out).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{keys:?}: packed != unpacked"
        );
        let (split_packed, _) = run(auto.with_splits(Splits::Fixed(5)));
        assert_eq!(split_packed, Some(4));
    }
}

fn h100() -> DeviceCaps {
    DeviceCaps {
        compute_capability: (9, 0),
        shared_memory_per_block_optin: 227 * 1024,
        multiprocessors: 132,
    }
}

#[test]
fn auto_packs_decode_and_says_so() {
    // Llama-3-8B-like decode: 32 query heads, 8 key/value heads, batch 1, 32k context.
    let problem = decode(1, 1, 32768, 32, 8, 128);
    let plan = Plan::new(&problem, DType::Bf16, ForwardOptions::default(), h100()).unwrap();
    assert_eq!(plan.gqa_packing(), Some(4));
    assert_eq!(plan.launches()[0].grid.1, 8, "one block row per key/value head");
    assert!(
        plan.reason().contains("GQA packing: the 4 query heads") && plan.reason().contains("8 blocks instead of 32"),
        "{}",
        plan.reason()
    );
    // Fewer blocks without packing: the split heuristic cuts the keys into more splits.
    let unpacked = Plan::new(
        &problem,
        DType::Bf16,
        ForwardOptions::default().with_gqa_packing(GqaPacking::Off),
        h100(),
    )
    .unwrap();
    assert_eq!(unpacked.gqa_packing(), None);
    assert!(plan.splits() > unpacked.splits(), "{} vs {}", plan.splits(), unpacked.splits());
    // Prefill fills whole tiles: packing saves nothing and Auto keeps the prefill grid.
    let prefill = decode(2, 128, 4096, 32, 8, 128);
    let plan = Plan::new(&prefill, DType::Bf16, ForwardOptions::default(), h100()).unwrap();
    assert_eq!(plan.gqa_packing(), None);
    assert!(!plan.reason().contains("GQA packing"));
    // Speculative decoding (16 queries, group 8: 128 rows, one tile instead of 8).
    let speculative = decode(4, 16, 8192, 32, 4, 128);
    let plan = Plan::new(&speculative, DType::F16, ForwardOptions::default(), h100()).unwrap();
    assert_eq!(plan.gqa_packing(), Some(8));
}

#[test]
fn the_packing_rule_counts_tiles() {
    assert!(packs_gqa(1, 4, 128));
    assert!(packs_gqa(16, 8, 128));
    assert!(packs_gqa(40, 3, 128), "120 rows: 1 tile instead of 3");
    assert!(!packs_gqa(100, 3, 128), "300 rows: 3 tiles, as many as unpacked");
    assert!(!packs_gqa(128, 4, 128), "4 tiles either way");
    assert!(!packs_gqa(1, 1, 128), "no group");
    assert!(!packs_gqa(usize::MAX, 2, 128), "rows overflow");
}

#[test]
fn packing_on_says_why_it_cannot_run() {
    let on = ForwardOptions::default().with_gqa_packing(GqaPacking::On);
    let mha = decode(1, 1, 100, 8, 8, 64);
    let refused = Plan::new(&mha, DType::Bf16, on, h100());
    assert!(
        matches!(&refused, Err(AttentionError::KernelUnsupported { kernel: "flash", reason }) if reason.contains("heads_q > heads_kv")),
        "{refused:?}"
    );
    let gqa = decode(1, 1, 100, 8, 2, 64);
    let refused = Plan::new(&gqa, DType::F32, on, h100());
    assert!(
        matches!(&refused, Err(AttentionError::KernelUnsupported { kernel: "flash", reason }) if reason.contains("f32")),
        "{refused:?}"
    );
    // Auto on the f32 path runs it unpacked.
    let plan = Plan::new(&gqa, DType::F32, ForwardOptions::default(), h100()).unwrap();
    assert_eq!(plan.gqa_packing(), None);
    // The naive kernel never packs.
    let naive = ForwardOptions::default().with_kernel(cuda_attention::KernelChoice::Naive);
    let plan = Plan::new(&gqa, DType::Bf16, naive, h100()).unwrap();
    assert_eq!(plan.gqa_packing(), None);
}
