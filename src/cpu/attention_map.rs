//! The CPU backend's attention maps ([`crate::attention_map`]): the fused forward pass with the logsumexp,
//! then a map pass on all cores.
//!
//! Map pass, per task (batch entry, query head, block of query rows): the keys the block's rows see (from
//! the first row's first key to the last row's last key, [`AttentionProblem::key_range`]) converted to
//! f32 once, then per row, at each key of its range that [`AttentionProblem::visible`] lets it see, `s = scale * q_i . k_j` (f32, 8 lanes), the soft cap and ALiBi in f32 as the
//! kernels apply them, `w = exp(s - lse_i)` over the row's own key range (a row with lse `-inf` sees no
//! key and adds nothing), summed per key bin of the row (f32 within a bin segment of one row) and per key
//! into task-local f64 partials. Partials are merged into f64 totals in task order, whichever thread
//! finishes first, so the result does not depend on the number of threads; then averaged (bins, heads)
//! and rounded to f32. Memory: the forward's output and lse, per thread one head's keys in f32, the map
//! and the profile; never `seq_q x seq_k`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::CpuBackend;
use crate::attention_map::{BinReduce, HostAttentionMap, MapHeads, MapLayout, MapSpec};
use crate::binding::check_inputs;
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::host_memory::{check_budget, vec_filled};
use crate::plan::ForwardOptions;
use crate::problem::{checked_product, AttentionProblem};

/// Most query rows in one task.
const MAX_ROWS_PER_TASK: usize = 256;
/// Tasks per thread to aim for, so that uneven (causal, windowed) rows still balance.
const TASKS_PER_THREAD: usize = 4;
/// f32 lanes of the dot products.
const LANES: usize = 8;

