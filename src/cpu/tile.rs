//! The CPU backend's flash loop for one task: query rows `row0..row0 + rows` of every query head served
//! by one key/value head, against that head's keys in tiles.
//!
//! Algorithm (FlashAttention's forward, on f32 tiles sized for the L1/L2 caches):
//! - the task's queries, times `scale`, are widened once and stacked head by head, `[group * rows]
//!   [head_dim]` (at most [`QUERY_TILE`] rows in all, or the group's heads for one row), so that each
//!   product covers every head of the group;
//! - the keys any row sees, `first..last` (the union of the rows' ranges: both bounds grow with the row),
//!   are walked in tiles of at most [`KEY_TILE`] keys ([`key_tiles`]; under a block mask, only the runs
//!   of key blocks the task's query block lists), each widened once to f32 `[keys][head_dim]` for K and
//!   V;
//! - `S = (scale Q) K^T` (`gemm`, [`super::matmul`]), then per row the keys outside its range
//!   set to `-inf`, the soft cap / ALiBi applied, and the online softmax
//!   (`m' = max(m, max S)`, `P = exp(S - m')`, `l' = l e^(m - m') + sum P`, `O *= e^(m - m')`,
//!   [`super::simd`]); then `O += P V` (`gemm`);
//! - at the end `O / l` (a sink joins the denominator), `lse = m + ln l`, and the weights when asked for,
//!   from the scores kept in the caller's weights buffer: `exp(s - m) / l`.
//!
//! Non-finite values (README): P is 0 at the keys a row does not see, but `0 * NaN` and `0 * Inf` are
//! NaN, so a tile that some row sees only in part and whose V holds a non-finite value computes `P V`
//! row by row over each row's own keys.
//! A row whose `m` is still `-inf` at the end saw no key (or only `-inf` scores): output 0, lse `-inf`
//! (the sink's value with one). Memory: the tiles below and the task's `[group][rows][head_dim]`
//! accumulators, whatever the sequence length.

use super::matmul::{accumulate_nn, product_nt, Dims};
use super::scores::{max_keeping_nan, Adjust};
use super::simd::{exp_shifted, row_max};
use crate::dtype::Element;
use crate::problem::AttentionProblem;

/// Most query rows in one task.
pub(super) const QUERY_TILE: usize = 128;
/// Most keys per tile.
pub(super) const KEY_TILE: usize = 256;

/// One unit of work: query rows `row0..row0 + rows` of every query head served by key/value head
/// `head_kv` in batch `batch`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Task {
    pub batch: usize,
    pub head_kv: usize,
    pub row0: usize,
    pub rows: usize,
}

/// A task with its own slices of the optional logsumexp (`rows` values per query head of the group)
/// and weights (`rows * seq_k` values per query head); empty when not asked for.
pub(super) struct TaskSlices<'a> {
    pub task: Task,
    pub lse: Vec<&'a mut [f32]>,
    pub weights: Vec<&'a mut [f32]>,
}

/// Per-thread tiles, reused across tasks.
pub(super) struct Scratch {
    /// The key tile, f32 `[KEY_TILE][head_dim]`.
    k: Vec<f32>,
    /// The value tile, f32 `[KEY_TILE][head_dim]`.
    v: Vec<f32>,
    /// `scale * q` of the task's stacked rows (see [`stacked_rows`]), `[group * rows][head_dim]`.
    q: Vec<f32>,
    /// Scores, then probabilities, `[group * rows][KEY_TILE]`.
    s: Vec<f32>,
    /// Unnormalised outputs, `[group * rows][head_dim]`.
    o: Vec<f32>,
    /// Running maximum and sum per stacked row.
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Query rows per task for `wanted` (what balances the threads): at most [`QUERY_TILE`] rows of all
/// the heads of a group together, so `QUERY_TILE / group` rows (at least one, for decode with a large
/// group). Under a block mask, a power of two no larger than 64, which divides every query block
/// (multiples of 64): a task's rows then lie in one query block and share its list of key blocks.
pub(super) fn rows_per_task(problem: &AttentionProblem, wanted: usize) -> usize {
    let rows = wanted.clamp(1, rows_per_task_cap(problem));
    match problem.block_mask {
        Some(_) => 1 << rows.min(64).ilog2(),
        None => rows,
    }
}

/// The most query rows of one task ([`rows_per_task`]).
fn rows_per_task_cap(problem: &AttentionProblem) -> usize {
    (QUERY_TILE / problem.heads_ratio()).max(1)
}

/// Rows of one product: the task's rows of every head of its group, stacked head by head.
fn stacked_rows(problem: &AttentionProblem) -> usize {
    rows_per_task_cap(problem) * problem.heads_ratio()
}

impl Scratch {
    /// f32 values one thread's scratch holds for `problem`, `None` on overflow.
    pub(super) fn values(problem: &AttentionProblem) -> Option<usize> {
        let d = problem.shape.head_dim;
        let (keys, rows) = (KEY_TILE, stacked_rows(problem));
        let kv = keys.checked_mul(d)?.checked_mul(2)?;
        let q_o = rows.checked_mul(d)?.checked_mul(2)?;
        kv.checked_add(q_o)?
            .checked_add(rows.checked_mul(keys)?)?
            .checked_add(rows.checked_mul(2)?)
    }

