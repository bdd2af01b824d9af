//! `attn weights --pool N`: the attention map without the `seq_q x seq_k` matrix
//! ([`cuda_attention::attention_map`]): N x N bins of one query head (or the mean over the heads), drawn
//! as the heatmap, and the attention each key receives as a line plot. Memory is the inputs, the
//! forward's output, the map and the profile, so the sequence may be as long as the backend takes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use cuda_attention::attention_map::{BinReduce, HostAttentionMap, MapHeads, MapSpec};
use cuda_attention::cli::inputs::Aligned;
use cuda_attention::cli::output::prepare_file;
use cuda_attention::cli::runner::Backend;
use cuda_attention::cli::{buffer_bytes, check_host_memory, reject, CliResult};
use cuda_attention::emulator::Schedule;
use cuda_attention::{AttentionProblem, AttentionShape, Element, Layout};

use super::heatmap::{self, Pool, Pooled};
use super::{labels, load_files, random_head, select_head, Selection, Slices, WeightsArgs};
use crate::masks;

/// Most bins per axis of `--pool N` (the heatmap is about 1000 pixels across).
pub const MAX_BINS: usize = 4096;

/// What `--pool` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolChoice {
    /// The full weights (naive path), blocks of at most `--max-cells` per axis reduced this way.
    Block(Pool),
    /// The attention map with this many bins per axis.
    Bins(usize),
}

impl FromStr for PoolChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "max" => Ok(PoolChoice::Block(Pool::Max)),
            "mean" => Ok(PoolChoice::Block(Pool::Mean)),
            _ => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_BINS).contains(&n) => Ok(PoolChoice::Bins(n)),
                _ => Err(format!(
                    "'{s}' is not a pooling: use max, mean (the full weights) or a number of bins per axis \
                     from 1 to {MAX_BINS} (the attention map)"
                )),
            },
        }
    }
}

/// clap's value parser for `--pool`.
pub fn parse_pool(s: &str) -> Result<PoolChoice, String> {
    s.parse()
}

/// The key-profile plot's path: `--profile-out`, or `--out` with `-keys` before its extension.
fn profile_path(args: &WeightsArgs) -> PathBuf {
    if let Some(path) = &args.profile_out {
        return path.clone();
    }
    let stem = args
        .out
        .file_stem()
        .map_or("attention".into(), |s| s.to_string_lossy().into_owned());
    let extension = args
        .out
        .extension()
        .map_or("png".into(), |e| e.to_string_lossy().into_owned());
    args.out.with_file_name(format!("{stem}-keys.{extension}"))
}

/// The heads a map covers: their q, k and v stacked as `[heads, seq, head_dim]` (the problem's Bhsd
/// layout), the first one's selection for sizes and labels.
struct Stacked {
    first: Selection,
    heads_q: usize,
    heads_kv: usize,
    slices: Slices,
}