impl CpuBackend {
    /// The attention map of `problem` described by `spec`: [`CpuBackend::forward`] with the logsumexp,
    /// then the map pass (module documentation).
    ///
    /// # Errors
    /// Those of [`MapSpec::layout`], short inputs ([`AttentionError::BufferTooSmall`]), buffers too large
    /// for this machine ([`AttentionError::OutOfMemory`]), and those of [`CpuBackend::forward`].
    pub fn attention_map<T: Element>(
        &self,
        problem: &AttentionProblem,
        spec: &MapSpec,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<HostAttentionMap> {
        let layout = spec.layout(problem)?;
        check_inputs(problem, q.len(), k.len(), v.len())?;
        // The f64 totals beside the f32 results.
        let totals = layout
            .values
            .checked_add(layout.profile)
            .and_then(|n| n.checked_mul(8))
            .ok_or_else(|| AttentionError::SizeOverflow {
                what: "attention map totals",
                detail: format!(
                    "{} values and {} profile entries",
                    layout.values, layout.profile
                ),
            })?;
        layout.check_host_budget(totals)?;
        let lse = self
            .forward(problem, ForwardOptions::default().with_lse(true), q, k, v)?
            .lse
            .ok_or_else(|| {
                AttentionError::InvalidArgument("the forward pass returned no lse".into())
            })?;
        let (values, key_profile) = map_pass(problem, &layout, q, k, &lse)?;
        Ok(layout.output(values, key_profile))
    }
}

/// One task: query rows `rows` of query head `head` of batch entry `batch`.
#[derive(Debug, Clone, Copy)]
struct Task {
    batch: usize,
    head: usize,
    rows: (usize, usize),
}

/// What a task adds: bin rows from `bin_row0` (`[rows][bins_k]`), and the profile of keys from `key0`.
struct Partial {
    task: Task,
    bin_row0: usize,
    bins: Vec<f64>,
    key0: usize,
    profile: Vec<f64>,
}

/// The f64 totals and the partials that wait for their turn (task order).
struct Totals {
    next: usize,
    waiting: BTreeMap<usize, Partial>,
    values: Vec<f64>,
    profile: Vec<f64>,
}

impl Totals {
    fn add(&mut self, index: usize, partial: Partial, layout: &MapLayout) {
        self.waiting.insert(index, partial);
        while let Some(partial) = self.waiting.remove(&self.next) {
            let Task { batch, head, .. } = partial.task;
            let map = match layout.spec.heads {
                MapHeads::PerHead => batch * layout.heads + head,
                MapHeads::Mean => batch,
            };
            let base = (map * layout.bins_q + partial.bin_row0) * layout.bins_k;
            for (total, value) in self.values[base..].iter_mut().zip(&partial.bins) {
                *total += value;
            }
            let base = (batch * layout.heads_q + head) * layout.seq_k + partial.key0;
            for (total, value) in self.profile[base..].iter_mut().zip(&partial.profile) {
                *total += value;
            }
            self.next += 1;
        }
    }
}

/// The map pass over the forward's logsumexp `[batch, heads_q, seq_q]`: (values, key profile).
fn map_pass<T: Element>(
    problem: &AttentionProblem,
    layout: &MapLayout,
    q: &[T],
    k: &[T],
    lse: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let s = problem.shape;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows_per_task = (s.batch * s.heads_q * s.seq_q)
        .div_ceil(threads * TASKS_PER_THREAD)
        .clamp(1, MAX_ROWS_PER_TASK);
    let mut tasks = Vec::new();
    for batch in 0..s.batch {
        for head in 0..s.heads_q {
            for row0 in (0..s.seq_q).step_by(rows_per_task) {
                tasks.push(Task {
                    batch,
                    head,
                    rows: (row0, (row0 + rows_per_task).min(s.seq_q)),
                });
            }
        }
    }
    // Per thread: one head's keys in f32 and a task's partials (a bin row per row at most, keys).
    let per_thread = checked_product("attention map keys", &[s.seq_k, s.head_dim])?
        .checked_add(checked_product(
            "attention map partials",
            &[rows_per_task + 1, layout.bins_k],
        )?)
        .and_then(|n| n.checked_add(2 * s.seq_k + s.head_dim))
        .and_then(|n| n.checked_mul(8 * threads))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "attention map scratch",
            detail: format!(
                "{threads} threads x seq_k {} x head_dim {}",
                s.seq_k, s.head_dim
            ),
        })?;
    check_budget("attention map scratch", per_thread)?;
    let totals = Mutex::new(Totals {
        next: 0,
        waiting: BTreeMap::new(),
        values: vec_filled("attention map totals", layout.values, 0.0f64)?,
        profile: vec_filled("attention map profile totals", layout.profile, 0.0f64)?,
    });
    let queue = Mutex::new(tasks.iter().copied().enumerate());
    let worker = || -> Result<()> {
        let mut keys = Vec::new();
        loop {
            let next = queue.lock().map_err(|_| poisoned())?.next();
            let Some((index, task)) = next else {
                return Ok(());
            };
            let partial = run_task(problem, layout, q, k, lse, task, &mut keys)?;
            totals
                .lock()
                .map_err(|_| poisoned())?
                .add(index, partial, layout);
        }
    };
    let threads = threads.min(tasks.len()).max(1);
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mine = worker();
        helpers
            .into_iter()
            .map(|h| h.join().map_err(|_| poisoned())?)
            .try_fold((), |(), r| r)
            .and(mine)
    })?;
    let totals = totals.into_inner().map_err(|_| poisoned())?;

    // Means: over each bin's positions, and over the heads.
    let mut values = vec_filled("attention map values", layout.values, 0.0f32)?;
    let heads_factor = match layout.spec.heads {
        MapHeads::PerHead => 1.0,
        MapHeads::Mean => 1.0 / s.heads_q as f64,
    };
    let (bin_q, bin_k) = (layout.spec.bin_q, layout.spec.bin_k);
    for (index, (value, total)) in values.iter_mut().zip(&totals.values).enumerate() {
        let (bin_row, bin_col) = (
            (index / layout.bins_k) % layout.bins_q,
            index % layout.bins_k,
        );
        let positions = match layout.spec.reduce {
            BinReduce::Sum => 1.0,
            BinReduce::Mean => {
                let rows = ((bin_row + 1) * bin_q).min(s.seq_q) - bin_row * bin_q;
                let cols = ((bin_col + 1) * bin_k).min(s.seq_k) - bin_col * bin_k;
                (rows * cols) as f64
            }
        };
        *value = (total * heads_factor / positions) as f32;
    }
    let mut profile = vec_filled("attention map key profile", layout.profile, 0.0f32)?;
    for (value, total) in profile.iter_mut().zip(&totals.profile) {
        *value = *total as f32;
    }
    Ok((values, profile))
}

