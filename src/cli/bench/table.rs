//! The tables `attn bench` prints: every record, then (with `--compare`) time ratios ours / theirs.
//! Decode records (`--decode`) have a table of their own: batch and context instead of seq, the split-KV
//! choice and count, and bandwidth (GB/s and the fraction of the measured copy) instead of TFLOP/s.

use std::collections::BTreeMap;

use super::results::{BenchResults, Mode, Record, ShapeKey, Status};

/// A short description of where and how `results` were measured, one line per fact.
pub fn describe(results: &BenchResults) -> Vec<String> {
    let d = &results.device;
    let mut device = format!("{}: {}", results.backend.to_uppercase(), d.name);
    if let Some(driver) = &d.driver {
        device += &format!(", driver {driver}");
    }
    if let Some(cc) = &d.compute_capability {
        device += &format!(", compute capability {cc}");
    }
    let s = &results.settings;
    let flush = if s.l2_flush_bytes > 0 {
        format!(
            ", L2 flushed ({}) before each run",
            human_bytes(s.l2_flush_bytes)
        )
    } else {
        String::new()
    };
    let budget = s.max_seconds.map_or(String::new(), |seconds| {
        format!("; time budget {seconds} s (--max-seconds): shapes predicted not to fit skipped")
    });
    let mut lines = vec![
        format!("{} ({}), {}", results.tool, results.software, device),
        format!(
            "commit {}, {}, `{}`",
            results.commit, results.date, results.command
        ),
        format!(
            "{}: median of up to {} timed runs after {} warm-up runs, {} input sets rotated{flush}{budget}",
            s.timer, s.iters, s.warmup, s.input_sets
        ),
    ];
    if let Some(dist) = &s.varlen {
        lines.push(format!(
            "ragged batch of {} tokens, lengths {dist}, beside a dense batch of as many sequences of \
             the mean length; TFLOP/s on each batch's own lengths",
            s.tokens
        ));
    }
    if let Some(spec) = &s.sparse {
        lines.push(format!(
            "each shape dense and under the block-sparse mask {spec}: a sparse record's TFLOP/s on the \
             (query, key) pairs it computes, `pairs` their share of the dense record's, `speed-up` the \
             dense median over the sparse one"
        ));
    }
    for copy in &s.copy_bandwidth {
        lines.push(format!(
            "{} copy bandwidth {} GB/s (median {} ms of {} read + written; {}): the ceiling of the \
             decode records' bandwidth in {} memory",
            copy.space,
            rate(copy.bandwidth_gb_s),
            millis(copy.median_ms),
            human_bytes(copy.bytes),
            copy.method,
            copy.space
        ));
    }
    lines
}

/// GB/s with about four significant digits.
fn rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// TFLOP/s with about three significant digits.
fn tflops(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else if value >= 0.001 {
        format!("{value:.4}")
    } else {
        format!("{value:.1e}")
    }
}

/// Milliseconds with about four significant digits.
fn millis(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.4}")
    }
}

/// Records sorted by shape (dtype, head dim, mask, seq), keeping the given order within a shape.
pub fn by_shape<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<&'a Record> {
    let mut sorted: Vec<&Record> = records.into_iter().collect();
    sorted.sort_by_key(|r| r.shape_key());
    sorted
}

/// The main table: one line per record. When a record is ragged, a `layout` column after the kernel
/// says `dense`, `varlen` or `paged:PAGE_SIZE` (and `seq` is a ragged batch's mean length). Decode
/// records follow in their own table ([`render_decode`]).
pub fn render(records: &[&Record]) -> String {
    let (decode, others): (Vec<&Record>, Vec<&Record>) =
        records.iter().partition(|r| r.mode == Mode::Decode);
    match (decode.is_empty(), others.is_empty()) {
        (true, _) => render_prefill(&others),
        (false, true) => render_decode(&decode),
        (false, false) => format!("{}\n{}", render_prefill(&others), render_decode(&decode)),
    }
}

/// The memory column: the bytes, marked `h` for host memory.
fn memory_words(r: &Record) -> String {
    r.memory.as_ref().map_or("-".to_string(), |m| {
        let bytes = human_bytes(m.peak_bytes);
        if m.space == "host" {
            format!("{bytes} h")
        } else {
            bytes
        }
    })
}

