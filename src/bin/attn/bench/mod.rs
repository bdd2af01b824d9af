//! `attn bench`: naive vs flash (vs the CPU backend, the emulator, PyTorch) over a sweep of sequence
//! lengths, with batch * seq and heads * head_dim held constant, as FlashAttention reports its numbers.
//!
//! The shapes run cheapest first. With a time budget (`--max-seconds`, 60 s by default with `--quick`) a
//! shape predicted not to fit in what is left is skipped with the prediction as its reason, and the runs
//! of a shape are cut to fit (`cuda_attention::cli::bench::budget`).
//!
//! For each kernel and shape: a check of sampled output rows against the f64 reference (a wrong kernel
//! is never timed), warm-up runs, then timed runs rotating between input sets (CUDA events after an L2
//! flush on the GPU, the wall clock on the host); the median, the spread and TFLOP/s
//! (4 * b * h * seq^2 * d, halved when causal); the exact bytes one call reads and writes. A table on
//! stdout; with `--out DIR`, DIR/results.json, DIR/timings.png, DIR/timings.svg and DIR/memory.png.
//!
//! `--varlen DIST` replaces the sweep of sequence lengths by one ragged batch per dtype, head dim and
//! mask, timed beside a dense batch of as many sequences of the mean length, with `--paged PAGE_SIZE`
//! also in a paged KV cache (`cuda_attention::cli::bench::sweep::Varlen`); TFLOP/s are counted on each
//! batch's real lengths.
//!
//! `--decode` replaces it by decode steps (seq_q 1 against long contexts, GQA) over batch sizes and
//! contexts, flash timed with and without split-KV, reported as bandwidth: bytes of K, V, Q and O over
//! the median time, and as a fraction of a memory copy timed in the same run
//! (`cuda_attention::cli::bench::decode`).
//!
//! `--sparse SPEC` times each shape twice: dense, and under the block-sparse mask SPEC builds for its
//! length (BigBird or Longformer, `cuda_attention::cli::sparse_spec`), at longer default lengths; a sparse
//! record's TFLOP/s counts the pairs it computes, and the table gives its speed-up over the dense record.

mod decode;
mod meta;
mod plots;
mod timing;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use cuda_attention::cli::bench::budget::{Budget, QUICK_SECONDS};
use cuda_attention::cli::bench::decode::{
    Decode, DecodeInputs, CPU_DECODE, CPU_DECODE_QUICK, DEFAULT_HEADS_KV, DEFAULT_HEADS_Q,
    GPU_DECODE, GPU_DECODE_QUICK,
};
use cuda_attention::cli::bench::results::{
    BenchResults, CopyBandwidth, Record, Settings, Status, SCHEMA,
};
use cuda_attention::cli::bench::sweep::{
    Case, Masks, Sweep, Varlen, CPU_DEFAULTS, CPU_QUICK, CPU_SPARSE, CPU_SPARSE_QUICK,
    GPU_DEFAULTS, GPU_QUICK, GPU_SPARSE, GPU_SPARSE_QUICK,
};
use cuda_attention::cli::bench::varlen::{parse_page_size, LengthDist};
use cuda_attention::cli::bench::{slice_check, table};
use cuda_attention::cli::output::prepare_dir;
use cuda_attention::cli::runner::{no_gpu, open_gpu, Runner};
use cuda_attention::cli::sparse_spec::SparseSpec;
use cuda_attention::cli::{check_host_memory, reject, CliError, CliResult};
use cuda_attention::{DType, Engine, KernelChoice};
use half::{bf16, f16};

use decode::{DecodeGpuRunner, DecodeHostRunner};
use timing::{GpuRunner, HostRunner, HostSets};

/// The CPU backend skips shapes above this many FLOPs per call (about 10 s on 2 cores at the tiled
/// backend's 0.1 TFLOP/s).
const CPU_FLOP_LIMIT: f64 = 1e12;
/// The emulator skips shapes above this many FLOPs per call (a few seconds: it runs every CUDA thread
/// as a fiber).
const EMULATOR_FLOP_LIMIT: f64 = 3e8;

