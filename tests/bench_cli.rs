//! `attn bench` and `attn weights` end to end: the quick sweep writes the table, results.json and valid
//! plots (on a machine without a GPU it runs the CPU backend and says so); `--compare` merges the torch
//! script's results; `attn weights` writes a heatmap of a pooled matrix from random or .npy inputs.
//!
//! `attn bench --decode` on the CPU backend and the emulator reports bandwidth (bytes over time, and its
//! fraction of a host copy), flash with split-KV auto and off; its flags are refused before any work.
//!
//! An unwritable output and a corrupt .npy header are refused at once (exit code 2), not after the work.
//!
//! Uses the binary at `$ATTN_BIN` when set (the GPU suite runs the tests from a packed folder).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cuda_attention::cli::bench::results::{BenchResults, Mode, SplitKv, Status};
use half::f16;
use npyz::WriterBuilder;

/// The torch script's results in its schema (hand-made, see the file's device name), compiled in so that
/// the test binaries also run from the GPU suite's packed folder.
const FIXTURE: &str = include_str!("fixtures/torch_sdpa_small.json");

fn attn_bin() -> String {
    std::env::var("ATTN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attn").to_string())
}

/// Runs attn; returns (exit code, stdout + stderr, seconds).
fn attn_timed(args: &[&str]) -> (Option<i32>, String, f64) {
    let started = Instant::now();
    let output = Command::new(attn_bin())
        .args(args)
        .output()
        .expect("attn runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), all, started.elapsed().as_secs_f64())
}

/// Runs attn; returns (success, stdout, stdout + stderr).
fn attn(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(attn_bin())
        .args(args)
        .output()
        .expect("attn runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), stdout, all)
}

/// A fresh folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decodes a PNG fully (checksums, inflate) and returns (width, height, distinct pixel values seen).
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} has no PNG signature",
        path.display()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a valid PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("valid PNG data");
    let mut distinct: Vec<&[u8]> = pixels[..info.buffer_size()]
        .chunks(info.color_type.samples())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    (info.width, info.height, distinct.len())
}

/// Checks an SVG from plotters: one root element, lines and text, and `must_contain`.
fn check_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.len() > 10_000,
        "{} is only {} bytes",
        path.display(),
        text.len()
    );
    let trimmed = text.trim();
    assert!(
        trimmed.starts_with("<svg") && trimmed.ends_with("</svg>"),
        "{} is not one svg element",
        path.display()
    );
    assert_eq!(trimmed.matches("<svg").count(), 1);
    assert!(
        text.contains("<polyline") || text.contains("<path"),
        "no lines"
    );
    assert!(text.contains("<text"), "no text");
    for s in must_contain {
        assert!(text.contains(s), "{s} missing from {}", path.display());
    }
}

/// The quick sweep, run once for every test here: (output dir, stdout + stderr, seconds).
fn quick() -> &'static (PathBuf, String, f64) {
    static QUICK: OnceLock<(PathBuf, String, f64)> = OnceLock::new();
    QUICK.get_or_init(|| {
        let dir = scratch("quick");
        let out = dir.to_str().unwrap().to_string();
        let started = Instant::now();
        let (ok, _, all) = attn(&["bench", "--quick", "--out", &out]);
        assert!(ok, "attn bench --quick failed:\n{all}");
        (dir, all, started.elapsed().as_secs_f64())
    })
}

#[test]
fn quick_bench_writes_the_table_json_and_plots() {
    let (dir, text, seconds) = quick();
    let results = BenchResults::load(&dir.join("results.json")).unwrap();
    if results.backend == "cpu" {
        assert!(text.contains("backend: CPU, no GPU used"), "{text}");
        assert!(text.contains("CPU: "), "{text}");
        assert_eq!(results.device.kind, "cpu");
        assert_eq!(results.settings.timer, "wall clock");
        assert!(*seconds < 60.0, "the quick CPU sweep took {seconds:.1} s");
    }
    assert_eq!(results.tool, "attn bench");
    assert!(!results.commit.is_empty() && !results.device.name.is_empty());
    assert!(
        results.date.len() == 20 && results.date.ends_with('Z'),
        "{}",
        results.date
    );
    assert!(results.command.starts_with("attn bench --quick"));
    assert!(!results.records.is_empty());
    for r in &results.records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let full = 4.0 * (r.batch * r.heads * r.seq * r.seq * r.head_dim) as f64;
        assert_eq!(r.flops, if r.causal { full / 2.0 } else { full });
        let check = r.check.as_ref().expect("checked before timing");
        assert!(check.passed && check.rows > 0 && check.max_abs_error <= check.allowed);
        let t = r.timing.as_ref().unwrap();
        assert!(t.times_ms.len() >= 3, "{r:?}");
        assert!(t.min_ms <= t.median_ms && t.median_ms <= t.max_ms);
        let tflops = r.flops / (t.median_ms * 1e-3) / 1e12;
        assert!((tflops - t.tflops).abs() <= 1e-9 * tflops, "{r:?}");
        assert!(r.memory.as_ref().unwrap().peak_bytes > 0);
        // The table has the record's line.
        assert!(
            text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 7
                    && w[3] == r.seq.to_string()
                    && w[1] == r.head_dim.to_string()
                    && w[6] == r.kernel
            }),
            "no table line for {} seq {}:\n{text}",
            r.kernel,
            r.seq
        );
    }
    let (width, height, colours) = decode_png(&dir.join("timings.png"));
    assert!(
        width >= 1000 && height >= 400 && colours > 20,
        "{width}x{height}, {colours} colours"
    );
    let (width, height, colours) = decode_png(&dir.join("memory.png"));
    assert!(
        width >= 800 && height >= 400 && colours > 20,
        "{width}x{height}, {colours} colours"
    );
    for png in ["timings.png", "memory.png"] {
        let size = std::fs::metadata(dir.join(png)).unwrap().len();
        assert!(size > 10_000, "{png} is {size} bytes");
    }
    let kernel = results.records[0].kernel.as_str();
    check_svg(
        &dir.join("timings.svg"),
        &["sequence length", "TFLOP/s", kernel],
    );
}