/// `parts` (one per head, each `[seq, head_dim]`) one after the other.
fn stack<T: Element>(what: &'static str, parts: &[&Aligned<T>]) -> CliResult<Aligned<T>> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut all = Aligned::filled(what, len, T::default())?;
    let mut at = 0;
    for part in parts {
        all[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    Ok(all)
}

/// Stacks the q of every selection and the k and v of every `ratio`-th one (one per key/value head).
fn stack_slices(selections: &[Selection], ratio: usize) -> CliResult<Slices> {
    macro_rules! stacked {
        ($variant:ident) => {{
            let mut parts = [Vec::new(), Vec::new(), Vec::new()];
            for (index, selection) in selections.iter().enumerate() {
                let Slices::$variant(x) = &selection.slices else {
                    return Err(reject("the heads' inputs differ in element type"));
                };
                parts[0].push(&x[0]);
                if index % ratio == 0 {
                    parts[1].push(&x[1]);
                    parts[2].push(&x[2]);
                }
            }
            Slices::$variant([
                stack("q of every head", &parts[0])?,
                stack("k of every head", &parts[1])?,
                stack("v of every head", &parts[2])?,
            ])
        }};
    }
    Ok(match selections.first().map(|s| &s.slices) {
        Some(Slices::F32(_)) => stacked!(F32),
        Some(Slices::F16(_)) => stacked!(F16),
        Some(Slices::Bf16(_)) => stacked!(Bf16),
        None => return Err(reject("no heads to draw")),
    })
}

/// The problem of the stacked heads: `[1, heads, seq, head_dim]` (Bhsd) with the masks; ALiBi slopes of
/// query heads `first_head..` of `total_heads`.
fn problem_of(
    args: &WeightsArgs,
    (seq_q, seq_k, head_dim): (usize, usize, usize),
    (heads_q, heads_kv): (usize, usize),
    (first_head, total_heads): (usize, usize),
) -> CliResult<AttentionProblem> {
    let shape = AttentionShape::new(1, seq_q, heads_q, head_dim)
        .with_seq_k(seq_k)
        .with_heads_kv(heads_kv);
    let problem = args.masks.apply(
        AttentionProblem::new(shape).with_layout(Layout::Bhsd),
        first_head,
        total_heads,
    )?;
    problem.validate().map_err(reject)?;
    Ok(problem)
}

/// Refuses, before any work, inputs, output, map and profile that exceed the memory available.
fn check_memory(problem: &AttentionProblem, element: usize, bins: (usize, usize)) -> CliResult<()> {
    let s = problem.shape;
    check_host_memory(
        "attn weights --pool",
        &[
            (
                "q, k and v",
                buffer_bytes(
                    &[s.heads_q * s.seq_q + 2 * s.heads_kv * s.seq_k, s.head_dim],
                    element,
                ),
            ),
            (
                "forward output",
                buffer_bytes(&[s.heads_q * s.seq_q, s.head_dim], element),
            ),
            (
                "attention map",
                buffer_bytes(&[s.heads_q, bins.0, bins.1], 4),
            ),
            ("key profile", buffer_bytes(&[s.heads_q, s.seq_k], 4)),
        ],
        "draw a shorter sequence or fewer bins",
    )
}

fn map_of<T: Element>(
    backend: &Backend,
    problem: &AttentionProblem,
    spec: &MapSpec,
    [q, k, v]: &[Aligned<T>; 3],
) -> CliResult<(String, HostAttentionMap)> {
    Ok(backend.attention_map(problem, spec, q, k, v)?)
}

pub fn run(args: &WeightsArgs, bins: usize) -> CliResult<ExitCode> {
    // Everything that can be refused is refused before any work: both output paths, the runner, the
    // shape, the memory, the token labels.
    prepare_file("--out", &args.out)?;
    let profile_out = profile_path(args);
    prepare_file("--profile-out", &profile_out)?;
    let backend = args
        .kernel
        .open_for_command(args.device, Schedule::default())?;
    let files = match (&args.q, &args.k, &args.v) {
        (Some(q), Some(k), Some(v)) => Some(load_files(args, q, k, v)?),
        _ => {
            if args.batch_index >= args.batch || args.head >= args.heads {
                return Err(reject(format!(
                    "batch {} head {} is outside the {} batch entries and {} heads",
                    args.batch_index, args.head, args.batch, args.heads
                )));
            }
            None
        }
    };
    // Which query heads: the drawn one, or every head (the mean); their key/value heads.
    let (heads_total, ratio, element) = match &files {
        Some(f) => (f.q.heads, f.q.heads / f.k.heads, 4),
        None => (args.heads, 1, args.dtype.size_bytes()),
    };
    let (seq_q, seq_k, head_dim) = match &files {
        Some(f) => (f.q.seq, f.k.seq, f.q.head_dim),
        None => (args.seq, args.seq, args.head_dim),
    };
    let (heads, first_head) = if args.heads_mean {
        (0..heads_total, 0)
    } else {
        (args.head..args.head + 1, args.head)
    };
    let (heads_q, heads_kv) = if args.heads_mean {
        (heads_total, heads_total / ratio)
    } else {
        (1, 1)
    };
    let total_heads = if args.heads_mean {
        heads_q
    } else {
        heads_total
    };
    let problem = problem_of(
        args,
        (seq_q, seq_k, head_dim),
        (heads_q, heads_kv),
        (first_head, total_heads),
    )?;
    let spec = MapSpec::with_bins(&problem.shape, bins, bins)
        .map_err(reject)?
        .with_heads(if args.heads_mean {
            MapHeads::Mean
        } else {
            MapHeads::PerHead
        })
        .with_reduce(if args.bin_sum {
            BinReduce::Sum
        } else {
            BinReduce::Mean
        });
    let layout = spec.layout(&problem).map_err(reject)?;
    check_memory(&problem, element, (layout.bins_q, layout.bins_k))?;
    let (row_labels, col_labels) = labels(args.tokens.as_deref(), seq_q, seq_k)?;

    let selections = heads
        .map(|h| match &files {
            Some(loaded) => select_head(args, loaded, h),
            None => random_head(args, h),
        })
        .collect::<CliResult<Vec<_>>>()?;
    let stacked = Stacked {
        slices: stack_slices(&selections, ratio)?,
        heads_q,
        heads_kv,
        first: selections.into_iter().next().ok_or("no heads to draw")?,
    };
    let (ran_on, map, dtype) = match &stacked.slices {
        Slices::F32(x) => {
            let (on, m) = map_of(&backend, &problem, &spec, x)?;
            (on, m, "f32")
        }
        Slices::F16(x) => {
            let (on, m) = map_of(&backend, &problem, &spec, x)?;
            (on, m, "f16")
        }
        Slices::Bf16(x) => {
            let (on, m) = map_of(&backend, &problem, &spec, x)?;
            (on, m, "bf16")
        }
    };
    let pooled = Pooled {
        rows: map.bins_q,
        cols: map.bins_k,
        row_factor: map.bin_q,
        col_factor: map.bin_k,
        pool: if args.bin_sum { Pool::Sum } else { Pool::Mean },
        values: map.values,
    };
    let which = if args.heads_mean {
        format!("mean of {} heads", stacked.heads_q)
    } else {
        format!("head {} (kv head {})", args.head, stacked.first.kv_head)
    };
    let title = format!(
        "attention map, batch {} {which}, {seq_q} x {seq_k}{}, {dtype}: {} x {} bins, {}",
        args.batch_index,
        masks::describe(&problem),
        pooled.rows,
        pooled.cols,
        pooled.describe()
    );
    heatmap::write(
        &pooled,
        row_labels.as_deref(),
        col_labels.as_deref(),
        &title,
        &args.out,
    )?;
    // The profile of the drawn head, or the mean of the heads' profiles.
    let mut profile = vec![0.0f32; seq_k];
    for head in map.key_profile.chunks_exact(seq_k.max(1)) {
        for (total, value) in profile.iter_mut().zip(head) {
            *total += value / stacked.heads_q as f32;
        }
    }
    let profile_title = format!(
        "attention each key receives (sum over {seq_q} queries), batch {} {which}{}",
        args.batch_index,
        masks::describe(&problem),
    );
    heatmap::write_profile(&profile, &profile_title, &profile_out)?;
    println!(
        "attention map: {ran_on}, {}; masks:{}",
        stacked.first.source,
        masks::describe(&problem)
    );
    println!(
        "wrote {}: {seq_q} x {seq_k} weights as {} x {} bins of {} x {} positions ({})",
        args.out.display(),
        pooled.rows,
        pooled.cols,
        pooled.row_factor,
        pooled.col_factor,
        if args.bin_sum { "sums" } else { "means" },
    );
    println!(
        "wrote {}: the attention each of {seq_k} keys receives (heads_kv {})",
        profile_out.display(),
        stacked.heads_kv
    );
    Ok(ExitCode::SUCCESS)
}