#[derive(Args)]
pub struct BenchArgs {
    /// Kernels, comma separated: naive, flash (GPU), cpu, emulator-naive, emulator-flash (the spellings
    /// of `attn check --kernel` that name one kernel). Default: naive,flash on a GPU (flash with
    /// --varlen: naive takes dense batches only; flash with --decode), cpu without one.
    #[arg(long, value_delimiter = ',')]
    kernels: Option<Vec<Runner>>,
    /// Instead of the sweep of --seqs, decode steps: --seq-q queries per sequence against a context of
    /// keys, GQA (--heads query heads, 32 by default, --heads-kv key/value heads, 8 by default), over
    /// --batches x --contexts x --head-dims. Flash is timed with split-KV (the heuristic) and without
    /// (one split); each record reports bandwidth: bytes of K, V, Q and O over the median time, and its
    /// fraction of a memory copy timed in the same run.
    #[arg(long, conflicts_with_all = ["seqs", "tokens", "hidden", "varlen", "paged"])]
    decode: bool,
    /// With --decode: batch sizes, comma separated. Default: 1,4,16,64 on a GPU, 1,4,16 on the CPU; 1,16
    /// with --quick.
    #[arg(long, value_delimiter = ',', requires = "decode")]
    batches: Option<Vec<usize>>,
    /// With --decode: keys per sequence, comma separated. Default: 1024,4096,16384,32768,131072 on a
    /// GPU, 1024,4096,16384 on the CPU; 1024,8192 with --quick.
    #[arg(long, value_delimiter = ',', requires = "decode")]
    contexts: Option<Vec<usize>>,
    /// With --decode: key/value heads (--heads must be a multiple). Default: 8.
    #[arg(long, requires = "decode")]
    heads_kv: Option<usize>,
    /// With --decode: queries per sequence, 1 to 16 (a few for speculative decoding). Default: 1.
    #[arg(long, requires = "decode")]
    seq_q: Option<usize>,
    /// Instead of the sweep of --seqs, a ragged (varlen) batch of self-attention prefill timed beside a
    /// dense batch of as many sequences of the mean length: `uniform:MIN..MAX[:SEED]` (lengths MIN to MAX
    /// inclusive, drawn with SEED, default 0, until they sum to --tokens) or a list of lengths, e.g.
    /// 128,512,2048 (one sequence each).
    #[arg(long, value_name = "DIST", conflicts_with = "seqs")]
    varlen: Option<LengthDist>,
    /// With --varlen: also time the ragged batch with its K/V in a paged cache of PAGE_SIZE tokens per
    /// page (NHD, pages in a shuffled order); comma separated for several sizes.
    #[arg(
        long,
        value_name = "PAGE_SIZE",
        value_delimiter = ',',
        value_parser = parse_page_size,
        requires = "varlen"
    )]
    paged: Option<Vec<usize>>,
    /// Each shape timed twice, dense and under a block-sparse mask built for its length:
    /// bigbird[:block=64,window=1,global=1,random=3,seed=0] or
    /// longformer[:block=64,window=256,global=0+511] (window in tokens, global positions joined by +).
    /// TFLOP/s of a sparse record count the pairs it computes; the table adds its speed-up over dense.
    /// Default lengths: 2048,...,65536 (batch * seq 65536) on a GPU, 512,...,4096 (4096) on the CPU.
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["varlen", "decode"])]
    sparse: Option<SparseSpec>,
    /// Sequence lengths, comma separated. Default: 512,1024,...,16384 on a GPU; 128,...,2048 on the CPU.
    #[arg(long, value_delimiter = ',')]
    seqs: Option<Vec<usize>>,
    /// batch * seq, held constant (batch = tokens / seq, at least 1). Default: 16384 on a GPU, 2048 on
    /// the CPU.
    #[arg(long)]
    tokens: Option<usize>,
    /// heads * head_dim, held constant across head dims. Default: 2048.
    #[arg(long)]
    hidden: Option<usize>,
    /// A fixed number of heads instead of hidden / head_dim (the query heads with --decode: 32 unless
    /// given).
    #[arg(long)]
    heads: Option<usize>,
    /// Head dims, comma separated. Default: 64,128 (128 with --quick on a GPU, and with --decode --quick).
    #[arg(long, value_delimiter = ',')]
    head_dims: Option<Vec<usize>>,
    /// Element types, comma separated: f32, f16, bf16. Default: bf16.
    #[arg(long, value_delimiter = ',')]
    dtypes: Option<Vec<DType>>,
    /// Causal mask: no, yes (also plain `--causal`) or both.
    #[arg(long, num_args = 0..=1, default_value = "no", default_missing_value = "yes")]
    causal: Masks,
    /// Untimed runs before the timed ones, after the checking run. Default: 3 on a GPU, 0 on the CPU.
    #[arg(long)]
    warmup: Option<usize>,
    /// Timed runs per kernel and shape. Default: 20 (host kernels stop earlier after --host-seconds).
    #[arg(long)]
    iters: Option<usize>,
    /// Input sets rotated between runs, so that the cache does not flatter.
    #[arg(long, default_value_t = 3)]
    input_sets: usize,
    /// Do not flush the GPU's L2 cache before each timed run.
    #[arg(long)]
    no_flush: bool,
    /// A host kernel (cpu, emulator) stops timing after this many seconds once it has 3 runs.
    /// Default: 2 (0.3 with --quick).
    #[arg(long)]
    host_seconds: Option<f64>,
    /// Output rows checked against the f64 reference per kernel and shape.
    #[arg(long, default_value_t = slice_check::ROWS)]
    check_rows: usize,
    /// Time budget of the sweep in seconds: shapes run cheapest first, one predicted (from the last
    /// launch of its kernel, scaled by FLOPs) not to fit in what is left is skipped, and the runs of a
    /// shape are cut to fit. The first shape of each kernel and dtype always runs. Default: none (60 with
    /// --quick).
    #[arg(long, value_name = "SECONDS")]
    max_seconds: Option<f64>,
    /// A small sweep: seconds on a GPU, under a minute on the CPU backend (a 60 s --max-seconds budget).
    #[arg(long)]
    quick: bool,
    /// Run the host kernels even when a GPU is present (the CPU sweep and defaults).
    #[arg(long)]
    cpu: bool,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Write DIR/results.json, DIR/timings.png, DIR/timings.svg and DIR/memory.png.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Merge another results file (e.g. from benches/torch_sdpa.py) into the table, with time ratios
    /// ours / theirs, and into the plots.
    #[arg(long, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// Show (and plot) a results.json written earlier instead of running a sweep.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Print the planned records as JSON (the results schema, every record skipped) and exit.
    #[arg(long)]
    dry_run: bool,
}

