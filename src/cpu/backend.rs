//! The CPU backend: exact attention with f32 accumulation on all cores, for machines without a GPU.
//!
//! Algorithm, per query row: `S = (scale * q_i) K^T` over the keys the row sees, `m = max S`,
//! `P = exp(S - m)`, `l = sum P`, `O = (P V) / l`, `lse = m + ln l`. K and V are first packed to f32
//! `[batch, heads_kv, seq_k, head_dim]` so every inner loop runs over a contiguous head_dim slice that
//! the compiler vectorises. Work is split into tasks of (batch, query head, block of rows), taken from a
//! shared queue by `available_parallelism` scoped threads; each task owns its disjoint slices of the
//! logsumexp and the weights and returns its output rows, which are scattered through the out strides
//! at the end (no unsafe code).

use std::sync::Mutex;

use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::problem::{checked_product, AttentionProblem, Strides};

/// Largest number of query rows in one task.
const MAX_ROWS_PER_TASK: usize = 64;
/// Tasks per thread to aim for, so that uneven (causal) rows still balance.
const TASKS_PER_THREAD: usize = 4;
/// Below this many multiply-adds (b * hq * sq * sk * d) the work runs on the calling thread alone.
const SINGLE_THREAD_WORK: usize = 1 << 18;
/// Independent accumulators in a dot product (a multiple of every SIMD width in use).
const DOT_LANES: usize = 16;

/// What [`attention`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuOutput<T> {
    /// Output laid out per `problem.out_strides`, `problem.required_len("out")` elements (gaps between
    /// strided rows are 0).
    pub out: Vec<T>,
    /// Logsumexp `[batch, heads_q, seq_q]` (natural log, `-inf` for a row that sees no key), if asked.
    pub lse: Option<Vec<f32>>,
    /// Attention weights `[batch, heads_q, seq_q, seq_k]` (0 where masked), if asked.
    pub weights: Option<Vec<f32>>,
}

/// Runs attention on the CPU into newly allocated buffers.
///
/// # Errors
/// As [`attention_into`].
pub fn attention<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    want_lse: bool,
    want_weights: bool,
) -> Result<CpuOutput<T>> {
    problem.validate()?;
    let shape = problem.shape;
    let mut out = vec![T::default(); problem.required_len("out")?];
    let mut lse = if want_lse {
        Some(vec![0.0f32; shape.lse_elements()?])
    } else {
        None
    };
    let mut weights = if want_weights {
        Some(vec![0.0f32; shape.score_elements()?])
    } else {
        None
    };
    attention_into(
        problem,
        q,
        k,
        v,
        &mut out,
        lse.as_deref_mut(),
        weights.as_deref_mut(),
    )?;
    Ok(CpuOutput { out, lse, weights })
}

/// Runs attention on the CPU into caller-owned buffers: `out` through `problem.out_strides` (elements
/// outside the strided tensor are left alone), and, when given, the contiguous f32 logsumexp
/// `[batch, heads_q, seq_q]` and weights `[batch, heads_q, seq_q, seq_k]` (only their first
/// `lse_elements` / `score_elements` values are written).
///
/// # Errors
/// Whatever [`AttentionProblem::validate`] reports; [`AttentionError::BufferTooSmall`] naming the first
/// of q, k, v, out, lse and weights that is too short.
pub fn attention_into<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
) -> Result<()> {
    problem.validate()?;
    problem.check_lengths(q.len(), k.len(), v.len(), out.len())?;
    let shape = problem.shape;
    let lse = match lse {
        Some(buffer) => Some(fit(buffer, "lse", shape.lse_elements()?)?),
        None => None,
    };
    let weights = match weights {
        Some(buffer) => Some(fit(buffer, "weights", shape.score_elements()?)?),
        None => None,
    };

    // K and V as f32 [batch, heads_kv, seq_k, head_dim].
    let k_packed = pack(problem, k, &problem.k_strides)?;
    let v_packed = pack(problem, v, &problem.v_strides)?;

    let tasks = plan(problem);
    let queue = Mutex::new(tasks_with_slices(problem, &tasks, lse, weights).into_iter());
    let context = Context {
        problem,
        q,
        k: &k_packed,
        v: &v_packed,
    };

    let work = checked_product(
        "multiply-adds batch * heads_q * seq_q * seq_k * head_dim",
        &[
            shape.batch,
            shape.heads_q,
            shape.seq_q,
            shape.seq_k,
            shape.head_dim,
        ],
    )
    .unwrap_or(usize::MAX);
    let threads = if work < SINGLE_THREAD_WORK {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(tasks.len())
            .max(1)
    };
    let rows: Vec<(Task, Vec<T>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| scope.spawn(|| context.run_queue(&queue)))
            .collect();
        let mut rows = context.run_queue(&queue);
        for helper in helpers {
            rows.extend(helper.join().expect("a CPU attention worker panicked"));
        }
        rows
    });

    // Scatter the output rows through the out strides.
    let d = shape.head_dim;
    for (task, values) in rows {
        for (r, row) in values.chunks_exact(d).enumerate() {
            let start = problem
                .out_strides
                .offset(task.batch, task.row0 + r, task.head, 0);
            out[start..start + d].copy_from_slice(row);
        }
    }
    Ok(())
}