    /// Allocates the tiles; the caller checked [`Scratch::values`] against the memory budget.
    pub(super) fn new(problem: &AttentionProblem) -> Self {
        let d = problem.shape.head_dim;
        let (keys, rows) = (KEY_TILE, stacked_rows(problem));
        Scratch {
            k: vec![0.0; keys * d],
            v: vec![0.0; keys * d],
            q: vec![0.0; rows * d],
            s: vec![0.0; rows * keys],
            o: vec![0.0; rows * d],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
        }
    }
}

/// What every task reads.
pub(super) struct Context<'a, T> {
    pub problem: &'a AttentionProblem,
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
}

/// The key tiles of a task whose rows see the keys `first..last`: without a block mask, tiles of
/// [`KEY_TILE`] keys aligned to multiples of it; under one, the runs of consecutive key blocks listed by
/// the query block holding `row0` (the task's rows lie in one, [`rows_per_task`]), each cut into
/// tiles of at most [`KEY_TILE`] keys, so that every key of a tile is listed for every row.
fn key_tiles(
    problem: &AttentionProblem,
    row0: usize,
    first: usize,
    last: usize,
) -> Vec<(usize, usize)> {
    let mut tiles = Vec::new();
    let mut cut = |start: usize, end: usize| {
        let (mut t0, end) = (start.max(first), end.min(last));
        while t0 < end {
            let t1 = (t0 + KEY_TILE).min(end);
            tiles.push((t0, t1));
            t0 = t1;
        }
    };
    let Some(mask) = &problem.block_mask else {
        let mut start = first / KEY_TILE * KEY_TILE;
        while start < last {
            cut(start, start + KEY_TILE);
            start += KEY_TILE;
        }
        return tiles;
    };
    let block = row0 / mask.block_q();
    if block >= mask.row_blocks() {
        return tiles;
    }
    let width = mask.block_k();
    let mut run: Option<(usize, usize)> = None;
    for &c in mask.row(block) {
        let c = c as usize;
        match run {
            Some((begin, end)) if end == c => run = Some((begin, c + 1)),
            _ => {
                if let Some((begin, end)) = run {
                    cut(begin * width, end * width);
                }
                run = Some((c, c + 1));
            }
        }
    }
    if let Some((begin, end)) = run {
        cut(begin * width, end * width);
    }
    tiles
}