fn poisoned() -> AttentionError {
    AttentionError::InvalidArgument("a map thread panicked".into())
}

/// One task's partial sums; `keys` is the thread's scratch for the head's keys in f32.
fn run_task<T: Element>(
    problem: &AttentionProblem,
    layout: &MapLayout,
    q: &[T],
    k: &[T],
    lse: &[f32],
    task: Task,
    keys: &mut Vec<f32>,
) -> Result<Partial> {
    let s = problem.shape;
    let d = s.head_dim;
    let Task { batch, head, rows } = task;
    let kv_head = head / problem.heads_ratio();
    let scale = problem.scale();
    let (bin_q, bin_k) = (layout.spec.bin_q, layout.spec.bin_k);
    // The keys any row of the task sees (both bounds grow with the row).
    let key0 = problem.key_range(rows.0).0;
    let key_end = problem.key_range(rows.1 - 1).1.max(key0);
    let padded = d.div_ceil(LANES) * LANES;
    keys.clear();
    keys.resize((key_end - key0) * padded, 0.0);
    for (j, row) in (key0..key_end).zip(keys.chunks_exact_mut(padded)) {
        let offset = problem.k_strides.offset(batch, j, kv_head, 0);
        for (to, from) in row.iter_mut().zip(&k[offset..offset + d]) {
            *to = from.to_f32();
        }
    }
    let bin_row0 = rows.0 / bin_q;
    let bin_rows = (rows.1 - 1) / bin_q - bin_row0 + 1;
    let mut bins = vec_filled(
        "attention map partial bins",
        bin_rows * layout.bins_k,
        0.0f64,
    )?;
    let mut profile = vec_filled("attention map partial profile", key_end - key0, 0.0f64)?;
    let mut query = vec![0.0f32; padded];
    let slope = problem.alibi_slopes.as_ref().map(|slopes| slopes[head]);
    for i in rows.0..rows.1 {
        let row_lse = lse[(batch * s.heads_q + head) * s.seq_q + i];
        let (begin, end) = problem.key_range(i);
        if row_lse == f32::NEG_INFINITY || begin >= end {
            continue;
        }
        let offset = problem.q_strides.offset(batch, i, head, 0);
        for (to, from) in query.iter_mut().zip(&q[offset..offset + d]) {
            *to = from.to_f32();
        }
        let diagonal = i as i64 + s.seq_k as i64 - s.seq_q as i64;
        let bin_row = &mut bins[(i / bin_q - bin_row0) * layout.bins_k..][..layout.bins_k];
        // W = exp(adjust(scale * q_i . k_j) - lse_i) over the row's keys, bin segment by bin segment.
        let mut j = begin;
        while j < end {
            let bin_col = j / bin_k;
            let segment_end = ((bin_col + 1) * bin_k).min(end);
            let mut sum = 0.0f32;
            for key in j..segment_end {
                // The per-key decision is the problem's own (every mask a problem can hold today keeps
                // begin..end, but a mask added to `visible` is honoured here without another change).
                if !problem.visible(i, key) {
                    continue;
                }
                let mut score = scale * dot(&query, &keys[(key - key0) * padded..][..padded]);
                if let Some(cap) = problem.softcap {
                    score = cap * (score / cap).tanh();
                }
                if let Some(slope) = slope {
                    score -= slope * (diagonal - key as i64).unsigned_abs() as f32;
                }
                let weight = (score - row_lse).exp();
                profile[key - key0] += f64::from(weight);
                sum += weight;
            }
            bin_row[bin_col] += f64::from(sum);
            j = segment_end;
        }
    }
    Ok(Partial {
        task,
        bin_row0,
        bins,
        key0,
        profile,
    })
}

/// `a . b` over slices of a multiple of [`LANES`] elements, in 8 f32 lanes (vectorised).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum()
}