#[test]
fn compare_merges_the_torch_results_into_the_table_and_plots() {
    let (dir, _, _) = quick();
    let ours = dir.join("results.json");
    let out = scratch("compare");
    let fixture = scratch("fixture").join("torch.json");
    std::fs::write(&fixture, FIXTURE).unwrap();
    let (ok, stdout, all) = attn(&[
        "bench",
        "--results",
        ours.to_str().unwrap(),
        "--compare",
        fixture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains("compared with:") && stdout.contains("not a measurement"),
        "{stdout}"
    );
    // The torch records are in the one table.
    for words in [
        "torch-flash",
        "torch-math",
        "skipped: Warning: cuDNN",
        "out of memory: OutOfMemoryError",
    ] {
        assert!(stdout.contains(words), "{words} missing:\n{stdout}");
    }
    let ratios = stdout
        .split("time ratio ours / theirs")
        .nth(1)
        .expect("a ratio table");
    let header = ratios.lines().nth(1).unwrap();
    assert!(
        header.contains("torch-flash") && header.contains("torch-math"),
        "{header}"
    );

    // The ratio of a shape both timed, recomputed from the two files.
    let ours = BenchResults::load(&ours).unwrap();
    let theirs = BenchResults::load(&fixture).unwrap();
    let mut checked = 0;
    for mine in ours.records.iter().filter(|r| r.timing.is_some()) {
        let Some(other) = theirs
            .records
            .iter()
            .find(|t| t.kernel == "torch-flash" && t.shape_key() == mine.shape_key())
        else {
            continue;
        };
        let ratio = mine.median_ms().unwrap() / other.median_ms().unwrap();
        let line = ratios
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 4
                    && w[3] == mine.seq.to_string()
                    && w[1] == mine.head_dim.to_string()
                    && w[4] == mine.kernel
            })
            .unwrap_or_else(|| panic!("no ratio line for seq {}:\n{ratios}", mine.seq));
        assert!(
            line.contains(&format!("{ratio:.2}")),
            "{ratio:.2} not in {line}"
        );
        checked += 1;
    }
    if ours
        .records
        .iter()
        .any(|r| r.dtype == "bf16" && r.head_dim == 64 && r.seq == 256)
    {
        assert!(checked > 0, "no shape was compared:\n{stdout}");
    }
    // A missing compare file is a warning; ours are still shown and written.
    let missing = scratch("missing");
    let (ok, stdout, all) = attn(&[
        "bench",
        "--results",
        dir.join("results.json").to_str().unwrap(),
        "--compare",
        missing.join("nothing.json").to_str().unwrap(),
        "--out",
        missing.to_str().unwrap(),
    ]);
    assert!(
        ok && all.contains("warning: not comparing") && !stdout.contains("time ratio"),
        "{all}"
    );
    assert!(missing.join("timings.png").exists());
    // Ours are re-written unchanged; the plots hold both.
    assert_eq!(BenchResults::load(&out.join("results.json")).unwrap(), ours);
    check_svg(
        &out.join("timings.svg"),
        &["torch-flash", "torch-math", "dashed"],
    );
    let (_, _, colours) = decode_png(&out.join("memory.png"));
    assert!(colours > 20);
}

