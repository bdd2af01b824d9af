//! The benchmark's results schema, FLOP formula, statistics, sampled-row check, sweep order, time budget
//! and tables, through the library half of the CLI (`cuda_attention::cli`, feature `cli`), and the schema of
//! benches/torch_sdpa.py (its committed fixture, and its --dry-run output when python3 is here); the
//! ragged batches of `--varlen`/`--paged`: the length distributions, the dense comparison, the FLOPs on
//! the real lengths, the metadata and the sampled-row check through it; the decode steps of `--decode`:
//! their records, bytes, FLOPs and bandwidth, the split-KV choices, the budget per choice, the periodic
//! K and V and the check through them, the decode table, and the torch script's decode sweeps.

use cuda_attention::cli::bench::budget::{Budget, Runs};
use cuda_attention::cli::bench::{slice_check, table};
use cuda_attention::cli::runner::Runner;

use cuda_attention::Tensor;
use std::path::Path;
use std::process::Command;

use cuda_attention::cli::bench::decode::{
    self, Decode, DEFAULT_HEADS_KV, DEFAULT_HEADS_Q, GPU_DECODE, GPU_DECODE_QUICK,
};
use cuda_attention::cli::bench::results::{
    self, BenchResults, Check, CopyBandwidth, Device, Memory, Mode, Record, Settings, SplitKv,
    Status, Timing, SCHEMA,
};
use cuda_attention::cli::bench::slice_check::Elements;
use cuda_attention::cli::bench::sweep::{Case, Masks, Sweep, Varlen, GPU_DEFAULTS, GPU_QUICK};
use cuda_attention::cli::bench::varlen::{self, parse_page_size, LengthDist, RaggedCase};
use cuda_attention::cpu::{backend, CpuBackend};
use cuda_attention::{validate_metadata, AttentionProblem, AttentionShape, DType, KernelChoice};
use half::bf16;
use std::sync::Arc;

/// The torch script's results in its schema (hand-made, see the file's device name), compiled in so that
/// the test binaries also run from the GPU suite's packed folder.
const FIXTURE: &str = include_str!("fixtures/torch_sdpa_small.json");

/// A results file written by `attn bench` before ragged batches (no `mode`, `page_size`, `seq_lens`,
/// `settings.varlen`), compiled in for the same reason.
const OLD_RESULTS: &str = include_str!("../docs/bench/cpu-results.json");

fn record(kernel: &str, seq: usize, status: Status, median: Option<f64>) -> Record {
    let flops = 4.0 * 2.0 * 16.0 * (seq * seq) as f64 * 128.0;
    Record {
        kernel: kernel.into(),
        dtype: "bf16".into(),
        causal: false,
        batch: 2,
        seq,
        heads: 16,
        head_dim: 128,
        mode: Mode::Dense,
        page_size: None,
        seq_lens: None,
        context: None,
        heads_kv: None,
        split_kv: None,
        splits: None,
        gqa_packing: None,
        sparse: None,
        density: None,
        bytes: None,
        bandwidth_gb_s: None,
        copy_fraction: None,
        flops,
        status,
        reason: (status != Status::Ok).then(|| "because".to_string()),
        check: Some(Check {
            rows: 32,
            max_abs_error: 1.5e-3,
            allowed: 2.0e-3,
            passed: status != Status::FailedCheck,
        }),
        timing: median.map(|m| Timing::from_times(vec![m, m * 1.1, m * 0.9], flops)),
        memory: Some(Memory {
            peak_bytes: 123_456_789,
            space: "device".into(),
        }),
    }
}

fn sample_results() -> BenchResults {
    BenchResults {
        schema: SCHEMA.into(),
        tool: "attn bench".into(),
        backend: "gpu".into(),
        device: Device {
            kind: "gpu".into(),
            name: "Test GPU".into(),
            driver: Some("580.00 (CUDA 13.0)".into()),
            compute_capability: Some("9.0".into()),
            memory_bytes: Some(80 << 30),
            processors: Some(132),
        },
        software: "cuda-attention 0.1.0".into(),
        commit: "abc1234+dirty".into(),
        date: "2026-11-28T10:00:00Z".into(),
        command: "attn bench --out x".into(),
        settings: Settings {
            tokens: 16384,
            hidden: 2048,
            warmup: 3,
            iters: 20,
            input_sets: 3,
            l2_flush_bytes: 100 << 20,
            timer: "cuda events".into(),
            memory_method: "exact".into(),
            check_method: "rows".into(),
            max_seconds: Some(60.0),
            varlen: None,
            copy_bandwidth: Vec::new(),
            sparse: None,
        },
        records: vec![
            record("naive", 512, Status::Ok, Some(2.0)),
            record("flash", 512, Status::Ok, Some(0.25)),
            record("naive", 1024, Status::OutOfMemory, None),
            record("flash", 1024, Status::FailedCheck, None),
            record("flash", 2048, Status::Skipped, None),
            record("naive", 2048, Status::Error, None),
        ],
    }
}

