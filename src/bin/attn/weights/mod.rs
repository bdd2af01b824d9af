//! `attn weights`: one (batch, head)'s attention matrix as a heatmap PNG, computed by a path that
//! materialises the weights: the naive kernels on the GPU when there is one, else the CPU backend, or
//! the emulated naive kernels with `--kernel emulator`. Inputs are random, or real activations from .npy
//! files; token labels from a text file (one per line) go on the axes.

mod heatmap;
mod map;
mod npy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use cuda_attention::cli::inputs::{uniform, Aligned};
use cuda_attention::cli::output::prepare_file;
use cuda_attention::cli::runner::{Backend, Runner};
use cuda_attention::cli::{buffer_bytes, check_host_memory, reject, CliResult};
use cuda_attention::emulator::Schedule;
use cuda_attention::{AttentionProblem, AttentionShape, DType, Element, ForwardOptions};
use half::{bf16, f16};

use crate::masks::{self, MaskArgs};
use npy::Values;

#[derive(Args)]
pub struct WeightsArgs {
    /// q as .npy: [seq_q, heads_q, head_dim] or [batch, seq_q, heads_q, head_dim], float16/32/64.
    #[arg(long, requires_all = ["k", "v"])]
    q: Option<PathBuf>,
    /// k as .npy: [seq_k, heads_kv, head_dim] or [batch, seq_k, heads_kv, head_dim].
    #[arg(long, requires_all = ["q", "v"])]
    k: Option<PathBuf>,
    /// v as .npy, shaped as k.
    #[arg(long, requires_all = ["q", "k"])]
    v: Option<PathBuf>,
    /// Token labels, one per line: seq_k lines (the queries are the last seq_q tokens), or seq_q.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Random inputs: sequence length (queries and keys).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Random inputs: heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Random inputs: head dim.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Random inputs: batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Random inputs: element type (f32, f16, bf16). Files keep theirs (float64 is read as f32).
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Random inputs: seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which batch entry to draw.
    #[arg(long, default_value_t = 0)]
    batch_index: usize,
    /// Which query head to draw.
    #[arg(long, default_value_t = 0)]
    head: usize,
    #[command(flatten)]
    masks: MaskArgs,
    /// Where and which kernel, as in `attn check` (`--backend` also works): auto (the GPU when there is
    /// one, else the CPU backend), gpu or naive (the GPU), cpu, emulator or emulator-naive (the naive
    /// kernels in the CPU emulator: slow, for small matrices). Flash never materialises the weights.
    #[arg(long, visible_alias = "backend", default_value = "auto")]
    kernel: Runner,
    /// Largest number of cells per axis; larger matrices are pooled in blocks.
    #[arg(long, default_value_t = 512)]
    max_cells: usize,
    /// How a block becomes a cell: max or mean of the full weights (at most --max-cells per axis); or N,
    /// the attention map with N bins per axis (at most 4096), computed from the forward's logsumexp and a
    /// second pass over the scores without the seq_q x seq_k matrix, for any sequence length, plus a line
    /// plot of the attention each key receives (--profile-out).
    #[arg(long, default_value = "max", value_name = "max|mean|N", value_parser = map::parse_pool)]
    pool: map::PoolChoice,
    /// With --pool N: one map averaged over every query head (the default draws --head).
    #[arg(long)]
    heads_mean: bool,
    /// With --pool N: each bin holds the sum of its weights (the default: their mean).
    #[arg(long)]
    bin_sum: bool,
    /// With --pool N: where to write the key-profile plot (default: --out with `-keys` before `.png`).
    #[arg(long, value_name = "FILE")]
    profile_out: Option<PathBuf>,
    /// The PNG to write.
    #[arg(long, default_value = "attention.png")]
    out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

/// q, k, v of the chosen (batch, head), each `[seq, head_dim]` contiguous, in one element type.
enum Slices {
    F32([Aligned<f32>; 3]),
    F16([Aligned<f16>; 3]),
    Bf16([Aligned<bf16>; 3]),
}

/// One (batch, head) of the inputs and where it came from.
struct Selection {
    seq_q: usize,
    seq_k: usize,
    head_dim: usize,
    kv_head: usize,
    /// Query heads of the inputs (the drawn one's ALiBi slope depends on them).
    heads: usize,
    slices: Slices,
    source: String,
}

/// Rows `[seq, head_dim]` of head `head` of batch `b` from contiguous `[batch, seq, heads, head_dim]`
/// (a tensor [`npy::load`] checked: `x` holds every element of that shape), converted to `T`.
fn head_rows<S: Copy, T: Element>(
    what: &'static str,
    x: &[S],
    convert: impl Fn(S) -> T,
    tensor: &npy::Tensor,
    b: usize,
    head: usize,
) -> CliResult<Aligned<T>> {
    let (seq, heads, d) = (tensor.seq, tensor.heads, tensor.head_dim);
    let mut rows = Aligned::filled(what, seq * d, T::default())?;
    for (s, row) in rows.chunks_exact_mut(d.max(1)).enumerate() {
        let start = ((b * seq + s) * heads + head) * d;
        for (to, &from) in row.iter_mut().zip(&x[start..start + d]) {
            *to = convert(from);
        }
    }
    Ok(rows)
}

/// The rows of one (batch, head) of `tensor` in f32.
fn f32_rows(
    what: &'static str,
    tensor: &npy::Tensor,
    b: usize,
    head: usize,
) -> CliResult<Aligned<f32>> {
    match &tensor.values {
        Values::F32(x) => head_rows(what, x, |v| v, tensor, b, head),
        Values::F16(x) => head_rows(what, x, f16::to_f32, tensor, b, head),
    }
}

/// q, k and v loaded from .npy files, their shapes checked against each other and the drawn entry.
struct Loaded {
    q: npy::Tensor,
    k: npy::Tensor,
    v: npy::Tensor,
}

fn load_files(args: &WeightsArgs, q: &Path, k: &Path, v: &Path) -> CliResult<Loaded> {
    let (q, k, v) = (npy::load(q)?, npy::load(k)?, npy::load(v)?);
    if q.batch != k.batch || k.batch != v.batch {
        return Err(reject(format!(
            "batch differs: q {}, k {}, v {}",
            q.batch, k.batch, v.batch
        )));
    }
    if k.seq != v.seq || k.heads != v.heads || q.head_dim != k.head_dim || k.head_dim != v.head_dim
    {
        return Err(reject(
            "k and v must have the same shape, and q the same head_dim",
        ));
    }
    if k.heads == 0 || q.heads % k.heads != 0 {
        return Err(reject(format!(
            "q has {} heads, k and v {}: heads_q must be a multiple of heads_kv",
            q.heads, k.heads
        )));
    }
    if args.batch_index >= q.batch || args.head >= q.heads {
        return Err(reject(format!(
            "batch {} head {} is outside the inputs' {} batch entries and {} heads",
            args.batch_index, args.head, q.batch, q.heads
        )));
    }
    Ok(Loaded { q, k, v })
}

/// Query head `h` of batch entry `--batch-index` of loaded files, with its key/value head.
fn select_head(args: &WeightsArgs, loaded: &Loaded, h: usize) -> CliResult<Selection> {
    let Loaded { q, k, v } = loaded;
    let b = args.batch_index;
    let kv_head = h / (q.heads / k.heads);
    let slices = match (&q.values, &k.values, &v.values) {
        (Values::F16(qv), Values::F16(kv), Values::F16(vv)) => Slices::F16([
            head_rows("q rows", qv, |x| x, q, b, h)?,
            head_rows("k rows", kv, |x| x, k, b, kv_head)?,
            head_rows("v rows", vv, |x| x, v, b, kv_head)?,
        ]),
        _ => Slices::F32([
            f32_rows("q rows", q, b, h)?,
            f32_rows("k rows", k, b, kv_head)?,
            f32_rows("v rows", v, b, kv_head)?,
        ]),
    };
    Ok(Selection {
        seq_q: q.seq,
        seq_k: k.seq,
        head_dim: q.head_dim,
        kv_head,
        heads: q.heads,
        slices,
        source: "from .npy files".into(),
    })
}

fn from_files(args: &WeightsArgs, q: &Path, k: &Path, v: &Path) -> CliResult<Selection> {
    select_head(args, &load_files(args, q, k, v)?, args.head)
}

fn random(args: &WeightsArgs) -> CliResult<Selection> {
    random_head(args, args.head)
}

/// Random q, k and v of query head `head` (its own key/value head) of batch entry `--batch-index`.
fn random_head(args: &WeightsArgs, head: usize) -> CliResult<Selection> {
    // Only the drawn (batch, head) is generated: its seed depends on both.
    let seed = args.seed ^ ((args.batch_index as u64) << 32 | head as u64);
    let len = args.seq * args.head_dim;
    fn three<T: Element>(len: usize, seed: u64) -> CliResult<[Aligned<T>; 3]> {
        Ok([
            uniform::<T>("q rows", len, seed.wrapping_mul(3))?,
            uniform::<T>("k rows", len, seed.wrapping_mul(3) + 1)?,
            uniform::<T>("v rows", len, seed.wrapping_mul(3) + 2)?,
        ])
    }
    let slices = match args.dtype {
        DType::F32 => Slices::F32(three(len, seed)?),
        DType::F16 => Slices::F16(three(len, seed)?),
        DType::Bf16 => Slices::Bf16(three(len, seed)?),
    };
    Ok(Selection {
        seq_q: args.seq,
        seq_k: args.seq,
        head_dim: args.head_dim,
        kv_head: head,
        heads: args.heads,
        slices,
        source: format!("random inputs, seed {}", args.seed),
    })
}

/// The problem of the drawn (batch, head): `seq_q` queries over `seq_k` keys, with the masks, validated.
fn problem_of(
    args: &WeightsArgs,
    seq_q: usize,
    seq_k: usize,
    head_dim: usize,
    heads: usize,
) -> CliResult<AttentionProblem> {
    let shape = AttentionShape::new(1, seq_q, 1, head_dim).with_seq_k(seq_k);
    let problem = args
        .masks
        .apply(AttentionProblem::new(shape), args.head, heads)?;
    problem.validate().map_err(reject)?;
    Ok(problem)
}

/// Refuses, before any work, a matrix whose weights (f32, `seq_q * seq_k`) and the run's other host
/// buffers exceed the memory available.
fn check_memory(problem: &AttentionProblem, element: usize) -> CliResult<()> {
    let s = problem.shape;
    check_host_memory(
        "attn weights",
        &[
            (
                "q, k and v rows",
                buffer_bytes(&[2 * s.seq_k + s.seq_q, s.head_dim], element),
            ),
            ("weights", buffer_bytes(&[s.seq_q, s.seq_k], 4)),
            ("output", buffer_bytes(&[s.seq_q, s.head_dim], element)),
        ],
        "draw a shorter sequence (the weights take seq_q * seq_k * 4 bytes)",
    )
}

/// Runs `problem` on one (batch, head) with the weights returned, and returns (what ran where, the
/// `[seq_q, seq_k]` weights).
fn weights_of<T: Element>(
    backend: &Backend,
    options: ForwardOptions,
    problem: &AttentionProblem,
    [q, k, v]: &[Aligned<T>; 3],
) -> CliResult<(String, Vec<f32>)> {
    // A kernel that cannot return the weights (flash) is refused before the run.
    backend.plan::<T>(problem, options).map_err(reject)?;
    let ran = backend.run(problem, options, q, k, v)?;
    let weights = ran
        .output
        .weights
        .ok_or("the backend returned no weights")?;
    Ok((ran.label, weights))
}

/// Axis labels from the tokens file: (query labels, key labels).
type Labels = (Option<Vec<String>>, Option<Vec<String>>);

fn labels(path: Option<&Path>, seq_q: usize, seq_k: usize) -> CliResult<Labels> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| reject(format!("{}: {e}", path.display())))?;
    let tokens: Vec<String> = text.lines().map(str::to_string).collect();
    if tokens.len() == seq_k {
        // Bottom-right alignment: the queries are the last seq_q tokens.
        let queries = tokens[seq_k.saturating_sub(seq_q)..].to_vec();
        Ok(((queries.len() == seq_q).then_some(queries), Some(tokens)))
    } else if tokens.len() == seq_q {
        Ok((Some(tokens), None))
    } else {
        Err(reject(format!(
            "{} has {} lines: give one token per line, {seq_k} (the keys) or {seq_q} (the queries)",
            path.display(),
            tokens.len()
        )))
    }
}

