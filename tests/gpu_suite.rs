//! scripts/gpu-suite.sh without a GPU: the suite runs from a fake pack (the folder scripts/gpu-pack.sh
//! makes, .gpu/) whose `attn` and test binaries are small shell scripts, with nvidia-smi,
//! compute-sanitizer and python3 (with "torch") stubbed on PATH. The device tool returns only a few
//! files from the output folder, so everything must come back as one archive, gpu-results.tar.gz:
//! checked here are the output folder (the archive and summary.md, no folders), the archive's contents
//! (step logs, summary, the golden file a test writes to $GPU_OUT, bench and torch results), a failing
//! step marked FAILED, the summary table printed last, a run stopped part way, and the size warning.
//! Needs bash, tar and coreutils; no nvcc, no device. Not packed for the GPU machine (gpu-pack.sh).
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ARCHIVE: &str = "gpu-results.tar.gz";
/// What the stub layout probe test writes to $GPU_OUT (the real one: tests/emulator_layouts.rs).
const PROBE_DUMP: &str =
    "# kernels/layout_probe.cu on Stub GPU: SECTION LANE SLOT VALUE, 1 values.\n\
                          ldmatrix_x1 0 0 1.5\n";

const STUB_ATTN: &str = r#"#!/bin/sh
case "$1" in
  info) echo "stub attn info: kernels in this build: stub" ;;
  check) echo "stub attn check: ok ($*)" ;;
  bench)
    echo "stub bench args: $*"
    dir=""
    while [ $# -gt 0 ]; do [ "$1" = --out ] && dir="$2"; shift; done
    mkdir -p "$dir"
    echo '{"stub": "results"}' > "$dir/results.json"
    echo 'not really a png' > "$dir/timings.png"
    echo "stub bench table: flash 1.00 ms" ;;
  weights)
    echo "stub weights args: $*"
    png=""
    while [ $# -gt 0 ]; do [ "$1" = --out ] && png="$2"; shift; done
    echo 'not really a png' > "$png" ;;
esac
"#;

/// A fake .gpu/ pack, stub tools and an output folder under one temporary folder.
struct Fake {
    root: PathBuf,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let root = std::env::temp_dir().join(format!("gpu-suite-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for dir in ["pack/tests", "bin", "out", "tmp"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-suite.sh");
        fs::copy(suite, root.join("pack/gpu-suite.sh")).unwrap();
        fs::write(root.join("pack/COMMIT"), "abc1234\n").unwrap();
        let fake = Fake { root };
        fake.exe("pack/attn", STUB_ATTN);
        fake.exe(
            "bin/nvidia-smi",
            "#!/bin/sh\necho 'name, driver_version'\necho 'Stub GPU, 999.1'\n",
        );
        fake
    }

    fn exe(&self, rel: &str, body: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// The suite, with OUT and TMPDIR in the temporary folder and PATH: the stubs first, then this
    /// machine's PATH less any folder holding a real nvidia-smi or compute-sanitizer (a test that
    /// wants one stubs it).
    fn command(&self) -> Command {
        let real = std::env::var("PATH").unwrap_or_default();
        let kept = real.split(':').filter(|dir| {
            !["nvidia-smi", "compute-sanitizer"]
                .iter()
                .any(|tool| Path::new(dir).join(tool).exists())
        });
        let path = std::iter::once(self.root.join("bin").display().to_string())
            .chain(kept.map(str::to_string))
            .collect::<Vec<_>>()
            .join(":");
        let mut command = Command::new("bash");
        command
            .arg(self.root.join("pack/gpu-suite.sh"))
            .env("OUT", self.out())
            .env_remove("GPU_OUT")
            .env_remove("GPU_SUITE_MAX_BYTES")
            .env("TMPDIR", self.root.join("tmp"))
            .env("PATH", path)
            .env("MARK", self.root.join("mark"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The output folder's entries: name and whether it is a folder.
    fn out_entries(&self) -> Vec<(String, bool)> {
        let mut entries: Vec<_> = fs::read_dir(self.out())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.file_type().unwrap().is_dir(),
                )
            })
            .collect();
        entries.sort();
        entries
    }

    /// The archive's member names (`tar tzf`).
    fn listing(&self) -> Vec<String> {
        let output = Command::new("tar")
            .arg("tzf")
            .arg(self.out().join(ARCHIVE))
            .output()
            .unwrap();
        assert!(output.status.success(), "tar tzf: {output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// One member of the archive, as text (`tar xzOf`).
    fn member(&self, name: &str) -> String {
        self.try_member(name)
            .unwrap_or_else(|| panic!("no {name} in the archive"))
    }

    fn try_member(&self, name: &str) -> Option<String> {
        let output = Command::new("tar")
            .arg("xzOf")
            .arg(self.out().join(ARCHIVE))
            .arg(format!("gpu-results/{name}"))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The suite's scratch folders must be gone.
    fn assert_scratch_removed(&self) {
        let left: Vec<_> = fs::read_dir(self.root.join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The output folder holds the archive and summary.md, nothing else.
fn assert_two_files(fake: &Fake) {
    assert_eq!(
        fake.out_entries(),
        vec![
            (ARCHIVE.to_string(), false),
            ("summary.md".to_string(), false)
        ],
        "output folder"
    );
}

#[test]
fn a_full_run_packs_everything_into_one_archive_and_prints_the_summary_last() {
    let fake = Fake::new("full");
    fake.exe(
        "pack/tests/emulator_layouts",
        &format!(
            "#!/bin/sh\necho 'running 1 test'\nprintf '%s' '{PROBE_DUMP}' > \"$GPU_OUT/layout_probe.txt\"\n\
             echo \"wrote $GPU_OUT/layout_probe.txt\"\n"
        ),
    );
    fake.exe(
        "pack/tests/broken",
        "#!/bin/sh\necho 'test broken_test ... FAILED'\nexit 1\n",
    );
    fake.exe(
        "bin/compute-sanitizer",
        "#!/bin/sh\necho \"stub sanitizer $2\"\necho '========= ERROR SUMMARY: 0 errors'\n",
    );
    // torch "importable"; torch_sdpa.py --out FILE writes FILE.
    fake.exe(
        "bin/python3",
        "#!/bin/sh\n[ \"$1\" = -c ] && exit 0\n\
         shift\n\
         echo \"stub torch sdpa args: $*\"\n\
         while [ $# -gt 0 ]; do [ \"$1\" = --out ] && echo '{\"stub\": \"torch\"}' > \"$2\"; shift; done\n",
    );
    fake.exe("pack/baseline/attn", STUB_ATTN);
    fs::write(fake.root.join("pack/baseline/COMMIT"), "0dba6ec\n").unwrap();

    let output = fake.command().output().unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert_two_files(&fake);
    fake.assert_scratch_removed();

    let listing = fake.listing();
    let mut expected = vec![
        "summary.md",
        "facts.log",
        "test-emulator_layouts.log",
        "test-broken.log",
        "layout_probe.txt",
        "torch-sdpa.log",
        "torch.json",
        "bench.log",
        "bench/results.json",
        "bench/timings.png",
        "bench-varlen.log",
        "bench-varlen/results.json",
        "bench-varlen/timings.png",
        "torch-decode.log",
        "torch-decode.json",
        "bench-decode.log",
        "bench-decode/results.json",
        "bench-decode/timings.png",
        "check-flash-sm90.log",
        "check-flash-sm90-d256.log",
        "sanitizer-flash-sm90-memcheck.log",
        "sanitizer-flash-sm90-racecheck.log",
        "bench-sm90.log",
        "bench-sm90/results.json",
        "bench-sparse.log",
        "bench-sparse/results.json",
        "bench-sparse/timings.png",
        "map-1m.log",
        "map-1m.png",
        "bench-baseline.log",
        "bench-baseline/results.json",
        "bench-baseline/timings.png",
    ];
    let sanitizer: Vec<String> = ["naive", "flash"]
        .iter()
        .flat_map(|k| {
            ["memcheck", "racecheck", "synccheck"]
                .iter()
                .map(move |t| format!("sanitizer-{k}-{t}.log"))
        })
        .collect();
    expected.extend(sanitizer.iter().map(String::as_str));
    for name in &expected {
        let member = format!("gpu-results/{name}");
        assert!(
            listing.contains(&member),
            "{member} missing from {listing:#?}"
        );
    }
    // Nothing outside gpu-results/.
    assert!(
        listing.iter().all(|m| m.starts_with("gpu-results/")),
        "{listing:#?}"
    );

    assert_eq!(fake.member("layout_probe.txt"), PROBE_DUMP);
    assert!(fake.member("facts.log").contains("Stub GPU, 999.1"));
    assert!(fake.member("facts.log").contains("baseline: 0dba6ec"));
    assert!(fake
        .member("test-broken.log")
        .contains("broken_test ... FAILED"));
    assert_eq!(fake.member("torch.json").trim(), r#"{"stub": "torch"}"#);
    assert_eq!(
        fake.member("torch-decode.json").trim(),
        r#"{"stub": "torch"}"#
    );
    assert!(fake.member("bench.log").contains("stub bench table"));
    let varlen = fake.member("bench-varlen.log");
    assert!(
        varlen.contains(
            "--kernels flash --varlen uniform:1..4096 --paged 16,256 --causal both --out "
        ) && varlen.contains("stub bench table"),
        "{varlen}"
    );
    let hopper = fake.member("bench-sm90.log");
    assert!(
        hopper.contains(
            "bench --kernels flash,flash-sm90 --head-dims 128,256 --seqs 2048,4096,8192,16384"
        ) && hopper.contains("stub bench table"),
        "{hopper}"
    );
    assert!(fake
        .member("check-flash-sm90.log")
        .contains("stub attn check: ok"));
    let d256 = fake.member("check-flash-sm90-d256.log");
    assert!(
        d256.contains("check --kernel flash-sm90 --dtype bf16 --batch 2 --seq-q 1000 --seq-k 1100 --heads 4 --heads-kv 2 --head-dim 256")
            && d256.contains("stub attn check: ok"),
        "{d256}"
    );
    let sparse = fake.member("bench-sparse.log");
    assert!(
        sparse.contains(
            "bench --kernels flash --sparse bigbird --head-dims 128 --seqs 8192,32768,65536 \
             --max-seconds 60 --out "
        ) && sparse.contains("stub bench table"),
        "{sparse}"
    );
    assert!(
        fake.member("map-1m.log")
            .contains("weights --seq 1048576 --heads 1 --head-dim 64 --dtype bf16 --pool 1024"),
        "{}",
        fake.member("map-1m.log")
    );
    // The decode steps: PyTorch on the decode shapes, then attn on the same flags, compared with it.
    let decode_flags = "--decode --batches 1,16 --contexts 1024,8192,32768 --head-dims 128";
    let torch = fake.member("torch-decode.log");
    assert!(
        torch.contains(&format!("stub torch sdpa args: {decode_flags} --out ")),
        "{torch}"
    );
    let decode = fake.member("bench-decode.log");
    assert!(
        decode.contains(&format!("bench {decode_flags} --max-seconds 75 --out "))
            && decode.contains("/torch-decode.json")
            && decode.contains("stub bench table"),
        "{decode}"
    );

    let summary = fake.member("summary.md");
    assert_eq!(
        fs::read_to_string(fake.out().join("summary.md")).unwrap(),
        summary,
        "summary.md beside the archive and in it"
    );
    for row in [
        "| test-broken | FAILED (rc 1) |",
        "| test-emulator_layouts | ok |",
        "| sanitizer-flash-racecheck | ok |",
        "| torch-sdpa | ok |",
        "| bench | ok |",
        "| bench-varlen | ok |",
        "| torch-decode | ok |",
        "| bench-decode | ok |",
        "| bench-baseline | ok |",
        "| archive | gpu-results.tar.gz: ",
    ] {
        assert!(summary.contains(row), "no row {row:?} in\n{summary}");
    }
    assert!(!summary.contains("WARNING"), "{summary}");
    assert!(!summary.contains("started, no result"), "{summary}");

    // The table is the last thing printed, whole.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.trim_end().ends_with(summary.trim_end()),
        "the summary is not printed last:\n{report}"
    );
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("| archive | gpu-results.tar.gz: "),
        "{report}"
    );
}

#[test]
fn a_run_stopped_part_way_leaves_the_results_so_far() {
    let fake = Fake::new("stopped");
    fake.exe(
        "pack/tests/a_probe",
        &format!("#!/bin/sh\nprintf '%s' '{PROBE_DUMP}' > \"$GPU_OUT/layout_probe.txt\"\n"),
    );
    // Runs after a_probe (the suite takes tests in name order) and hangs until killed.
    fake.exe(
        "pack/tests/b_hang",
        "#!/bin/sh\necho 'b_hang started'\ntouch \"$MARK\"\nexec sleep 30\n",
    );
    // No torch (the run is stopped before it matters).
    fake.exe("bin/python3", "#!/bin/sh\nexit 1\n");

    let mut child = fake.command().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fake.root.join("mark").exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "b_hang never started:\n{}",
                text(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // As if the suite were killed outright now (SIGKILL, no trap): the archive is already current.
    // (Looked at now, checked once the suite has stopped.)
    let entries_then = fake.out_entries();
    let summary_then = fake.try_member("summary.md").unwrap_or_default();
    let probe_then = fake.try_member("layout_probe.txt").unwrap_or_default();

    // SIGTERM (the device tool at its limit): the step is stopped, recorded, and everything packed.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let report = text(&output);

    assert_eq!(
        entries_then,
        vec![
            (ARCHIVE.to_string(), false),
            ("summary.md".to_string(), false)
        ],
        "output folder during the run"
    );
    assert!(
        summary_then.contains("| test-a_probe | ok |"),
        "{summary_then}"
    );
    assert!(
        summary_then.contains("| test-b_hang | started, no result (the suite was stopped here) |"),
        "{summary_then}"
    );
    assert_eq!(probe_then, PROBE_DUMP);

    assert_eq!(output.status.code(), Some(143), "{report}");
    assert_two_files(&fake);
    fake.assert_scratch_removed();
    let summary = fake.member("summary.md");
    assert!(
        summary.contains("| test-b_hang | KILLED (the suite got SIGTERM) |"),
        "{summary}"
    );
    assert!(
        summary.contains("| suite | stopped by SIGTERM |"),
        "{summary}"
    );
    assert!(!summary.contains("| bench |"), "{summary}");
    assert!(fake.member("test-b_hang.log").contains("b_hang started"));
    assert_eq!(fake.member("layout_probe.txt"), PROBE_DUMP);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.trim_end().ends_with(summary.trim_end()), "{report}");
}

#[test]
fn an_archive_over_the_limit_is_flagged_in_the_summary() {
    let fake = Fake::new("big");
    // No test binaries, no compute-sanitizer, no torch: facts and attn bench only.
    fake.exe("bin/python3", "#!/bin/sh\nexit 1\n");
    let output = fake
        .command()
        .env("GPU_SUITE_MAX_BYTES", "100")
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert_two_files(&fake);
    let summary = fs::read_to_string(fake.out().join("summary.md")).unwrap();
    assert!(
        summary
            .contains("WARNING: over the 100 bytes the device tool returns (biggest: gpu-results/"),
        "{summary}"
    );
    assert!(
        summary.contains("| sanitizer | compute-sanitizer not found |"),
        "{summary}"
    );
    for row in [
        "| torch-sdpa | PyTorch not importable |",
        "| torch-decode | PyTorch not importable |",
        "| bench | ok |",
        "| bench-decode | ok |",
    ] {
        assert!(summary.contains(row), "no row {row:?} in\n{summary}");
    }
    assert!(!summary.contains("| test-"), "{summary}");
}