/// Every setting of the sweep, from the arguments and the defaults for a GPU or a CPU run.
fn resolve(args: &BenchArgs, gpu: bool) -> Sweep {
    let defaults = match (gpu, args.quick, args.sparse.is_some()) {
        (true, false, false) => GPU_DEFAULTS,
        (true, true, false) => GPU_QUICK,
        (false, false, false) => CPU_DEFAULTS,
        (false, true, false) => CPU_QUICK,
        (true, false, true) => GPU_SPARSE,
        (true, true, true) => GPU_SPARSE_QUICK,
        (false, false, true) => CPU_SPARSE,
        (false, true, true) => CPU_SPARSE_QUICK,
    };
    let decode_defaults = match (gpu, args.quick) {
        (true, false) => GPU_DECODE,
        (true, true) => GPU_DECODE_QUICK,
        (false, false) => CPU_DECODE,
        (false, true) => CPU_DECODE_QUICK,
    };
    let host_seconds = if args.quick { 0.3 } else { 2.0 };
    let kernels = match (
        gpu,
        args.varlen.is_some() || args.decode || args.sparse.is_some(),
    ) {
        (true, false) => vec![
            Runner::Gpu(KernelChoice::Naive),
            Runner::Gpu(KernelChoice::Flash),
        ],
        (true, true) => vec![Runner::Gpu(KernelChoice::Flash)],
        (false, _) => vec![Runner::Cpu],
    };
    let head_dims = if args.decode {
        decode_defaults.head_dims
    } else {
        defaults.head_dims
    };
    Sweep {
        kernels: args.kernels.clone().unwrap_or(kernels),
        dtypes: args.dtypes.clone().unwrap_or(vec![DType::Bf16]),
        head_dims: args.head_dims.clone().unwrap_or(head_dims.to_vec()),
        masks: args.causal,
        seqs: args.seqs.clone().unwrap_or(defaults.seqs.to_vec()),
        tokens: args.tokens.unwrap_or(defaults.tokens),
        hidden: args.hidden.unwrap_or(defaults.hidden),
        heads: args.heads.or(args.decode.then_some(DEFAULT_HEADS_Q)),
        warmup: args.warmup.unwrap_or(if gpu { 3 } else { 0 }),
        iters: args.iters.unwrap_or(20),
        input_sets: args.input_sets,
        flush_l2: !args.no_flush,
        host_seconds: args.host_seconds.unwrap_or(host_seconds),
        check_rows: args.check_rows,
        max_seconds: args.max_seconds.or(args.quick.then_some(QUICK_SECONDS)),
        varlen: args.varlen.clone().map(|dist| Varlen {
            dist,
            page_sizes: args.paged.clone().unwrap_or_default(),
        }),
        decode: args.decode.then(|| Decode {
            batches: args
                .batches
                .clone()
                .unwrap_or(decode_defaults.batches.to_vec()),
            contexts: args
                .contexts
                .clone()
                .unwrap_or(decode_defaults.contexts.to_vec()),
            heads_kv: args.heads_kv.unwrap_or(DEFAULT_HEADS_KV),
            seq_q: args.seq_q.unwrap_or(1),
        }),
        sparse: args.sparse.clone(),
    }
}

