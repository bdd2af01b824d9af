//! The `attn` binary on the emulated CUDA driver (docs/emulated-driver.md): `info` shows the emulated
//! device, `check --kernel flash` runs the GPU path, `bench` runs the GPU timing loop end to end (CUDA
//! events, L2 flush, input rotation, results.json, plots) on a tiny sweep and on a tiny ragged batch
//! (`--varlen`, `--paged`: the metadata as device buffers) and on a decode step (`--decode`: split-KV
//! auto and off, the device copy, bandwidth), and keeps to a time budget, and a driver that
//! sees no device makes `bench` fall back to the CPU backend. Skipped where the emulated
//! driver is not (not Linux, or the binary was packed for the GPU machine); the GPU runs are skipped
//! without GPU kernels in the build.

use std::path::PathBuf;
use std::process::Command;

use cuda_attention::gpu::build_info::KERNELS_BUILT;

const DRIVER_DIR: &str = env!("CUDA_ATTENTION_EMULATED_DRIVER_DIR");

/// Runs attn with the emulated driver first on LD_LIBRARY_PATH and `env`; (success, stdout + stderr).
fn attn(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let library_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{DRIVER_DIR}:{old}"),
        _ => DRIVER_DIR.to_string(),
    };
    let output = Command::new(env!("CARGO_BIN_EXE_attn"))
        .args(args)
        .env("LD_LIBRARY_PATH", library_path)
        .envs(env.iter().copied())
        .output()
        .expect("attn runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn skip(needs_kernels: bool) -> bool {
    if DRIVER_DIR.is_empty()
        || !std::path::Path::new(DRIVER_DIR)
            .join("libcuda.so.1")
            .is_file()
    {
        // Not Linux, or a test binary copied to another machine (scripts/gpu-pack.sh).
        println!("skipped: the emulated driver is not on this machine ({DRIVER_DIR:?})");
        return true;
    }
    if needs_kernels && !KERNELS_BUILT {
        println!("skipped: this build has no GPU kernels (nvcc was not found)");
        return true;
    }
    false
}

#[test]
fn info_shows_the_emulated_device() {
    if skip(false) {
        return;
    }
    let (ok, text) = attn(&["info"], &[("CUDA_EMU_DEVICE_CC", "8.0")]);
    assert!(ok, "{text}");
    assert!(
        text.contains("driver: found, 1 device(s)")
            && text.contains("Emulated CUDA device (sm_80")
            && text.contains("compute capability 8.0, 108 SMs")
            && text.contains("163 KiB with opt-in"),
        "{text}"
    );
}

