//! The `attn` binary on this machine: info always exits 0, check and bench fall back to the CPU.

use std::process::Command;

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
    let (ok, text) = attn(&[
        "check",
        "--kernel",
        "cpu",
        "--heads",
        "6",
        "--heads-kv",
        "4",
    ]);
    assert!(!ok);
    assert!(
        text.contains("not a multiple") && !text.contains("panicked"),
        "{text}"
    );
    let (ok, text) = attn(&["check", "--kernel", "cpu", "--head-dim", "300"]);
    assert!(!ok);
    assert!(
        text.contains("head_dim 300") && !text.contains("panicked"),
        "{text}"
    );
}