/// Refuses flags that contradict each other in ways clap does not see.
fn check_flags(args: &BenchArgs) -> CliResult<()> {
    if let (Some(dist), Some(tokens)) = (&args.varlen, args.tokens) {
        if dist.is_list() {
            return Err(CliError::Rejected(format!(
                "--tokens {tokens} with --varlen {dist}: a list of lengths fixes the tokens (their sum); \
                 drop --tokens, or draw lengths with --varlen uniform:MIN..MAX"
            )));
        }
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> CliResult<ExitCode> {
    // Where the results go is made and probed first: an unwritable --out is refused before the sweep.
    if let Some(dir) = args.out.as_deref().filter(|_| !args.dry_run) {
        prepare_dir("--out", dir)?;
    }
    // A compare file that cannot be read costs the comparison, not the sweep: said first, then skipped.
    let theirs = match args.compare.as_deref().map(BenchResults::load) {
        Some(Err(error)) => {
            eprintln!("warning: not comparing: {error}");
            None
        }
        Some(Ok(theirs)) => Some(theirs),
        None => None,
    };
    let ours = match &args.results {
        Some(path) => BenchResults::load(path).map_err(reject)?,
        None => match measure(args)? {
            Some(results) => results,
            None => return Ok(ExitCode::SUCCESS),
        },
    };

    println!();
    for line in table::describe(&ours) {
        println!("{line}");
    }
    println!("memory: {}", ours.settings.memory_method);
    if let Some(theirs) = &theirs {
        println!("compared with:");
        for line in table::describe(theirs) {
            println!("  {line}");
        }
        if theirs.device.name != ours.device.name {
            println!(
                "  note: different devices ({} vs {}): the ratios compare machines, not kernels",
                ours.device.name, theirs.device.name
            );
        }
    }
    let merged: Vec<&Record> = ours
        .records
        .iter()
        .chain(theirs.iter().flat_map(|t| &t.records))
        .collect();
    println!(
        "\n{}",
        table::render(&table::by_shape(merged.iter().copied()))
    );
    if let Some(theirs) = &theirs {
        println!("time ratio ours / theirs (below 1: ours is faster)");
        println!("{}", table::render_ratios(&ours.records, &theirs.records));
    }

    if let Some(dir) = &args.out {
        write_outputs(dir, &ours, theirs.as_ref(), &merged)?;
    }
    let failed: Vec<String> = ours
        .records
        .iter()
        .filter(|r| matches!(r.status, Status::FailedCheck | Status::Error))
        .map(|r| {
            format!(
                "{} {} d{} seq {} {}",
                r.kernel,
                r.dtype,
                r.head_dim,
                r.seq,
                r.layout()
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} record(s) failed their check or errored: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The plot title: what ran where, the commit and the date.
fn title(ours: &BenchResults, theirs: Option<&BenchResults>) -> String {
    let backend = if ours.backend == "cpu" {
        format!("the CPU (no GPU), {}", ours.device.name)
    } else {
        ours.device.name.clone()
    };
    let day = ours.date.split('T').next().unwrap_or(&ours.date);
    let mut title = format!("attn bench on {backend}, commit {}, {day}", ours.commit);
    if let Some(theirs) = theirs {
        title += &format!(" vs {} (dashed)", theirs.software);
    }
    title
}

fn write_outputs(
    dir: &Path,
    ours: &BenchResults,
    theirs: Option<&BenchResults>,
    merged: &[&Record],
) -> CliResult<()> {
    let json = dir.join("results.json");
    ours.save(&json)?;
    let title = title(ours, theirs);
    let sorted = table::by_shape(merged.iter().copied());
    // The ceiling of the decode panels: the device's copy when there is one, else the host's.
    let copy = ours.settings.copy_bandwidth.first();
    plots::write_timings(
        &sorted,
        &title,
        copy,
        &dir.join("timings.png"),
        &dir.join("timings.svg"),
    )?;
    plots::write_memory(&sorted, &title, &dir.join("memory.png"))?;
    println!(
        "wrote {}, timings.png, timings.svg, memory.png",
        json.display()
    );
    Ok(())
}

/// Runs the sweep (or prints it with --dry-run, returning `None`).
fn measure(args: &BenchArgs) -> CliResult<Option<BenchResults>> {
    let date = meta::now_utc();
    check_flags(args)?;
    // The GPU, or why the sweep runs without one.
    let gpu: Result<Engine, String> = if args.cpu {
        Err("--cpu given".into())
    } else {
        match open_gpu(args.device) {
            Ok(engine) => Ok(engine),
            Err(error) if no_gpu(&error) => Err(error.to_string()),
            Err(error) => return Err(error.into()),
        }
    };
    let sweep = resolve(args, gpu.is_ok());
    // Every flag and every shape, then the memory the input sets take, before anything runs.
    let cases = sweep.validate().map_err(reject)?;
    let lengths = sweep.lengths().map_err(reject)?;
    let (what, advice) = match sweep.decode {
        Some(_) => (
            "q sets, K and V, outputs",
            "use smaller --batches or shorter --contexts",
        ),
        None => (
            "input sets and outputs",
            "use fewer --input-sets, a smaller --tokens or --hidden, or shorter --seqs",
        ),
    };
    check_host_memory("attn bench", &[(what, sweep.host_bytes(&cases)?)], advice)?;
    // With --dry-run stdout holds the JSON alone.
    let say = |line: String| {
        if args.dry_run {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let (backend, device) = match &gpu {
        Ok(engine) => {
            say(format!(
                "backend: GPU {} ({} SMs)",
                engine.device().name,
                engine.device().sm_count
            ));
            ("gpu", meta::gpu_device(engine.device()))
        }
        Err(why) => {
            say(format!(
                "backend: CPU, no GPU used ({why}); the sweep runs on the CPU backend"
            ));
            ("cpu", meta::cpu_device())
        }
    };
    let any_gpu = gpu.is_ok() && sweep.kernels.iter().any(|k| k.on_gpu());
    let l2_flush_bytes = match &gpu {
        Ok(engine) if any_gpu => {
            let flush = timing::l2_flush_bytes(engine, &sweep)?;
            if sweep.decode.is_some() {
                decode::check_device_memory(engine, &sweep, &cases, flush)?;
            } else {
                timing::check_device_memory(engine, &sweep, &cases, flush)?;
            }
            flush as u64
        }
        _ => 0,
    };
    let any_host = sweep.kernels.iter().any(|k| !k.on_gpu());
    let timer = match (any_gpu, any_host) {
        (true, true) => "cuda events (GPU kernels), wall clock (host kernels)",
        (true, false) => "cuda events",
        _ => "wall clock",
    };
    let mut results = BenchResults {
        schema: SCHEMA.into(),
        tool: "attn bench".into(),
        backend: backend.into(),
        device,
        software: format!("cuda-attention {}", env!("CARGO_PKG_VERSION")),
        commit: meta::commit(),
        date,
        command: meta::command_line(),
        settings: Settings {
            tokens: match (&lengths, &sweep.decode) {
                (Some(lengths), _) => lengths.iter().sum::<usize>(),
                (None, Some(decode)) => {
                    decode.batches.iter().max().copied().unwrap_or(0) * decode.seq_q
                }
                (None, None) => sweep.tokens,
            },
            hidden: sweep.heads.map_or(sweep.hidden, |h| h * sweep.head_dims[0]),
            warmup: sweep.warmup,
            iters: sweep.iters,
            input_sets: sweep.input_sets,
            l2_flush_bytes,
            timer: timer.into(),
            memory_method: timing::MEMORY_METHOD.into(),
            check_method: timing::check_method(sweep.check_rows),
            max_seconds: sweep.max_seconds,
            varlen: sweep.varlen.as_ref().map(|v| v.dist.to_string()),
            copy_bandwidth: Vec::new(),
            sparse: sweep.sparse.as_ref().map(SparseSpec::to_string),
        },
        records: Vec::new(),
    };
    if args.dry_run {
        for case in &cases {
            for &kernel in &sweep.kernels {
                for case in case.variants(kernel) {
                    results.records.push(case.record(
                        kernel.name(),
                        Status::Skipped,
                        Some("dry run".into()),
                    ));
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(None);
    }
    let kernels = sweep
        .kernels
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(",");
    let dtypes: Vec<&str> = sweep.dtypes.iter().map(|d| d.name()).collect();
    let records: usize = cases
        .iter()
        .flat_map(|case| sweep.kernels.iter().map(|&k| case.variants(k).len()))
        .sum();
    match (&lengths, &sweep.varlen, &sweep.decode) {
        (_, _, Some(decode)) => println!(
            "decode: {kernels}, {records} records{}: batches {:?} x contexts {:?}, seq_q {}, heads {}/{} \
             (query/key-value), head dims {:?}, {dtypes:?}, causal {:?}; bandwidth = bytes of K, V, Q \
             and O / median time, and its fraction of a copy timed here",
            if records > cases.len() * sweep.kernels.len() {
                " (flash with split-KV auto and off)"
            } else {
                ""
            },
            decode.batches,
            decode.contexts,
            decode.seq_q,
            sweep.heads.unwrap_or(0),
            decode.heads_kv,
            sweep.head_dims,
            sweep.masks
        ),
        (Some(lengths), Some(varlen), None) => {
            let total: usize = lengths.iter().sum();
            let dense = cases.iter().find(|c| c.ragged.is_none()).map_or(0, |c| c.seq);
            println!(
                "varlen: {kernels} x {} shapes: a ragged batch of {} sequences, {total} tokens (--varlen \
                 {}, lengths {} to {}), K/V packed{}, beside a dense batch of {} x seq {dense} (head dims \
                 {:?}, {dtypes:?}, causal {:?})",
                cases.len(),
                lengths.len(),
                varlen.dist,
                lengths.iter().min().unwrap_or(&0),
                lengths.iter().max().unwrap_or(&0),
                varlen
                    .page_sizes
                    .iter()
                    .map(|size| format!(" and paged ({size} tokens per page)"))
                    .collect::<String>(),
                lengths.len(),
                sweep.head_dims,
                sweep.masks
            );
        }
        _ => println!(
            "sweep: {kernels} x {} shapes (seq {:?}, batch * seq = {}, head dims {:?}, {dtypes:?}, causal \
             {:?}){}",
            cases.len(),
            sweep.seqs,
            sweep.tokens,
            sweep.head_dims,
            sweep.masks,
            sweep.sparse.as_ref().map_or(String::new(), |spec| format!(
                ", each dense and under --sparse {spec}: TFLOP/s on the computed pairs"
            ))
        ),
    }
    if let Some(seconds) = sweep.max_seconds {
        println!(
            "time budget: {seconds} s (--max-seconds), cheapest shapes first; a shape predicted not to \
             fit is skipped"
        );
    }
    let mut budget = Budget::new(sweep.max_seconds);
    // Every kernel that will run a record, so that the budget keeps room for its first one.
    for case in &cases {
        for &kernel in &sweep.kernels {
            for case in case.variants(kernel) {
                let runs = match kernel.on_gpu() {
                    true => gpu.is_ok(),
                    false => too_slow(kernel, case.work_flops(kernel)).is_none(),
                };
                if runs {
                    budget.expect(kernel, &case);
                }
            }
        }
    }
    let mut progress = Progress::new(records);
    let mut copies = Vec::new();
    for &dtype in &sweep.dtypes {
        let of_dtype: Vec<Case> = cases.iter().filter(|c| c.dtype == dtype).cloned().collect();
        let mut run = Run {
            gpu: &gpu,
            sweep: &sweep,
            progress: &mut progress,
            budget: &mut budget,
            records: &mut results.records,
            copies: &mut copies,
        };
        match dtype {
            DType::F32 => run.dtype::<f32>(&of_dtype)?,
            DType::F16 => run.dtype::<f16>(&of_dtype)?,
            DType::Bf16 => run.dtype::<bf16>(&of_dtype)?,
        }
    }
    results.settings.copy_bandwidth = copies;
    eprintln!(
        "sweep done in {:.1} s",
        progress.started.elapsed().as_secs_f64()
    );
    Ok(Some(results))
}

/// Why a host kernel is left out of a shape, if it is.
fn too_slow(kernel: Runner, flops: f64) -> Option<String> {
    let limit = match kernel {
        Runner::Cpu => CPU_FLOP_LIMIT,
        Runner::Emulator(_) => EMULATOR_FLOP_LIMIT,
        Runner::Gpu(_) | Runner::Auto => return None,
    };
    (flops > limit).then(|| {
        format!(
            "too slow for {kernel}: {:.1} GFLOP per call, the limit is {:.1}",
            flops / 1e9,
            limit / 1e9
        )
    })
}

/// Checks, then times, one kernel on one shape.
trait Measure {
    fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record;
}

impl<T: cuda_attention::Element> Measure for GpuRunner<'_, T> {
    fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        GpuRunner::measure(self, case, kernel, budget)
    }
}

impl<T: cuda_attention::Element> Measure for HostRunner<'_, T> {
    fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        HostRunner::measure(self, case, kernel, budget)
    }
}

impl<T: cuda_attention::Element> Measure for DecodeGpuRunner<'_, T> {
    fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        DecodeGpuRunner::measure(self, case, kernel, budget)
    }
}

impl<T: cuda_attention::Element> Measure for DecodeHostRunner<'_, T> {
    fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        DecodeHostRunner::measure(self, case, kernel, budget)
    }
}

/// The sweep as it runs, one dtype after another: the GPU (or why there is none), the budget, the
/// records so far and, for decode steps, the copies measured so far (one per memory space).
struct Run<'a> {
    gpu: &'a Result<Engine, String>,
    sweep: &'a Sweep,
    progress: &'a mut Progress,
    budget: &'a mut Budget,
    records: &'a mut Vec<Record>,
    copies: &'a mut Vec<CopyBandwidth>,
}

impl Run<'_> {
    /// Runs `cases`, all of dtype `T`, on every kernel of the sweep.
    fn dtype<T: cuda_attention::Element>(&mut self, cases: &[Case]) -> CliResult<()> {
        let sweep = self.sweep;
        let any_gpu = sweep.kernels.iter().any(|k| k.on_gpu());
        let any_host = sweep.kernels.iter().any(|k| !k.on_gpu());
        let engine = self.gpu.as_ref().ok().filter(|_| any_gpu);
        if sweep.decode.is_some() {
            let storage = Sweep::decode_storage(cases)?;
            let inputs = DecodeInputs::<T>::new(storage, sweep.input_sets)?;
            let copy = |space: &str, copies: &[CopyBandwidth]| {
                copies.iter().find(|c| c.space == space).cloned()
            };
            let mut gpu_runner = match engine {
                Some(engine) => {
                    let known = copy("device", self.copies);
                    let (runner, measured) =
                        DecodeGpuRunner::new(engine, sweep, &inputs, known.as_ref())?;
                    self.copies.extend(measured);
                    Some(runner)
                }
                None => None,
            };
            let mut host_runner = match any_host {
                true => {
                    let known = copy("host", self.copies);
                    let (runner, measured) = DecodeHostRunner::new(sweep, &inputs, known.as_ref())?;
                    self.copies.extend(measured);
                    Some(runner)
                }
                false => None,
            };
            return self.cases(
                cases,
                gpu_runner.as_mut().map(|r| r as &mut dyn Measure),
                host_runner.as_mut().map(|r| r as &mut dyn Measure),
            );
        }
        let host = HostSets::<T>::new(sweep, cases)?;
        let mut gpu_runner = engine
            .map(|engine| GpuRunner::new(engine, sweep, &host))
            .transpose()?;
        let mut host_runner = HostRunner::new(sweep, &host)?;
        self.cases(
            cases,
            gpu_runner.as_mut().map(|r| r as &mut dyn Measure),
            Some(&mut host_runner),
        )
    }

    /// Every kernel (and, for a decode step on flash, both split-KV choices) on every case, the GPU
    /// kernels by `gpu`, the host kernels by `host`, as far as the budget allows.
    fn cases(
        &mut self,
        cases: &[Case],
        mut gpu: Option<&mut dyn Measure>,
        mut host: Option<&mut dyn Measure>,
    ) -> CliResult<()> {
        for case in cases {
            for &kernel in &self.sweep.kernels {
                for case in case.variants(kernel) {
                    self.progress.start(&case, kernel);
                    let skipped =
                        |why: String| case.record(kernel.name(), Status::Skipped, Some(why));
                    let budget = &mut *self.budget;
                    let over_budget = |budget: &Budget| budget.skip(kernel, &case, budget.left());
                    let record = match (&mut gpu, &mut host, self.gpu) {
                        (_, _, Err(why)) if kernel.on_gpu() => skipped(format!("no GPU: {why}")),
                        (Some(runner), _, _) if kernel.on_gpu() => match over_budget(budget) {
                            Some(why) => skipped(why),
                            None => runner.measure(&case, kernel, budget),
                        },
                        (_, Some(runner), _) if !kernel.on_gpu() => {
                            match too_slow(kernel, case.work_flops(kernel))
                                .or_else(|| over_budget(budget))
                            {
                                Some(why) => skipped(why),
                                None => runner.measure(&case, kernel, budget),
                            }
                        }
                        _ => case.record(
                            kernel.name(),
                            Status::Error,
                            Some(format!("no runner for {kernel} was set up")),
                        ),
                    };
                    self.progress.finish(&record);
                    self.records.push(record);
                }
            }
        }
        Ok(())
    }
}