#[test]
fn the_schema_round_trips_through_json() {
    let mut results = sample_results();
    // Floats whose shortest form needs 17 digits come back bit for bit.
    results.records[0].timing.as_mut().unwrap().times_ms = vec![125.046_789, 0.1 + 0.2, 1.0 / 3.0];
    let text = serde_json::to_string_pretty(&results).unwrap();
    let back: BenchResults = serde_json::from_str(&text).unwrap();
    assert_eq!(back, results);
    assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
    // Statuses are snake_case words, absent options are null.
    for word in [
        "\"ok\"",
        "\"out_of_memory\"",
        "\"failed_check\"",
        "\"skipped\"",
        "\"error\"",
        "\"timing\": null",
    ] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
    // save and load agree, and load checks the schema tag.
    let dir = std::env::temp_dir().join(format!("attn-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    results.save(&path).unwrap();
    assert_eq!(BenchResults::load(&path).unwrap(), results);
    let other = text.replace(SCHEMA, "something-else/9");
    std::fs::write(&path, other).unwrap();
    let error = BenchResults::load(&path).unwrap_err();
    assert!(error.contains("something-else/9"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `record(kernel, 512, Ok, median)` as a ragged record of sequences `lengths` long: `paged` with a
/// page size, else `varlen`; FLOPs on the lengths by hand (16 heads of 128).
fn ragged_record(kernel: &str, lengths: &[usize], page_size: Option<usize>) -> Record {
    let flops = lengths
        .iter()
        .map(|&l| 4.0 * 16.0 * (l * l) as f64 * 128.0)
        .sum::<f64>();
    Record {
        mode: if page_size.is_some() {
            Mode::Paged
        } else {
            Mode::Varlen
        },
        page_size,
        seq_lens: Some(lengths.to_vec()),
        batch: lengths.len(),
        flops,
        timing: Some(Timing::from_times(vec![0.5, 0.6, 0.4], flops)),
        ..record(kernel, 512, Status::Ok, Some(0.5))
    }
}

#[test]
fn ragged_records_round_trip_and_old_files_load_as_dense() {
    let mut results = sample_results();
    results.settings.varlen = Some("uniform:1..1024:0".into());
    results
        .records
        .push(ragged_record("flash", &[100, 924, 512, 512], None));
    results
        .records
        .push(ragged_record("flash", &[100, 924, 512, 512], Some(16)));
    let text = serde_json::to_string_pretty(&results).unwrap();
    let back: BenchResults = serde_json::from_str(&text).unwrap();
    assert_eq!(back, results);
    for word in [
        "\"mode\": \"dense\"",
        "\"mode\": \"varlen\"",
        "\"mode\": \"paged\"",
        "\"page_size\": 16",
        "\"page_size\": null",
        "\"seq_lens\": null",
        "\"varlen\": \"uniform:1..1024:0\"",
    ] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
    // Records of the same shape in different layouts are different shapes (never compared as one).
    let (varlen, paged) = (&results.records[6], &results.records[7]);
    assert_ne!(varlen.shape_key(), paged.shape_key());
    assert_ne!(varlen.shape_key(), results.records[1].shape_key());
    assert_eq!(
        (varlen.layout(), paged.layout(), results.records[1].layout()),
        ("varlen".into(), "paged:16".into(), "dense".into())
    );
    assert_eq!(paged.series(), "flash paged:16");
    assert_eq!(results.records[1].series(), "flash");

    // A file written before these fields: every record dense, no page size, no lengths, no varlen.
    let dir = std::env::temp_dir().join(format!("attn-old-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    std::fs::write(&path, OLD_RESULTS).unwrap();
    let old = BenchResults::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!OLD_RESULTS.contains("\"mode\"") && !OLD_RESULTS.contains("seq_lens"));
    assert_eq!(old.records.len(), 10);
    assert_eq!(old.settings.varlen, None);
    for r in &old.records {
        assert_eq!(
            (r.mode, r.page_size, r.seq_lens.as_ref()),
            (Mode::Dense, None, None),
            "{r:?}"
        );
    }
    // The torch fixture has none of them either.
    let torch: BenchResults = serde_json::from_str(FIXTURE).unwrap();
    assert!(torch.records.iter().all(|r| r.mode == Mode::Dense));
}

#[test]
fn flops_follow_the_standard_formula_halved_when_causal() {
    // 4 * b * h * sq * sk * d by hand.
    let cases = [
        ((1, 512, 16, 128), 2_147_483_648.0),
        ((32, 512, 16, 128), 68_719_476_736.0),
        ((1, 16384, 16, 128), 2_199_023_255_552.0),
        ((2, 100, 3, 40), 9_600_000.0),
    ];
    for ((batch, seq, heads, head_dim), full) in cases {
        let shape = AttentionShape::new(batch, seq, heads, head_dim);
        assert_eq!(shape.flops(false), full, "{shape:?}");
        assert_eq!(shape.flops(true), full / 2.0, "{shape:?}");
    }
    // GQA does not change the count; seq_q != seq_k multiplies both.
    let gqa = AttentionShape::new(1, 64, 8, 64)
        .with_heads_kv(2)
        .with_seq_k(128);
    assert_eq!(gqa.flops(false), 4.0 * 8.0 * 64.0 * 128.0 * 64.0);
}

#[test]
fn sweeps_hold_tokens_and_hidden_constant() {
    let sweep = Sweep {
        kernels: vec![
            Runner::Gpu(KernelChoice::Naive),
            Runner::Gpu(KernelChoice::Flash),
        ],
        dtypes: vec![DType::Bf16],
        head_dims: GPU_DEFAULTS.head_dims.to_vec(),
        masks: Masks::Both,
        seqs: GPU_DEFAULTS.seqs.to_vec(),
        tokens: GPU_DEFAULTS.tokens,
        hidden: GPU_DEFAULTS.hidden,
        heads: None,
        warmup: 3,
        iters: 20,
        input_sets: 3,
        flush_l2: true,
        host_seconds: 2.0,
        check_rows: 32,
        max_seconds: None,
        varlen: None,
        decode: None,
        sparse: None,
    };
    let cases = sweep.cases().unwrap();
    assert_eq!(cases.len(), 2 * 2 * 6);
    for case in &cases {
        assert_eq!(case.batch * case.seq, 16384, "{case:?}");
        assert_eq!(case.heads * case.head_dim, 2048, "{case:?}");
        let record = case.record("flash", Status::Ok, None);
        let full = 4.0 * (case.batch * case.heads * case.seq * case.seq * case.head_dim) as f64;
        assert_eq!(record.flops, if case.causal { full / 2.0 } else { full });
    }
    // Sequences longer than the token budget still run one sequence.
    let long = Sweep {
        seqs: vec![32768],
        ..sweep.clone()
    };
    assert!(long.cases().unwrap().iter().all(|c| c.batch == 1));
    let bad = Sweep {
        hidden: 1000,
        ..sweep
    };
    assert!(bad.cases().unwrap_err().contains("not a multiple"));
}

/// A bf16 sweep of `seqs` (tokens 4096, hidden 1024) for the flash kernel.
fn small_sweep(seqs: &[usize]) -> Sweep {
    Sweep {
        kernels: vec![Runner::Gpu(KernelChoice::Flash)],
        dtypes: vec![DType::Bf16],
        head_dims: vec![64],
        masks: Masks::No,
        seqs: seqs.to_vec(),
        tokens: 4096,
        hidden: 1024,
        heads: None,
        warmup: 3,
        iters: 20,
        input_sets: 3,
        flush_l2: true,
        host_seconds: 2.0,
        check_rows: 32,
        max_seconds: Some(10.0),
        varlen: None,
        decode: None,
        sparse: None,
    }
}

#[test]
fn the_sweep_runs_cheapest_first_within_each_dtype() {
    let sweep = Sweep {
        dtypes: vec![DType::F16, DType::Bf16],
        head_dims: vec![64, 128],
        masks: Masks::Both,
        ..small_sweep(&[2048, 256, 1024])
    };
    let planned = sweep.cases().unwrap();
    let run = sweep.validate().unwrap();
    assert_eq!(run.len(), planned.len());
    assert!(planned.iter().all(|c| run.contains(c)), "{run:?}");
    // f16 first, as listed; within a dtype FLOPs never decrease, the causal seq 256 shapes first.
    let f16 = run.iter().take_while(|c| c.dtype == DType::F16).count();
    assert_eq!(f16, run.len() / 2, "{run:?}");
    for half in [&run[..f16], &run[f16..]] {
        let flops: Vec<f64> = half
            .iter()
            .map(|c| {
                4.0 * (c.batch * c.heads * c.seq * c.seq * c.head_dim) as f64
                    / if c.causal { 2.0 } else { 1.0 }
            })
            .collect();
        assert!(flops.windows(2).all(|w| w[0] <= w[1]), "{half:?}");
        assert!(half[0].causal && half[0].seq == 256, "{half:?}");
    }
}

#[test]
fn the_time_budget_skips_a_shape_predicted_not_to_fit() {
    let cases = small_sweep(&[256, 1024]).validate().unwrap();
    let (small, large) = (&cases[0], &cases[1]);
    // batch * seq is held constant, so FLOPs grow with seq: 4 times the small shape's.
    assert_eq!((small.seq, large.seq), (256, 1024));
    let flash = Runner::Gpu(KernelChoice::Flash);
    let mut budget = Budget::new(Some(10.0));
    // Nothing to predict from: the first shape of a kernel always runs.
    assert_eq!(budget.skip(flash, large, -1.0), None);
    budget.observe(flash, small, 1.0);
    assert_eq!(budget.predict(flash, large), Some(4.0));
    // A check and one timed run: 8 s.
    assert_eq!(budget.skip(flash, large, 8.5), None);
    assert_eq!(
        budget.skip(flash, large, 7.5).as_deref(),
        Some(
            "over the time budget: a check and one timed run predicted at 8.0 s (scaled by FLOPs \
             from 1.0 s at seq 256 d64), 7.5 s left of --max-seconds 10"
        )
    );
    assert_eq!(
        budget.skip(flash, large, -2.0).as_deref(),
        Some(
            "over the time budget: --max-seconds 10 spent 2.0 s ago (one launch predicted at 4.0 s, \
             scaled by FLOPs from 1.0 s at seq 256 d64)"
        )
    );
    // Predictions keep to their kernel and dtype; without a budget nothing is skipped.
    assert_eq!(
        budget.skip(Runner::Gpu(KernelChoice::Naive), large, 0.1),
        None
    );
    let f16 = Case {
        dtype: DType::F16,
        ..large.clone()
    };
    assert_eq!(budget.skip(flash, &f16, 0.1), None);
    let mut unlimited = Budget::new(None);
    unlimited.observe(flash, small, 1.0);
    assert_eq!(unlimited.skip(flash, large, -100.0), None);
    assert_eq!(unlimited.left(), f64::INFINITY);
}

/// One case of [`Runs::fitting`]: the runs asked for, a launch's and the budget's seconds, what fits.
struct Fit {
    warmup: usize,
    iters: usize,
    launch: f64,
    left: f64,
    fits: Runs,
    note: Option<&'static str>,
}

#[test]
fn runs_are_cut_to_fit_the_time_left() {
    let fit = |left: f64, launch: f64, warmup: usize, timed: usize, note| Fit {
        warmup: 3,
        iters: 20,
        launch,
        left,
        fits: Runs { warmup, timed },
        note,
    };
    let cases = [
        fit(23.0, 1.0, 3, 20, None),
        fit(f64::INFINITY, 1.0, 3, 20, None),
        fit(0.0, 0.0, 3, 20, None),
        // The timed runs are cut first, down to one, then the warm-up runs.
        fit(
            10.5,
            1.0,
            3,
            7,
            Some("runs cut to fit the time budget: 3 of 3 warm-up, at most 7 of 20 timed"),
        ),
        fit(
            2.0,
            1.0,
            1,
            1,
            Some("runs cut to fit the time budget: 1 of 3 warm-up, at most 1 of 20 timed"),
        ),
        fit(
            -5.0,
            1.0,
            0,
            1,
            Some("runs cut to fit the time budget: 0 of 3 warm-up, at most 1 of 20 timed"),
        ),
        Fit {
            warmup: 0,
            ..fit(
                3.0,
                0.5,
                0,
                6,
                Some("runs cut to fit the time budget: 0 of 0 warm-up, at most 6 of 20 timed"),
            )
        },
    ];
    for case in cases {
        let runs = Runs::fitting(case.warmup, case.iters, case.launch, case.left);
        let what = format!(
            "warm-up {} timed {} launch {} s left {} s",
            case.warmup, case.iters, case.launch, case.left
        );
        assert_eq!(runs, case.fits, "{what}");
        assert_eq!(
            runs.note(case.warmup, case.iters).as_deref(),
            case.note,
            "{what}"
        );
    }
}

#[test]
fn timing_statistics() {
    let t = Timing::from_times(vec![5.0, 1.0, 4.0, 2.0, 3.0], 3e9);
    assert_eq!((t.median_ms, t.min_ms, t.max_ms), (3.0, 1.0, 5.0));
    assert_eq!((t.p10_ms, t.p90_ms), (1.0, 5.0));
    assert!((t.tflops - 1.0).abs() < 1e-12, "{}", t.tflops);
    assert_eq!(t.times_ms, vec![5.0, 1.0, 4.0, 2.0, 3.0]);
    let even = Timing::from_times((1..=20).map(f64::from).collect(), 1e9);
    assert_eq!(even.median_ms, 10.5);
    assert_eq!((even.p10_ms, even.p90_ms), (2.0, 18.0));
    assert!((even.spread_percent() - 50.0 * 16.0 / 10.5).abs() < 1e-9);
}

#[test]
fn the_sampled_row_check_passes_a_right_output_and_fails_a_wrong_one() {
    for causal in [false, true] {
        let problem = AttentionProblem::new(AttentionShape::new(2, 75, 4, 64)).with_causal(causal);
        let n = problem.required_len(Tensor::Q).unwrap();
        let values = |seed: usize| -> Vec<bf16> {
            (0..n)
                .map(|i| {
                    bf16::from_f32((((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
                })
                .collect()
        };
        let (q, k, v) = (values(1), values(2), values(3));
        let out = backend::attention(
            &problem,
            cuda_attention::ForwardOptions::default(),
            &q,
            &k,
            &v,
        )
        .unwrap()
        .out;
        let rows = slice_check::sample_rows(&problem.shape, 16, 7);
        assert_eq!(rows.len(), 16);
        assert!(
            rows.contains(&(0, 0, 0)) && rows.contains(&(1, 3, 74)),
            "{rows:?}"
        );
        let good = slice_check::check_rows(&problem, &q, &k, &v, &out, &rows).unwrap();
        assert!(good.passed && good.rows == 16, "{good:?}");
        assert!(good.max_abs_error > 0.0 && good.max_abs_error <= good.allowed);

        // One wrong element in a sampled row, then a row never written (NaN).
        let (b, h, i) = rows[5];
        let mut wrong = out.clone();
        let at = problem.out_strides.offset(b, i, h, 3);
        wrong[at] = bf16::from_f32(wrong[at].to_f32() + 0.05);
        let bad = slice_check::check_rows(&problem, &q, &k, &v, &wrong, &rows).unwrap();
        assert!(!bad.passed && bad.max_abs_error > 0.04, "{bad:?}");
        wrong[at] = bf16::NAN;
        let nan = slice_check::check_rows(&problem, &q, &k, &v, &wrong, &rows).unwrap();
        assert!(!nan.passed && nan.max_abs_error.is_infinite(), "{nan:?}");
    }
}

#[test]
fn tables_show_every_status_and_ratios() {
    let ours = sample_results();
    let text = table::render(&table::by_shape(&ours.records));
    for words in [
        "FAILED CHECK (not timed)",
        "out of memory: because",
        "skipped: because",
        "error: because",
    ] {
        assert!(text.contains(words), "{words} missing from\n{text}");
    }
    let flash = text
        .lines()
        .find(|l| l.contains(" flash ") && l.contains(" 512 "))
        .unwrap();
    assert!(
        flash.contains("0.2500") && flash.contains("ok 1.5e-3 <= 2.0e-3"),
        "{flash}"
    );

    let theirs = vec![record("torch-flash", 512, Status::Ok, Some(0.2))];
    let ratios = table::render_ratios(&ours.records, &theirs);
    let naive = ratios.lines().find(|l| l.contains(" naive ")).unwrap();
    assert!(naive.trim_end().ends_with("10.00"), "{ratios}");
    let flash = ratios.lines().find(|l| l.contains(" flash ")).unwrap();
    assert!(flash.trim_end().ends_with("1.25"), "{ratios}");
    // The budget: in the description; an ok record whose runs it cut says so after the check.
    assert!(
        table::describe(&ours)[2]
            .ends_with("; time budget 60 s (--max-seconds): shapes predicted not to fit skipped"),
        "{:?}",
        table::describe(&ours)
    );
    let mut cut = record("flash", 4096, Status::Ok, Some(1.0));
    cut.reason =
        Some("runs cut to fit the time budget: 0 of 3 warm-up, at most 1 of 20 timed".into());
    let line = table::render(&[&cut]);
    assert!(
        line.trim_end().ends_with(
            "ok 1.5e-3 <= 2.0e-3; runs cut to fit the time budget: 0 of 3 warm-up, at most 1 of 20 timed"
        ),
        "{line}"
    );
    let none = table::render_ratios(&ours.records, &[]);
    assert!(none.contains("no shape was timed by both"), "{none}");
    // Dense records only: no layout column. With a ragged record, every line says its layout after
    // the kernel, and a ragged record never takes a dense record's ratio.
    assert!(!text.contains("layout"), "{text}");
    let mut mixed = ours.records.clone();
    mixed.push(ragged_record("flash", &[100, 924], Some(16)));
    let text = table::render(&table::by_shape(&mixed));
    let words: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0][7], "layout", "{text}");
    assert!(
        words[1..]
            .iter()
            .all(|w| w[7] == "dense" || w[7] == "paged:16"),
        "{text}"
    );
    let paged = words.iter().find(|w| w[7] == "paged:16").unwrap();
    assert_eq!(
        (paged[4], paged[6], paged[8]),
        ("2", "flash", "3"),
        "{text}"
    );
    let theirs = vec![Record {
        mode: Mode::Dense,
        page_size: None,
        seq_lens: None,
        ..ragged_record("torch-flash", &[100, 924], Some(16))
    }];
    let ratios = table::render_ratios(&mixed[6..], &theirs);
    assert!(ratios.contains("no shape was timed by both"), "{ratios}");
    assert_eq!(table::human_bytes(1536), "1.50 KiB");
    assert_eq!(table::human_bytes(16 << 30), "16.0 GiB");
}

#[test]
fn the_torch_fixture_loads_with_the_same_type() {
    let results: BenchResults = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(results.schema, SCHEMA);
    assert_eq!(results.tool, "torch_sdpa.py");
    assert!(results.device.name.contains("not a measurement"));
    // Written without the optional budget field: none.
    assert_eq!(results.settings.max_seconds, None);
    let statuses: Vec<Status> = results.records.iter().map(|r| r.status).collect();
    for status in [Status::Ok, Status::Skipped, Status::OutOfMemory] {
        assert!(statuses.contains(&status), "{statuses:?}");
    }
    for r in &results.records {
        assert!(r.kernel.starts_with("torch-"), "{}", r.kernel);
        let full = 4.0 * (r.batch * r.heads * r.seq * r.seq * r.head_dim) as f64;
        assert_eq!(r.flops, if r.causal { full / 2.0 } else { full }, "{r:?}");
        assert_eq!(r.timing.is_some(), r.status == Status::Ok, "{r:?}");
        if let Some(t) = &r.timing {
            let again = Timing::from_times(t.times_ms.clone(), r.flops);
            assert!((again.median_ms - t.median_ms).abs() < 1e-12);
            assert!((again.tflops - t.tflops).abs() < 1e-9 * t.tflops);
        }
    }
}

/// `python3 benches/torch_sdpa.py ARGS --dry-run`, parsed; `None` without python3.
fn torch_dry_run(args: &[&str]) -> Option<BenchResults> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_sdpa.py");
    if !Path::new(script).exists() {
        eprintln!("{script} is not here (packed test binaries): its dry run is not checked");
        return None;
    }
    let output = match Command::new("python3")
        .arg(script)
        .args(args)
        .arg("--dry-run")
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("python3 not available ({e}): the torch script's dry run is not checked");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the dry run prints the results schema"))
}

#[test]
fn the_torch_script_plans_attn_benchs_gpu_sweeps_in_the_same_schema() {
    for (flags, defaults) in [(&[][..], GPU_DEFAULTS), (&["--quick"][..], GPU_QUICK)] {
        let Some(planned) = torch_dry_run(flags) else {
            return;
        };
        assert_eq!(planned.schema, SCHEMA);
        assert_eq!(planned.settings.tokens, defaults.tokens);
        let sweep = Sweep {
            kernels: vec![Runner::Gpu(KernelChoice::Flash)],
            dtypes: vec![DType::Bf16],
            head_dims: defaults.head_dims.to_vec(),
            masks: Masks::No,
            seqs: defaults.seqs.to_vec(),
            tokens: defaults.tokens,
            hidden: defaults.hidden,
            heads: None,
            warmup: 3,
            iters: 20,
            input_sets: 3,
            flush_l2: true,
            host_seconds: 2.0,
            check_rows: 32,
            max_seconds: None,
            varlen: None,
            decode: None,
            sparse: None,
        };
        let ours: Vec<Record> = sweep
            .cases()
            .unwrap()
            .iter()
            .map(|c| c.record("x", Status::Skipped, None))
            .collect();
        let key = |r: &Record| (r.shape_key(), r.flops.to_bits());
        let mut theirs: Vec<_> = planned
            .records
            .iter()
            .filter(|r| r.kernel == "torch-flash")
            .map(key)
            .collect();
        theirs.dedup();
        assert_eq!(
            theirs,
            ours.iter().map(key).collect::<Vec<_>>(),
            "flags {flags:?}"
        );
        let kernels: Vec<&str> = planned
            .records
            .iter()
            .take(4)
            .map(|r| r.kernel.as_str())
            .collect();
        assert_eq!(
            kernels,
            [
                "torch-flash",
                "torch-efficient",
                "torch-cudnn",
                "torch-math"
            ]
        );
    }
    // The same flags give the same shapes in both tools.
    let Some(planned) = torch_dry_run(&[
        "--seqs",
        "100,300",
        "--tokens",
        "600",
        "--hidden",
        "192",
        "--head-dims",
        "32,64",
        "--causal",
        "both",
        "--dtypes",
        "f16,bf16",
        "--backends",
        "math",
    ]) else {
        return;
    };
    let shapes: Vec<(String, usize, bool, usize, usize, usize)> = planned
        .records
        .iter()
        .map(|r| {
            (
                r.dtype.clone(),
                r.head_dim,
                r.causal,
                r.seq,
                r.batch,
                r.heads,
            )
        })
        .collect();
    assert_eq!(shapes.len(), 2 * 2 * 2 * 2);
    assert_eq!(shapes[0], ("f16".into(), 32, false, 100, 6, 6));
    assert_eq!(shapes[15], ("bf16".into(), 64, true, 300, 2, 3));
}

#[test]
fn length_distributions_parse_or_say_what_is_accepted() {
    let uniform = |min, max, seed| Ok(LengthDist::Uniform { min, max, seed });
    let cases: [(&str, Result<LengthDist, &str>); 14] = [
        ("uniform:1..2048", uniform(1, 2048, 0)),
        ("uniform:64..64:7", uniform(64, 64, 7)),
        ("128,512,2048", Ok(LengthDist::List(vec![128, 512, 2048]))),
        (" 3 , 5 ", Ok(LengthDist::List(vec![3, 5]))),
        ("9", Ok(LengthDist::List(vec![9]))),
        ("", Err("an empty length distribution: use uniform:MIN..MAX[:SEED]")),
        ("normal:5", Err("unknown length distribution 'normal:5': use uniform:MIN..MAX[:SEED] (lengths MIN to MAX inclusive, drawn until they sum to --tokens) or a list of lengths such as 128,512,2048")),
        ("uniform:1-8", Err("'uniform:1-8': expected uniform:MIN..MAX[:SEED], e.g. uniform:1..2048")),
        ("uniform:0..8", Err("length 0 in 'uniform:0..8': every sequence needs at least 1 token")),
        ("uniform:9..8", Err("'uniform:9..8': the shortest length 9 is above the longest 8")),
        ("uniform:1..8:x", Err("'x' in 'uniform:1..8:x' is not a seed: use a whole number")),
        ("128,0", Err("length 0 in '128,0': every sequence needs at least 1 token")),
        ("128,,4", Err("'' in '128,,4' is not a length")),
        ("12,abc", Err("'abc' in '12,abc' is not a length")),
    ];
    for (text, expected) in cases {
        let parsed = text.parse::<LengthDist>();
        match (&parsed, expected.clone()) {
            (Ok(dist), Ok(want)) => {
                assert_eq!(dist, &want, "{text:?}");
                // The spelling written to results.json parses back to the same distribution.
                assert_eq!(dist.to_string().parse::<LengthDist>().as_ref(), Ok(dist));
            }
            (Err(message), Err(want)) => {
                assert!(message.starts_with(want), "{text:?}: {message}")
            }
            _ => panic!("{text:?}: {parsed:?}, expected {expected:?}"),
        }
    }
    let many = vec!["1"; varlen::MAX_SEQUENCES + 1].join(",");
    assert!(many
        .parse::<LengthDist>()
        .unwrap_err()
        .contains("at most 65535"));
    for (text, expected) in [
        ("16", Ok(16)),
        ("1", Ok(1)),
        (
            "0",
            Err("page size 0: a page holds at least 1 token, e.g. 16"),
        ),
        ("-4", Err("'-4' is not a page size")),
        ("big", Err("'big' is not a page size")),
    ] {
        match (parse_page_size(text), expected) {
            (Ok(size), Ok(want)) => assert_eq!(size, want),
            (Err(message), Err(want)) => assert!(message.starts_with(want), "{message}"),
            (got, _) => panic!("{text:?}: {got:?}"),
        }
    }
}

#[test]
fn uniform_lengths_are_seeded_draws_up_to_the_tokens() {
    let dist = |seed| LengthDist::Uniform {
        min: 3,
        max: 40,
        seed,
    };
    let lengths = dist(5).lengths(1000).unwrap();
    assert!(lengths.iter().all(|l| (3..=40).contains(l)), "{lengths:?}");
    let total: usize = lengths.iter().sum();
    let last = *lengths.last().unwrap();
    // Drawn until the sum reaches the tokens: the last draw crossed them.
    assert!(total >= 1000 && total - last < 1000, "{total} {lengths:?}");
    // A uniform draw over 38 values in ~46 draws: both ends of the range appear, and more than 20
    // distinct lengths (a constant or a narrow generator would fail).
    let mut distinct = lengths.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 20, "{distinct:?}");
    assert_eq!(dist(5).lengths(1000).unwrap(), lengths, "seeded");
    assert_ne!(dist(6).lengths(1000).unwrap(), lengths);
    // A list ignores the tokens.
    let list = LengthDist::List(vec![7, 1, 7]);
    assert_eq!(list.lengths(1000).unwrap(), [7, 1, 7]);
    assert!(list.is_list() && !dist(0).is_list());
    let error = LengthDist::Uniform {
        min: 1,
        max: 1,
        seed: 0,
    }
    .lengths(100_000)
    .unwrap_err();
    assert!(
        error.contains("65535 sequences hold only 65535 of the 100000 tokens"),
        "{error}"
    );
}

/// The sum over `lengths` of 4 * heads * l^2 * head_dim, halved when causal: the FLOPs of a ragged
/// batch, by hand.
fn ragged_flops(lengths: &[usize], heads: usize, head_dim: usize, causal: bool) -> f64 {
    let full: usize = lengths.iter().map(|l| 4 * heads * l * l * head_dim).sum();
    full as f64 / if causal { 2.0 } else { 1.0 }
}

#[test]
fn a_varlen_sweep_pairs_each_ragged_batch_with_a_dense_one() {
    let sweep = Sweep {
        kernels: vec![Runner::Cpu],
        dtypes: vec![DType::Bf16],
        head_dims: vec![32, 64],
        masks: Masks::Both,
        hidden: 128,
        varlen: Some(Varlen {
            dist: LengthDist::List(vec![17, 40, 64]),
            page_sizes: vec![16, 64],
        }),
        ..small_sweep(&[512])
    };
    assert_eq!(sweep.lengths().unwrap(), Some(vec![17, 40, 64]));
    let cases = sweep.cases().unwrap();
    assert_eq!(cases.len(), 2 * 2 * 4);
    for group in cases.chunks(4) {
        let modes: Vec<Mode> = group.iter().map(Case::mode).collect();
        assert_eq!(modes, [Mode::Dense, Mode::Varlen, Mode::Paged, Mode::Paged]);
        for case in group {
            // 121 tokens in 3 sequences: the dense batch is 3 x 40 (the mean, rounded).
            assert_eq!((case.batch, case.seq), (3, 40), "{case:?}");
            assert_eq!(case.heads * case.head_dim, 128);
            let record = case.record("cpu", Status::Skipped, None);
            let (heads, d) = (case.heads, case.head_dim);
            match case.mode() {
                Mode::Dense => {
                    assert_eq!(record.flops, ragged_flops(&[40; 3], heads, d, case.causal));
                    assert_eq!((record.page_size, record.seq_lens), (None, None));
                }
                mode => {
                    assert_eq!(
                        record.flops,
                        ragged_flops(&[17, 40, 64], heads, d, case.causal)
                    );
                    assert_eq!(record.seq_lens.as_deref(), Some(&[17, 40, 64][..]));
                    assert_eq!(record.page_size.is_some(), mode == Mode::Paged);
                }
            }
        }
        assert_eq!(
            (
                group[2].record("x", Status::Ok, None).page_size,
                group[3].record("x", Status::Ok, None).page_size
            ),
            (Some(16), Some(64))
        );
    }
    // Validation accepts every case, orders them cheapest first (the dense batch before the ragged
    // ones, whose FLOPs are larger), and sizes the host storage for the largest paged cache.
    let run = sweep.validate().unwrap();
    assert_eq!(run.len(), cases.len());
    assert_eq!(run[0].mode(), Mode::Dense);
    let paged64 = cases
        .iter()
        .find(|c| c.record("x", Status::Ok, None).page_size == Some(64))
        .unwrap();
    // 64-token pages: 1 + 1 + 1 pages of 64 rows.
    assert_eq!(
        paged64.problem().required_len(Tensor::K).unwrap(),
        3 * 64 * paged64.heads * paged64.head_dim
    );
    let (input_len, _) = Sweep::buffer_lens(&run).unwrap();
    assert_eq!(input_len, 3 * 64 * 128);
    // Repeated page sizes are refused; a list with --tokens is refused by the CLI (tests/bench_cli.rs).
    let repeated = Sweep {
        varlen: Some(Varlen {
            dist: LengthDist::List(vec![4]),
            page_sizes: vec![16, 16],
        }),
        ..sweep.clone()
    };
    assert_eq!(repeated.validate().unwrap_err(), "--paged lists 16 twice");
}

#[test]
fn ragged_layouts_address_every_key_once() {
    let lengths: Arc<[usize]> = Arc::from(vec![5, 33, 1, 16, 17]);
    let packed = RaggedCase {
        lengths: lengths.clone(),
        page_size: None,
    }
    .layout()
    .unwrap();
    assert_eq!(packed.cu_seqlens_q, [0, 5, 38, 39, 55, 72]);
    assert_eq!(
        packed.cu_seqlens_k.as_deref(),
        Some(&[0, 5, 38, 39, 55, 72][..])
    );
    assert_eq!(
        (packed.seqused_k.as_ref(), packed.block_table.as_ref()),
        (None, None)
    );
    assert_eq!(packed.key_position(1, 7), (0, 12));
    assert_eq!(packed.bytes(), 12 * 4);

    for page_size in [1, 3, 16, 64] {
        let case = RaggedCase {
            lengths: lengths.clone(),
            page_size: Some(page_size),
        };
        let layout = case.layout().unwrap();
        let problem = case.problem(2, 8, true);
        validate_metadata(&problem, &layout.metadata()).unwrap();
        let pages: usize = lengths.iter().map(|l| l.div_ceil(page_size)).sum();
        assert_eq!(case.pages(), pages);
        assert_eq!(
            layout.seqused_k.as_deref(),
            Some(&[5, 33, 1, 16, 17][..]),
            "page {page_size}"
        );
        // Every (page, row) slot of the cache holds at most one key, every key a slot inside the cache.
        let mut seen = std::collections::BTreeSet::new();
        for (b, &length) in lengths.iter().enumerate() {
            for j in 0..length {
                let (page, row) = layout.key_position(b, j);
                assert!(page < pages && row < page_size, "page {page_size}: {b} {j}");
                assert!(
                    seen.insert((page, row)),
                    "page {page_size}: {b} {j} shares a slot"
                );
            }
        }
        // The pages are shuffled: not handed out in order (for more than a couple of pages).
        let used: Vec<usize> = (0..lengths.len())
            .flat_map(|b| (0..lengths[b].div_ceil(page_size)).map(move |p| (b, p)))
            .map(|(b, p)| layout.key_position(b, p * page_size).0)
            .collect();
        assert_eq!(used.len(), pages);
        if pages > 4 {
            assert!(
                used.windows(2).any(|w| w[1] != w[0] + 1),
                "page {page_size}: {used:?}"
            );
        }
    }
}

#[test]
fn the_ragged_row_check_passes_a_right_output_and_fails_a_wrong_one() {
    let lengths: Arc<[usize]> = Arc::from(vec![30, 1, 75, 12]);
    for (page_size, causal) in [
        (None, false),
        (None, true),
        (Some(16), true),
        (Some(7), false),
    ] {
        let case = RaggedCase {
            lengths: lengths.clone(),
            page_size,
        };
        let problem = case.problem(4, 64, causal);
        let layout = case.layout().unwrap();
        let values = |tensor: Tensor, seed: usize| -> Vec<bf16> {
            (0..problem.required_len(tensor).unwrap())
                .map(|i| {
                    bf16::from_f32((((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
                })
                .collect()
        };
        let (q, k, v) = (
            values(Tensor::Q, 1),
            values(Tensor::K, 2),
            values(Tensor::V, 3),
        );
        let out = CpuBackend
            .forward_ragged(
                &problem,
                cuda_attention::ForwardOptions::default(),
                &q,
                &k,
                &v,
                &layout.metadata(),
            )
            .unwrap()
            .out;
        let rows = slice_check::sample_ragged_rows(&lengths, 4, 24, 9);
        assert_eq!(rows.len(), 24);
        assert!(
            rows.contains(&(0, 0, 0)) && rows.contains(&(3, 3, 11)) && rows.contains(&(2, 2, 37)),
            "{rows:?}"
        );
        assert!(
            rows.iter().all(|&(b, h, i)| h < 4 && i < lengths[b]),
            "{rows:?}"
        );
        let what = format!("page {page_size:?} causal {causal}");
        let check = |out: &[bf16]| {
            slice_check::check_ragged_rows(&problem, &layout, &lengths, [&q, &k, &v, out], &rows)
                .unwrap()
        };
        let good = check(&out);
        assert!(good.passed && good.max_abs_error > 0.0, "{what}: {good:?}");

        // One wrong element in a sampled row of the long sequence, then a row never written (NaN).
        let (b, h, i) = *rows.iter().find(|r| r.0 == 2).unwrap();
        let at = problem.out_strides.offset(0, layout.query_row(b) + i, h, 5);
        let mut wrong = out.clone();
        wrong[at] = bf16::from_f32(wrong[at].to_f32() + 0.05);
        let bad = check(&wrong);
        assert!(!bad.passed && bad.max_abs_error > 0.04, "{what}: {bad:?}");
        wrong[at] = bf16::NAN;
        assert!(check(&wrong).max_abs_error.is_infinite(), "{what}");
        // A row outside its sequence is an error, not a silent pass.
        let error = slice_check::check_ragged_rows(
            &problem,
            &layout,
            &lengths,
            [&q, &k, &v, &out],
            &[(1, 0, 1)],
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("row 1 of sequence 1 is outside its 1 rows"),
            "{error}"
        );
    }
}

/// `record(kernel, 1, Ok, median)` as a decode record: batch 4, context 8192, 32 query heads of 128, 8
/// key/value heads; bytes and FLOPs by hand.
fn decode_record(kernel: &str, split_kv: Option<SplitKv>, median: f64) -> Record {
    // K and V: 4 * 8192 * 8 * 128 elements each; Q and O: 4 * 32 * 128 each; bf16.
    let bytes = (2 * 4 * 8192 * 8 * 128 + 2 * 4 * 32 * 128) * 2;
    let flops = 4.0 * 4.0 * 32.0 * 8192.0 * 128.0;
    Record {
        batch: 4,
        heads: 32,
        mode: Mode::Decode,
        context: Some(8192),
        heads_kv: Some(8),
        split_kv,
        splits: split_kv.map(|s| if s == SplitKv::Auto { 3 } else { 1 }),
        gqa_packing: split_kv.map(|s| if s == SplitKv::Auto { 4 } else { 1 }),
        bytes: Some(bytes),
        flops,
        timing: Some(Timing::from_times(
            vec![median, median * 1.1, median * 0.9],
            flops,
        )),
        ..record(kernel, 1, Status::Ok, Some(median))
    }
}

#[test]
fn decode_records_round_trip_and_older_files_have_none_of_their_fields() {
    let mut results = sample_results();
    results.settings.copy_bandwidth = vec![CopyBandwidth::from_times(
        2 << 30,
        vec![1.0, 0.5, 0.75],
        "device".into(),
        "a copy".into(),
    )];
    let mut auto = decode_record("flash", Some(SplitKv::Auto), 0.05);
    auto.set_bandwidth(Some(4000.0));
    results.records.push(auto);
    results
        .records
        .push(decode_record("flash", Some(SplitKv::Off), 0.2));
    let text = serde_json::to_string_pretty(&results).unwrap();
    let back: BenchResults = serde_json::from_str(&text).unwrap();
    assert_eq!(back, results);
    for word in [
        "\"mode\": \"decode\"",
        "\"context\": 8192",
        "\"heads_kv\": 8",
        "\"split_kv\": \"auto\"",
        "\"split_kv\": \"off\"",
        "\"splits\": 3",
        "\"gqa_packing\": 4",
        "\"split_kv\": null",
        "\"bandwidth_gb_s\": null",
        "\"space\": \"device\"",
    ] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
    // The two split choices are one shape (both compare with the same PyTorch record), two lines.
    let (auto, off) = (&results.records[6], &results.records[7]);
    assert_eq!(auto.shape_key(), off.shape_key());
    assert_ne!(auto.shape_key(), results.records[0].shape_key());
    assert_eq!(
        (auto.series(), off.series(), auto.layout()),
        (
            "flash split:auto".into(),
            "flash split:off".into(),
            "decode".into()
        )
    );
    assert_eq!(auto.x_position(), 8192);
    assert_eq!(results.records[0].x_position(), 512);
    assert_eq!(auto.config_key(), ("bf16".into(), 128, false, Some(4)));
    assert_eq!(results.records[0].config_key().3, None);

    // Files that predate decode (attn's and the torch fixture): no decode field, no copy.
    for old in [OLD_RESULTS, FIXTURE] {
        assert!(!old.contains("context") && !old.contains("copy_bandwidth"));
        let old: BenchResults = serde_json::from_str(old).unwrap();
        assert!(old.settings.copy_bandwidth.is_empty());
        for r in &old.records {
            assert_ne!(r.mode, Mode::Decode);
            assert_eq!(
                (r.context, r.heads_kv, r.split_kv, r.splits),
                (None, None, None, None),
                "{r:?}"
            );
            assert_eq!(
                (r.bytes, r.bandwidth_gb_s, r.copy_fraction),
                (None, None, None),
                "{r:?}"
            );
        }
    }
}

#[test]
fn decode_bandwidth_is_the_bytes_over_the_median_time() {
    // 1e9 bytes in a median of 0.5 ms: 2000 GB/s; half of a 4000 GB/s copy.
    let mut r = decode_record("flash", Some(SplitKv::Auto), 0.5);
    r.bytes = Some(1_000_000_000);
    r.set_bandwidth(Some(4000.0));
    assert_eq!(r.bandwidth_gb_s, Some(2000.0));
    assert_eq!(r.copy_fraction, Some(0.5));
    // No copy measured: bandwidth, no fraction; not timed or not decode: neither.
    r.set_bandwidth(None);
    assert_eq!((r.bandwidth_gb_s, r.copy_fraction), (Some(2000.0), None));
    let mut untimed = decode_record("flash", Some(SplitKv::Off), 0.5);
    untimed.timing = None;
    untimed.set_bandwidth(Some(4000.0));
    assert_eq!(
        (untimed.bandwidth_gb_s, untimed.copy_fraction),
        (None, None)
    );
    let mut dense = record("flash", 512, Status::Ok, Some(0.5));
    dense.set_bandwidth(Some(4000.0));
    assert_eq!((dense.bandwidth_gb_s, dense.copy_fraction), (None, None));
    // A copy of 3 GiB (read + written) with a median of 1.5 ms (of 1, 1.5, 2).
    let copy =
        CopyBandwidth::from_times(3 << 30, vec![2.0, 1.0, 1.5], "host".into(), "memcpy".into());
    assert_eq!(copy.median_ms, 1.5);
    assert_eq!(copy.bandwidth_gb_s, (3u64 << 30) as f64 / 1.5e-3 / 1e9);
    assert_eq!(results::gb_per_s(1_000, 0.0), 0.0);
}

/// A decode sweep on the GPU kernels: bf16, head dim 128, batches 1 and 4, contexts 1024 and 4096, 32
/// query heads, 8 key/value heads.
fn decode_sweep() -> Sweep {
    Sweep {
        head_dims: vec![128],
        heads: Some(32),
        decode: Some(Decode {
            batches: vec![4, 1],
            contexts: vec![4096, 1024],
            heads_kv: 8,
            seq_q: 1,
        }),
        ..small_sweep(&[512])
    }
}

#[test]
fn a_decode_sweep_covers_batches_and_contexts_with_both_split_choices_on_flash() {
    let sweep = decode_sweep();
    let cases = sweep.validate().unwrap();
    // Cheapest first: FLOPs grow with batch * context (equal FLOPs keep the order given, by batch).
    let shapes: Vec<(usize, usize)> = cases
        .iter()
        .map(|c| (c.batch, c.decode.unwrap().context))
        .collect();
    assert_eq!(shapes, [(1, 1024), (4, 1024), (1, 4096), (4, 4096)]);
    for case in &cases {
        let context = case.decode.unwrap().context;
        assert_eq!((case.mode(), case.seq, case.heads), (Mode::Decode, 1, 32));
        let shape = case.problem().shape;
        assert_eq!(
            (shape.seq_q, shape.seq_k, shape.heads_q, shape.heads_kv),
            (1, context, 32, 8)
        );
        // K and V: batch * context * 8 * 128 bf16 each; Q and O: batch * 32 * 128 bf16 each.
        let bytes = (2 * case.batch * context * 8 * 128 + 2 * case.batch * 32 * 128) * 2;
        assert_eq!(case.bytes(), Some(bytes as u64), "{case:?}");
        assert_eq!(
            case.flops(),
            4.0 * (case.batch * 32 * context * 128) as f64,
            "{case:?}"
        );
        // Flash twice (split-KV auto, then off), the CPU backend once, with no split choice.
        let flash = case.variants(Runner::Gpu(KernelChoice::Flash));
        let splits: Vec<Option<SplitKv>> = flash.iter().map(Case::split).collect();
        assert_eq!(splits, [Some(SplitKv::Auto), Some(SplitKv::Off)]);
        let emulated = case.variants(Runner::Emulator(KernelChoice::Flash));
        assert_eq!(emulated.len(), 2);
        let cpu = case.variants(Runner::Cpu);
        assert_eq!(cpu.len(), 1);
        assert_eq!(cpu[0].split(), None);
        let record = flash[0].record("flash", Status::Ok, None);
        assert_eq!(
            (
                record.mode,
                record.context,
                record.heads_kv,
                record.split_kv
            ),
            (Mode::Decode, Some(context), Some(8), Some(SplitKv::Auto))
        );
        assert_eq!(record.bytes, Some(bytes as u64));
    }
    // The storage: the largest q and k (16M elements), repeating a pattern of 4M elements; a smaller
    // k is its own pattern.
    let storage = Sweep::decode_storage(&cases).unwrap();
    assert_eq!(
        (storage.q_len, storage.kv_len, storage.pattern_len),
        (4 * 32 * 128, 4 * 4096 * 8 * 128, 1 << 22)
    );
    let small = Sweep::decode_storage(&cases[..1]).unwrap();
    assert_eq!(small.pattern_len, 1024 * 8 * 128);
    // Dense cases have no decode figures and one variant.
    let dense = small_sweep(&[512]).cases().unwrap();
    assert_eq!(dense[0].bytes(), None);
    assert_eq!(dense[0].variants(Runner::Gpu(KernelChoice::Flash)).len(), 1);
}

#[test]
fn speculative_decode_counts_the_keys_each_causal_query_sees() {
    let mut sweep = decode_sweep();
    sweep.masks = Masks::Both;
    if let Some(decode) = sweep.decode.as_mut() {
        decode.seq_q = 4;
        decode.batches = vec![2];
        decode.contexts = vec![100];
    }
    let cases = sweep.validate().unwrap();
    assert_eq!(cases.len(), 2);
    for case in &cases {
        // Causal, bottom-right: query i of 4 sees 100 - 4 + 1 + i keys, 394 in all; else 4 * 100.
        let keys = if case.causal { 97 + 98 + 99 + 100 } else { 400 };
        assert_eq!(case.flops(), 4.0 * (2 * 32 * 128 * keys) as f64, "{case:?}");
        // Q and O hold 4 rows per sequence.
        let bytes = (2 * 2 * 100 * 8 * 128 + 2 * 2 * 4 * 32 * 128) * 2;
        assert_eq!(case.bytes(), Some(bytes as u64));
    }
}

#[test]
fn decode_sweeps_refuse_what_they_cannot_run() {
    let with = |edit: &dyn Fn(&mut Sweep)| {
        let mut sweep = decode_sweep();
        edit(&mut sweep);
        sweep.validate().unwrap_err()
    };
    let decode = |edit: &'static dyn Fn(&mut Decode)| {
        move |sweep: &mut Sweep| {
            if let Some(d) = sweep.decode.as_mut() {
                edit(d)
            }
        }
    };
    assert_eq!(
        with(&decode(&|d| d.seq_q = 17)),
        "--seq-q 17 is out of range: use 1 to 16"
    );
    assert_eq!(
        with(&decode(&|d| d.batches = vec![1, 1])),
        "--batches lists 1 twice"
    );
    assert_eq!(
        with(&decode(&|d| d.contexts = vec![0])),
        "--batches, --contexts and --head-dims need at least one value each, every one at least 1"
    );
    assert!(
        with(&|s| s.kernels = vec![Runner::Emulator(KernelChoice::Naive)])
            .starts_with("--kernels emulator-naive with --decode:")
    );
    let error = with(&decode(&|d| d.heads_kv = 5));
    assert!(
        error.contains("batch 4 heads 32 (decode: context 4096, heads_kv 5)")
            && error.contains("is not a multiple of heads_kv (5)"),
        "{error}"
    );
    assert_eq!(
        with(&|s| s.heads = None),
        "--decode needs the query heads (--heads)"
    );
}

#[test]
fn the_budget_predicts_each_split_choice_from_its_own_launches_and_keeps_room_for_first_ones() {
    let cases = decode_sweep().validate().unwrap();
    let flash = Runner::Gpu(KernelChoice::Flash);
    let small = &cases[0].variants(flash);
    let large = &cases[3].variants(flash);
    let (small_auto, small_off) = (&small[0], &small[1]);
    let (large_auto, large_off) = (&large[0], &large[1]);
    let mut budget = Budget::new(Some(100.0));
    for case in [small_auto, small_off] {
        budget.expect(flash, case);
    }
    // Two first records to come: the runs of a 1 s launch keep 2 x 2 s for them.
    let left = budget.left();
    assert!((left - budget.left_for_runs(1.0) - 4.0).abs() < 1e-3);
    budget.observe(flash, small_auto, 0.5);
    // The unsplit launch is not predicted from the split one (a GPU runs them 10x apart).
    assert_eq!(budget.predict(flash, large_off), None);
    assert_eq!(budget.skip(flash, large_off, 0.0), None);
    // 16 times the FLOPs of the small step.
    assert_eq!(budget.predict(flash, large_auto), Some(8.0));
    let reason = budget.skip(flash, large_auto, 10.0).unwrap();
    assert!(
        reason.contains("scaled by FLOPs from 500 ms at batch 1 context 1024 d128)"),
        "{reason}"
    );
    // One first record to come, then none.
    assert!((budget.left() - budget.left_for_runs(1.0) - 2.0).abs() < 1e-3);
    budget.observe(flash, small_off, 2.0);
    assert!((budget.left() - budget.left_for_runs(1.0)).abs() < 1e-3);
    // A kernel that already ran is not expected again.
    budget.expect(flash, large_auto);
    assert!((budget.left() - budget.left_for_runs(1.0)).abs() < 1e-3);
}

#[test]
fn decode_k_and_v_repeat_their_pattern_and_the_check_reads_them_so() {
    let pattern: Vec<bf16> = (0..7)
        .map(|i| bf16::from_f32(i as f32 / 8.0 - 0.4))
        .collect();
    let tiled = decode::tile("k", &pattern, 30).unwrap();
    assert_eq!(tiled.len(), 30);
    for (i, x) in tiled.iter().enumerate() {
        assert_eq!(*x, pattern[i % 7], "element {i}");
    }
    assert!(decode::tile::<bf16>("k", &[], 3).is_err());
    // A decode step on the CPU backend: the check through the pattern agrees with the check on the
    // tiled tensors, and fails an output that is off in one row.
    let problem = AttentionProblem::new(
        AttentionShape::new(2, 1, 4, 16)
            .with_seq_k(45)
            .with_heads_kv(2),
    );
    let len = |t| problem.required_len(t).unwrap();
    let q = decode::tile("q", &pattern, len(Tensor::Q)).unwrap();
    let k_pattern: Vec<bf16> = (0..61)
        .map(|i| bf16::from_f32(((i * 37) % 61) as f32 / 30.0 - 1.0))
        .collect();
    let v_pattern: Vec<bf16> = k_pattern.iter().rev().copied().collect();
    let k = decode::tile("k", &k_pattern, len(Tensor::K)).unwrap();
    let v = decode::tile("v", &v_pattern, len(Tensor::V)).unwrap();
    let (q, k, v) = (&q[..], &k[..], &v[..]);
    let mut out = CpuBackend::new()
        .forward(&problem, Default::default(), q, k, v)
        .unwrap()
        .out;
    let rows = slice_check::sample_rows(&problem.shape, 8, 1);
    let periodic = |out: &[bf16]| {
        slice_check::check_rows_in(
            &problem,
            [
                Elements::Slice(q),
                Elements::Periodic(&k_pattern),
                Elements::Periodic(&v_pattern),
            ],
            out,
            &rows,
        )
        .unwrap()
    };
    let whole = slice_check::check_rows(&problem, q, k, v, &out, &rows).unwrap();
    assert!(whole.passed);
    assert_eq!(periodic(&out), whole);
    // Row (b, h) of the [2, 1, 4, 16] output starts at b * 64 + h * 16.
    let (b, h, _) = rows[0];
    let at = b * 64 + h * 16;
    out[at] = bf16::from_f32(out[at].to_f32() + 0.5);
    assert!(!periodic(&out).passed);
    // An element past a slice is an error, not a panic.
    let short = slice_check::check_rows_in(
        &problem,
        [
            Elements::Slice(q),
            Elements::Slice(&k[..10]),
            Elements::Slice(v),
        ],
        &out,
        &rows,
    );
    assert!(short.is_err());
}

#[test]
fn the_decode_table_shows_bandwidth_and_the_split_choice() {
    let mut auto = decode_record("flash", Some(SplitKv::Auto), 0.5);
    auto.bytes = Some(1_000_000_000);
    auto.set_bandwidth(Some(4000.0));
    let mut off = decode_record("flash", Some(SplitKv::Off), 2.0);
    off.bytes = Some(1_000_000_000);
    off.set_bandwidth(Some(4000.0));
    let mut skipped = decode_record("cpu", None, 1.0);
    skipped.status = Status::Skipped;
    skipped.timing = None;
    skipped.reason = Some("too slow".into());
    let dense = record("flash", 512, Status::Ok, Some(0.25));
    let text = table::render(&[&dense, &auto, &off, &skipped]);
    let header = text
        .lines()
        .find(|l| l.contains("context"))
        .unwrap_or_else(|| panic!("no decode table:\n{text}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "dtype", "d", "causal", "batch", "context", "q", "heads", "kernel", "splits", "pack",
            "runs", "median", "ms", "spread", "GB/s", "copy", "memory", "check"
        ]
    );
    let line = |needle: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} line:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // 1e9 bytes in 0.5 ms: 2000 GB/s, 50% of the copy; in 2 ms: 500 GB/s, 12.5%.
    let auto = line("split:auto");
    assert_eq!(
        auto[..15].join(" "),
        "bf16 128 no 4 8192 1 32/8 flash split:auto 3 x4 3 0.5000 10.0% 2000"
    );
    assert_eq!(auto[15], "50.0%");
    let off = line("split:off");
    assert_eq!(
        (
            off[9].as_str(),
            off[10].as_str(),
            off[14].as_str(),
            off[15].as_str()
        ),
        ("1", "-", "500", "12.5%")
    );
    assert!(line(" cpu ").join(" ").ends_with("- skipped: too slow"));
    // The prefill table comes first, as before.
    assert!(text.starts_with("dtype"));
    assert!(text.contains(" seq "));
    // Ratios of decode records name the batch, the context and the split choice.
    let theirs = vec![Record {
        kernel: "torch-flash".into(),
        split_kv: None,
        splits: None,
        ..decode_record("torch-flash", None, 1.0)
    }];
    let ours = vec![
        decode_record("flash", Some(SplitKv::Auto), 0.5),
        decode_record("flash", Some(SplitKv::Off), 2.0),
    ];
    let ratios = table::render_ratios(&ours, &theirs);
    let words: Vec<Vec<&str>> = ratios
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0][3..6], ["batch", "context", "ours"], "{ratios}");
    assert_eq!(
        words[1],
        [
            "bf16",
            "128",
            "no",
            "4",
            "8192",
            "flash",
            "split:auto",
            "0.50"
        ]
    );
    assert_eq!(
        words[2],
        [
            "bf16",
            "128",
            "no",
            "4",
            "8192",
            "flash",
            "split:off",
            "2.00"
        ]
    );
    // The copy is described with the run.
    let mut results = sample_results();
    results.settings.copy_bandwidth = vec![CopyBandwidth::from_times(
        4_000_000_000,
        vec![1.0],
        "device".into(),
        "a device-to-device copy".into(),
    )];
    let described = table::describe(&results).join("\n");
    assert!(
        described.contains("device copy bandwidth 4000 GB/s (median 1.000 ms of 3.73 GiB read + written; a device-to-device copy)"),
        "{described}"
    );
}

#[test]
fn the_torch_script_plans_attn_benchs_decode_sweeps_in_the_same_schema() {
    let defaults = [
        (&["--decode"][..], GPU_DECODE),
        (&["--decode", "--quick"][..], GPU_DECODE_QUICK),
    ];
    for (flags, sizes) in defaults {
        let Some(planned) = torch_dry_run(flags) else {
            return;
        };
        let sweep = Sweep {
            head_dims: sizes.head_dims.to_vec(),
            heads: Some(DEFAULT_HEADS_Q),
            decode: Some(Decode {
                batches: sizes.batches.to_vec(),
                contexts: sizes.contexts.to_vec(),
                heads_kv: DEFAULT_HEADS_KV,
                seq_q: 1,
            }),
            ..small_sweep(&[512])
        };
        let key = |r: &Record| (r.shape_key(), r.flops.to_bits(), r.bytes);
        let ours: Vec<_> = sweep
            .cases()
            .unwrap()
            .iter()
            .map(|c| key(&c.record("x", Status::Skipped, None)))
            .collect();
        let theirs: Vec<_> = planned
            .records
            .iter()
            .filter(|r| r.kernel == "torch-flash")
            .map(key)
            .collect();
        assert_eq!(theirs, ours, "flags {flags:?}");
        assert!(planned.records.iter().all(|r| r.mode == Mode::Decode
            && r.split_kv.is_none()
            && r.splits.is_none()
            && r.gqa_packing.is_none()));
        // The largest batch of one query each.
        assert_eq!(Some(&planned.settings.tokens), sizes.batches.iter().max());
    }
    // The same flags give the same shapes, FLOPs and bytes in both tools (speculative, causal, f16).
    let flags = [
        "--batches",
        "2,3",
        "--contexts",
        "100,300",
        "--heads",
        "12",
        "--heads-kv",
        "4",
        "--seq-q",
        "3",
        "--head-dims",
        "64",
        "--causal",
        "both",
        "--dtypes",
        "f16",
    ];
    let Some(planned) = torch_dry_run(&[&["--decode", "--backends", "math"][..], &flags].concat())
    else {
        return;
    };
    let mut args = vec!["bench", "--dry-run", "--kernels", "flash", "--decode"];
    args.extend(flags);
    let output = Command::new(env!("CARGO_BIN_EXE_attn"))
        .args(&args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let ours: BenchResults = serde_json::from_slice(&output.stdout).unwrap();
    let shapes = |r: &BenchResults| {
        let mut shapes: Vec<_> = r
            .records
            .iter()
            .map(|r| (r.shape_key(), r.flops.to_bits(), r.bytes))
            .collect();
        shapes.sort();
        shapes.dedup();
        shapes
    };
    assert_eq!(shapes(&ours), shapes(&planned));
    assert_eq!(shapes(&ours).len(), 2 * 2 * 2);
    // attn plans flash twice per shape, with and without split-KV.
    assert_eq!(ours.records.len(), 2 * 2 * 2 * 2);
}
