//! The CPU backend's tiled loop (src/cpu/tile.rs: tasks of up to 128 query rows, key tiles of 256; under
//! a block mask, tasks inside one query block and tiles over the runs of listed key blocks) on problems that span several tiles in both directions, against the
//! f64 reference within FlashAttention's tolerance rule: out, lse and weights, rows that see no key, and
//! exact zeros at hidden keys (common::cpu_support::check). Ragged sizes put tile edges inside the rows'
//! key ranges; the masks cross tile edges; GQA stacks a group's heads into one product per tile (up to
//! 160 heads for one row); f16 and bf16
//! take the widening path, f32 reads the caller's rows in place.

mod common;

use common::cpu_support::cases::{geometric_slopes, inputs};
use common::cpu_support::check::{check_problem, cpu_into};
use common::{assert_matches_reference, shape};
use cuda_attention::cpu;
use cuda_attention::sparse::{BigBird, BlockMask};
use cuda_attention::{AttentionProblem, Element, Layout, Tensor};
use half::{bf16, f16};

fn every_dtype(case: &str, problem: &AttentionProblem, empty_rows: usize, seed: u64) {
    check_problem::<f32>(case, problem.clone(), seed, 1.0, empty_rows);
    check_problem::<f16>(case, problem.clone(), seed + 1, 1.0, empty_rows);
    check_problem::<bf16>(case, problem.clone(), seed + 2, 1.0, empty_rows);
}

#[test]
fn several_tiles_each_way_with_gqa_masks_and_ragged_edges() {
    let plain = AttentionProblem::new(shape(1, 300, 600, 4, 2, 64));
    every_dtype("300 x 600 GQA", &plain, 0, 1);
    let causal = AttentionProblem::new(shape(2, 1023, 1023, 2, 1, 40)).with_causal(true);
    check_problem::<f32>("1023 causal", causal.clone(), 4, 1.0, 0);
    check_problem::<bf16>("1023 causal", causal, 5, 1.0, 0);
    // seq_q > seq_k: the first 300 rows see no key (bottom-right causal).
    let more_queries = AttentionProblem::new(shape(1, 600, 300, 2, 2, 64))
        .with_causal(true)
        .with_layout(Layout::Bhsd);
    every_dtype("600 x 300 causal", &more_queries, 300, 6);
    // A window whose ranges start and end inside tiles, then soft cap, ALiBi and sinks.
    let window =
        AttentionProblem::new(shape(1, 513, 700, 2, 1, 96)).with_window(Some(200), Some(50));
    every_dtype("window 200/50", &window, 0, 9);
    let adjusted = AttentionProblem::new(shape(1, 257, 513, 4, 4, 64))
        .with_causal(true)
        .with_softcap(5.0)
        .with_alibi_slopes(geometric_slopes(4))
        .with_sinks(vec![0.5, -1.0, 2.0, 0.0]);
    every_dtype("soft cap, ALiBi, sinks", &adjusted, 0, 12);
}

#[test]
fn a_group_of_heads_is_one_product_even_past_a_query_tile() {
    // 160 query heads on one key/value head: one row per task, 160 stacked rows per product (decode).
    let decode = AttentionProblem::new(shape(1, 3, 700, 160, 1, 32)).with_causal(true);
    every_dtype("160 heads per group", &decode, 0, 50);
    // Groups of 4: 32 rows per task, ALiBi per head inside the stacked product.
    let gqa = AttentionProblem::new(shape(2, 200, 300, 8, 2, 64))
        .with_window(Some(90), Some(10))
        .with_alibi_slopes(geometric_slopes(8));
    every_dtype("groups of 4, window, ALiBi", &gqa, 0, 53);
}

#[test]
fn large_logits_across_tiles_keep_the_running_maximum_exact() {
    // Scores up to ~25 in magnitude: a later tile's maximum rescales the earlier tiles' sums and outputs.
    let problem = AttentionProblem::new(shape(1, 200, 900, 2, 2, 64)).with_scale(1.0);
    check_problem::<f32>("large logits", problem.clone(), 15, 0.6, 0);
    check_problem::<bf16>("large logits", problem, 16, 0.6, 0);
}

