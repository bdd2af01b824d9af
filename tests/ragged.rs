//! Ragged (varlen) batches with packed and paged K/V, on the emulated flash kernels and the CPU backend,
//! against the f64 reference sequence by sequence: random batches with empty sequences, seq_q > seq_k and
//! seq_q < seq_k per sequence, page sizes 1, 3, 16, 64 and 256, shuffled and shared pages, NHD and HND,
//! GQA, every mask, sinks, NaN in every unused cache slot and unused row, garbage in unused block-table
//! entries, and one plan replayed over several length sets. The ragged result must equal each sequence
//! run alone as a dense problem, bit for bit (the same tiles in the same order).

mod common;

use common::Aligned;
use cuda_attention::cpu::ragged::for_each_sequence;
use cuda_attention::cpu::{self, compare, CpuBackend};
use cuda_attention::emulator::{Emulator, Schedule};
use cuda_attention::host_memory::HostWorkspace;
use cuda_attention::{
    validate_metadata, AttentionError, AttentionProblem, AttentionShape, Element, ForwardOptions,
    HostTensors, KernelChoice, KeyStorage, Metadata, Paging, Ragged, Splits,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// How the keys are stored.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// Packed rows, with `pad` spare rows after each sequence's keys (then seqused_k is passed).
    Packed { pad: usize },
    /// A paged cache; `hnd`: `[pages, heads, page, d]`; sequence 1 shares sequence 0's first page when
    /// both are long enough (prefix sharing).
    Paged { page_size: usize, hnd: bool },
}

/// One ragged batch: the problem (the bounds), the inputs and the metadata.
struct Case<T> {
    problem: AttentionProblem,
    q: Aligned<T>,
    k: Aligned<T>,
    v: Aligned<T>,
    cu_q: Vec<i32>,
    cu_k: Option<Vec<i32>>,
    used: Option<Vec<i32>>,
    table: Option<Vec<i32>>,
}

impl<T: Element> Case<T> {
    fn metadata(&self) -> Metadata<'_> {
        Metadata {
            cu_seqlens_q: &self.cu_q,
            cu_seqlens_k: self.cu_k.as_deref(),
            seqused_k: self.used.as_deref(),
            block_table: self.table.as_deref(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} cu_q {:?} cu_k {:?} used {:?}",
            self.problem.batching, self.cu_q, self.cu_k, self.used
        )
    }
}

