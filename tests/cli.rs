//! The `attn` binary on this machine: info always exits 0, check and bench fall back to the CPU; absurd
//! flags and problems too large for the machine are refused at once with exit code 2, never a panic, an
//! abort or a run that does not end.

use std::process::Command;
use std::time::Instant;

use cuda_attention::gpu::driver_present;

/// The binary under test: `$ATTN_BIN` when set (the GPU suite runs the tests from a packed folder), else
/// the one cargo built.
fn attn_bin() -> String {
    std::env::var("ATTN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attn").to_string())
}

fn attn(args: &[&str]) -> (bool, String) {
    let output = Command::new(attn_bin())
        .args(args)
        .output()
        .expect("attn runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs attn; returns (exit code, stdout + stderr, seconds).
fn attn_timed(args: &[&str]) -> (Option<i32>, String, f64) {
    let started = Instant::now();
    let output = Command::new(attn_bin())
        .args(args)
        .output()
        .expect("attn runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text, started.elapsed().as_secs_f64())
}

/// Asserts that `args` are refused before any work: exit code 2 (as clap's own argument errors), the
/// message holds `words`, no panic, and within `seconds`.
fn assert_refused(args: &[&str], words: &str, seconds: f64) {
    let (code, text, took) = attn_timed(args);
    assert_eq!(code, Some(2), "attn {}:\n{text}", args.join(" "));
    assert!(
        text.contains(words) && !text.contains("panicked"),
        "attn {}: '{words}' missing:\n{text}",
        args.join(" ")
    );
    assert!(
        took < seconds,
        "attn {} took {took:.1} s to refuse",
        args.join(" ")
    );
}

#[test]
fn info_exits_zero_and_reports_the_driver() {
    let (ok, text) = attn(&["info"]);
    assert!(ok, "{text}");
    if driver_present() {
        assert!(text.contains("driver: found"), "{text}");
    } else {
        assert!(text.contains("driver: not found"), "{text}");
    }
}

#[test]
fn check_passes_on_the_cpu_backend() {
    let (ok, text) = attn(&[
        "check",
        "--kernel",
        "cpu",
        "--seq-q",
        "33",
        "--seq-k",
        "47",
        "--causal",
        "--heads",
        "4",
        "--heads-kv",
        "2",
        "--head-dim",
        "40",
        "--dtype",
        "f16",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("out:") && text.contains("PASS") && !text.contains("FAIL"),
        "{text}"
    );
}

#[test]
fn bench_runs_a_small_sweep_on_the_cpu() {
    let (ok, text) = attn(&[
        "bench",
        "--cpu",
        "--seqs",
        "16,32",
        "--tokens",
        "64",
        "--heads",
        "2",
        "--head-dims",
        "16",
        "--iters",
        "3",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("backend: CPU"), "{text}");
    for seq in ["16", "32"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(3) == Some(seq) && l.contains(" cpu ")),
            "{text}"
        );
    }
}

#[test]
fn check_runs_the_kernels_in_the_emulator() {
    for kernel in ["emulator-naive", "emulator-flash"] {
        let (ok, text) = attn(&[
            "check",
            "--kernel",
            kernel,
            "--batch",
            "1",
            "--seq-q",
            "37",
            "--heads",
            "2",
            "--head-dim",
            "64",
            "--causal",
            "--schedule",
            "random:3",
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains(kernel) && text.contains("CPU emulator") && !text.contains("FAIL"),
            "{text}"
        );
    }
}

#[test]
fn invalid_arguments_are_errors_not_panics() {
    assert_refused(
        &[
            "check",
            "--kernel",
            "cpu",
            "--heads",
            "6",
            "--heads-kv",
            "4",
        ],
        "not a multiple",
        5.0,
    );
    assert_refused(
        &["check", "--kernel", "cpu", "--head-dim", "300"],
        "head_dim 300",
        5.0,
    );
    assert_refused(
        &["check", "--kernel", "fast"],
        "unknown kernel 'fast': use auto, gpu, naive, flash, flash-sm90, emulator, emulator-naive, emulator-flash, \
         emulator-flash-sm90 or cpu",
        5.0,
    );
}

#[test]
fn bench_refuses_absurd_flags_before_any_work() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--iters", "18446744073709551615"],
            "--iters 18446744073709551615 is out of range: use 1 to 10000",
        ),
        (&["--iters", "0"], "--iters 0 is out of range"),
        (
            &["--warmup", "99999999999"],
            "--warmup 99999999999 is out of range: use 0 to 10000",
        ),
        (
            &["--input-sets", "1000000000"],
            "--input-sets 1000000000 is out of range: use 1 to 64",
        ),
        (
            &["--check-rows", "100000000"],
            "--check-rows 100000000 is out of range",
        ),
        (
            &["--host-seconds", "inf"],
            "--host-seconds inf is out of range",
        ),
        (
            &["--max-seconds", "0"],
            "--max-seconds 0 is out of range: use more than 0, at most 604800 (a week)",
        ),
        (
            &["--max-seconds", "NaN"],
            "--max-seconds NaN is out of range",
        ),
        (
            &["--quick", "--max-seconds", "1e9"],
            "--max-seconds 1000000000 is out of range",
        ),
        (
            &["--heads", "4294967296"],
            "heads 4294967296: heads_q overflows",
        ),
        (
            &["--seqs", "128,3000000000"],
            "seq 3000000000 batch 1 heads 32: seq_q overflows",
        ),
        (
            &["--heads", "2", "--head-dims", "64,1000"],
            "head_dim 1000 is not supported",
        ),
        (&["--kernels", "cpu,cpu"], "--kernels lists cpu twice"),
        (
            &["--kernels", "auto"],
            "--kernels auto: a benchmark record times one kernel",
        ),
        // Valid sizes whose input sets no machine holds: 64 sets of 2^31 elements per tensor.
        (
            &[
                "--seqs",
                "1048576",
                "--tokens",
                "1048576",
                "--hidden",
                "2048",
                "--head-dims",
                "128",
                "--input-sets",
                "64",
            ],
            "attn bench needs",
        ),
    ];
    for (flags, words) in cases {
        let mut args = vec!["bench", "--cpu"];
        args.extend_from_slice(flags);
        assert_refused(&args, words, 5.0);
    }
    // clap's own errors share the exit code.
    assert_refused(
        &["bench", "--kernels", "fast"],
        "unknown kernel 'fast'",
        5.0,
    );
    assert_refused(
        &["bench", "--iters=-1"],
        "invalid value '-1' for '--iters",
        5.0,
    );
}

#[test]
fn problems_too_large_for_host_memory_are_refused_before_any_work() {
    // The f64 reference of attn check keeps every weight: 2 * 8 * 100000^2 * 8 bytes.
    assert_refused(
        &["check", "--kernel", "cpu", "--seq-q", "100000"],
        "attn check needs",
        5.0,
    );
    assert_refused(
        &["check", "--kernel", "cpu", "--seq-q", "100000"],
        "f64 reference weights",
        5.0,
    );
    // A 10^6 x 10^6 f32 weight matrix (4 TB).
    assert_refused(
        &[
            "weights",
            "--kernel",
            "cpu",
            "--seq",
            "1000000",
            "--out",
            "/dev/null",
        ],
        "attn weights needs",
        5.0,
    );
    assert_refused(
        &[
            "weights",
            "--kernel",
            "emulator-flash",
            "--seq",
            "16",
            "--out",
            "/dev/null",
        ],
        "only the naive kernel materialises them",
        5.0,
    );
}

#[test]
fn attention_map_flags_are_checked_before_any_work() {
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut all = vec![
            "weights",
            "--kernel",
            "cpu",
            "--seq",
            "64",
            "--out",
            "/dev/null",
        ];
        all.extend_from_slice(extra);
        all
    };
    for bad in ["0", "4097", "x"] {
        let mut flags = args(&["--pool"]);
        flags.push(bad);
        assert_refused(&flags, "is not a pooling: use max, mean", 5.0);
    }
    for flag in ["--heads-mean", "--bin-sum"] {
        assert_refused(
            &args(&[flag]),
            "belongs to the attention map: add --pool N",
            5.0,
        );
    }
    assert_refused(
        &args(&["--profile-out", "/tmp/p.png"]),
        "belongs to the attention map",
        5.0,
    );
    // The map needs no seq^2 matrix, but its inputs must still fit: 10^8 tokens x 256 dims x 3.
    assert_refused(
        &[
            "weights",
            "--kernel",
            "cpu",
            "--pool",
            "64",
            "--seq",
            "100000000",
            "--head-dim",
            "256",
            "--out",
            "/dev/null",
        ],
        "attn weights --pool needs",
        5.0,
    );
    assert_refused(
        &args(&["--pool", "8", "--head", "7"]),
        "outside the 1 batch entries and 4 heads",
        5.0,
    );
}