#[test]
fn block_masks_skip_the_tiles_no_row_lists() {
    // Blocks of 64 and of 192 (runs of listed blocks cut into tiles of up to 256 keys; tasks of at most
    // 64 rows, inside one query block), rectangular blocks of 128 x 256.
    let bigbird = BigBird {
        window: 1,
        global: 1,
        random: 2,
        seed: 3,
    };
    for (block, seq) in [(64, 1000), (192, 1000)] {
        let mask = BlockMask::bigbird(seq, block, bigbird).unwrap();
        let problem = AttentionProblem::new(shape(1, seq, seq, 2, 1, 64)).with_block_mask(mask);
        every_dtype(
            &format!("bigbird block {block}"),
            &problem,
            0,
            20 + block as u64,
        );
    }
    // Query block 1 lists nothing (its rows see no key), query block 2 only the last key block (which
    // causal hides from its first 56 rows): out and lse, -inf rows included, against the reference.
    let rows: Vec<Vec<usize>> = vec![vec![0, 2], vec![], vec![2], vec![0, 1, 2]];
    let mask = BlockMask::from_rows(128, 256, 500, 700, &rows).unwrap();
    let problem = AttentionProblem::new(shape(1, 500, 700, 2, 2, 32))
        .with_block_mask(mask)
        .with_causal(true);
    rectangular::<f32>(&problem);
    rectangular::<f16>(&problem);
}

fn rectangular<T: Element>(problem: &AttentionProblem) {
    let (q, k, v) = inputs::<T>(problem, 30, 1.0);
    let mut out = vec![T::from_f32(f32::NAN); problem.required_len(Tensor::Out).unwrap()];
    let mut lse = vec![f32::NAN; problem.shape.lse_elements().unwrap()];
    cpu_into(problem, &q, &k, &v, &mut out, Some(&mut lse), None).unwrap();
    let label = format!("{} rectangular blocks", T::DTYPE);
    assert_matches_reference(problem, [&q, &k, &v], &out, &lse, &label);
    let empty = lse.iter().filter(|&&x| x == f32::NEG_INFINITY).count();
    assert_eq!(empty, 2 * (128 + 56), "{label}: rows that see no key");
}

/// A NaN in V at key `key` (every column) reaches only the rows that see that key; with causal masking
/// and tiles of 256 keys, the rows before it share its tile but not its range.
#[test]
fn a_nan_value_reaches_only_the_rows_that_see_its_key() {
    fn run<T: Element>(key: usize) {
        let problem = AttentionProblem::new(shape(1, 600, 600, 2, 1, 64)).with_causal(true);
        let (q, k, mut v) = inputs::<T>(&problem, 40, 1.0);
        // The tolerance of the clean inputs: the rows that do not see the key are those of the clean problem.
        let clean = cpu::reference(&problem, &q, &k, &v).unwrap();
        let allowed = cpu::tolerance(&problem, &q, &k, &v, &clean).unwrap();
        for x in 0..64 {
            v[problem.v_strides.offset(0, key, 0, x)] = T::from_f32(f32::NAN);
        }
        let mut out = vec![T::from_f32(7.0); problem.required_len(Tensor::Out).unwrap()];
        cpu_into(&problem, &q, &k, &v, &mut out, None, None).unwrap();
        let reference = cpu::reference(&problem, &q, &k, &v).unwrap();
        for h in 0..2 {
            for i in 0..600 {
                for x in 0..64 {
                    let got = out[problem.out_strides.offset(0, i, h, x)].to_f32() as f64;
                    let want = reference.out[(i * 2 + h) * 64 + x];
                    if i >= key {
                        assert!(
                            got.is_nan() && want.is_nan(),
                            "{} row {i} sees the NaN",
                            T::DTYPE
                        );
                    } else {
                        assert!(
                            (got - want).abs() <= allowed,
                            "{} row {i}: {got} vs {want}",
                            T::DTYPE
                        );
                    }
                }
            }
        }
    }
    run::<f32>(300);
    run::<bf16>(520);
}