/// The first `needed` values of a caller's buffer, or [`AttentionError::BufferTooSmall`].
fn fit<'a>(buffer: &'a mut [f32], tensor: &'static str, needed: usize) -> Result<&'a mut [f32]> {
    let len = buffer.len();
    buffer
        .get_mut(..needed)
        .ok_or(AttentionError::BufferTooSmall {
            tensor,
            needed,
            len,
        })
}

/// Copies k or v to f32 `[batch, heads_kv, seq_k, head_dim]`.
fn pack<T: Element>(problem: &AttentionProblem, x: &[T], strides: &Strides) -> Result<Vec<f32>> {
    let s = problem.shape;
    let len = checked_product(
        "packed keys batch * heads_kv * seq_k * head_dim",
        &[s.batch, s.heads_kv, s.seq_k, s.head_dim],
    )?;
    let mut packed = Vec::with_capacity(len);
    for b in 0..s.batch {
        for h in 0..s.heads_kv {
            for j in 0..s.seq_k {
                let start = strides.offset(b, j, h, 0);
                packed.extend(x[start..start + s.head_dim].iter().map(|e| e.to_f32()));
            }
        }
    }
    Ok(packed)
}

/// One unit of work: `rows` consecutive query rows from `row0` of one (batch, query head).
#[derive(Debug, Clone, Copy)]
struct Task {
    batch: usize,
    head: usize,
    row0: usize,
    rows: usize,
}

/// Splits the problem into tasks in (batch, head, row) order, which is also the order of the
/// logsumexp and weights buffers.
fn plan(problem: &AttentionProblem) -> Vec<Task> {
    let s = problem.shape;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let heads = s.batch * s.heads_q;
    let blocks_per_head = (threads * TASKS_PER_THREAD).div_ceil(heads).max(1);
    let rows_per_task = s
        .seq_q
        .div_ceil(blocks_per_head)
        .clamp(1, MAX_ROWS_PER_TASK);
    let mut tasks = Vec::with_capacity(heads * s.seq_q.div_ceil(rows_per_task));
    for batch in 0..s.batch {
        for head in 0..s.heads_q {
            for row0 in (0..s.seq_q).step_by(rows_per_task) {
                tasks.push(Task {
                    batch,
                    head,
                    row0,
                    rows: rows_per_task.min(s.seq_q - row0),
                });
            }
        }
    }
    tasks
}

/// A task with its own slices of the logsumexp (`rows` values) and weights (`rows * seq_k` values).
type TaskSlices<'a> = (Task, Option<&'a mut [f32]>, Option<&'a mut [f32]>);

/// Hands each task its disjoint slices of the optional logsumexp and weights buffers.
fn tasks_with_slices<'a>(
    problem: &AttentionProblem,
    tasks: &[Task],
    mut lse: Option<&'a mut [f32]>,
    mut weights: Option<&'a mut [f32]>,
) -> Vec<TaskSlices<'a>> {
    let seq_k = problem.shape.seq_k;
    tasks
        .iter()
        .map(|&task| {
            let lse_part = lse.take().map(|rest| {
                let (part, rest) = rest.split_at_mut(task.rows);
                lse = Some(rest);
                part
            });
            let weights_part = weights.take().map(|rest| {
                let (part, rest) = rest.split_at_mut(task.rows * seq_k);
                weights = Some(rest);
                part
            });
            (task, lse_part, weights_part)
        })
        .collect()
}

/// What every task reads.
struct Context<'a, T> {
    problem: &'a AttentionProblem,
    q: &'a [T],
    /// Packed keys, f32 `[batch, heads_kv, seq_k, head_dim]`.
    k: &'a [f32],
    /// Packed values, f32 `[batch, heads_kv, seq_k, head_dim]`.
    v: &'a [f32],
}