#[test]
fn bench_times_the_emulated_kernels_and_their_memory() {
    let out = scratch("emulated");
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--kernels",
        "cpu,emulator-naive,emulator-flash",
        "--seqs",
        "32,64",
        "--tokens",
        "64",
        "--hidden",
        "64",
        "--head-dims",
        "64",
        "--iters",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(stdout.contains("emulator-flash"), "{stdout}");
    let results = BenchResults::load(&out.join("results.json")).unwrap();
    assert_eq!(results.records.len(), 6);
    let peak = |kernel: &str, seq: usize| {
        results
            .records
            .iter()
            .find(|r| r.kernel == kernel && r.seq == seq)
            .and_then(|r| r.memory.as_ref())
            .map(|m| m.peak_bytes)
            .unwrap()
    };
    for r in &results.records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
    }
    // Naive needs the f32 scores on top of what flash needs: batch * heads * seq^2 * 4 bytes.
    for seq in [32, 64] {
        let scores = (64 / seq) * seq * seq * 4;
        assert_eq!(
            peak("emulator-naive", seq) - peak("emulator-flash", seq),
            scores as u64
        );
    }
    assert_eq!(peak("cpu", 32), peak("emulator-flash", 32));
}

#[test]
fn the_time_budget_skips_a_shape_predicted_not_to_fit() {
    let out = scratch("budget");
    // Seq 32768 has 4 million times the FLOPs of seq 16 (batch 1 both): predicted at seconds even if seq
    // 16 took a microsecond, far over the budget; given first, it still runs after seq 16.
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--kernels",
        "cpu",
        "--seqs",
        "32768,16",
        "--tokens",
        "16",
        "--hidden",
        "32",
        "--head-dims",
        "16",
        "--max-seconds",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    let results = BenchResults::load(&out.join("results.json")).unwrap();
    assert_eq!(results.settings.max_seconds, Some(2.0));
    let seqs: Vec<usize> = results.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [16, 32768]);
    let (small, large) = (&results.records[0], &results.records[1]);
    assert_eq!(small.status, Status::Ok, "{small:?}");
    assert_eq!(large.status, Status::Skipped, "{large:?}");
    let reason = large.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("over the time budget: a check and one timed run predicted at ")
            && reason.contains("scaled by FLOPs from ")
            && reason.contains(" at seq 16 d16)")
            && reason.ends_with(" left of --max-seconds 2"),
        "{reason}"
    );
    assert!(large.timing.is_none() && large.check.is_none(), "{large:?}");
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("32768"))
        .unwrap_or_else(|| panic!("no table line for seq 32768:\n{stdout}"));
    assert!(line.contains("skipped: over the time budget"), "{line}");
    assert!(
        stdout.contains("time budget 2 s (--max-seconds)"),
        "{stdout}"
    );
}

/// The FLOPs of a ragged batch by hand: the sum over `lengths` of 4 * heads * l^2 * head_dim, halved when
/// causal.
fn ragged_flops(lengths: &[usize], heads: usize, head_dim: usize, causal: bool) -> f64 {
    let full: usize = lengths.iter().map(|l| 4 * heads * l * l * head_dim).sum();
    full as f64 / if causal { 2.0 } else { 1.0 }
}

#[test]
fn varlen_and_paged_batches_are_timed_beside_the_dense_one_on_the_cpu() {
    let out = scratch("varlen");
    let lengths = [17, 40, 64];
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--kernels",
        "cpu,emulator-flash",
        "--varlen",
        "17,40,64",
        "--paged",
        "16",
        "--hidden",
        "64",
        "--head-dims",
        "32",
        "--causal",
        "both",
        "--iters",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains("a ragged batch of 3 sequences, 121 tokens (--varlen 17,40,64")
            && stdout.contains("beside a dense batch of 3 x seq 40"),
        "{stdout}"
    );
    let results = BenchResults::load(&out.join("results.json")).unwrap();
    assert_eq!(results.settings.varlen.as_deref(), Some("17,40,64"));
    assert_eq!(results.settings.tokens, 121);
    // 2 kernels x 2 masks x (dense, varlen, paged).
    assert_eq!(results.records.len(), 12, "{:#?}", results.records);
    let mut layouts = Vec::new();
    for r in &results.records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(
            r.check.as_ref().is_some_and(|c| c.passed && c.rows == 32),
            "{r:?}"
        );
        // The dense batch: 3 sequences of the mean length (121 / 3, rounded); the ragged ones the same
        // batch and seq, with their real lengths.
        assert_eq!(
            (r.batch, r.seq, r.heads, r.head_dim),
            (3, 40, 2, 32),
            "{r:?}"
        );
        let (flops, lens) = match (r.mode, r.page_size) {
            (Mode::Dense, None) => (ragged_flops(&[40; 3], 2, 32, r.causal), None),
            (Mode::Varlen, None) | (Mode::Paged, Some(16)) => {
                (ragged_flops(&lengths, 2, 32, r.causal), Some(&lengths[..]))
            }
            other => panic!("unexpected layout {other:?}: {r:?}"),
        };
        assert_eq!(r.flops, flops, "{r:?}");
        assert_eq!(r.seq_lens.as_deref(), lens, "{r:?}");
        let t = r.timing.as_ref().unwrap();
        assert!((r.flops / (t.median_ms * 1e-3) / 1e12 - t.tflops).abs() <= 1e-9 * t.tflops);
        layouts.push((r.kernel.clone(), r.causal, r.layout()));
        // The table's line for the record, with its layout after the kernel.
        assert!(
            stdout.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 8
                    && w[2] == if r.causal { "yes" } else { "no" }
                    && w[6] == r.kernel
                    && w[7] == r.layout()
            }),
            "no table line for {} {}:\n{stdout}",
            r.kernel,
            r.layout()
        );
    }
    layouts.sort();
    layouts.dedup();
    assert_eq!(layouts.len(), 12, "{layouts:?}");
    // The paged cache holds 2 + 3 + 4 pages of 16 rows where the packed k and v hold 121 rows (bf16, 2
    // heads of 32: 128 bytes a row); its i32 metadata is cu_seqlens_q (4), seqused_k (3) and a block
    // table of 3 x 4 pages, the packed one's cu_seqlens_q and cu_seqlens_k (4 each).
    let peak = |layout: &str| {
        results
            .records
            .iter()
            .find(|r| r.kernel == "cpu" && r.layout() == layout)
            .and_then(|r| r.memory.as_ref())
            .unwrap()
            .peak_bytes
    };
    let kv_bytes = 2 * (9 * 16 - 121) * 128;
    let metadata_bytes = ((4 + 3 + 3 * 4) - (4 + 4)) * 4;
    assert_eq!(peak("paged:16") - peak("varlen"), kv_bytes + metadata_bytes);
    assert_eq!(peak("varlen"), 4 * 121 * 128 + 8 * 4);
    let redrawn = scratch("varlen-redrawn");
    let (ok, again, all) = attn(&[
        "bench",
        "--results",
        out.join("results.json").to_str().unwrap(),
        "--out",
        redrawn.to_str().unwrap(),
    ]);
    assert!(
        ok && again.contains(" layout ") && again.contains("paged:16"),
        "{all}"
    );
    check_svg(
        &redrawn.join("timings.svg"),
        &["cpu varlen", "emulator-flash paged:16", "mean length"],
    );
}

