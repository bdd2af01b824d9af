//! The `attn` binary on this machine: info always exits 0, check and bench fall back to the CPU.

use std::process::Command;

use cuda_attention::gpu::driver_present;

fn attn(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_attn"))
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
        "--head-dim",
        "16",
        "--cpu-iters",
        "2",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("backend: CPU"), "{text}");
    for seq in ["16", "32"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(seq) && l.contains("cpu")),
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