impl<T: Element> Context<'_, T> {
    /// Computes one task: returns its output rows `[heads of the group][rows][head_dim]` and fills its
    /// logsumexp and weights slices.
    pub(super) fn run_task(&self, mut slices: TaskSlices<'_>, scratch: &mut Scratch) -> Vec<T> {
        let problem = self.problem;
        let (d, sk) = (problem.shape.head_dim, problem.shape.seq_k);
        let Task {
            batch,
            head_kv,
            row0,
            rows,
        } = slices.task;
        let group = problem.heads_ratio();
        let adjust = Adjust::new(problem);

        let mut ranges = [(0usize, 0usize); QUERY_TILE];
        for (r, range) in ranges.iter_mut().enumerate().take(rows) {
            let (begin, end) = problem.key_range(row0 + r);
            *range = (begin, end.max(begin));
        }
        let ranges = &ranges[..rows];
        let (first, last) = (ranges[0].0, ranges[rows - 1].1);

        // Stacked row x = g * rows + r is row r of the group's head g.
        let stacked = group * rows;
        let scale = problem.scale();
        for x in 0..stacked {
            let start =
                problem
                    .q_strides
                    .offset(batch, row0 + x % rows, head_kv * group + x / rows, 0);
            let to = &mut scratch.q[x * d..][..d];
            T::widen_into(&self.q[start..start + d], to);
            to.iter_mut().for_each(|value| *value *= scale);
        }
        scratch.o[..stacked * d].fill(0.0);
        scratch.m.fill(f32::NEG_INFINITY);
        scratch.l.fill(0.0);
        for weights in slices.weights.iter_mut() {
            weights.fill(f32::NEG_INFINITY);
        }

        for (t0, t1) in key_tiles(problem, row0, first, last) {
            let n = t1 - t0;
            // K and V of the tile widened to f32 `[n][head_dim]` (a copy for f32: gemm packs a
            // contiguous tile faster than the caller's strided rows, measured), the rows ahead
            // prefetched.
            let (k_start, v_start) = (
                problem.k_strides.offset(batch, t0, head_kv, 0),
                problem.v_strides.offset(batch, t0, head_kv, 0),
            );
            for j in 0..n {
                prefetch_row(
                    self.k,
                    k_start + (j + PREFETCH_ROWS) * problem.k_strides.seq,
                );
                prefetch_row(
                    self.v,
                    v_start + (j + PREFETCH_ROWS) * problem.v_strides.seq,
                );
                let from = k_start + j * problem.k_strides.seq;
                T::widen_into(&self.k[from..from + d], &mut scratch.k[j * d..][..d]);
                let from = v_start + j * problem.v_strides.seq;
                T::widen_into(&self.v[from..from + d], &mut scratch.v[j * d..][..d]);
            }
            let kv_dims = Dims {
                rows: n,
                cols: d,
                stride: d,
            };
            // Every row sees the whole tile: no per-row masking (the ranges' bounds grow with the row),
            // and P V may multiply the whole tile whatever V holds (each row sees each of its keys).
            let whole = ranges[rows - 1].0 <= t0 && ranges[0].1 >= t1;
            let v_finite = whole || all_finite(&scratch.v[..n * d]);
            let s_dims = Dims {
                rows: stacked,
                cols: n,
                stride: KEY_TILE,
            };
            let q_dims = Dims {
                rows: stacked,
                cols: d,
                stride: d,
            };
            product_nt(
                &mut scratch.s,
                s_dims,
                &scratch.q,
                q_dims,
                &scratch.k,
                kv_dims,
            );
            for x in 0..stacked {
                let (g, r) = (x / rows, x % rows);
                let (begin, end) = ranges[r];
                let row = &mut scratch.s[x * KEY_TILE..][..n];
                let lo = begin.clamp(t0, t1) - t0;
                let hi = end.clamp(t0, t1) - t0;
                if lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                if !whole {
                    row[..lo].fill(f32::NEG_INFINITY);
                    row[hi..].fill(f32::NEG_INFINITY);
                }
                let i = row0 + r;
                if let Some(adjust) = &adjust {
                    adjust.apply(head_kv * group + g, i, t0 + lo, &mut row[lo..hi]);
                }
                if let Some(weights) = slices.weights.get_mut(g) {
                    weights[r * sk + t0..][..n].copy_from_slice(row);
                }
                let m = &mut scratch.m[x];
                let m_new = max_keeping_nan(*m, row_max(&row[lo..hi]));
                if m_new == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let sum = exp_shifted(row, m_new);
                if m_new != *m {
                    let alpha = (*m - m_new).exp();
                    scratch.l[x] *= alpha;
                    scratch.o[x * d..][..d]
                        .iter_mut()
                        .for_each(|value| *value *= alpha);
                    *m = m_new;
                }
                scratch.l[x] += sum;
            }
            let o = &mut scratch.o[..stacked * d];
            if v_finite {
                accumulate_nn(o, q_dims, &scratch.s, s_dims, &scratch.v, kv_dims);
            } else {
                own_keys_only(o, d, &scratch.s, KEY_TILE, &scratch.v, ranges, t0, t1);
            }
        }
        self.finish(&mut slices, scratch, ranges)
    }

    /// `O / l` in the output type, the logsumexp, and the weights `exp(s - m) / l` (0 outside the row's
    /// range), with the head's sink in the denominator when there is one.
    fn finish(
        &self,
        slices: &mut TaskSlices<'_>,
        scratch: &Scratch,
        ranges: &[(usize, usize)],
    ) -> Vec<T> {
        let problem = self.problem;
        let d = problem.shape.head_dim;
        let (group, rows) = (problem.heads_ratio(), ranges.len());
        let mut out = vec![T::default(); group * rows * d];
        for g in 0..group {
            let head = slices.task.head_kv * group + g;
            let sink = problem.sinks.as_ref().map(|sinks| sinks[head]);
            for (r, &(begin, end)) in ranges.iter().enumerate() {
                let (m, l) = (scratch.m[g * rows + r], scratch.l[g * rows + r]);
                let out_row = &mut out[(g * rows + r) * d..][..d];
                let sk = problem.shape.seq_k;
                let weights_row = slices
                    .weights
                    .get_mut(g)
                    .map(|w| &mut w[r * sk..(r + 1) * sk]);
                if m == f32::NEG_INFINITY {
                    // A row that sees no key: output 0, lse -inf (the sink, with one), weights 0.
                    out_row.fill(T::from_f32(0.0));
                    if let Some(lse) = slices.lse.get_mut(g) {
                        lse[r] = sink.unwrap_or(f32::NEG_INFINITY);
                    }
                    if let Some(weights_row) = weights_row {
                        weights_row.fill(0.0);
                    }
                    continue;
                }
                // O = acc / l; lse = m + ln l; weights = P / l. NaN inputs stay NaN. A sink s joins the
                // denominator: with top = max(m, s), l' = l e^(m - top) + e^(s - top), the factor is
                // e^(m - top) / l' and lse = top + ln l'.
                let (inverse, row_lse) = match sink {
                    None => (1.0 / l, m + l.ln()),
                    Some(sink) => {
                        let top = max_keeping_nan(m, sink);
                        let kept = (m - top).exp();
                        let total = l * kept + (sink - top).exp();
                        (kept / total, top + total.ln())
                    }
                };
                let acc = &scratch.o[(g * rows + r) * d..][..d];
                for (o, &a) in out_row.iter_mut().zip(acc) {
                    *o = T::from_f32(a * inverse);
                }
                if let Some(lse) = slices.lse.get_mut(g) {
                    lse[r] = row_lse;
                }
                if let Some(weights_row) = weights_row {
                    weights_row[..begin].fill(0.0);
                    let seen = &mut weights_row[begin..end];
                    exp_shifted(seen, m);
                    seen.iter_mut().for_each(|w| *w *= inverse);
                    weights_row[end..].fill(0.0);
                }
            }
        }
        out
    }
}