#[test]
fn gpu_kernels_by_name_without_a_gpu_are_refused_with_the_emulator_named() {
    if driver_present() {
        eprintln!("a driver is here: nothing to refuse");
        return;
    }
    assert_refused(
        &["check", "--kernel", "flash", "--seq-q", "16"],
        "with 'emulator-flash', or the CPU backend with 'cpu'",
        5.0,
    );
    assert_refused(
        &[
            "weights",
            "--kernel",
            "gpu",
            "--seq",
            "16",
            "--out",
            "/dev/null",
        ],
        "'gpu' runs on a GPU",
        5.0,
    );
}

#[test]
fn check_takes_the_window_soft_cap_alibi_and_scale() {
    for kernel in ["cpu", "emulator-flash"] {
        let (ok, text) = attn(&[
            "check",
            "--kernel",
            kernel,
            "--batch",
            "1",
            "--seq-q",
            "40",
            "--seq-k",
            "70",
            "--heads",
            "4",
            "--heads-kv",
            "2",
            "--head-dim",
            "64",
            "--causal",
            "--window-left",
            "16",
            "--window-right",
            "3",
            "--softcap",
            "20",
            "--alibi",
            "--scale",
            "0.2",
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains("causal window (16, 3) softcap 20 alibi scale 0.2")
                && text.contains("PASS")
                && !text.contains("FAIL"),
            "{text}"
        );
    }
    assert_refused(
        &["check", "--kernel", "cpu", "--softcap", "-1"],
        "softcap -1 must be a finite number above 0",
        5.0,
    );
    assert_refused(
        &["check", "--kernel", "cpu", "--scale", "inf"],
        "scale inf is not finite",
        5.0,
    );
}

#[test]
fn sparse_patterns_run_in_check_and_weights_and_bad_ones_are_refused() {
    for kernel in ["cpu", "emulator-flash"] {
        let (ok, text) = attn(&[
            "check",
            "--kernel",
            kernel,
            "--batch",
            "1",
            "--seq-q",
            "200",
            "--heads",
            "2",
            "--head-dim",
            "64",
            "--causal",
            "--sparse",
            "bigbird:random=1,seed=3",
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains("causal block-sparse 64x64")
                && text.contains("PASS")
                && !text.contains("FAIL"),
            "{text}"
        );
    }
    let out = std::env::temp_dir().join(format!("attn-sparse-map-{}.png", std::process::id()));
    let out_text = out.to_str().unwrap();
    let (ok, text) = attn(&[
        "weights",
        "--kernel",
        "cpu",
        "--seq",
        "256",
        "--pool",
        "8",
        "--sparse",
        "longformer:window=64,global=0",
        "--out",
        out_text,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("block-sparse 64x64"), "{text}");
    assert!(std::fs::metadata(&out).is_ok_and(|m| m.len() > 0), "{text}");
    let _ = std::fs::remove_file(&out);
    let profile = out_text.replace(".png", "-keys.png");
    let _ = std::fs::remove_file(profile);
    assert_refused(
        &["check", "--kernel", "cpu", "--sparse", "dense"],
        "unknown sparse pattern 'dense'",
        5.0,
    );
    assert_refused(
        &["check", "--kernel", "cpu", "--sparse", "bigbird:block=48"],
        "multiple of 64",
        5.0,
    );
    assert_refused(
        &[
            "check", "--kernel", "cpu", "--seq-q", "64", "--seq-k", "128", "--sparse", "bigbird",
        ],
        "self-attention pattern",
        5.0,
    );
}

#[test]
fn info_lists_every_kernel_of_the_registry() {
    let (ok, text) = attn(&["info"]);
    assert!(ok, "{text}");
    let kernels = cuda_attention::registry::kernels();
    assert!(
        text.contains(&format!(
            "kernel registry (from the kernel source): {} kernels",
            kernels.len()
        )),
        "{text}"
    );
    for kernel in kernels {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(kernel.name)),
            "{} missing:\n{text}",
            kernel.name
        );
    }
    assert!(text.contains("flash_fwd_f32"), "{text}");
}