pub fn run(args: &WeightsArgs) -> CliResult<ExitCode> {
    let pool = match args.pool {
        map::PoolChoice::Bins(bins) => return map::run(args, bins),
        map::PoolChoice::Block(pool) => pool,
    };
    for (flag, given) in [
        ("--heads-mean", args.heads_mean),
        ("--bin-sum", args.bin_sum),
        ("--profile-out", args.profile_out.is_some()),
    ] {
        if given {
            return Err(reject(format!(
                "{flag} belongs to the attention map: add --pool N (N bins per axis)"
            )));
        }
    }
    // Everything that can be refused is refused before any work: the output path, the runner, the
    // shape, the memory, the token labels.
    prepare_file("--out", &args.out)?;
    let backend = args
        .kernel
        .open_for_command(args.device, Schedule::default())?;
    let selection = match (&args.q, &args.k, &args.v) {
        (Some(q), Some(k), Some(v)) => {
            let selection = from_files(args, q, k, v)?;
            let (seq_q, seq_k, d) = (selection.seq_q, selection.seq_k, selection.head_dim);
            check_memory(&problem_of(args, seq_q, seq_k, d, selection.heads)?, 4)?;
            selection
        }
        _ => {
            if args.batch_index >= args.batch || args.head >= args.heads {
                return Err(reject(format!(
                    "batch {} head {} is outside the {} batch entries and {} heads",
                    args.batch_index, args.head, args.batch, args.heads
                )));
            }
            let problem = problem_of(args, args.seq, args.seq, args.head_dim, args.heads)?;
            check_memory(&problem, args.dtype.size_bytes())?;
            random(args)?
        }
    };
    let (seq_q, seq_k, d) = (selection.seq_q, selection.seq_k, selection.head_dim);
    let problem = problem_of(args, seq_q, seq_k, d, selection.heads)?;
    let (row_labels, col_labels) = labels(args.tokens.as_deref(), seq_q, seq_k)?;
    let options = ForwardOptions::default()
        .with_kernel(args.kernel.kernel())
        .with_weights(true);
    let (ran_on, weights, dtype) = match &selection.slices {
        Slices::F32(x) => {
            let (on, w) = weights_of(&backend, options, &problem, x)?;
            (on, w, "f32")
        }
        Slices::F16(x) => {
            let (on, w) = weights_of(&backend, options, &problem, x)?;
            (on, w, "f16")
        }
        Slices::Bf16(x) => {
            let (on, w) = weights_of(&backend, options, &problem, x)?;
            (on, w, "bf16")
        }
    };
    let pooled = heatmap::pool(&weights, seq_q, seq_k, args.max_cells, pool);
    let title = format!(
        "attention weights, batch {} head {} (kv head {}), {seq_q} x {seq_k}{}, {dtype}: {}",
        args.batch_index,
        args.head,
        selection.kv_head,
        masks::describe(&problem),
        pooled.describe()
    );
    heatmap::write(
        &pooled,
        row_labels.as_deref(),
        col_labels.as_deref(),
        &title,
        &args.out,
    )?;
    println!("weights: {ran_on}, {}", selection.source);
    if pooled.row_factor * pooled.col_factor > 1 {
        println!(
            "wrote {}: {seq_q} x {seq_k} weights, {} to {} x {} cells",
            args.out.display(),
            pooled.describe(),
            pooled.rows,
            pooled.cols
        );
    } else {
        println!(
            "wrote {}: {seq_q} x {seq_k} weights, not downsampled",
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