/// One line on stderr per kernel and shape: position, elapsed time, what runs, how it went.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    fn start(&mut self, case: &Case, kernel: Runner) {
        self.done += 1;
        let layout = match (&case.ragged, &case.decode) {
            (Some(ragged), _) => match ragged.page_size {
                None => " varlen".into(),
                Some(size) => format!(" paged:{size}"),
            },
            (None, Some(step)) => format!(
                " decode: context {} heads_kv {}{}",
                step.context,
                step.heads_kv,
                step.split
                    .map_or(String::new(), |split| format!(" split:{}", split.word()))
            ),
            (None, None) => case.density().map_or(String::new(), |density| {
                format!(" sparse ({:.1}% of the pairs)", 100.0 * density)
            }),
        };
        eprint!(
            "[{:>3}/{} {:>6.1}s] {:<14} {} d{} {}seq {:>5} batch {:>4} heads {:>3}{layout} ... ",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
            kernel.name(),
            case.dtype,
            case.head_dim,
            if case.causal { "causal " } else { "" },
            case.seq,
            case.batch,
            case.heads
        );
    }

    fn finish(&self, record: &Record) {
        match &record.timing {
            Some(t) => eprintln!(
                "{:.4} ms, {:.4} TFLOP/s ({} runs)",
                t.median_ms,
                t.tflops,
                t.times_ms.len()
            ),
            None => eprintln!(
                "{}: {}",
                record.status.words(),
                record.reason.as_deref().unwrap_or("")
            ),
        }
    }
}