#[test]
fn varlen_and_paged_flags_are_refused_before_any_work() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--varlen", "garbage"],
            "unknown length distribution 'garbage': use uniform:MIN..MAX[:SEED]",
        ),
        (
            &["--varlen", "uniform:0..64"],
            "length 0 in 'uniform:0..64': every sequence needs at least 1 token",
        ),
        (
            &["--varlen", "uniform:64..8"],
            "the shortest length 64 is above the longest 8",
        ),
        (&["--varlen", "128,x"], "'x' in '128,x' is not a length"),
        (
            &["--varlen", "16", "--paged", "0"],
            "page size 0: a page holds at least 1 token",
        ),
        (
            &["--varlen", "16", "--paged", "sixteen"],
            "'sixteen' is not a page size",
        ),
        (&["--paged", "16"], "--varlen <DIST>"),
        (&["--varlen", "16", "--seqs", "64"], "cannot be used with"),
        (
            &["--varlen", "16,32", "--tokens", "4096"],
            "--tokens 4096 with --varlen 16,32: a list of lengths fixes the tokens (their sum)",
        ),
    ];
    let out = scratch("varlen-refused");
    for (flags, message) in cases {
        let mut args = vec!["bench", "--cpu", "--out", out.to_str().unwrap()];
        args.extend(flags);
        let (code, all, seconds) = attn_timed(&args);
        let what = format!("attn {}", args.join(" "));
        assert_eq!(code, Some(2), "{what}:\n{all}");
        assert!(all.contains(message), "{what}: '{message}' missing:\n{all}");
        assert!(
            !all.contains("varlen:") && !all.contains("panicked"),
            "{what}:\n{all}"
        );
        assert!(seconds < 1.0, "{what} took {seconds:.2} s");
    }
    // A uniform draw that cannot reach the tokens within the sequence limit.
    let (code, all, _) = attn_timed(&[
        "bench",
        "--cpu",
        "--varlen",
        "uniform:1..1",
        "--tokens",
        "70000",
    ]);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.contains("65535 sequences hold only 65535 of the 70000 tokens"),
        "{all}"
    );
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn gpu_kernels_are_skipped_with_the_reason_without_a_gpu() {
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--kernels",
        "naive,cpu",
        "--seqs",
        "16",
        "--tokens",
        "16",
        "--hidden",
        "32",
        "--head-dims",
        "16",
        "--iters",
        "3",
    ]);
    assert!(ok, "{all}");
    let naive = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(6) == Some("naive"))
        .unwrap();
    assert!(naive.contains("skipped: no GPU"), "{naive}");
}