/// A ragged batch of sequences of `(seq_q, seq_k)`, with bounds `max_q`, `max_k`; `shape` gives the heads
/// and head dim. Every q row and K/V slot no sequence uses holds NaN.
fn build<T: Element>(
    rng: &mut StdRng,
    lens: &[(usize, usize)],
    bounds: (usize, usize),
    heads: (usize, usize, usize),
    keys: Keys,
    mask: impl Fn(AttentionProblem) -> AttentionProblem,
) -> Case<T> {
    let (heads_q, heads_kv, d) = heads;
    let batch = lens.len();
    let shape = AttentionShape {
        batch,
        seq_q: bounds.0,
        seq_k: bounds.1,
        heads_q,
        heads_kv,
        head_dim: d,
    };
    let mut cu_q = vec![0i32];
    for &(sq, _) in lens {
        cu_q.push(cu_q.last().unwrap() + sq as i32);
    }
    // The buffers are sized by the bounds (as a server's), so one plan serves every length set; the rows
    // past the last sequence hold NaN and are never read.
    let total_q = batch * bounds.0 + 3;
    let nan = T::from_f32(f32::NAN);
    let mut q = common::random::<T>(rng, total_q * heads_q * d, 1.0);
    q[*cu_q.last().unwrap() as usize * heads_q * d..].fill(nan);

    let (storage, cu_k, used, table, slots) = match keys {
        Keys::Packed { pad } => {
            let mut cu_k = vec![0i32];
            for &(_, sk) in lens {
                cu_k.push(cu_k.last().unwrap() + (sk + pad) as i32);
            }
            let total_k = batch * (bounds.1 + pad);
            // Valid key rows: the first seq_k of each sequence's rows.
            let mut valid = vec![false; total_k];
            for (b, &(_, sk)) in lens.iter().enumerate() {
                valid[cu_k[b] as usize..][..sk].fill(true);
            }
            let used = (pad > 0).then(|| lens.iter().map(|&(_, sk)| sk as i32).collect());
            (
                KeyStorage::Packed { total_k },
                Some(cu_k),
                used,
                None,
                valid,
            )
        }
        Keys::Paged { page_size, hnd } => {
            let mut paging = Paging::new(0, page_size, bounds.1);
            let pages_needed: Vec<usize> =
                lens.iter().map(|&(_, sk)| sk.div_ceil(page_size)).collect();
            let num_pages = batch * paging.pages_per_seq + 2; // spare pages: NaN
            let mut order: Vec<usize> = (0..num_pages).collect();
            order.shuffle(rng);
            paging.num_pages = num_pages;
            paging.block_table_stride = paging.pages_per_seq + 1;
            // Unused entries hold garbage the kernels must never follow.
            let mut table = vec![i32::MAX; batch * paging.block_table_stride];
            let mut next = 0;
            for (b, &n) in pages_needed.iter().enumerate() {
                for p in 0..n {
                    table[b * paging.block_table_stride + p] = order[next] as i32;
                    next += 1;
                }
            }
            // Prefix sharing: sequence 1 reads sequence 0's first page (its own first page stays unused).
            if batch > 1 && pages_needed[0] > 0 && pages_needed[1] > 0 && lens[0].1 >= page_size {
                table[paging.block_table_stride] = table[0];
            }
            let mut valid = vec![false; num_pages * page_size];
            for (b, &(_, sk)) in lens.iter().enumerate() {
                for j in 0..sk {
                    let page = table[b * paging.block_table_stride + j / page_size] as usize;
                    valid[page * page_size + j % page_size] = true;
                }
            }
            let used = Some(lens.iter().map(|&(_, sk)| sk as i32).collect());
            let _ = hnd;
            (KeyStorage::Paged(paging), None, used, Some(table), valid)
        }
    };
    let ragged = Ragged {
        total_q,
        keys: storage,
        seqused_k: used.is_some(),
    };
    let mut problem = mask(AttentionProblem::ragged(shape, ragged));
    if let (Keys::Paged { hnd: true, .. }, KeyStorage::Paged(paging)) = (keys, storage) {
        let strides = paging.hnd(heads_kv, d);
        let (q_strides, out_strides) = (problem.q_strides, problem.out_strides);
        problem = problem.with_strides(q_strides, strides, strides, out_strides);
    }
    // K and V: random in valid slots, NaN everywhere else (unused slots and page tails).
    let kv_len = problem.required_len(cuda_attention::Tensor::K).unwrap();
    let mut k = common::random::<T>(rng, kv_len, 1.0);
    let mut v = common::random::<T>(rng, kv_len, 1.0);
    let [pages, rows, _, _] = problem.extents(cuda_attention::Tensor::K);
    for page in 0..pages {
        for row in 0..rows {
            if !slots[page * rows + row] {
                for h in 0..heads_kv {
                    let at = problem.k_strides.offset(page, row, h, 0);
                    k[at..at + d].fill(nan);
                    v[at..at + d].fill(nan);
                }
            }
        }
    }
    Case {
        problem,
        q: Aligned::from_slice(&q),
        k: Aligned::from_slice(&k),
        v: Aligned::from_slice(&v),
        cu_q,
        cu_k,
        used,
        table,
    }
}