/// Rows ahead of the one being widened whose cache lines are requested: the rows of a head are a
/// stride apart, which the hardware prefetcher follows poorly (decode reads them straight from memory).
const PREFETCH_ROWS: usize = 8;

/// Asks for the cache lines of the row starting at `values[start]` (nothing past the slice).
#[inline(always)]
fn prefetch_row<T>(values: &[T], start: usize) {
    #[cfg(target_arch = "x86_64")]
    if start < values.len() {
        let bytes = std::mem::size_of_val(&values[start..]).min(512);
        let first = values[start..].as_ptr().cast::<i8>();
        for line in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults, and the address lies inside the slice.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    first.add(line),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (values, start);
}

/// Whether every value is finite: a count of exponents all ones, with no early exit, so that it
/// vectorises.
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values
        .iter()
        .map(|x| u32::from(x.to_bits() & EXPONENT == EXPONENT))
        .sum::<u32>()
        == 0
}

/// `O += P V` where stacked row `x` (row `x % rows` of a head) sums only over its own keys within the
/// tile `t0..t1` (the same products without the zero terms of the keys it does not see), so that a
/// non-finite V at a key a row does not see stays out of that row.
#[allow(clippy::too_many_arguments)]
fn own_keys_only(
    o: &mut [f32],
    d: usize,
    p: &[f32],
    stride: usize,
    v: &[f32],
    ranges: &[(usize, usize)],
    t0: usize,
    t1: usize,
) {
    for (x, o_row) in o.chunks_exact_mut(d).enumerate() {
        let (begin, end) = ranges[x % ranges.len()];
        let (lo, hi) = (begin.clamp(t0, t1) - t0, end.clamp(t0, t1) - t0);
        for (j, &w) in (lo..hi).zip(&p[x * stride + lo..x * stride + hi]) {
            let v_row = &v[j * d..][..d];
            for (a, &value) in o_row.iter_mut().zip(v_row) {
                *a += w * value;
            }
        }
    }
}
