//! benches/numpy_attention.py, the unfused numpy baseline of the CPU backend: its --dry-run plans the
//! shapes and FLOPs of `attn bench`'s CPU sweeps in attn's results schema, and (where numpy is installed)
//! a real run writes a file that loads with attn's type, whose records passed their check against the
//! f64 rule and merge into the ratio table of `attn bench --compare`.

use std::path::Path;
use std::process::Command;

use cuda_attention::cli::bench::results::{BenchResults, Record, Status, SCHEMA};
use cuda_attention::cli::bench::sweep::{Masks, Sweep, CPU_DEFAULTS, CPU_QUICK};
use cuda_attention::cli::bench::table;
use cuda_attention::cli::runner::Runner;
use cuda_attention::DType;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/numpy_attention.py");

/// `python3 benches/numpy_attention.py ARGS`; `None` when the script or python3 is not here.
fn script(args: &[&str]) -> Option<std::process::Output> {
    if !Path::new(SCRIPT).exists() {
        eprintln!("{SCRIPT} is not here (packed test binaries): not checked");
        return None;
    }
    match Command::new("python3").arg(SCRIPT).args(args).output() {
        Ok(output) => Some(output),
        Err(e) => {
            eprintln!("python3 not available ({e}): the numpy script is not checked");
            None
        }
    }
}

fn parsed(output: &std::process::Output) -> BenchResults {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints the results schema")
}

#[test]
fn the_dry_run_plans_attn_benchs_cpu_sweeps() {
    for (flags, defaults) in [(&[][..], CPU_DEFAULTS), (&["--quick"][..], CPU_QUICK)] {
        let Some(output) = script(&[flags, &["--dry-run"]].concat()) else {
            return;
        };
        let planned = parsed(&output);
        assert_eq!(planned.schema, SCHEMA);
        assert_eq!(planned.tool, "numpy_attention.py");
        assert_eq!(planned.backend, "cpu");
        assert_eq!(planned.settings.tokens, defaults.tokens);
        let sweep = Sweep {
            kernels: vec![Runner::Cpu],
            dtypes: vec![DType::F32],
            head_dims: defaults.head_dims.to_vec(),
            masks: Masks::No,
            seqs: defaults.seqs.to_vec(),
            tokens: defaults.tokens,
            hidden: defaults.hidden,
            heads: None,
            warmup: 0,
            iters: 20,
            input_sets: 3,
            flush_l2: false,
            host_seconds: 2.0,
            check_rows: 32,
            max_seconds: None,
            varlen: None,
            decode: None,
            sparse: None,
        };
        let key = |r: &Record| (r.shape_key(), r.flops.to_bits());
        let ours: Vec<_> = sweep
            .cases()
            .unwrap()
            .iter()
            .map(|c| key(&c.record("cpu", Status::Skipped, None)))
            .collect();
        let theirs: Vec<_> = planned.records.iter().map(key).collect();
        assert_eq!(theirs, ours, "flags {flags:?}");
        assert!(planned.records.iter().all(|r| r.kernel == "numpy"));
    }
    // Bad flags are refused before any work, with exit status 2.
    let Some(output) = script(&["--head-dims", "48", "--hidden", "100", "--dry-run"]) else {
        return;
    };
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a multiple of head_dim"));
}

#[test]
fn a_real_run_passes_its_checks_and_merges_into_the_ratio_table() {
    let numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .status();
    if !numpy.is_ok_and(|s| s.success()) {
        eprintln!("numpy is not installed (.ci/run installs it): the real run is not checked");
        return;
    }
    let args = [
        "--seqs",
        "32,96",
        "--tokens",
        "192",
        "--hidden",
        "128",
        "--head-dims",
        "64",
        "--causal",
        "both",
        "--dtypes",
        "f32,bf16",
        "--iters",
        "3",
    ];
    let Some(output) = script(&args) else {
        return;
    };
    let results = parsed(&output);
    assert!(results.software.contains("numpy"), "{}", results.software);
    assert_eq!(results.records.len(), 2 * 2 * 2);
    for r in &results.records {
        if r.dtype == "bf16" {
            assert_eq!(r.status, Status::Skipped, "{r:?}");
            continue;
        }
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let check = r.check.as_ref().expect("a checked record");
        assert!(check.passed && check.max_abs_error <= check.allowed && check.allowed < 1e-5);
        let full = 4.0 * (r.batch * r.heads * r.seq * r.seq * r.head_dim) as f64;
        assert_eq!(r.flops, if r.causal { full / 2.0 } else { full });
        assert!(r.timing.as_ref().is_some_and(|t| t.times_ms.len() >= 3));
    }
    // Our records of the same shapes, twice as slow: the table shows a ratio of 2.00 for each.
    let ours: Vec<Record> = results
        .records
        .iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| {
            let mut ours = r.clone();
            ours.kernel = "cpu".into();
            let timing = ours.timing.as_mut().unwrap();
            timing.median_ms *= 2.0;
            ours
        })
        .collect();
    let ratios = table::render_ratios(&ours, &results.records);
    assert!(ratios.contains("numpy"), "{ratios}");
    assert_eq!(ratios.matches("2.00").count(), 4, "{ratios}");
}
