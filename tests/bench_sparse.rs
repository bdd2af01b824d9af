//! `attn bench --sparse`: the sweep pairs each dense shape with the same shape under the block mask the
//! spec builds for its length; a sparse case's FLOPs count the (query, key) pairs it computes (checked
//! here against counting every pair one by one), its density is those over the dense pairs, the kernels
//! that test each element (naive) are predicted at their dense cost, and the table gives the speed-up over the
//! dense record of the same kernel.

use cuda_attention::cli::bench::results::{Mode, Status, Timing};
use cuda_attention::cli::bench::sweep::{Masks, Sweep, CPU_SPARSE};
use cuda_attention::cli::bench::table;
use cuda_attention::cli::runner::Runner;
use cuda_attention::cli::sparse_spec::SparseSpec;
use cuda_attention::{DType, KernelChoice};

/// A sparse sweep of `seqs` (tokens 2048, 4 heads of d64) on the emulated flash kernel and the CPU.
fn sparse_sweep(spec: &str, seqs: &[usize], masks: Masks) -> Sweep {
    Sweep {
        kernels: vec![Runner::Emulator(KernelChoice::Flash), Runner::Cpu],
        dtypes: vec![DType::Bf16],
        head_dims: vec![64],
        masks,
        seqs: seqs.to_vec(),
        tokens: 2048,
        hidden: 256,
        heads: None,
        warmup: 0,
        iters: 3,
        input_sets: 1,
        flush_l2: false,
        host_seconds: 1.0,
        check_rows: 32,
        max_seconds: None,
        varlen: None,
        decode: None,
        sparse: Some(spec.parse::<SparseSpec>().unwrap()),
    }
}

#[test]
fn each_shape_runs_dense_then_sparse_with_flops_on_the_computed_pairs() {
    let spec = "bigbird:block=64,window=1,global=1,random=2,seed=3";
    let sweep = sparse_sweep(spec, &[640, 1000], Masks::Both);
    let cases = sweep.validate().unwrap();
    assert_eq!(cases.len(), 2 * 2 * 2);
    // In the order they run, each sparse case right after its dense shape.
    for pair in cases.chunks(2) {
        assert_eq!(
            (pair[0].mode(), pair[1].mode(), pair[0].seq, pair[0].causal),
            (Mode::Dense, Mode::Sparse, pair[1].seq, pair[1].causal)
        );
    }
    for pair in sweep.cases().unwrap().chunks(2) {
        let (dense, sparse) = (&pair[0], &pair[1]);
        assert_eq!(dense.mode(), Mode::Dense);
        assert_eq!(sparse.mode(), Mode::Sparse);
        assert_eq!((dense.seq, dense.causal), (sparse.seq, sparse.causal));
        let problem = sparse.problem();
        let mask = problem.block_mask.as_ref().expect("a block mask");
        assert_eq!((mask.seq_q(), mask.block_q()), (sparse.seq, 64));
        // Every pair counted one by one: listed block, and on or below the diagonal when causal.
        let (mut pairs, mut dense_pairs) = (0u64, 0u64);
        for i in 0..sparse.seq {
            for j in 0..sparse.seq {
                if !sparse.causal || j <= i {
                    dense_pairs += 1;
                    pairs += u64::from(mask.allows(i, j));
                }
            }
        }
        let per_pair = 4.0 * (sparse.batch * sparse.heads * sparse.head_dim) as f64;
        let record = sparse.record("emulator-flash", Status::Ok, None);
        assert_eq!(record.flops, per_pair * pairs as f64, "{sparse:?}");
        assert_eq!(record.sparse.as_deref(), Some(spec));
        // The density is over the dense pairs counted exactly (the causal diagonal included), not
        // over the halved square of the FLOPs convention.
        assert_eq!(record.density, Some(pairs as f64 / dense_pairs as f64));
        assert!(record.density.unwrap() < 1.0, "{record:?}");
        let dense_record = dense.record("emulator-flash", Status::Ok, None);
        assert_eq!((dense_record.sparse, dense_record.density), (None, None));
        // Flash and the CPU backend visit the listed tiles; naive tests every element.
        assert_eq!(
            sparse.work_flops(Runner::Emulator(KernelChoice::Flash)),
            record.flops
        );
        assert_eq!(sparse.work_flops(Runner::Cpu), record.flops);
        assert_eq!(
            sparse.work_flops(Runner::Gpu(KernelChoice::Naive)),
            dense.flops()
        );
    }
}

#[test]
fn sparse_sweeps_refuse_what_they_cannot_run() {
    let varlen = Sweep {
        varlen: Some(cuda_attention::cli::bench::sweep::Varlen {
            dist: "128,256".parse().unwrap(),
            page_sizes: Vec::new(),
        }),
        ..sparse_sweep("bigbird", &[256], Masks::No)
    };
    assert!(varlen.validate().unwrap_err().contains("drop --varlen"));
    // A block size the builder refuses is named with the length it was built for.
    let odd = sparse_sweep("bigbird:block=96", &[512], Masks::No);
    let error = odd.validate().unwrap_err();
    assert!(
        error.contains("--sparse bigbird:block=96") && error.contains("seq 512"),
        "{error}"
    );
    // The CPU defaults are long enough for the default pattern to leave blocks out.
    let defaults = Sweep {
        seqs: CPU_SPARSE.seqs.to_vec(),
        tokens: CPU_SPARSE.tokens,
        ..sparse_sweep("bigbird", &[1], Masks::No)
    };
    let longest = defaults.cases().unwrap().pop().unwrap();
    assert!(longest.density().unwrap() < 0.25, "{longest:?}");
}

#[test]
fn the_table_gives_each_sparse_record_its_speedup_over_dense() {
    let sweep = sparse_sweep("longformer:window=128,global=0", &[1024], Masks::No);
    let cases = sweep.cases().unwrap();
    let mut records = Vec::new();
    for (case, ms) in cases.iter().zip([8.0, 2.0]) {
        let mut record = case.record("emulator-flash", Status::Ok, None);
        record.timing = Some(Timing::from_times(vec![ms], record.flops));
        records.push(record);
    }
    // A CPU record of the sparse shape alone: no dense record of its kernel, no speed-up.
    let mut cpu = cases[1].record("cpu", Status::Ok, None);
    cpu.timing = Some(Timing::from_times(vec![1.0], cpu.flops));
    records.push(cpu);
    let text = table::render(&table::by_shape(&records));
    let words: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // The header's `median ms` is two words.
    assert_eq!(&words[0][13..15], ["pairs", "speed-up"], "{text}");
    let line = |kernel: &str, layout: &str| {
        words
            .iter()
            .find(|w| w[6] == kernel && w[7] == layout)
            .unwrap_or_else(|| panic!("{kernel} {layout} in\n{text}"))
    };
    let density = records[1].density.unwrap();
    assert_eq!(
        line("emulator-flash", "sparse")[12],
        format!("{:.1}%", 100.0 * density)
    );
    assert_eq!(line("emulator-flash", "sparse")[13], "x4.00", "{text}");
    assert_eq!(line("emulator-flash", "dense")[13], "-", "{text}");
    assert_eq!(line("cpu", "sparse")[13], "-", "{text}");
}