impl<T: Element> Context<'_, T> {
    /// Runs tasks from the queue until it is empty; returns each task's output rows.
    fn run_queue<'s, I>(&self, queue: &Mutex<I>) -> Vec<(Task, Vec<T>)>
    where
        I: Iterator<Item = TaskSlices<'s>>,
    {
        let mut results = Vec::new();
        let mut scratch = Scratch::new(self.problem);
        loop {
            let next = queue
                .lock()
                .expect("a CPU attention worker panicked")
                .next();
            let Some((task, lse, weights)) = next else {
                break;
            };
            results.push((task, self.run_task(task, lse, weights, &mut scratch)));
        }
        results
    }

    /// Computes one task's rows: returns them as `[rows, head_dim]` and fills its lse and weights.
    fn run_task(
        &self,
        task: Task,
        mut lse: Option<&mut [f32]>,
        mut weights: Option<&mut [f32]>,
        scratch: &mut Scratch,
    ) -> Vec<T> {
        let problem = self.problem;
        let s = problem.shape;
        let (d, sk) = (s.head_dim, s.seq_k);
        let head_kv = task.head / problem.heads_ratio();
        let kv_start = (task.batch * s.heads_kv + head_kv) * sk * d;
        let keys = &self.k[kv_start..kv_start + sk * d];
        let values = &self.v[kv_start..kv_start + sk * d];
        let scale = problem.scale();
        let mut out = vec![T::default(); task.rows * d];

        for r in 0..task.rows {
            let i = task.row0 + r;
            let weights_row = weights.as_deref_mut().map(|w| &mut w[r * sk..(r + 1) * sk]);
            let visible = visible_keys(problem, i);
            let Scratch { q_row, scores, acc } = scratch;

            // q_i * scale, f32.
            let q_start = problem.q_strides.offset(task.batch, i, task.head, 0);
            for (qs, x) in q_row.iter_mut().zip(&self.q[q_start..q_start + d]) {
                *qs = x.to_f32() * scale;
            }
            // S = (scale q_i) K^T over the visible keys; m = max S.
            let mut max = f32::NEG_INFINITY;
            for (score, key) in scores[..visible].iter_mut().zip(keys.chunks_exact(d)) {
                *score = dot(q_row, key);
                max = max.max(*score);
            }
            if visible == 0 || max == f32::NEG_INFINITY {
                // No key seen: output 0 (already), lse -inf, weights 0.
                if let Some(l) = lse.as_deref_mut() {
                    l[r] = f32::NEG_INFINITY;
                }
                if let Some(w) = weights_row {
                    w.fill(0.0);
                }
                continue;
            }
            // P = exp(S - m), l = sum P, O = P V.
            acc.fill(0.0);
            let mut sum = 0.0f32;
            for (score, value) in scores[..visible].iter_mut().zip(values.chunks_exact(d)) {
                let p = (*score - max).exp();
                *score = p;
                sum += p;
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a += p * x;
                }
            }
            let inverse = 1.0 / sum;
            for (o, &a) in out[r * d..(r + 1) * d].iter_mut().zip(acc.iter()) {
                *o = T::from_f32(a * inverse);
            }
            if let Some(l) = lse.as_deref_mut() {
                l[r] = max + sum.ln();
            }
            if let Some(w) = weights_row {
                for (p, &e) in w[..visible].iter_mut().zip(&scores[..visible]) {
                    *p = e * inverse;
                }
                w[visible..].fill(0.0);
            }
        }
        out
    }
}

/// Per-thread buffers reused across rows.
struct Scratch {
    /// `scale * q_i`, `[head_dim]`.
    q_row: Vec<f32>,
    /// Scores, then exponentials, of one row, `[seq_k]`.
    scores: Vec<f32>,
    /// Unnormalised output row, `[head_dim]`.
    acc: Vec<f32>,
}

impl Scratch {
    fn new(problem: &AttentionProblem) -> Self {
        let s = problem.shape;
        Scratch {
            q_row: vec![0.0; s.head_dim],
            scores: vec![0.0; s.seq_k],
            acc: vec![0.0; s.head_dim],
        }
    }
}

/// Number of keys query row `i` sees: a prefix `0..n`, since the mask is causal (bottom-right) or none.
fn visible_keys(problem: &AttentionProblem, i: usize) -> usize {
    let s = problem.shape;
    let n = if problem.causal {
        (i + s.seq_k + 1).saturating_sub(s.seq_q).min(s.seq_k)
    } else {
        s.seq_k
    };
    debug_assert!(n == 0 || problem.visible(i, n - 1));
    debug_assert!(n == s.seq_k || !problem.visible(i, n));
    n
}

/// f32 dot product with `DOT_LANES` independent accumulators, so that the loop vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let split = a.len() / DOT_LANES * DOT_LANES;
    let (a_body, a_tail) = a.split_at(split);
    let (b_body, b_tail) = b[..a.len()].split_at(split);
    let mut lanes = [0.0f32; DOT_LANES];
    for (x, y) in a_body
        .chunks_exact(DOT_LANES)
        .zip(b_body.chunks_exact(DOT_LANES))
    {
        for lane in 0..DOT_LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}