#[test]
fn check_runs_flash_through_the_engine() {
    if skip(true) {
        return;
    }
    let (ok, text) = attn(
        &[
            "check",
            "--kernel",
            "flash",
            "--batch",
            "1",
            "--seq-q",
            "40",
            "--seq-k",
            "70",
            "--heads",
            "2",
            "--heads-kv",
            "1",
            "--head-dim",
            "64",
            "--causal",
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("flash on Emulated CUDA device")
            && text.contains("PASS")
            && !text.contains("FAIL"),
        "{text}"
    );
}

#[test]
fn weights_pool_runs_the_attention_map_through_the_engine() {
    if skip(true) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("attn-emulated-map-{}", std::process::id()));
    let png = dir.join("map.png");
    let (ok, text) = attn(
        &[
            "weights",
            "--kernel",
            "gpu",
            "--pool",
            "8",
            "--seq",
            "64",
            "--heads",
            "2",
            "--heads-mean",
            "--causal",
            "--dtype",
            "bf16",
            "--out",
            png.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("attention_map kernel on Emulated CUDA device")
            && text.contains("64 x 64 weights as 8 x 8 bins of 8 x 8 positions (means)"),
        "{text}"
    );
    assert!(
        png.is_file() && dir.join("map-keys.png").is_file(),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_runs_the_gpu_timing_loop() {
    if skip(true) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("attn-emulated-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("a UTF-8 temporary path");
    // A 1 MiB L2: the flush before each timed run writes 2 MiB.
    let (ok, text) = attn(
        &[
            "bench",
            "--kernels",
            "naive,flash",
            "--seqs",
            "64",
            "--tokens",
            "64",
            "--hidden",
            "128",
            "--head-dims",
            "64",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--out",
            out,
        ],
        &[("CUDA_EMU_DEVICE_L2", "1M")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("backend: GPU Emulated CUDA device"), "{text}");
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(results["backend"], "gpu");
    assert!(
        results["device"]["name"]
            .as_str()
            .is_some_and(|name| name.contains("CPU emulator")),
        "{json}"
    );
    assert_eq!(results["settings"]["timer"], "cuda events");
    assert_eq!(results["settings"]["l2_flush_bytes"], 2 << 20);
    let records = results["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{json}");
    for record in records {
        assert_eq!(record["status"], "ok", "{record}");
        assert_eq!(record["check"]["passed"], true, "{record}");
        assert_eq!(record["memory"]["space"], "device", "{record}");
        let times = record["timing"]["times_ms"].as_array().expect("times");
        assert_eq!(times.len(), 2, "{record}");
        assert!(
            times.iter().all(|t| t.as_f64().is_some_and(|ms| ms > 0.0)),
            "{record}"
        );
    }
    for plot in ["timings.png", "timings.svg", "memory.png"] {
        assert!(dir.join(plot).is_file(), "{plot} missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_on_a_small_device_records_naive_out_of_memory_and_still_times_flash() {
    if skip(true) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("attn-emulated-oom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("a UTF-8 temporary path");
    // 200 MiB: after the 100 MiB flush buffer, less than the 256 MiB the bench keeps free beside the
    // naive workspace; flash needs no workspace.
    let (ok, text) = attn(
        &[
            "bench",
            "--kernels",
            "naive,flash",
            "--seqs",
            "64",
            "--tokens",
            "64",
            "--hidden",
            "128",
            "--head-dims",
            "64",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--out",
            out,
        ],
        &[
            ("CUDA_EMU_DEVICE_MEMORY", "200M"),
            ("CUDA_EMU_DEVICE_L2", "50M"),
        ],
    );
    assert!(ok, "{text}");
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let status = |kernel: &str| {
        results["records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["kernel"] == kernel)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status("naive"), Some("out_of_memory".into()), "{json}");
    assert_eq!(status("flash"), Some("ok".into()), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_keeps_to_its_time_budget_on_a_slow_device() {
    if skip(true) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("attn-emulated-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("a UTF-8 temporary path");
    // A millisecond: spent before the first check ends. That shape still runs (the first of its kernel)
    // with its runs cut to one timed run; seq 16384 (65536 times the FLOPs) is skipped.
    let (ok, text) = attn(
        &[
            "bench",
            "--kernels",
            "flash",
            "--seqs",
            "16384,64",
            "--tokens",
            "64",
            "--hidden",
            "128",
            "--head-dims",
            "64",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--max-seconds",
            "0.001",
            "--out",
            out,
        ],
        &[("CUDA_EMU_DEVICE_L2", "1M")],
    );
    assert!(ok, "{text}");
    // The summary names the device: these are not GPU times.
    assert!(
        text.contains("attn bench (cuda-attention")
            && text.contains("GPU: Emulated CUDA device (sm_90, cuda-attention CPU emulator)"),
        "{text}"
    );
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(results["settings"]["max_seconds"], 0.001);
    let records = results["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{json}");
    let (small, large) = (&records[0], &records[1]);
    assert_eq!((&small["seq"], &large["seq"]), (&64.into(), &16384.into()));
    assert_eq!(small["status"], "ok", "{small}");
    assert_eq!(small["check"]["passed"], true, "{small}");
    assert_eq!(
        small["reason"],
        "runs cut to fit the time budget: 0 of 1 warm-up, at most 1 of 2 timed"
    );
    assert_eq!(
        small["timing"]["times_ms"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(large["status"], "skipped", "{large}");
    let reason = large["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("over the time budget: --max-seconds 0.001 spent ")
            && reason.contains("scaled by FLOPs from ")
            && reason.ends_with(" at seq 64 d64)"),
        "{reason}"
    );
    assert!(
        large["timing"].is_null() && large["check"].is_null(),
        "{large}"
    );
    assert!(
        text.contains("skipped: over the time budget: --max-seconds 0.001 spent"),
        "{text}"
    );
    for plot in ["timings.png", "timings.svg", "memory.png"] {
        assert!(dir.join(plot).is_file(), "{plot} missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_times_a_ragged_batch_packed_and_paged_through_the_engine() {
    if skip(true) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("attn-emulated-varlen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("a UTF-8 temporary path");
    // Three sequences (37 tokens), 2 heads of 64, causal: the dense batch is 3 x 12 (37 / 3, rounded).
    let (ok, text) = attn(
        &[
            "bench",
            "--varlen",
            "5,24,8",
            "--paged",
            "16",
            "--hidden",
            "128",
            "--head-dims",
            "64",
            "--causal",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--out",
            out,
        ],
        &[("CUDA_EMU_DEVICE_L2", "1M")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("backend: GPU Emulated CUDA device"), "{text}");
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(results["settings"]["timer"], "cuda events");
    assert_eq!(results["settings"]["varlen"], "5,24,8");
    assert_eq!(results["settings"]["tokens"], 37);
    let records = results["records"].as_array().expect("records");
    // Without --kernels, flash alone: the naive kernels take dense batches only.
    let layouts: Vec<(&str, &str, Option<u64>)> = records
        .iter()
        .map(|r| {
            (
                r["kernel"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?"),
                r["page_size"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        layouts,
        [
            ("flash", "dense", None),
            ("flash", "varlen", None),
            ("flash", "paged", Some(16))
        ],
        "{json}"
    );
    // 4 * heads * length^2 * head_dim, halved (causal), summed over the lengths; the dense batch 3 x 12.
    let ragged: f64 = [5.0f64, 24.0, 8.0]
        .iter()
        .map(|l| 4.0 * 2.0 * l * l * 64.0 / 2.0)
        .sum();
    let dense = 4.0 * 3.0 * 2.0 * 12.0 * 12.0 * 64.0 / 2.0;
    for record in records {
        assert_eq!(record["status"], "ok", "{record}");
        assert_eq!(record["check"]["passed"], true, "{record}");
        assert_eq!(
            (&record["batch"], &record["seq"]),
            (&3.into(), &12.into()),
            "{record}"
        );
        assert_eq!(record["memory"]["space"], "device", "{record}");
        let times = record["timing"]["times_ms"].as_array().expect("times");
        assert_eq!(times.len(), 2, "{record}");
        let (flops, lens) = if record["mode"] == "dense" {
            (dense, serde_json::Value::Null)
        } else {
            (ragged, serde_json::json!([5, 24, 8]))
        };
        assert_eq!(record["flops"].as_f64(), Some(flops), "{record}");
        assert_eq!(record["seq_lens"], lens, "{record}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_times_a_decode_step_split_and_unsplit_through_the_engine() {
    if skip(true) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("attn-emulated-decode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("a UTF-8 temporary path");
    // One sequence, 4 query heads on 1 key/value head of 64, 256 keys: 4 blocks on the 132 SMs of the
    // emulated sm_90, so the heuristic splits the 4 key tiles (64 keys each).
    let (ok, text) = attn(
        &[
            "bench",
            "--decode",
            "--batches",
            "1",
            "--contexts",
            "256",
            "--heads",
            "4",
            "--heads-kv",
            "1",
            "--head-dims",
            "64",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--out",
            out,
        ],
        &[("CUDA_EMU_DEVICE_L2", "1M")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("backend: GPU Emulated CUDA device"), "{text}");
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(results["settings"]["timer"], "cuda events");
    // The copy of K (256 x 64 bf16) into V, on the device, read + written.
    let copies = results["settings"]["copy_bandwidth"]
        .as_array()
        .expect("copies");
    assert_eq!(copies.len(), 1, "{json}");
    let copy = &copies[0];
    assert_eq!(copy["space"], "device");
    assert_eq!(copy["bytes"], 2 * 256 * 64 * 2);
    assert!(
        copy["method"]
            .as_str()
            .is_some_and(|m| m.contains("device-to-device copy")),
        "{copy}"
    );
    let copy_rate = copy["bandwidth_gb_s"].as_f64().expect("a copy bandwidth");
    let records = results["records"].as_array().expect("records");
    let choices: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["kernel"].as_str().unwrap_or("?"),
                r["split_kv"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(choices, [("flash", "auto"), ("flash", "off")], "{json}");
    // K and V: 256 x 64 each; Q and O: 4 x 64 each; bf16.
    let bytes = (2 * 256 * 64 + 2 * 4 * 64) * 2;
    for record in records {
        assert_eq!(record["status"], "ok", "{record}");
        assert_eq!(record["check"]["passed"], true, "{record}");
        assert_eq!(
            (&record["mode"], &record["context"], &record["heads_kv"]),
            (&"decode".into(), &256.into(), &1.into()),
            "{record}"
        );
        assert_eq!(record["bytes"], bytes, "{record}");
        assert_eq!(
            record["timing"]["times_ms"].as_array().map(Vec::len),
            Some(2)
        );
        let median = record["timing"]["median_ms"].as_f64().expect("a median");
        let rate = bytes as f64 / (median * 1e-3) / 1e9;
        let bandwidth = record["bandwidth_gb_s"].as_f64().expect("a bandwidth");
        assert!((bandwidth - rate).abs() <= 1e-9 * rate, "{record}");
        let fraction = record["copy_fraction"].as_f64().expect("a fraction");
        assert!(
            (fraction - rate / copy_rate).abs() <= 1e-6 * fraction,
            "{record}"
        );
    }
    let (auto, off) = (&records[0], &records[1]);
    let splits = auto["splits"].as_u64().expect("splits");
    assert!((2..=4).contains(&splits), "{auto}");
    assert_eq!(off["splits"], 1, "{off}");
    // The split plan's workspace: f32 partial lse [splits, 4 heads, 1 row] at 0, then (16-byte aligned)
    // f32 partial outputs [splits, 1 row, 4 heads, 64].
    let lse = splits * 4 * 4;
    let workspace = lse.div_ceil(16) * 16 + splits * 4 * 64 * 4;
    let peak = |r: &serde_json::Value| r["memory"]["peak_bytes"].as_u64().expect("memory");
    assert_eq!(peak(auto) - peak(off), workspace, "{json}");
    assert_eq!(peak(off), bytes as u64);
    assert!(
        text.contains("device copy bandwidth") && text.contains("flash split:auto"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_falls_back_to_the_cpu_when_the_driver_sees_no_device() {
    if skip(false) {
        return;
    }
    let (ok, text) = attn(&["bench", "--dry-run"], &[("CUDA_EMU_DEVICE_COUNT", "0")]);
    assert!(ok, "{text}");
    assert!(
        text.contains("backend: CPU, no GPU used") && text.contains("\"backend\": \"cpu\""),
        "{text}"
    );
}