/// The check column: `ok 1.2e-3 <= 4.0e-3`.
fn check_words(r: &Record) -> String {
    r.check.as_ref().map_or(String::new(), |c| {
        format!(
            "{} {:.1e} <= {:.1e}",
            if c.passed { "ok" } else { "FAILED" },
            c.max_abs_error,
            c.allowed
        )
    })
}

/// The end of a line of a record that was not timed: its status and reason.
fn untimed_words(r: &Record) -> String {
    match r.status {
        Status::FailedCheck => format!(
            "FAILED CHECK (not timed): max error {}",
            r.check.as_ref().map_or("?".into(), |c| format!(
                "{:.2e} > allowed {:.2e} over {} rows",
                c.max_abs_error, c.allowed, c.rows
            ))
        ),
        status => format!(
            "{}: {}",
            status.words(),
            r.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// The decode table: one line per decode record, by dtype, head dim, mask, batch and context. `q` is
/// seq_q, `heads` query/key-value heads, `kernel` the kernel and its split-KV choice, `splits` and
/// `pack` what its plan ran (`x4`: four query heads per tile by GQA packing, `-`: none); `GB/s` is the record's bytes over its median time and `copy` that as a percentage of the
/// copy bandwidth measured in the same run.
pub fn render_decode(records: &[&Record]) -> String {
    let mut text = format!(
        "{:<5} {:>4} {:<6} {:>5} {:>7} {:>2} {:>6}  {:<25} {:>6} {:>4} {:>4} {:>11} {:>7} {:>9} {:>6} {:>10}  {}\n",
        "dtype",
        "d",
        "causal",
        "batch",
        "context",
        "q",
        "heads",
        "kernel",
        "splits",
        "pack",
        "runs",
        "median ms",
        "spread",
        "GB/s",
        "copy",
        "memory",
        "check"
    );
    for r in records {
        let heads = format!("{}/{}", r.heads, r.heads_kv.unwrap_or(r.heads));
        let head = format!(
            "{:<5} {:>4} {:<6} {:>5} {:>7} {:>2} {:>6}  {:<25} {:>6} {:>4}",
            r.dtype,
            r.head_dim,
            if r.causal { "yes" } else { "no" },
            r.batch,
            r.context.map_or("-".into(), |c| c.to_string()),
            r.seq,
            heads,
            r.series(),
            r.splits.map_or("-".into(), |s| s.to_string()),
            r.gqa_packing
                .filter(|&g| g > 1)
                .map_or("-".into(), |g| format!("x{g}"))
        );
        let line = match (&r.status, &r.timing) {
            (Status::Ok, Some(t)) => format!(
                "{head} {:>4} {:>11} {:>6.1}% {:>9} {:>6} {:>10}  {}{}",
                t.times_ms.len(),
                millis(t.median_ms),
                t.spread_percent(),
                r.bandwidth_gb_s.map_or("-".into(), rate),
                r.copy_fraction
                    .map_or("-".into(), |f| format!("{:.1}%", 100.0 * f)),
                memory_words(r),
                check_words(r),
                r.reason
                    .as_ref()
                    .map_or(String::new(), |note| format!("; {note}"))
            ),
            _ => format!("{head} {}", untimed_words(r)),
        };
        text += line.trim_end();
        text.push('\n');
    }
    text
}

/// A sparse record's speed-up over the dense record of the same kernel and shape: the dense median time
/// over its own, `None` unless both were timed.
fn sparse_speedup(r: &Record, records: &[&Record]) -> Option<f64> {
    if r.mode != Mode::Sparse {
        return None;
    }
    let dense_key = ShapeKey {
        mode: Mode::Dense,
        sparse: None,
        ..r.shape_key()
    };
    let dense = records
        .iter()
        .find(|d| d.kernel == r.kernel && d.shape_key() == dense_key)?;
    let (ours, theirs) = (r.median_ms()?, dense.median_ms()?);
    (ours > 0.0).then(|| theirs / ours)
}

/// The table of prefill records (dense, ragged and block-sparse). With sparse records, `pairs` is the
/// share of the dense record's (query, key) pairs a sparse record computes (its density) and `speed-up`
/// the dense record's median time over its own.
fn render_prefill(records: &[&Record]) -> String {
    let ragged = records.iter().any(|r| r.mode != Mode::Dense);
    let sparse = records.iter().any(|r| r.mode == Mode::Sparse);
    let sparse_columns = |pairs: &str, speedup: &str| {
        if sparse {
            format!(" {pairs:>6} {speedup:>8}")
        } else {
            String::new()
        }
    };
    let layout = |word: &str| {
        if ragged {
            format!(" {word:<10}")
        } else {
            String::new()
        }
    };
    let mut text = format!(
        "{:<5} {:>4} {:<6} {:>6} {:>5} {:>5}  {:<15}{} {:>4} {:>11} {:>7} {:>9}{} {:>10}  {}\n",
        "dtype",
        "d",
        "causal",
        "seq",
        "batch",
        "heads",
        "kernel",
        layout("layout"),
        "runs",
        "median ms",
        "spread",
        "TFLOP/s",
        sparse_columns("pairs", "speed-up"),
        "memory",
        "check"
    );
    for r in records {
        let head = format!(
            "{:<5} {:>4} {:<6} {:>6} {:>5} {:>5}  {:<15}{}",
            r.dtype,
            r.head_dim,
            if r.causal { "yes" } else { "no" },
            r.seq,
            r.batch,
            r.heads,
            r.kernel,
            layout(&r.layout())
        );
        let memory = memory_words(r);
        let check = check_words(r);
        let line = match (&r.status, &r.timing) {
            (Status::Ok, Some(t)) => format!(
                "{head} {:>4} {:>11} {:>6.1}% {:>9}{} {:>10}  {check}{}",
                t.times_ms.len(),
                millis(t.median_ms),
                t.spread_percent(),
                tflops(t.tflops),
                sparse_columns(
                    &r.density
                        .map_or("-".into(), |d| format!("{:.1}%", 100.0 * d)),
                    &sparse_speedup(r, records).map_or("-".into(), |x| format!("x{x:.2}")),
                ),
                memory,
                r.reason
                    .as_ref()
                    .map_or(String::new(), |note| format!("; {note}"))
            ),
            _ => format!("{head} {}", untimed_words(r)),
        };
        text += line.trim_end();
        text.push('\n');
    }
    text
}

/// Time ratios ours / theirs for every shape both timed: one line per (shape, our kernel), one column
/// per kernel of theirs.
pub fn render_ratios(ours: &[Record], theirs: &[Record]) -> String {
    let mut their_kernels: Vec<&str> = Vec::new();
    for r in theirs {
        if !their_kernels.contains(&r.kernel.as_str()) {
            their_kernels.push(&r.kernel);
        }
    }
    let mut their_times: BTreeMap<(ShapeKey, &str), f64> = BTreeMap::new();
    for r in theirs {
        if let Some(ms) = r.median_ms() {
            their_times.insert((r.shape_key(), r.kernel.as_str()), ms);
        }
    }
    // Decode records are told apart by batch and context, and ours by split-KV choice.
    let decode = ours.iter().any(|r| r.mode == Mode::Decode);
    let mut text = if decode {
        format!(
            "{:<5} {:>4} {:<6} {:>5} {:>7}  {:<25}",
            "dtype", "d", "causal", "batch", "context", "ours"
        )
    } else {
        format!(
            "{:<5} {:>4} {:<6} {:>6}  {:<15}",
            "dtype", "d", "causal", "seq", "ours"
        )
    };
    for k in &their_kernels {
        text += &format!(" {k:>16}");
    }
    text.push('\n');
    let mut lines = 0;
    for r in by_shape(ours) {
        let Some(ms) = r.median_ms() else { continue };
        let key = r.shape_key();
        let causal = if r.causal { "yes" } else { "no" };
        let mut line = if decode {
            format!(
                "{:<5} {:>4} {:<6} {:>5} {:>7}  {:<25}",
                r.dtype,
                r.head_dim,
                causal,
                r.batch,
                r.context.map_or("-".into(), |c| c.to_string()),
                r.series()
            )
        } else {
            format!(
                "{:<5} {:>4} {:<6} {:>6}  {:<15}",
                r.dtype, r.head_dim, causal, r.seq, r.kernel
            )
        };
        let mut any = false;
        for k in &their_kernels {
            match their_times.get(&(key.clone(), *k)) {
                Some(theirs) if *theirs > 0.0 => {
                    any = true;
                    line += &format!(" {:>16.2}", ms / theirs);
                }
                _ => line += &format!(" {:>16}", "-"),
            }
        }
        if any {
            text += &line;
            text.push('\n');
            lines += 1;
        }
    }
    if lines == 0 {
        text += "(no shape was timed by both: compare runs of the same sweep)\n";
    }
    text
}

/// Bytes in binary units with three significant digits, e.g. `1.50 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}
