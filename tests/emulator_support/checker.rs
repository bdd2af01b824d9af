//! The checking mode's standalone checker (`emulator/checker_main.cpp`): built here on first use, run on
//! job files, its output parsed.
//!
//! Why a child process: ThreadSanitizer and AddressSanitizer must own the process they check (their
//! runtime starts first, instruments every access of the code built with them, and stops the process on
//! a report). Linking sanitized C++ into this Rust test binary would make every report abort the whole
//! test run and mix two allocators' views of memory. So the checker is a small C++ program, compiled with
//! `g++ -fsanitize=thread` or `-fsanitize=address` (or plain) from the emulator's runtime, every kernel in
//! `kernels/` and the planted-bug kernels in `tests/planted/`, cached under `CARGO_TARGET_TMPDIR` by a
//! hash of its sources and flags.
//!
//! ThreadSanitizer build: the kernel files and the checker's main are instrumented; the runtime
//! (`runtime.cpp`, `collectives.cpp`) is not, because its bookkeeping is shared by all fibers of a block
//! and synchronised by the scheduler itself, which TSan cannot see. `-DCUDA_EMU_TSAN` turns on the fiber
//! annotations (one TSan fiber per CUDA thread, switches without synchronisation, release/acquire at
//! barriers and `__syncwarp`). AddressSanitizer build: everything instrumented, `-DCUDA_EMU_ASAN` turns on
//! the fiber-switch annotations; shared memory and the checker's buffers are exact-size heap blocks.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cuda_attention::emulator::Schedule;
use cuda_attention::launch::KernelLaunch;
use cuda_attention::sys::AttentionParams;
use cuda_attention::DType;

/// Which sanitizer the checker is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanitizer {
    /// No sanitizer: the emulator's own checks only.
    None,
    /// ThreadSanitizer: races between CUDA threads (missing barriers) and between blocks.
    Thread,
    /// AddressSanitizer: out-of-bounds global and shared memory accesses.
    Address,
}

impl Sanitizer {
    pub const ALL: [Sanitizer; 3] = [Sanitizer::None, Sanitizer::Thread, Sanitizer::Address];

    fn name(self) -> &'static str {
        match self {
            Sanitizer::None => "plain",
            Sanitizer::Thread => "thread",
            Sanitizer::Address => "address",
        }
    }

    /// Flags for the instrumented files and for the runtime files, and for the link.
    fn flags(self) -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
        match self {
            Sanitizer::None => (vec!["-O2"], vec!["-O2"], vec![]),
            Sanitizer::Thread => (
                vec!["-O1", "-fsanitize=thread", "-DCUDA_EMU_TSAN"],
                vec!["-O1", "-DCUDA_EMU_TSAN"],
                vec!["-fsanitize=thread"],
            ),
            Sanitizer::Address => {
                let flags = vec![
                    "-O1",
                    "-fsanitize=address",
                    "-fno-omit-frame-pointer",
                    "-DCUDA_EMU_ASAN",
                ];
                (flags.clone(), flags, vec!["-fsanitize=address"])
            }
        }
    }
}

/// A built checker executable.
pub struct Checker {
    path: PathBuf,
    sanitizer: Sanitizer,
}