/// Runs `case` on `emulator` (flash) and on the CPU backend and checks every sequence against the f64
/// reference (tolerance rule), the emulator's rows bit for bit against the sequence run alone densely,
/// unused output rows untouched (0) and unused lse columns -inf... as written by nobody (NaN fill).
fn check<T: Element>(case: &Case<T>, emulator: &Emulator) {
    let label = case.describe();
    let options = ForwardOptions::default().with_lse(true);
    let metadata = case.metadata();
    validate_metadata(&case.problem, &metadata).unwrap_or_else(|e| panic!("{label}: {e}"));
    let (q, k, v) = (case.q.as_slice(), case.k.as_slice(), case.v.as_slice());
    let plan = emulator.plan::<T>(&case.problem, options).unwrap();
    assert!(
        plan.reason().contains("flash_varlen"),
        "{label}: {}",
        plan.reason()
    );
    let flash = emulator
        .forward_ragged(&case.problem, options, q, k, v, &metadata)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let cpu = CpuBackend
        .forward_ragged(&case.problem, options, q, k, v, &metadata)
        .unwrap_or_else(|e| panic!("{label} cpu: {e}"));
    let s = case.problem.shape;
    let (hq, d) = (s.heads_q, s.head_dim);
    let total_q = case.problem.ragged_layout().unwrap().total_q;
    let mut owned = vec![false; total_q];
    for_each_sequence(&case.problem, &metadata, q, k, v, |seq| {
        let (begin, rows) = (seq.span.q_begin, seq.span.seq_q);
        owned[begin..begin + rows].fill(true);
        let expected = cpu::reference(&seq.problem, &seq.q, &seq.k, &seq.v)?;
        let allowed = compare::tolerance(&seq.problem, &seq.q, &seq.k, &seq.v, &expected)?;
        let lse_allowed = compare::softmax_tolerance(&seq.problem, &seq.q, &seq.k)?.lse;
        let dense = emulator.forward(
            &seq.problem,
            // The same split count as the ragged plan: the same tiles in the same order.
            options
                .with_kernel(KernelChoice::Flash)
                .with_splits(Splits::Fixed(plan.splits())),
            Aligned::from_slice(&seq.q).as_slice(),
            Aligned::from_slice(&seq.k).as_slice(),
            Aligned::from_slice(&seq.v).as_slice(),
        )?;
        for (name, run) in [("flash", &flash), ("cpu", &cpu)] {
            let rows_out = &run.out[begin * hq * d..][..rows * hq * d];
            let got: Vec<f32> = rows_out.iter().map(|x| x.to_f32()).collect();
            let error = compare::compare_contiguous(&got, &expected.out);
            assert!(
                error.max_abs <= allowed,
                "{label} {name} sequence {}: {error} (allowed {allowed})",
                seq.index
            );
            let lse = run.lse.as_ref().unwrap();
            let got_lse: Vec<f32> = (0..hq)
                .flat_map(|h| lse[h * total_q + begin..][..rows].to_vec())
                .collect();
            let lse_error = compare::compare_contiguous(&got_lse, &expected.lse);
            assert!(
                lse_error.max_abs <= lse_allowed,
                "{label} {name} sequence {} lse: {lse_error}",
                seq.index
            );
        }
        // The ragged kernel on this sequence = the dense kernel on it alone, bit for bit.
        let ragged_bits: Vec<f32> = flash.out[begin * hq * d..][..rows * hq * d]
            .iter()
            .map(|x| x.to_f32())
            .collect();
        let dense_bits: Vec<f32> = dense.out.iter().map(|x| x.to_f32()).collect();
        assert!(
            ragged_bits
                .iter()
                .zip(&dense_bits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{label}: sequence {} differs from its dense run",
            seq.index
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{label}: {e}"));
    // Rows no sequence owns are never written: out stays 0 (zero-filled), lse stays NaN (NaN-filled).
    for (name, run) in [("flash", &flash), ("cpu", &cpu)] {
        let lse = run.lse.as_ref().unwrap();
        for row in (0..total_q).filter(|&r| !owned[r]) {
            assert!(
                run.out[row * hq * d..][..hq * d]
                    .iter()
                    .all(|x| x.to_f32() == 0.0),
                "{label} {name}: unowned row {row} written"
            );
            assert!(
                (0..hq).all(|h| lse[h * total_q + row].is_nan()),
                "{label} {name}: unowned lse {row}"
            );
        }
    }
}

/// A mask (or score change) applied to a problem.
type Mask = fn(AttentionProblem) -> AttentionProblem;

/// Random lengths: empty sequences, seq_q > seq_k and seq_q < seq_k.
fn random_lens(rng: &mut StdRng, batch: usize, max_q: usize, max_k: usize) -> Vec<(usize, usize)> {
    let mut lens: Vec<(usize, usize)> = (0..batch)
        .map(|_| (rng.random_range(0..=max_q), rng.random_range(0..=max_k)))
        .collect();
    lens[0] = (max_q.min(3), max_k); // a long prefix (shared pages)
    if batch > 2 {
        lens[2] = (0, rng.random_range(0..=max_k)); // an empty sequence
    }
    if batch > 3 {
        lens[3] = (max_q, max_q.min(max_k) / 2); // seq_q > seq_k
    }
    lens
}

#[test]
fn packed_batches_match_the_reference_under_every_mask() {
    let mut rng = StdRng::seed_from_u64(11);
    let emulator = Emulator::new();
    let masks: [(&str, Mask); 6] = [
        ("none", |p| p),
        ("causal", |p| p.with_causal(true)),
        ("window", |p| p.with_window(Some(9), Some(4))),
        ("softcap", |p| p.with_causal(true).with_softcap(5.0)),
        ("alibi", |p| {
            p.with_alibi_slopes(vec![0.25, 0.5, 0.125, 1.0])
        }),
        ("sinks", |p| {
            p.with_causal(true).with_sinks(vec![0.5, -1.0, 3.0, 0.0])
        }),
    ];
    for (name, mask) in masks {
        for pad in [0, 5] {
            let lens = random_lens(&mut rng, 5, 70, 90);
            let case = build::<f16>(
                &mut rng,
                &lens,
                (70, 90),
                (4, 2, 64),
                Keys::Packed { pad },
                mask,
            );
            eprintln!("mask {name} pad {pad}");
            check(&case, &emulator);
        }
    }
}

#[test]
fn paged_caches_match_the_reference_for_every_page_size_and_layout() {
    let mut rng = StdRng::seed_from_u64(12);
    let emulator = Emulator::new().with_schedule(Schedule::Random { seed: 3 });
    for (page_size, hnd) in [(1, false), (3, true), (16, false), (64, true), (256, false)] {
        let lens = random_lens(&mut rng, 4, 40, 300);
        let case = build::<bf16>(
            &mut rng,
            &lens,
            (40, 300),
            (4, 1, 128),
            Keys::Paged { page_size, hnd },
            |p| p.with_causal(true),
        );
        eprintln!("page {page_size} hnd {hnd}");
        check(&case, &emulator);
    }
}

#[test]
fn paged_gqa_with_sinks_window_and_odd_head_dims() {
    let mut rng = StdRng::seed_from_u64(13);
    let emulator = Emulator::new();
    for (d, page_size) in [(40, 16), (96, 3), (256, 32)] {
        let lens = random_lens(&mut rng, 3, 33, 113);
        let case = build::<f16>(
            &mut rng,
            &lens,
            (33, 113),
            (6, 2, d),
            Keys::Paged {
                page_size,
                hnd: false,
            },
            |p| {
                p.with_window(Some(20), Some(0))
                    .with_sinks(vec![1.0, -2.0, 0.5, 4.0, -1.0, 2.0])
            },
        );
        check(&case, &emulator);
    }
}

#[test]
fn f32_inputs_run_the_f32_varlen_path() {
    let mut rng = StdRng::seed_from_u64(14);
    let emulator = Emulator::new();
    let lens = random_lens(&mut rng, 4, 31, 65);
    let case = build::<f32>(
        &mut rng,
        &lens,
        (31, 65),
        (2, 2, 33),
        Keys::Paged {
            page_size: 5,
            hnd: true,
        },
        |p| p.with_causal(true).with_sinks(vec![0.0, 2.0]),
    );
    check(&case, &emulator);
    let packed = build::<f32>(
        &mut rng,
        &lens,
        (31, 65),
        (2, 1, 24),
        Keys::Packed { pad: 2 },
        |p| p,
    );
    check(&packed, &emulator);
}

/// One plan (the host's bounds) replayed over several length sets, as a captured graph would be: only the
/// metadata changes between runs.
#[test]
fn one_plan_serves_several_length_sets() {
    let mut rng = StdRng::seed_from_u64(15);
    let emulator = Emulator::new();
    let first = build::<f16>(
        &mut rng,
        &[(20, 100), (5, 5), (0, 7)],
        (32, 128),
        (2, 2, 64),
        Keys::Paged {
            page_size: 16,
            hnd: false,
        },
        |p| p.with_causal(true),
    );
    let options = ForwardOptions::default().with_lse(true);
    let plan = emulator.plan::<f16>(&first.problem, options).unwrap();
    for lens in [
        [(32, 128), (1, 1), (3, 60)],
        [(0, 0), (17, 33), (32, 32)],
        [(1, 128), (0, 5), (9, 0)],
    ] {
        // The same cache geometry (pages, strides): only the lengths and the table change.
        let case = build::<f16>(
            &mut rng,
            &lens,
            (32, 128),
            (2, 2, 64),
            Keys::Paged {
                page_size: 16,
                hnd: false,
            },
            |p| p.with_causal(true),
        );
        let problem = &case.problem;
        assert_eq!(
            problem, &first.problem,
            "the same bounds make the same problem"
        );
        let mut out = vec![f16::ZERO; problem.required_len(cuda_attention::Tensor::Out).unwrap()];
        let mut lse = vec![f32::NAN; problem.lse_elements().unwrap()];
        let tensors = HostTensors::new(
            case.q.as_slice(),
            case.k.as_slice(),
            case.v.as_slice(),
            &mut out,
        )
        .with_lse(&mut lse)
        .with_metadata(
            &case.cu_q,
            None,
            case.used.as_deref(),
            case.table.as_deref(),
        );
        // The split-KV workspace, when the plan splits the keys.
        let mut workspace = HostWorkspace::new(plan.workspace_bytes()).unwrap();
        let tensors = if plan.workspace_bytes() > 0 {
            tensors.with_workspace(workspace.as_bytes_mut())
        } else {
            tensors
        };
        emulator.forward_into(&plan, tensors).unwrap();
        let expected = emulator
            .forward_ragged(
                problem,
                options,
                case.q.as_slice(),
                case.k.as_slice(),
                case.v.as_slice(),
                &case.metadata(),
            )
            .unwrap();
        assert_eq!(out, expected.out);
    }
}

#[test]
fn naive_refuses_ragged_batches_and_auto_picks_flash() {
    let mut rng = StdRng::seed_from_u64(16);
    let case = build::<f16>(
        &mut rng,
        &[(4, 4)],
        (8, 8),
        (1, 1, 64),
        Keys::Packed { pad: 0 },
        |p| p,
    );
    let emulator = Emulator::new();
    let naive = emulator.plan::<f16>(
        &case.problem,
        ForwardOptions::default().with_kernel(KernelChoice::Naive),
    );
    assert!(
        matches!(&naive, Err(AttentionError::KernelUnsupported { kernel: "naive", reason }) if reason.contains("dense batches only")),
        "{naive:?}"
    );
    let auto = emulator
        .plan::<f16>(&case.problem, ForwardOptions::default())
        .unwrap();
    assert!(
        auto.reason().starts_with("auto: flash"),
        "{}",
        auto.reason()
    );
}

#[test]
fn metadata_validation_names_the_first_bad_entry() {
    let mut rng = StdRng::seed_from_u64(17);
    let case = build::<f16>(
        &mut rng,
        &[(4, 20), (2, 9)],
        (8, 32),
        (1, 1, 64),
        Keys::Paged {
            page_size: 4,
            hnd: false,
        },
        |p| p,
    );
    let problem = &case.problem;
    let check = |cu_q: &[i32], used: &[i32], table: &[i32]| {
        validate_metadata(
            problem,
            &Metadata {
                cu_seqlens_q: cu_q,
                cu_seqlens_k: None,
                seqused_k: Some(used),
                block_table: Some(table),
            },
        )
    };
    let (cu_q, used, table) = (
        case.cu_q.clone(),
        case.used.clone().unwrap(),
        case.table.clone().unwrap(),
    );
    assert!(check(&cu_q, &used, &table).is_ok());
    let bad = |r: cuda_attention::Result<()>, buffer: &str, index: usize| match r {
        Err(AttentionError::InvalidMetadata {
            buffer: b,
            index: i,
            ..
        }) => {
            assert_eq!((b, i), (buffer, index));
        }
        other => panic!("expected InvalidMetadata for {buffer}[{index}], got {other:?}"),
    };
    bad(check(&[0, 4, 3], &used, &table), "cu_seqlens_q", 2);
    bad(check(&[1, 4, 6], &used, &table), "cu_seqlens_q", 0);
    bad(check(&[0, 9, 11], &used, &table), "cu_seqlens_q", 1); // 9 rows > the bound 8
    bad(check(&cu_q, &[20, 33], &table), "seqused_k", 1); // above seq_k 32
    let mut broken = table.clone();
    let stride = problem.paging().unwrap().block_table_stride;
    broken[stride + 2] = problem.paging().unwrap().num_pages as i32; // sequence 1 uses pages 0..3
    bad(check(&cu_q, &used, &broken), "block_table", stride + 2);
    // Garbage in entries a sequence does not use is fine.
    let mut unused = table.clone();
    unused[stride + 3] = -5;
    assert!(check(&cu_q, &used, &unused).is_ok());
    assert!(matches!(
        check(&cu_q[..2], &used, &table),
        Err(AttentionError::BufferTooSmall {
            tensor: "cu_seqlens_q",
            ..
        })
    ));
}

/// Wrong metadata on the device never sends a kernel outside its buffers: lengths and pages are clamped
/// (the results are wrong, and the checking mode's guards would show any stray access).
#[test]
fn out_of_range_metadata_is_clamped_by_the_kernels() {
    let mut rng = StdRng::seed_from_u64(18);
    let case = build::<f16>(
        &mut rng,
        &[(4, 20), (2, 9)],
        (8, 32),
        (1, 1, 64),
        Keys::Paged {
            page_size: 4,
            hnd: false,
        },
        |p| p,
    );
    let emulator = Emulator::new();
    let options = ForwardOptions::default().with_lse(true);
    let plan = emulator.plan::<f16>(&case.problem, options).unwrap();
    let mut out = vec![
        f16::ZERO;
        case.problem
            .required_len(cuda_attention::Tensor::Out)
            .unwrap()
    ];
    let mut lse = vec![f32::NAN; case.problem.lse_elements().unwrap()];
    let table: Vec<i32> = case
        .table
        .clone()
        .unwrap()
        .iter()
        .map(|_| i32::MAX)
        .collect();
    let tensors = HostTensors::new(
        case.q.as_slice(),
        case.k.as_slice(),
        case.v.as_slice(),
        &mut out,
    )
    .with_lse(&mut lse)
    .with_metadata(&[0, 1000, -3], None, Some(&[i32::MAX, -1]), Some(&table));
    emulator.forward_into(&plan, tensors).unwrap();
    // Sequence 0 is clamped to the bound of 8 rows (keys: 32, all from the last page, a NaN-filled spare:
    // NaN rows); sequence 1 starts past the buffer and has no rows: nothing else is written.
    let d = 64;
    assert!(
        out[..8 * d].iter().all(|x| x.to_f32() != 0.0),
        "the clamped rows are written"
    );
    assert!(
        out[8 * d..].iter().all(|x| x.to_f32() == 0.0),
        "nothing past them is"
    );
    assert!(lse[8..].iter().all(|x| x.is_nan()));
}

/// The ragged kernels are deterministic: the same paged case under two block schedules (and host thread
/// interleavings) gives bit-identical outputs and lse.
#[test]
fn reruns_under_two_schedules_are_bit_identical() {
    let mut rng = StdRng::seed_from_u64(19);
    let lens = random_lens(&mut rng, 4, 40, 200);
    let case = build::<bf16>(
        &mut rng,
        &lens,
        (40, 200),
        (4, 2, 64),
        Keys::Paged {
            page_size: 3,
            hnd: false,
        },
        |p| p.with_causal(true).with_sinks(vec![0.0, 1.0, -1.0, 2.0]),
    );
    let options = ForwardOptions::default().with_lse(true);
    let run = |schedule| {
        Emulator::new()
            .with_schedule(schedule)
            .with_host_threads(2)
            .forward_ragged(
                &case.problem,
                options,
                case.q.as_slice(),
                case.k.as_slice(),
                case.v.as_slice(),
                &case.metadata(),
            )
            .unwrap()
    };
    let (a, b) = (
        run(Schedule::RoundRobin),
        run(Schedule::Random { seed: 77 }),
    );
    assert!(
        a.out
            .iter()
            .zip(&b.out)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "out differs"
    );
    let (la, lb) = (a.lse.unwrap(), b.lse.unwrap());
    assert!(
        la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "lse differs"
    );
}
