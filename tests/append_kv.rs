//! Appending K/V rows to a paged cache (`append_kv_into`) on the emulated kernel and the CPU backend,
//! against a scatter written here from the slot rule (slot = page * page_size + row; negative and
//! out-of-range slots skipped), in NHD and HND caches, with padding tokens; then the appended cache read
//! back by the ragged forward against the f64 reference (decode steps: one new token per sequence).

mod common;

use common::Aligned;
use cuda_attention::cpu::ragged::tolerance_ragged;
use cuda_attention::cpu::{self, compare, CpuBackend};
use cuda_attention::emulator::Emulator;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, Element, ForwardOptions, HostKvAppend,
    KeyStorage, Metadata, Paging, Ragged, Tensor,
};
use half::f16;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A paged problem: `batch` sequences of at most `max_k` keys, `heads_kv` heads of `d`, pages of
/// `page_size`; HND when `hnd`.
fn paged_problem(
    batch: usize,
    max_k: usize,
    heads: (usize, usize),
    d: usize,
    page_size: usize,
    hnd: bool,
) -> AttentionProblem {
    let paging = Paging::new(batch * max_k.div_ceil(page_size) + 1, page_size, max_k);
    let shape = AttentionShape {
        batch,
        seq_q: 1,
        seq_k: max_k,
        heads_q: heads.0,
        heads_kv: heads.1,
        head_dim: d,
    };
    let problem = AttentionProblem::ragged(
        shape,
        Ragged {
            total_q: batch,
            keys: KeyStorage::Paged(paging),
            seqused_k: true,
        },
    );
    if hnd {
        let strides = paging.hnd(heads.1, d);
        let (q, out) = (problem.q_strides, problem.out_strides);
        problem.with_strides(q, strides, strides, out)
    } else {
        problem
    }
}

/// What appending must leave in `cache`: the rows of `new` at their slots, written here element by
/// element from the slot rule.
fn expected_cache<T: Element>(
    problem: &AttentionProblem,
    cache: &[T],
    new: &[T],
    slots: &[i64],
) -> Vec<T> {
    let paging = problem.paging().unwrap();
    let (heads, d) = (problem.shape.heads_kv, problem.shape.head_dim);
    let mut expected = cache.to_vec();
    for (i, &slot) in slots.iter().enumerate() {
        if slot < 0 || slot as usize >= paging.num_pages * paging.page_size {
            continue;
        }
        let (page, row) = (
            slot as usize / paging.page_size,
            slot as usize % paging.page_size,
        );
        for h in 0..heads {
            for x in 0..d {
                expected[problem.k_strides.offset(page, row, h, x)] = new[(i * heads + h) * d + x];
            }
        }
    }
    expected
}

#[test]
fn appended_rows_land_at_their_slots_and_padding_is_skipped() {
    let mut rng = StdRng::seed_from_u64(21);
    let emulator = Emulator::new();
    for (page_size, hnd, d) in [(1, false, 64), (16, true, 128), (5, false, 33)] {
        let problem = paged_problem(3, 40, (4, 2), d, page_size, hnd);
        let paging = problem.paging().unwrap();
        let cache_len = problem.required_len(Tensor::K).unwrap();
        let cache: Vec<f16> = common::random(&mut rng, cache_len, 1.0);
        let rows = 9;
        let slot_count = (paging.num_pages * page_size) as i64;
        let mut slots: Vec<i64> = (0..slot_count).collect();
        slots.shuffle(&mut rng);
        slots.truncate(rows);
        slots[2] = -1; // padding token
        slots[5] = slot_count + 3; // past the cache: skipped, never written
        let k_new: Vec<f16> = common::random(&mut rng, rows * 2 * d, 1.0);
        let v_new: Vec<f16> = common::random(&mut rng, rows * 2 * d, 1.0);
        let expected_k = expected_cache(&problem, &cache, &k_new, &slots);
        let expected_v = expected_cache(&problem, &cache, &v_new, &slots);
        for backend in ["emulator", "cpu"] {
            let (mut k_cache, mut v_cache) = (cache.clone(), cache.clone());
            let tensors = HostKvAppend {
                k_new: &k_new,
                v_new: &v_new,
                slot_mapping: &slots,
                k_cache: &mut k_cache,
                v_cache: &mut v_cache,
            };
            match backend {
                "emulator" => emulator.append_kv_into(&problem, rows, tensors),
                _ => CpuBackend.append_kv_into(&problem, rows, tensors),
            }
            .unwrap();
            let label = format!("{backend} page {page_size} hnd {hnd} d {d}");
            assert!(
                k_cache
                    .iter()
                    .zip(&expected_k)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{label}: k"
            );
            assert!(
                v_cache
                    .iter()
                    .zip(&expected_v)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{label}: v"
            );
            assert_ne!(k_cache, cache, "{label}: something was written");
        }
    }
}