/// The checker for `sanitizer`, built once per test process (and reused across processes while its
/// sources are unchanged).
///
/// # Panics
/// When the C++ compiler or the sanitizer runtime is missing (run `scripts/install-emulator-deps.sh`).
pub fn checker(sanitizer: Sanitizer) -> &'static Checker {
    static CHECKERS: [OnceLock<Result<Checker, String>>; 3] = [const { OnceLock::new() }; 3];
    let index = Sanitizer::ALL.iter().position(|&s| s == sanitizer).unwrap();
    CHECKERS[index]
        .get_or_init(|| build(sanitizer))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Every file under `dir`, recursively, sorted (for the cache key).
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn build(sanitizer: Sanitizer) -> Result<Checker, String> {
    let root = root();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("emulator-checker")
        .join(sanitizer.name());
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let exe = out_dir.join("emulator-check");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let (instrumented_flags, runtime_flags, link_flags) = sanitizer.flags();
    let common = ["-std=c++17", "-g", "-x", "c++"];

    // The parameter fields the checker can set, from the Rust mirror.
    let fields: String = param_fields(&AttentionParams::default())
        .iter()
        .map(|(name, _)| format!("CUDA_EMU_PARAM({name})\n"))
        .collect();
    let generated = out_dir.join("params_fields.inc");
    if fs::read_to_string(&generated).ok().as_deref() != Some(fields.as_str()) {
        fs::write(&generated, &fields)
            .map_err(|e| format!("cannot write {}: {e}", generated.display()))?;
    }
    let includes = [
        root.join("kernels/include"),
        root.join("emulator/cuda"),
        root.join("kernels"),
        out_dir.clone(),
    ];

    let runtime: Vec<PathBuf> = [
        "runtime.cpp",
        "collectives.cpp",
        "hopper.cpp",
        "named_barriers.cpp",
        "kernel_registry.cpp",
    ]
    .iter()
    .map(|f| root.join("emulator").join(f))
    .collect();
    let mut instrumented = vec![root.join("emulator/checker_main.cpp")];
    instrumented.extend(files(&root.join("kernels"), "cu"));
    instrumented.extend(files(&root.join("tests/planted"), "cu"));

    // Cache key: compiler, flags, and every source and header that can reach the checker.
    let mut hasher = DefaultHasher::new();
    (
        &cxx,
        &instrumented_flags,
        &runtime_flags,
        &link_flags,
        &fields,
    )
        .hash(&mut hasher);
    let mut inputs = Vec::new();
    for dir in ["emulator", "kernels", "tests/planted"] {
        all_files(&root.join(dir), &mut inputs);
    }
    for path in &inputs {
        path.hash(&mut hasher);
        fs::read(path).unwrap_or_default().hash(&mut hasher);
    }
    let stamp = format!("{:016x}", hasher.finish());
    let stamp_path = out_dir.join("stamp");
    if exe.is_file() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(Checker {
            path: exe,
            sanitizer,
        });
    }

    // Compile every file in parallel, then link.
    let mut jobs: Vec<(PathBuf, PathBuf, Child)> = Vec::new();
    for (sources, flags) in [
        (&runtime, &runtime_flags),
        (&instrumented, &instrumented_flags),
    ] {
        for source in sources {
            let object = out_dir.join(format!(
                "{}.o",
                source.file_name().unwrap().to_string_lossy()
            ));
            let child = Command::new(&cxx)
                .args(common)
                .args(flags.iter())
                .args(
                    includes
                        .iter()
                        .flat_map(|dir| [Path::new("-I").as_os_str(), dir.as_os_str()]),
                )
                .arg("-c")
                .arg(source)
                .arg("-o")
                .arg(&object)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    format!("cannot run the C++ compiler {cxx}: {e} (install g++, or set CXX)")
                })?;
            jobs.push((source.clone(), object, child));
        }
    }
    let mut objects = Vec::new();
    let mut failures = String::new();
    for (source, object, child) in jobs {
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            failures += &format!(
                "{}:\n{}\n",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        objects.push(object);
    }
    if !failures.is_empty() {
        return Err(format!(
            "building the {} checker failed:\n{failures}",
            sanitizer.name()
        ));
    }
    let output = Command::new(&cxx)
        .args(link_flags.iter())
        .arg("-pthread")
        .args(&objects)
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| format!("cannot run {cxx}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "linking the {} checker failed (is the sanitizer runtime installed? run scripts/install-emulator-deps.sh):\n{}",
            sanitizer.name(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::write(&stamp_path, stamp).map_err(|e| e.to_string())?;
    Ok(Checker {
        path: exe,
        sanitizer,
    })
}

/// Every scalar or pointer field of the parameter struct with its value, in declaration order, read from
/// the bindgen mirror's `Debug` output (so the checker learns the fields from the same source as the
/// crate, and a field the C header lacks fails the checker's build). Composite fields (the sm_90a
/// kernels' tensor maps and their dimension order, arrays and structs) are left out: the checker runs no
/// sm_90a kernel, and they stay zero.
fn param_fields(params: &AttentionParams) -> Vec<(String, String)> {
    let text = format!("{params:?}");
    let inner = text
        .strip_prefix("AttentionParams { ")
        .and_then(|t| t.strip_suffix(" }"))
        .unwrap_or_else(|| panic!("unexpected Debug output of AttentionParams: {text}"));
    // Split at the top-level ", " only (not inside [..] or {..}).
    let mut fields = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            b',' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                fields.push(&inner[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    fields.push(&inner[start..]);
    fields
        .into_iter()
        .filter(|field| !field.contains('[') && !field.contains('{'))
        .map(|field| {
            let (name, value) = field
                .split_once(": ")
                .unwrap_or_else(|| panic!("unexpected field {field}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// A job file for the checker: the parameters, buffers and launches of one run.
pub struct Job {
    lines: Vec<String>,
}

impl Job {
    /// A job with these parameters (pointer fields are replaced by the checker's buffers).
    pub fn new(params: &AttentionParams, dtype: DType) -> Job {
        let mut lines = vec![format!("dtype {dtype}")];
        lines.extend(
            param_fields(params)
                .into_iter()
                .map(|(name, value)| format!("param {name} {value}")),
        );
        Job { lines }
    }

    /// An exact-size buffer of `elements` random values for pointer field `name`, in the dtype (q, k, v).
    pub fn input(self, name: &str, elements: usize, dtype: DType) -> Job {
        self.buffer(name, elements, dtype.size_bytes(), "random")
    }

    /// An exact-size buffer of `elements` NaN values for pointer field `name` (outputs, workspaces).
    pub fn output(self, name: &str, elements: usize, element_bytes: usize) -> Job {
        self.buffer(name, elements, element_bytes, "poison")
    }

    /// A buffer for pointer field `name` holding exactly `values`, as i32 (`element_bytes` 4) or i64 (8):
    /// metadata such as cu_seqlens, block tables and slots.
    pub fn values(self, name: &str, element_bytes: usize, values: &[i64]) -> Job {
        let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.buffer(
            name,
            values.len(),
            element_bytes,
            &format!("values {}", list.join(" ")),
        )
    }

    fn buffer(mut self, name: &str, elements: usize, element_bytes: usize, fill: &str) -> Job {
        self.lines
            .push(format!("buffer {name} {elements} {element_bytes} {fill}"));
        self
    }

    /// A launch, run after the previous ones.
    pub fn launch(mut self, launch: &KernelLaunch) -> Job {
        let (g, b) = (launch.grid, launch.block);
        self.lines.push(format!(
            "launch {} {} {} {} {} {} {} {}",
            launch.name, g.0, g.1, g.2, b.0, b.1, b.2, launch.shared_bytes
        ));
        self
    }

    /// The schedule of every launch.
    pub fn schedule(mut self, schedule: Schedule) -> Job {
        self.lines.push(match schedule {
            Schedule::RoundRobin => "schedule round-robin".into(),
            Schedule::Reversed => "schedule reversed".into(),
            Schedule::Random { seed } => format!("schedule random {seed}"),
        });
        self
    }

    /// Host threads per launch.
    pub fn threads(mut self, threads: usize) -> Job {
        self.lines.push(format!("threads {threads}"));
        self
    }
}

/// What one checker run printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// ThreadSanitizer reported a data race.
    pub fn race(&self) -> bool {
        self.stderr.contains("WARNING: ThreadSanitizer: data race")
    }

    /// AddressSanitizer reported an error (heap-buffer-overflow and the like).
    pub fn address_error(&self) -> bool {
        self.stderr.contains("ERROR: AddressSanitizer")
    }

    /// The emulator's own error message, when it stopped a kernel.
    pub fn emulator_error(&self) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("emulator-check: error in "))
    }

    /// NaN elements left in `out` when the run finished cleanly (exit 0, no sanitizer report).
    pub fn clean_nan_outputs(&self) -> Option<usize> {
        if self.code != Some(0) || self.stderr.contains("Sanitizer:") {
            return None;
        }
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("emulator-check: ok: "))?;
        line.split(", ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Everything, for assertion messages.
    pub fn describe(&self) -> String {
        let stderr: String = self.stderr.lines().take(40).collect::<Vec<_>>().join("\n");
        format!(
            "exit {:?}\nstdout:\n{}\nstderr (first 40 lines):\n{stderr}",
            self.code, self.stdout
        )
    }
}

impl Checker {
    /// Which sanitizer this checker was built with.
    pub fn sanitizer(&self) -> Sanitizer {
        self.sanitizer
    }

    /// `emulator-check --info`.
    pub fn info(&self) -> String {
        let output = Command::new(&self.path)
            .arg("--info")
            .output()
            .expect("cannot run the checker");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `job` and collects the output.
    pub fn run(&self, job: &Job) -> Run {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "emulator-job-{}-{}.txt",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, job.lines.join("\n") + "\n").expect("cannot write the job file");
        let mut run = self.spawn(&path, false);
        // gcc 12's TSan cannot map its shadow under the largest address-space randomisation: rerun with
        // randomisation off for this process.
        if run.stderr.contains("unexpected memory mapping") {
            run = self.spawn(&path, true);
        }
        let _ = fs::remove_file(&path);
        run
    }

    fn spawn(&self, job: &Path, no_aslr: bool) -> Run {
        let mut command = if no_aslr {
            let mut c = Command::new("setarch");
            c.arg(std::env::consts::ARCH).arg("-R").arg(&self.path);
            c
        } else {
            Command::new(&self.path)
        };
        let output = command
            .arg(job)
            .env(
                "TSAN_OPTIONS",
                "halt_on_error=1 exitcode=66 history_size=4 report_signal_unsafe=0",
            )
            .env("ASAN_OPTIONS", "halt_on_error=1 exitcode=67 detect_leaks=0")
            .output()
            .expect("cannot run the checker");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}