#[test]
fn dry_runs_of_attn_and_the_torch_script_plan_the_same_shapes() {
    let flags = [
        "--seqs",
        "256,1000",
        "--tokens",
        "2000",
        "--hidden",
        "256",
        "--head-dims",
        "64,128",
        "--causal",
        "both",
        "--dtypes",
        "f16,bf16",
    ];
    let mut args = vec!["bench", "--dry-run", "--kernels", "flash"];
    args.extend(flags);
    let (ok, stdout, all) = attn(&args);
    assert!(ok, "{all}");
    let ours: BenchResults =
        serde_json::from_str(&stdout).expect("--dry-run prints the schema alone");
    assert!(ours
        .records
        .iter()
        .all(|r| r.status == Status::Skipped && r.reason.as_deref() == Some("dry run")));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_sdpa.py");
    if !Path::new(script).exists() {
        eprintln!("{script} is not here (packed test binaries): its dry run is not compared");
        return;
    }
    let Ok(output) = Command::new("python3")
        .arg(script)
        .args(flags)
        .args(["--backends", "flash", "--dry-run"])
        .output()
    else {
        eprintln!("python3 not available: the torch script's dry run is not compared");
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: BenchResults = serde_json::from_slice(&output.stdout).unwrap();
    // The same shapes, each once; attn runs them cheapest first, the script in its loops' order.
    let shapes = |r: &BenchResults| -> Vec<_> {
        let mut shapes: Vec<_> = r
            .records
            .iter()
            .map(|r| (r.shape_key(), r.flops.to_bits()))
            .collect();
        shapes.sort();
        shapes
    };
    assert_eq!(shapes(&ours), shapes(&theirs));
    assert_eq!(ours.records.len(), 2 * 2 * 2 * 2);
}

#[test]
fn weights_draws_a_pooled_heatmap_of_random_inputs() {
    let dir = scratch("weights");
    let png = dir.join("random.png");
    let tokens = dir.join("tokens.txt");
    let words: Vec<String> = (0..1000).map(|i| format!("tok{i}")).collect();
    std::fs::write(&tokens, words.join("\n")).unwrap();
    let (ok, stdout, all) = attn(&[
        "weights",
        "--seq",
        "1000",
        "--heads",
        "2",
        "--head",
        "1",
        "--head-dim",
        "32",
        "--causal",
        "--max-cells",
        "200",
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains(
            "1000 x 1000 weights, downsampled 5x5 (max of each block) to 200 x 200 cells"
        ),
        "{stdout}"
    );
    let (width, height, colours) = decode_png(&png);
    assert!(
        width >= 1000 && height >= 900 && colours > 50,
        "{width}x{height}, {colours}"
    );

    // A small matrix is drawn whole; a wrong tokens file is an error, not a panic.
    let small = dir.join("small.png");
    let (ok, stdout, all) = attn(&[
        "weights",
        "--seq",
        "24",
        "--out",
        small.to_str().unwrap(),
        "--backend",
        "emulator",
    ]);
    assert!(
        ok && stdout.contains("not downsampled") && stdout.contains("emulator"),
        "{all}"
    );
    decode_png(&small);
    let (ok, _, all) = attn(&[
        "weights",
        "--seq",
        "24",
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    assert!(
        !ok && all.contains("1000 lines") && !all.contains("panicked"),
        "{all}"
    );
}

#[test]
fn weights_pool_n_draws_the_attention_map_and_the_key_profile() {
    let dir = scratch("map");
    let png = dir.join("map.png");
    let (ok, stdout, all) = attn(&[
        "weights",
        "--pool",
        "16",
        "--seq",
        "300",
        "--heads",
        "2",
        "--head",
        "1",
        "--causal",
        "--backend",
        "cpu",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains("300 x 300 weights as 16 x 16 bins of 19 x 19 positions (means)")
            && stdout.contains("cpu backend"),
        "{stdout}"
    );
    let (width, height, colours) = decode_png(&png);
    assert!(
        width >= 1000 && height >= 900 && colours > 20,
        "{width}x{height}, {colours}"
    );
    let (width, _, colours) = decode_png(&dir.join("map-keys.png"));
    assert!(width >= 1000 && colours > 2, "{width}, {colours}");

    // .npy activations with GQA, the mean over the heads, sums, on the emulated kernels.
    let (seq, heads_q, heads_kv, d) = (40u64, 4u64, 2u64, 16u64);
    let value = |i: usize, salt: usize| ((i * 7919 + salt * 31) % 997) as f32 / 498.5 - 1.0;
    let tensor = |heads: u64, salt| -> Vec<f32> {
        (0..(seq * heads * d) as usize)
            .map(|i| value(i, salt))
            .collect()
    };
    let paths = ["q.npy", "k.npy", "v.npy"].map(|n| dir.join(n));
    write_npy(&paths[0], &[seq, heads_q, d], &tensor(heads_q, 1));
    write_npy(&paths[1], &[seq, heads_kv, d], &tensor(heads_kv, 2));
    write_npy(&paths[2], &[seq, heads_kv, d], &tensor(heads_kv, 3));
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let profile = dir.join("profile.png");
    let (ok, stdout, all) = attn(&[
        "weights",
        "--q",
        &p(&paths[0]),
        "--k",
        &p(&paths[1]),
        "--v",
        &p(&paths[2]),
        "--pool",
        "8",
        "--heads-mean",
        "--bin-sum",
        "--window-left",
        "6",
        "--backend",
        "emulator",
        "--out",
        &p(&dir.join("npy-map.png")),
        "--profile-out",
        &p(&profile),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains("from .npy files")
            && stdout.contains("40 x 40 weights as 8 x 8 bins of 5 x 5 positions (sums)")
            && stdout.contains("heads_kv 2")
            && stdout.contains("emulator"),
        "{stdout}"
    );
    decode_png(&dir.join("npy-map.png"));
    decode_png(&profile);
}

/// Writes a C-order .npy of `shape`.
fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], values: &[T]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    writer.extend(values.iter().copied()).unwrap();
    writer.finish().unwrap();
}

#[test]
fn weights_reads_npy_activations_with_gqa_and_token_labels() {
    let dir = scratch("npy");
    let (seq, heads_q, heads_kv, d) = (40u64, 4u64, 2u64, 16u64);
    let value = |i: usize, salt: usize| ((i * 7919 + salt * 31) % 997) as f32 / 498.5 - 1.0;
    let q: Vec<f32> = (0..(seq * heads_q * d) as usize)
        .map(|i| value(i, 1))
        .collect();
    let kv = |salt| -> Vec<f32> {
        (0..(seq * heads_kv * d) as usize)
            .map(|i| value(i, salt))
            .collect()
    };
    let paths = ["q.npy", "k.npy", "v.npy"].map(|n| dir.join(n));
    write_npy(&paths[0], &[seq, heads_q, d], &q);
    write_npy(&paths[1], &[seq, heads_kv, d], &kv(2));
    write_npy(&paths[2], &[seq, heads_kv, d], &kv(3));
    let tokens = dir.join("tokens.txt");
    let words: Vec<String> = (0..seq).map(|i| format!("word{i}")).collect();
    std::fs::write(&tokens, words.join("\n")).unwrap();
    let png = dir.join("npy.png");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, stdout, all) = attn(&[
        "weights",
        "--q",
        &p(&paths[0]),
        "--k",
        &p(&paths[1]),
        "--v",
        &p(&paths[2]),
        "--head",
        "3",
        "--tokens",
        &p(&tokens),
        "--out",
        &p(&png),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout.contains("from .npy files") && stdout.contains("40 x 40 weights, not downsampled"),
        "{stdout}"
    );
    decode_png(&png);

    // float16 with a batch axis.
    let half: Vec<f16> = q.iter().map(|&x| f16::from_f32(x)).collect();
    let paths16 = ["q16.npy", "k16.npy", "v16.npy"].map(|n| dir.join(n));
    write_npy(&paths16[0], &[2, seq / 2, heads_q, d], &half);
    write_npy(&paths16[1], &[2, seq / 2, heads_q, d], &half);
    write_npy(&paths16[2], &[2, seq / 2, heads_q, d], &half);
    let png16 = dir.join("npy16.png");
    let (ok, stdout, all) = attn(&[
        "weights",
        "--q",
        &p(&paths16[0]),
        "--k",
        &p(&paths16[1]),
        "--v",
        &p(&paths16[2]),
        "--batch-index",
        "1",
        "--out",
        &p(&png16),
    ]);
    assert!(ok && stdout.contains("20 x 20 weights"), "{all}");
    decode_png(&png16);

    // A shape that is not [seq, heads, dim] is an error naming the file.
    write_npy(&paths[1], &[seq * heads_kv * d], &kv(2));
    let (ok, _, all) = attn(&[
        "weights",
        "--q",
        &p(&paths[0]),
        "--k",
        &p(&paths[1]),
        "--v",
        &p(&paths[2]),
    ]);
    assert!(
        !ok && all.contains("k.npy") && all.contains("expected [seq, heads, head_dim]"),
        "{all}"
    );
}

#[test]
fn the_quick_sweep_finishes_in_time() {
    let (_, _, seconds) = quick();
    assert!(
        Duration::from_secs_f64(*seconds) < Duration::from_secs(120),
        "{seconds} s"
    );
}

#[test]
fn an_unwritable_out_is_refused_within_a_second() {
    let dir = scratch("unwritable");
    let file = dir.join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under = file.join("results");
    let under = under.to_str().unwrap();
    // The default sweep would run for a minute on the CPU (for many on a GPU): it must not start.
    for args in [
        vec!["bench", "--out", under],
        vec!["bench", "--cpu", "--quick", "--out", under],
        vec!["weights", "--seq", "64", "--out", &format!("{under}/w.png")],
    ] {
        let (code, all, seconds) = attn_timed(&args);
        assert_eq!(code, Some(2), "attn {}:\n{all}", args.join(" "));
        assert!(
            all.contains("is a file, not a directory") && all.contains("plain-file"),
            "{all}"
        );
        assert!(
            !all.contains("sweep:") && !all.contains("panicked"),
            "{all}"
        );
        assert!(seconds < 1.0, "attn {} took {seconds:.2} s", args.join(" "));
    }
    // The file was left as it was.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

/// A version 1.0 .npy file with header dict `dict` and `data` after it.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_npy_header_is_an_error_naming_the_file() {
    let dir = scratch("corrupt-npy");
    let good = dir.join("good.npy");
    write_npy(&good, &[4, 2, 8], &[0.5f32; 64]);
    let cases = [
        // The shape's product overflows 64 bits.
        (
            "overflow.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
            "more elements than this machine can address",
        ),
        // A shape the data does not hold (64 GiB claimed, 256 bytes there).
        (
            "short.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536, 4), }",
            "needs more than the 256 bytes of data the file holds",
        ),
        (
            "noshape.npy",
            "{'descr': '<f4', 'fortran_order': False, }",
            "no 'shape' tuple",
        ),
    ];
    for (name, dict, words) in cases {
        let bad = dir.join(name);
        raw_npy(&bad, dict, &[0u8; 256]);
        let (code, all, seconds) = attn_timed(&[
            "weights",
            "--kernel",
            "cpu",
            "--q",
            bad.to_str().unwrap(),
            "--k",
            good.to_str().unwrap(),
            "--v",
            good.to_str().unwrap(),
            "--out",
            dir.join("w.png").to_str().unwrap(),
        ]);
        assert_eq!(code, Some(2), "{name}:\n{all}");
        assert!(
            all.contains(name) && all.contains(words) && !all.contains("panicked"),
            "{name}: '{words}' missing:\n{all}"
        );
        assert!(seconds < 5.0, "{name}: {seconds:.1} s");
    }
}

#[test]
fn decode_steps_report_bandwidth_on_the_cpu_and_the_emulator() {
    let out = scratch("decode");
    // 4 query heads, 2 key/value heads of 32, one query each: the CPU backend, and the flash kernel's
    // source on the emulator with split-KV auto and off.
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--decode",
        "--kernels",
        "cpu,emulator-flash",
        "--batches",
        "1,3",
        "--contexts",
        "40,200",
        "--heads",
        "4",
        "--heads-kv",
        "2",
        "--head-dims",
        "32",
        "--iters",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(
        stdout
            .contains("decode: cpu,emulator-flash, 12 records (flash with split-KV auto and off)"),
        "{stdout}"
    );
    let results = BenchResults::load(&out.join("results.json")).unwrap();
    assert_eq!(results.backend, "cpu");
    // The copy: K (3 x 200 x 2 x 32 bf16, the largest step's) into V, read + written.
    let [copy] = &results.settings.copy_bandwidth[..] else {
        panic!("one copy: {:?}", results.settings.copy_bandwidth);
    };
    assert_eq!(copy.space, "host");
    assert_eq!(copy.bytes, 2 * 3 * 200 * 2 * 32 * 2);
    assert!(copy.method.contains("not a GPU number"), "{}", copy.method);
    let copy_rate = copy.bytes as f64 / (copy.median_ms * 1e-3) / 1e9;
    assert!((copy.bandwidth_gb_s - copy_rate).abs() <= 1e-9 * copy_rate);
    assert_eq!(results.records.len(), 2 * 2 * 3, "{all}");
    let mut seen = Vec::new();
    for r in &results.records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.check.as_ref().is_some_and(|c| c.passed), "{r:?}");
        let (batch, context) = (r.batch, r.context.expect("a context"));
        assert_eq!(
            (r.mode, r.seq, r.heads, r.heads_kv, r.head_dim),
            (Mode::Decode, 1, 4, Some(2), 32),
            "{r:?}"
        );
        // K and V: batch * context * 2 heads * 32; Q and O: batch * 4 heads * 32; 2 bytes each.
        let bytes = (2 * batch * context * 2 * 32 + 2 * batch * 4 * 32) * 2;
        assert_eq!(r.bytes, Some(bytes as u64), "{r:?}");
        assert_eq!(r.flops, (4 * batch * 4 * context * 32) as f64, "{r:?}");
        let t = r.timing.as_ref().unwrap();
        let rate = bytes as f64 / (t.median_ms * 1e-3) / 1e9;
        let bandwidth = r.bandwidth_gb_s.unwrap();
        assert!((bandwidth - rate).abs() <= 1e-9 * rate, "{r:?}");
        let fraction = r.copy_fraction.unwrap();
        assert!(
            (fraction - bandwidth / copy.bandwidth_gb_s).abs() <= 1e-9 * fraction,
            "{r:?}"
        );
        // The split-KV choices: none for the CPU backend; auto splits the 4 key tiles of context 200
        // (64 keys each at head dim 32) when a batch leaves the emulated SMs idle, never the 1 of 40.
        let splits = r.splits.unwrap();
        match (r.kernel.as_str(), r.split_kv) {
            ("cpu", None) => assert_eq!(splits, 1),
            ("emulator-flash", Some(SplitKv::Off)) => assert_eq!(splits, 1),
            ("emulator-flash", Some(SplitKv::Auto)) if context == 40 => assert_eq!(splits, 1),
            ("emulator-flash", Some(SplitKv::Auto)) => assert!((2..=4).contains(&splits), "{r:?}"),
            other => panic!("unexpected record {other:?}"),
        }
        seen.push((r.kernel.clone(), r.split_kv, batch, context));
        // The decode table's line for the record.
        assert!(
            stdout.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 10
                    && w[3] == batch.to_string()
                    && w[4] == context.to_string()
                    && w[6] == "4/2"
                    && l.contains(&format!(" {} ", r.series()))
            }),
            "no table line for {}:\n{stdout}",
            r.series()
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12, "{seen:?}");
    assert!(stdout.contains("host copy bandwidth"), "{stdout}");
    check_svg(
        &out.join("timings.svg"),
        &[
            "context length",
            "GB/s",
            "emulator-flash split:auto",
            "batch 3",
        ],
    );
}

#[test]
fn decode_flags_are_refused_before_any_work() {
    let cases: [(&[&str], &str); 12] = [
        (&["--decode", "--seqs", "64"], "cannot be used with"),
        (&["--decode", "--tokens", "64"], "cannot be used with"),
        (&["--decode", "--hidden", "64"], "cannot be used with"),
        (&["--decode", "--varlen", "16"], "cannot be used with"),
        (&["--decode", "--paged", "16"], "cannot be used with"),
        (&["--batches", "1"], "--decode"),
        (&["--heads-kv", "2"], "--decode"),
        (
            &["--decode", "--contexts", "0"],
            "--batches, --contexts and --head-dims need at least one value each, every one at least 1",
        ),
        (
            &["--decode", "--seq-q", "17"],
            "--seq-q 17 is out of range: use 1 to 16",
        ),
        (
            &["--decode", "--heads", "6", "--heads-kv", "4"],
            "heads_q (6) is not a multiple of heads_kv (4)",
        ),
        (
            &["--decode", "--kernels", "naive"],
            "--kernels naive with --decode: decode times flash with and without split-KV",
        ),
        (&["--decode", "--batches", "4,4"], "--batches lists 4 twice"),
    ];
    let out = scratch("decode-refused");
    for (flags, message) in cases {
        let mut args = vec!["bench", "--cpu", "--out", out.to_str().unwrap()];
        args.extend(flags);
        let (code, all, seconds) = attn_timed(&args);
        let what = format!("attn {}", args.join(" "));
        assert_eq!(code, Some(2), "{what}:\n{all}");
        assert!(all.contains(message), "{what}: '{message}' missing:\n{all}");
        assert!(
            !all.contains("backend:") && !all.contains("panicked"),
            "{what}:\n{all}"
        );
        assert!(seconds < 1.0, "{what} took {seconds:.2} s");
    }
    // A sweep whose K and V do not fit in host memory is refused with what would.
    let (code, all, _) = attn_timed(&[
        "bench",
        "--cpu",
        "--decode",
        "--batches",
        "100000",
        "--contexts",
        "1000000",
    ]);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.contains("q sets, K and V, outputs")
            && all.contains("use smaller --batches or shorter --contexts"),
        "{all}"
    );
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn sparse_bench_times_each_shape_dense_and_under_the_block_mask() {
    let out = scratch("sparse");
    let (ok, stdout, all) = attn(&[
        "bench",
        "--cpu",
        "--kernels",
        "emulator-flash,cpu",
        "--sparse",
        "bigbird:random=1",
        "--seqs",
        "1024",
        "--tokens",
        "1024",
        "--heads",
        "1",
        "--head-dims",
        "64",
        "--iters",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{all}");
    assert!(stdout.contains("speed-up"), "{stdout}");
    let results = BenchResults::load(&out.join("results.json")).unwrap();
    let spec = "bigbird:block=64,window=1,global=1,random=1,seed=0";
    assert_eq!(results.settings.sparse.as_deref(), Some(spec));
    assert_eq!(results.records.len(), 4);
    for r in &results.records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.check.as_ref().unwrap().passed, "{r:?}");
    }
    let dense = |kernel: &str| {
        results
            .records
            .iter()
            .find(|r| r.kernel == kernel && r.mode == Mode::Dense)
            .unwrap()
    };
    let sparse = |kernel: &str| {
        results
            .records
            .iter()
            .find(|r| r.kernel == kernel && r.mode == Mode::Sparse)
            .unwrap()
    };
    for kernel in ["emulator-flash", "cpu"] {
        let (d, s) = (dense(kernel), sparse(kernel));
        assert_eq!(s.sparse.as_deref(), Some(spec));
        // 16 key blocks per row: the window's 3, the global column and one random block, the global
        // row whole.
        let density = s.density.unwrap();
        assert!((0.2..0.45).contains(&density), "{density}");
        assert_eq!(s.flops, d.flops * density);
    }
}