/// Decode steps: each step appends one new token per sequence, then the ragged forward (one query per
/// sequence) reads the cache; checked against the f64 reference of every sequence.
#[test]
fn decode_steps_append_then_attend() {
    let mut rng = StdRng::seed_from_u64(22);
    let emulator = Emulator::new();
    let (batch, d, page_size) = (3, 64, 16);
    let problem = paged_problem(batch, 64, (4, 1), d, page_size, false);
    let paging = problem.paging().unwrap();
    let cache_len = problem.required_len(Tensor::K).unwrap();
    // Unused slots hold NaN: they must never be read.
    let mut k_cache = vec![f16::from_f32(f32::NAN); cache_len];
    let mut v_cache = k_cache.clone();
    // Each sequence gets its own shuffled pages.
    let mut pages: Vec<i32> = (0..paging.num_pages as i32).collect();
    pages.shuffle(&mut rng);
    let table: Vec<i32> = (0..batch * paging.block_table_stride)
        .map(|i| pages[i % pages.len()])
        .collect();
    let mut lengths = vec![0i32, 5, 17];
    // Prefill the first lengths with random rows.
    for (b, &length) in lengths.iter().enumerate() {
        let rows = length as usize;
        let slots: Vec<i64> = (0..rows).map(|n| slot_of(&table, paging, b, n)).collect();
        let k_new: Vec<f16> = common::random(&mut rng, rows * d, 1.0);
        let v_new: Vec<f16> = common::random(&mut rng, rows * d, 1.0);
        append(
            &emulator,
            &problem,
            &k_new,
            &v_new,
            &slots,
            &mut k_cache,
            &mut v_cache,
        );
    }
    let options = ForwardOptions::default().with_lse(true);
    for step in 0..3 {
        // One new token per sequence (sequence 0 is padding in the first step: slot -1).
        let slots: Vec<i64> = (0..batch)
            .map(|b| {
                if step == 0 && b == 0 {
                    -1
                } else {
                    slot_of(&table, paging, b, lengths[b] as usize)
                }
            })
            .collect();
        let k_new: Vec<f16> = common::random(&mut rng, batch * d, 1.0);
        let v_new: Vec<f16> = common::random(&mut rng, batch * d, 1.0);
        append(
            &emulator,
            &problem,
            &k_new,
            &v_new,
            &slots,
            &mut k_cache,
            &mut v_cache,
        );
        for (b, slot) in slots.iter().enumerate() {
            if *slot >= 0 {
                lengths[b] += 1;
            }
        }
        let q: Vec<f16> = common::random(&mut rng, batch * 4 * d, 1.0);
        let cu_q: Vec<i32> = (0..=batch as i32).collect();
        let metadata = Metadata {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: None,
            seqused_k: Some(&lengths),
            block_table: Some(&table),
        };
        let (q, k, v) = (
            Aligned::from_slice(&q),
            Aligned::from_slice(&k_cache),
            Aligned::from_slice(&v_cache),
        );
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
        let got_out: Vec<f32> = got.out.iter().map(|x| x.to_f32()).collect();
        let error = compare::compare_contiguous(&got_out, &expected.out);
        // FlashAttention's tolerance rule, sequence by sequence; the largest bound over the batch.
        let allowed = tolerance_ragged(
            &problem,
            &metadata,
            q.as_slice(),
            k.as_slice(),
            v.as_slice(),
        )
        .unwrap();
        assert!(
            error.max_abs <= allowed,
            "step {step}: {error} (allowed {allowed})"
        );
        assert_eq!(error.non_finite, 0, "step {step}: NaN from an unused slot");
    }
}

fn slot_of(table: &[i32], paging: &Paging, b: usize, n: usize) -> i64 {
    let page = table[b * paging.block_table_stride + n / paging.page_size] as i64;
    page * paging.page_size as i64 + (n % paging.page_size) as i64
}

fn append(
    emulator: &Emulator,
    problem: &AttentionProblem,
    k_new: &[f16],
    v_new: &[f16],
    slots: &[i64],
    k_cache: &mut [f16],
    v_cache: &mut [f16],
) {
    emulator
        .append_kv_into(
            problem,
            slots.len(),
            HostKvAppend {
                k_new,
                v_new,
                slot_mapping: slots,
                k_cache,
                v_cache,
            },
        )
        .unwrap();
}

#[test]
fn append_refuses_dense_problems_and_short_buffers() {
    let problem = paged_problem(2, 16, (2, 2), 8, 4, false);
    let cache_len = problem.required_len(Tensor::K).unwrap();
    let new = vec![f16::ONE; 3 * 2 * 8];
    let slots = vec![0i64, 1, 2];
    let mut k_cache = vec![f16::ZERO; cache_len];
    let mut v_cache = vec![f16::ZERO; cache_len];
    let call = |problem: &AttentionProblem,
                rows: usize,
                new: &[f16],
                slots: &[i64],
                k: &mut [f16],
                v: &mut [f16]| {
        CpuBackend.append_kv_into(
            problem,
            rows,
            HostKvAppend {
                k_new: new,
                v_new: new,
                slot_mapping: slots,
                k_cache: k,
                v_cache: v,
            },
        )
    };
    let dense = AttentionProblem::new(AttentionShape::new(1, 4, 2, 8));
    assert!(matches!(
        call(&dense, 3, &new, &slots, &mut k_cache, &mut v_cache),
        Err(AttentionError::InvalidArgument(m)) if m.contains("paged cache")
    ));
    assert!(matches!(
        call(&problem, 4, &new, &slots, &mut k_cache, &mut v_cache),
        Err(AttentionError::BufferTooSmall {
            tensor: "k_new",
            ..
        })
    ));
    assert!(matches!(
        call(&problem, 3, &new, &slots[..2], &mut k_cache, &mut v_cache),
        Err(AttentionError::BufferTooSmall {
            tensor: "slot_mapping",
            ..
        })
    ));
    assert!(matches!(
        call(&problem, 3, &new, &slots, &mut k_cache[1..], &mut v_cache),
        Err(AttentionError::BufferTooSmall {
            tensor: "k_cache",
            ..
        })
    ));
}
