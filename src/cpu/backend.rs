//! The CPU backend: exact attention with f32 accumulation on all cores, for machines without a GPU.
//!
//! Algorithm, per query row `i`: `S = (scale * q_i) K^T` over the keys `begin_i..end_i` the row sees
//! (every mask here, causal and sliding window, keeps a contiguous range per row, and both bounds grow
//! with `i`), then, when set, the soft cap `S = softcap * tanh(S / softcap)` and the ALiBi bias
//! `S -= m_h * |c - j|` in f32, `m = max S`, `P = exp(S - m)`, `l = sum P`, `O = (P V) / l`,
//! `lse = m + ln l`.
//!
//! Work is split into tasks of (batch, key/value head, block of query rows) covering every query head
//! of the group, taken from a shared queue by `available_parallelism` scoped threads. A task first
//! converts the keys and values its rows can see (the union of their ranges, from the first row's
//! begin to the last row's end) to f32 scratch: K in panels of 8 keys (`[n / 8][head_dim][8]`), V as
//! `[n][head_dim rounded up to 8]`. Then, 4 query rows at a time, over the panels from the one holding
//! the first row's first key to the last row's last key, both products are register-tiled loops over
//! 8-wide f32 lanes with no horizontal sums, which the compiler vectorises:
//! `S[4 rows][8 keys] += q[row][x] * K[x][8 keys]` over x, and `O[4 rows][8 dims] += P[row][j] *
//! V[j][8 dims]` over j; keys outside a row's range get `P = 0`. Without a window every range starts
//! at key 0 and this is the plain prefix computation. Since `0 * NaN` and `0 * Inf` are NaN, a task whose
//! V rows hold a non-finite value computes `P V` row by row over each row's own keys instead (the same
//! products in the same order): the keys a row does not see never reach it (README, "Non-finite
//! values"). A NaN score makes `m`, hence the row, NaN; a row whose `m` is `-inf` (no visible key, or
//! every visible score `-inf`) is written as 0 with lse `-inf` (with sinks, the head's sink `s` joins the
//! denominator: `l' = l e^(m - top) + e^(s - top)`, `top = max(m, s)`, and a row that sees nothing gets
//! lse `s`). Ragged batches run sequence by sequence, each as a dense problem of batch 1 over views of
//! the caller's buffers (the metadata validated first). Each task owns its disjoint slices of the
//! logsumexp and the weights and returns its output rows, which are scattered through the out strides
//! at the end (no unsafe code). Results do not depend on the number of threads.

use std::sync::Mutex;

use crate::binding::{bind, bind_append, check_plan, HostKvAppend, HostOutput, HostTensors};
use crate::cpu::ragged::for_each_sequence;
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::host_memory::{check_budget, forward_host, vec_filled};
use crate::merge::{bind_merge, merge_host, HostMergeTensors, MergeLayout};
use crate::metadata::Metadata;
use crate::plan::{ForwardOptions, Plan};
use crate::problem::{checked_product, AttentionProblem};
use crate::sparse::BlockMask;

/// Largest number of query rows in one task.
const MAX_ROWS_PER_TASK: usize = 64;
/// Tasks per thread to aim for, so that uneven (causal) rows still balance.
const TASKS_PER_THREAD: usize = 4;
/// Below this many multiply-adds (b * hq * sq * sk * d) the work runs on the calling thread alone.
const SINGLE_THREAD_WORK: usize = 1 << 18;
/// f32 lanes of the register tiles (keys per K panel, output dims per V tile).
const LANES: usize = 8;
/// Query rows computed together.
const ROWS: usize = 4;

/// The CPU backend: the same call contract as the GPU engine and the emulator (a [`Plan`], a
/// [`HostTensors`] bundle, a [`HostOutput`]), computed by the fused loop above. Cheap to create, no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend.
    pub fn new() -> Self {
        CpuBackend
    }

    /// Validates `problem` for element type `T` ([`Plan::cpu`]).
    ///
    /// # Errors
    /// As [`Plan::cpu`].
    pub fn plan<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
    ) -> Result<Plan> {
        Plan::cpu(problem, T::DTYPE, options)
    }

    /// Plans, allocates the outputs (within the host memory budget, before any of them) and runs.
    ///
    /// # Errors
    /// Those of [`CpuBackend::plan`], short inputs, outputs too large for this machine
    /// ([`AttentionError::OutOfMemory`]), and those of [`CpuBackend::forward_into`].
    pub fn forward<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<HostOutput<T>> {
        let plan = self.plan::<T>(problem, options)?;
        forward_host(&plan, q, k, v, None, |plan, tensors| {
            self.forward_into(plan, tensors)
        })
    }

    /// [`CpuBackend::forward`] for a ragged batch and its metadata.
    ///
    /// # Errors
    /// As [`CpuBackend::forward`], and the metadata's validation errors.
    pub fn forward_ragged<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &[T],
        k: &[T],
        v: &[T],
        metadata: &Metadata<'_>,
    ) -> Result<HostOutput<T>> {
        let plan = self.plan::<T>(problem, options)?;
        forward_host(&plan, q, k, v, Some(metadata), |plan, tensors| {
            self.forward_into(plan, tensors)
        })
    }

    /// Runs `plan` into caller-owned buffers: `out` through the out strides (elements outside the strided
    /// tensor are left alone), the logsumexp and the weights when the plan asks for them (only their first
    /// `lse_elements` / `score_elements` values are written). The buffers go through the crate's one
    /// binding step ([`crate::binding::bind`]). A ragged batch's metadata is validated on the host
    /// ([`crate::validate_metadata`]: the CPU backend reads it anyway) and its sequences run one by one.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] for a plan not made by [`CpuBackend::plan`] for `T`; the
    /// binding step's errors; the metadata's; [`AttentionError::OutOfMemory`] when the per-thread scratch
    /// does not fit.
    pub fn forward_into<T: Element>(&self, plan: &Plan, tensors: HostTensors<'_, T>) -> Result<()> {
        check_plan(plan, T::DTYPE, true, "CpuBackend::plan")?;
        bind(plan, &tensors.regions_with_slopes_of(plan.problem()))?;
        if plan.problem().ragged_layout().is_some() {
            return run_ragged(plan.problem(), tensors);
        }
        let shape = plan.problem().shape;
        let lse = tensors
            .lse
            .map(|buffer| &mut buffer[..shape.lse_elements().unwrap_or(0)]);
        let weights = tensors
            .weights
            .map(|buffer| &mut buffer[..shape.score_elements().unwrap_or(0)]);
        run(
            plan.problem(),
            tensors.q,
            tensors.k,
            tensors.v,
            tensors.out,
            lse,
            weights,
        )
    }
}

impl CpuBackend {
    /// Writes `rows` new K/V rows into the paged cache of `problem` through the slot mapping, as the
    /// append kernel does (negative slots and slots past the cache are skipped); the buffers go through
    /// the same binding step ([`crate::binding::bind_append`]).
    ///
    /// # Errors
    /// The binding step's errors.
    pub fn append_kv_into<T: Element>(
        &self,
        problem: &AttentionProblem,
        rows: usize,
        tensors: HostKvAppend<'_, T>,
    ) -> Result<()> {
        bind_append(problem, rows, &tensors.regions())?;
        let Some(paging) = problem.paging() else {
            return Ok(()); // bind_append refuses problems without a paged cache
        };
        let (heads, d) = (problem.shape.heads_kv, problem.shape.head_dim);
        let slots = paging.num_pages * paging.page_size;
        for (i, &slot) in tensors.slot_mapping[..rows].iter().enumerate() {
            let Ok(slot) = usize::try_from(slot) else {
                continue;
            };
            if slot >= slots {
                continue;
            }
            let (page, row) = (slot / paging.page_size, slot % paging.page_size);
            for h in 0..heads {
                let from = (i * heads + h) * d;
                let k_to = problem.k_strides.offset(page, row, h, 0);
                let v_to = problem.v_strides.offset(page, row, h, 0);
                tensors.k_cache[k_to..k_to + d].copy_from_slice(&tensors.k_new[from..from + d]);
                tensors.v_cache[v_to..v_to + d].copy_from_slice(&tensors.v_new[from..from + d]);
            }
        }
        Ok(())
    }

    /// Merges two attention states (see [`crate::merge`]) in f32 on the host; the buffers go through the
    /// same binding step as the kernels' ([`crate::merge::bind_merge`]).
    ///
    /// # Errors
    /// The binding step's errors.
    pub fn merge_states_into<T: Element>(
        &self,
        layout: &MergeLayout,
        tensors: HostMergeTensors<'_, T>,
    ) -> Result<()> {
        bind_merge(layout, &tensors.regions())?;
        merge_host(layout, tensors);
        Ok(())
    }
}

/// Shorthand for [`CpuBackend::forward`].
///
/// # Errors
/// As [`CpuBackend::forward`].
pub fn attention<T: Element>(
    problem: &AttentionProblem,
    options: ForwardOptions,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<HostOutput<T>> {
    CpuBackend.forward(problem, options, q, k, v)
}

/// A ragged batch, sequence by sequence: each gathered into a dense problem, computed by [`run`] and
/// scattered into the caller's out (through its strides) and logsumexp `[heads_q, total_q]`.
fn run_ragged<T: Element>(problem: &AttentionProblem, tensors: HostTensors<'_, T>) -> Result<()> {
    let metadata = Metadata {
        cu_seqlens_q: tensors.cu_seqlens_q.unwrap_or_default(),
        cu_seqlens_k: tensors.cu_seqlens_k,
        seqused_k: tensors.seqused_k,
        block_table: tensors.block_table,
    };
    let (hq, d) = (problem.shape.heads_q, problem.shape.head_dim);
    let total_q = problem.ragged_layout().map_or(0, |r| r.total_q);
    let (out, mut lse) = (tensors.out, tensors.lse);
    for_each_sequence(problem, &metadata, tensors.q, tensors.k, tensors.v, |seq| {
        let rows = seq.span.seq_q;
        let mut seq_out = vec_filled("a sequence's output", rows * hq * d, T::default())?;
        let mut seq_lse = lse
            .is_some()
            .then(|| vec_filled("a sequence's logsumexp", rows * hq, f32::NAN))
            .transpose()?;
        run(
            &seq.problem,
            &seq.q,
            &seq.k,
            &seq.v,
            &mut seq_out,
            seq_lse.as_deref_mut(),
            None,
        )?;
        for i in 0..rows {
            for h in 0..hq {
                let to = problem.out_strides.offset(0, seq.span.q_begin + i, h, 0);
                out[to..to + d].copy_from_slice(&seq_out[(i * hq + h) * d..][..d]);
            }
        }
        if let (Some(lse), Some(seq_lse)) = (lse.as_deref_mut(), seq_lse) {
            for h in 0..hq {
                lse[h * total_q + seq.span.q_begin..][..rows]
                    .copy_from_slice(&seq_lse[h * rows..][..rows]);
            }
        }
        Ok(())
    })
}

/// The computation, on buffers the binding step has checked (lse and weights cut to their exact sizes).
fn run<T: Element>(
    problem: &AttentionProblem,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
) -> Result<()> {
    let shape = problem.shape;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows_per_task = rows_per_task(problem, threads);
    // Scratch per thread (K panels, V rows, scores, accumulators and output rows of one task), and the
    // output rows every task keeps until the scatter: checked against the host memory budget first.
    let dims = shape.head_dim.div_ceil(LANES) * LANES;
    let keys = shape.seq_k.div_ceil(LANES) * LANES;
    let per_thread = checked_product(
        "CPU scratch keys * head_dim",
        &[keys + LANES, 2 * dims + ROWS],
    )?
    .checked_add(checked_product(
        "CPU scratch rows",
        &[ROWS, dims + keys + 2 * shape.head_dim],
    )?)
    .and_then(|n| n.checked_mul(threads))
    .ok_or_else(|| AttentionError::SizeOverflow {
        what: "CPU backend scratch",
        detail: format!(
            "{threads} threads x seq_k {} x head_dim {}",
            shape.seq_k, shape.head_dim
        ),
    })?;
    let kept_rows = checked_product(
        "CPU backend output rows",
        &[shape.batch, shape.heads_q, shape.seq_q, shape.head_dim],
    )?;
    let scratch_bytes = per_thread
        .checked_add(kept_rows)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "CPU backend scratch",
            detail: "scratch and output rows in bytes".into(),
        })?;
    check_budget("CPU backend scratch", scratch_bytes)?;

    let tasks = tasks_with_slices(problem, rows_per_task, lse, weights);
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
        threads.min(tasks.len()).max(1)
    };
    let queue = Mutex::new(tasks.into_iter());
    let context = Context { problem, q, k, v };

    let results: Vec<(Task, Vec<T>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| scope.spawn(|| context.run_queue(&queue)))
            .collect();
        let mut results = context.run_queue(&queue);
        for helper in helpers {
            results.extend(helper.join().expect("a CPU attention worker panicked"));
        }
        results
    });

    // Scatter the output rows ([heads of the group][rows][head_dim]) through the out strides.
    let d = shape.head_dim;
    let ratio = problem.heads_ratio();
    for (task, values) in results {
        for (n, row) in values.chunks_exact(d).enumerate() {
            let head = task.head_kv * ratio + n / task.rows;
            let i = task.row0 + n % task.rows;
            let start = problem.out_strides.offset(task.batch, i, head, 0);
            out[start..start + d].copy_from_slice(row);
        }
    }
    Ok(())
}

/// One unit of work: query rows `row0..row0 + rows` of every query head served by key/value head
/// `head_kv` in batch `batch`.
#[derive(Debug, Clone, Copy)]
struct Task {
    batch: usize,
    head_kv: usize,
    row0: usize,
    rows: usize,
}

/// A task with its own slices of the optional logsumexp (`rows` values per query head of the group)
/// and weights (`rows * seq_k` values per query head); empty when not asked for.
struct TaskSlices<'a> {
    task: Task,
    lse: Vec<&'a mut [f32]>,
    weights: Vec<&'a mut [f32]>,
}

/// Rows per task: enough tasks for every thread to get several, at most [`MAX_ROWS_PER_TASK`].
fn rows_per_task(problem: &AttentionProblem, threads: usize) -> usize {
    let s = problem.shape;
    let groups = s.batch * s.heads_kv;
    let blocks_per_group = (threads * TASKS_PER_THREAD).div_ceil(groups).max(1);
    s.seq_q
        .div_ceil(blocks_per_group)
        .clamp(1, MAX_ROWS_PER_TASK)
}

/// Splits the problem into tasks and hands each its disjoint slices of the logsumexp and weights.
///
/// Both buffers are `[batch, heads_q, seq_q, ...]`, and the query heads of one group are consecutive,
/// so each (batch, key/value head) owns a contiguous region, head-major; the row blocks of a task are
/// one chunk from each head's part of that region.
fn tasks_with_slices<'a>(
    problem: &AttentionProblem,
    rows_per_task: usize,
    mut lse: Option<&'a mut [f32]>,
    mut weights: Option<&'a mut [f32]>,
) -> Vec<TaskSlices<'a>> {
    let s = problem.shape;
    let ratio = problem.heads_ratio();
    let blocks = s.seq_q.div_ceil(rows_per_task);
    if s.seq_k == 0 {
        // Weights are empty: nothing to hand out.
        weights = None;
    }
    let mut tasks = Vec::with_capacity(s.batch * s.heads_kv * blocks);
    for batch in 0..s.batch {
        for head_kv in 0..s.heads_kv {
            let mut group: Vec<TaskSlices<'a>> = (0..blocks)
                .map(|block| {
                    let row0 = block * rows_per_task;
                    TaskSlices {
                        task: Task {
                            batch,
                            head_kv,
                            row0,
                            rows: rows_per_task.min(s.seq_q - row0),
                        },
                        lse: Vec::new(),
                        weights: Vec::new(),
                    }
                })
                .collect();
            if let Some(rest) = lse.take() {
                let (region, rest) = rest.split_at_mut(ratio * s.seq_q);
                lse = Some(rest);
                for head_part in region.chunks_mut(s.seq_q) {
                    for (slices, part) in group.iter_mut().zip(head_part.chunks_mut(rows_per_task))
                    {
                        slices.lse.push(part);
                    }
                }
            }
            if let Some(rest) = weights.take() {
                let (region, rest) = rest.split_at_mut(ratio * s.seq_q * s.seq_k);
                weights = Some(rest);
                for head_part in region.chunks_mut(s.seq_q * s.seq_k) {
                    let chunks = head_part.chunks_mut(rows_per_task * s.seq_k);
                    for (slices, part) in group.iter_mut().zip(chunks) {
                        slices.weights.push(part);
                    }
                }
            }
            tasks.extend(group);
        }
    }
    tasks
}

/// What every task reads.
struct Context<'a, T> {
    problem: &'a AttentionProblem,
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
}

/// Per-thread buffers reused across tasks.
struct Scratch {
    /// Visible keys as f32 panels `[n / LANES][head_dim][LANES]`, zero past the last key.
    k_panels: Vec<f32>,
    /// Visible values as f32 `[n][padded head_dim]`, zero in the padding.
    v_rows: Vec<f32>,
    /// `scale * q` of [`ROWS`] rows, `[ROWS][head_dim]`, zero for absent rows.
    q_rows: Vec<f32>,
    /// Scores, then exponentials, of [`ROWS`] rows, `[ROWS][n rounded up to LANES]`.
    scores: Vec<f32>,
    /// Unnormalised outputs of [`ROWS`] rows, `[ROWS][padded head_dim]`.
    acc: Vec<f32>,
}

impl Scratch {
    fn new(problem: &AttentionProblem) -> Self {
        let s = problem.shape;
        let keys = s.seq_k.next_multiple_of(LANES);
        let dims = s.head_dim.next_multiple_of(LANES);
        Scratch {
            k_panels: vec![0.0; keys * s.head_dim],
            v_rows: vec![0.0; keys * dims],
            q_rows: vec![0.0; ROWS * s.head_dim],
            scores: vec![0.0; ROWS * keys.max(1)],
            acc: vec![0.0; ROWS * dims],
        }
    }
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
            let Some(slices) = next else { break };
            let task = slices.task;
            results.push((task, self.run_task(slices, &mut scratch)));
        }
        results
    }

    /// Computes one task: returns its output rows `[heads of the group][rows][head_dim]` and fills its
    /// logsumexp and weights slices.
    fn run_task(&self, mut slices: TaskSlices<'_>, scratch: &mut Scratch) -> Vec<T> {
        let problem = self.problem;
        let s = problem.shape;
        let (d, sk) = (s.head_dim, s.seq_k);
        let dims = d.next_multiple_of(LANES);
        let task = slices.task;
        let ratio = problem.heads_ratio();
        let scale = problem.scale();

        // Convert the keys and values any row of the block sees, `first_key..last_key` (both bounds of a
        // row's range grow with the row, so that is the union of the rows' ranges): K to panels, V to
        // padded rows. Slot `n` holds key `first_key + n`.
        let (first_key, _) = problem.key_range(task.row0);
        let (_, last_key) = problem.key_range(task.row0 + task.rows - 1);
        let keys = last_key.saturating_sub(first_key);
        let key_slots = keys.next_multiple_of(LANES);
        let k_panels = &mut scratch.k_panels[..key_slots * d];
        let v_rows = &mut scratch.v_rows[..key_slots * dims];
        for slot in 0..key_slots {
            let (panel, lane) = (slot / LANES, slot % LANES);
            let v_row = &mut v_rows[slot * dims..(slot + 1) * dims];
            if slot < keys {
                let j = first_key + slot;
                let k_start = problem.k_strides.offset(task.batch, j, task.head_kv, 0);
                for (x, value) in self.k[k_start..k_start + d].iter().enumerate() {
                    k_panels[(panel * d + x) * LANES + lane] = value.to_f32();
                }
                let v_start = problem.v_strides.offset(task.batch, j, task.head_kv, 0);
                for (slot, value) in v_row.iter_mut().zip(&self.v[v_start..v_start + d]) {
                    *slot = value.to_f32();
                }
                v_row[d..].fill(0.0);
            } else {
                for x in 0..d {
                    k_panels[(panel * d + x) * LANES + lane] = 0.0;
                }
                v_row.fill(0.0);
            }
        }
        // P is 0 at the keys a row does not see, but 0 * NaN and 0 * Inf are NaN: with a non-finite
        // value among these V rows, each row multiplies only its own keys (output_rows).
        let v_finite = v_rows.iter().all(|x| x.is_finite());

        let adjust = Adjust::new(problem);
        let mut out = vec![T::default(); ratio * task.rows * d];
        for group_head in 0..ratio {
            let head = task.head_kv * ratio + group_head;
            for first in (0..task.rows).step_by(ROWS) {
                let rows = ROWS.min(task.rows - first);
                // Key ranges of these ROWS rows; absent rows see nothing.
                let mut ranges = [(0usize, 0usize); ROWS];
                for (r, range) in ranges.iter_mut().enumerate().take(rows) {
                    let (begin, end) = problem.key_range(task.row0 + first + r);
                    *range = (begin, end.max(begin));
                }
                // The group's scores cover the slots `group_start..group_end`: from the panel holding
                // the first row's first key to the last row's last key.
                let group_start = ranges[0].0.saturating_sub(first_key) / LANES * LANES;
                let group_keys = ranges[rows - 1]
                    .1
                    .saturating_sub(first_key)
                    .max(group_start);
                let group_end = group_keys.next_multiple_of(LANES);
                let score_len = (group_end - group_start).max(1);
                // Key of score column 0.
                let key0 = first_key + group_start;

                // q rows * scale, zero for absent rows.
                for (r, q_row) in scratch.q_rows.chunks_exact_mut(d).enumerate() {
                    if r < rows {
                        let start =
                            problem
                                .q_strides
                                .offset(task.batch, task.row0 + first + r, head, 0);
                        for (slot, value) in q_row.iter_mut().zip(&self.q[start..start + d]) {
                            *slot = value.to_f32() * scale;
                        }
                    } else {
                        q_row.fill(0.0);
                    }
                }

                // S = (scale q) K^T for the group's keys.
                let scores = &mut scratch.scores[..ROWS * score_len];
                score_tile(
                    &scratch.q_rows,
                    &scratch.k_panels[group_start * d..group_end * d],
                    d,
                    scores,
                    score_len,
                );

                // Row softmax: P = exp(S - m) over each row's visible keys, 0 elsewhere.
                let mut row_sum = [0.0f32; ROWS];
                let mut row_max = [f32::NEG_INFINITY; ROWS];
                let mut seen = [false; ROWS];
                // Each row's visible keys as score columns.
                let mut columns = [(0usize, 0usize); ROWS];
                for (r, row) in scores.chunks_exact_mut(score_len).enumerate() {
                    let (begin, end) = ranges[r];
                    // Absent rows and rows that see no key have begin == end.
                    let (lo, hi) = if begin < end {
                        (begin - key0, end - key0)
                    } else {
                        (0, 0)
                    };
                    if let Some(adjust) = &adjust {
                        adjust.apply(head, task.row0 + first + r, begin, &mut row[lo..hi]);
                    }
                    if let Some(mask) = &problem.block_mask {
                        drop_unlisted_blocks(mask, task.row0 + first + r, begin, &mut row[lo..hi]);
                    }
                    let Some((max, sum)) = exponentiate(&mut row[lo..hi]) else {
                        // No key seen (or every score -inf): guard -inf - -inf; weights all 0.
                        row.fill(0.0);
                        continue;
                    };
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    row_sum[r] = sum;
                    row_max[r] = max;
                    seen[r] = true;
                    columns[r] = (lo, hi);
                }

                // O = P V.
                let v_group = &scratch.v_rows[group_start * dims..group_keys * dims];
                if v_finite {
                    output_tile(scores, score_len, v_group, dims, &mut scratch.acc);
                } else {
                    output_rows(scores, score_len, v_group, dims, &columns, &mut scratch.acc);
                }

                for r in 0..rows {
                    let i = first + r;
                    let out_row = &mut out[(group_head * task.rows + i) * d..][..d];
                    let weights_row = slices
                        .weights
                        .get_mut(group_head)
                        .map(|weights| &mut weights[i * sk..(i + 1) * sk]);
                    let sink = problem.sinks.as_ref().map(|sinks| sinks[head]);
                    if !seen[r] {
                        // A row that sees no key: output 0, lse -inf (the sink, with one), weights 0.
                        out_row.fill(T::from_f32(0.0));
                        if let Some(lse) = slices.lse.get_mut(group_head) {
                            lse[i] = sink.unwrap_or(f32::NEG_INFINITY);
                        }
                        if let Some(weights_row) = weights_row {
                            weights_row.fill(0.0);
                        }
                        continue;
                    }
                    // O = acc / l; lse = m + ln l; weights = P / l. NaN inputs stay NaN. A sink s joins
                    // the denominator: with top = max(m, s), l' = l e^(m - top) + e^(s - top), the
                    // factor is e^(m - top) / l' and lse = top + ln l'.
                    let (inverse, row_lse) = match sink {
                        None => (1.0 / row_sum[r], row_max[r] + row_sum[r].ln()),
                        Some(sink) => {
                            let top = max_keeping_nan(row_max[r], sink);
                            let kept = (row_max[r] - top).exp();
                            let total = row_sum[r] * kept + (sink - top).exp();
                            (kept / total, top + total.ln())
                        }
                    };
                    for (o, &a) in out_row.iter_mut().zip(&scratch.acc[r * dims..]) {
                        *o = T::from_f32(a * inverse);
                    }
                    if let Some(lse) = slices.lse.get_mut(group_head) {
                        lse[i] = row_lse;
                    }
                    if let Some(weights_row) = weights_row {
                        let (begin, end) = ranges[r];
                        let p_row = &scores[r * score_len + (begin - key0)..][..end - begin];
                        weights_row[..begin].fill(0.0);
                        for (w, &p) in weights_row[begin..end].iter_mut().zip(p_row) {
                            *w = p * inverse;
                        }
                        weights_row[end..].fill(0.0);
                    }
                }
            }
        }
        out
    }
}

/// `scores[r][j] = sum_x q_rows[r][x] * K[j][x]` for [`ROWS`] rows and every key of `k_panels`
/// (`[keys / LANES][head_dim][LANES]`); `scores` rows are `stride` long.
fn score_tile(q_rows: &[f32], k_panels: &[f32], d: usize, scores: &mut [f32], stride: usize) {
    let (q0, rest) = q_rows.split_at(d);
    let (q1, rest) = rest.split_at(d);
    let (q2, q3) = rest.split_at(d);
    for (panel_index, panel) in k_panels.chunks_exact(d * LANES).enumerate() {
        let mut tile = [[0.0f32; LANES]; ROWS];
        for ((((keys, &a0), &a1), &a2), &a3) in
            panel.chunks_exact(LANES).zip(q0).zip(q1).zip(q2).zip(q3)
        {
            let keys: &[f32; LANES] = keys.try_into().expect("panel rows are LANES wide");
            for lane in 0..LANES {
                tile[0][lane] += a0 * keys[lane];
                tile[1][lane] += a1 * keys[lane];
                tile[2][lane] += a2 * keys[lane];
                tile[3][lane] += a3 * keys[lane];
            }
        }
        for (r, values) in tile.iter().enumerate() {
            scores[r * stride + panel_index * LANES..][..LANES].copy_from_slice(values);
        }
    }
}

/// `acc[r][x] = sum_j p[r][j] * V[j][x]` for [`ROWS`] rows (`p` rows `stride` long, zero where
/// masked) over the rows of `v_rows` (`[keys][dims]`, dims a multiple of [`LANES`]).
fn output_tile(p: &[f32], stride: usize, v_rows: &[f32], dims: usize, acc: &mut [f32]) {
    let (p0, rest) = p.split_at(stride);
    let (p1, rest) = rest.split_at(stride);
    let (p2, p3) = rest.split_at(stride);
    for x0 in (0..dims).step_by(LANES) {
        let mut tile = [[0.0f32; LANES]; ROWS];
        for ((((v_row, &w0), &w1), &w2), &w3) in
            v_rows.chunks_exact(dims).zip(p0).zip(p1).zip(p2).zip(p3)
        {
            let values: &[f32; LANES] = v_row[x0..x0 + LANES]
                .try_into()
                .expect("value tiles are LANES wide");
            for lane in 0..LANES {
                tile[0][lane] += w0 * values[lane];
                tile[1][lane] += w1 * values[lane];
                tile[2][lane] += w2 * values[lane];
                tile[3][lane] += w3 * values[lane];
            }
        }
        for (r, values) in tile.iter().enumerate() {
            acc[r * dims + x0..][..LANES].copy_from_slice(values);
        }
    }
}

/// As [`output_tile`], but row `r` sums only over its own keys `columns[r]` (the same products, in
/// the same order, without the zero terms of the keys it does not see), so that a non-finite V at a
/// key a row does not see stays out of that row. Rows with an empty range are left alone.
fn output_rows(
    p: &[f32],
    stride: usize,
    v_rows: &[f32],
    dims: usize,
    columns: &[(usize, usize); ROWS],
    acc: &mut [f32],
) {
    for (r, &(lo, hi)) in columns.iter().enumerate() {
        if lo >= hi {
            continue;
        }
        let acc_row = &mut acc[r * dims..(r + 1) * dims];
        acc_row.fill(0.0);
        let p_row = &p[r * stride..(r + 1) * stride];
        for (&w, v_row) in p_row[lo..hi]
            .iter()
            .zip(v_rows[lo * dims..].chunks_exact(dims))
        {
            for (a, &value) in acc_row.iter_mut().zip(v_row) {
                *a += w * value;
            }
        }
    }
}

/// Replaces scores by `exp(s - m)` with `m` their maximum and returns `(m, sum)`; `None` (values left
/// alone) when the maximum is `-inf`: no scores, or all masked. A NaN score makes `m` NaN.
fn exponentiate(scores: &mut [f32]) -> Option<(f32, f32)> {
    let max = scores
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, max_keeping_nan);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let mut sum = 0.0f32;
    for p in scores.iter_mut() {
        // A dropped score (-inf: an unlisted block, a masked key) weighs 0 without a call to exp, whose
        // special-value path is slow; a NaN max still makes the sum, hence the row, NaN.
        *p = if *p == f32::NEG_INFINITY {
            0.0
        } else {
            (*p - max).exp()
        };
        sum += *p;
    }
    Some((max, sum))
}

/// The larger of two scores, NaN if either is (`f32::max` would drop a NaN and hide bad inputs).
fn max_keeping_nan(max: f32, x: f32) -> f32 {
    if x.is_nan() || x > max {
        x
    } else {
        max
    }
}

/// Soft cap and ALiBi applied in f32 to the scaled scores of one row, when the problem sets either.
struct Adjust<'a> {
    /// The soft cap, if set.
    softcap: Option<f32>,
    /// ALiBi slopes `[heads_q]`, if set.
    slopes: Option<&'a [f32]>,
    /// `seq_k - seq_q`: the diagonal of row `i` is `i + offset`.
    diagonal_offset: i64,
}

impl<'a> Adjust<'a> {
    /// `None` when the problem leaves the scores alone (the default path pays nothing).
    fn new(problem: &'a AttentionProblem) -> Option<Self> {
        problem.adjusts_scores().then(|| Adjust {
            softcap: problem.softcap,
            slopes: problem.alibi_slopes.as_deref(),
            diagonal_offset: problem.shape.seq_k as i64 - problem.shape.seq_q as i64,
        })
    }

    /// `scores` are the scaled scores of query row `i` of query head `head` against keys `first_key..`:
    /// each becomes `softcap * tanh(s / softcap)`, then gets `-m_head * |c - j|` added, in f32.
    fn apply(&self, head: usize, i: usize, first_key: usize, scores: &mut [f32]) {
        if let Some(cap) = self.softcap {
            for s in scores.iter_mut() {
                *s = cap * (*s / cap).tanh();
            }
        }
        if let Some(slopes) = self.slopes {
            let slope = slopes[head];
            let diagonal = i as i64 + self.diagonal_offset;
            for (j, s) in (first_key..).zip(scores.iter_mut()) {
                *s -= slope * (diagonal - j as i64).unsigned_abs() as f32;
            }
        }
    }
}

/// Sets to -inf the scores of `row` (keys `begin..begin + row.len()` of query `i`) whose key block the
/// block mask does not list for the query's block: one pass over the row's sorted block list.
fn drop_unlisted_blocks(mask: &BlockMask, i: usize, begin: usize, row: &mut [f32]) {
    let block_k = mask.block_k();
    let listed = mask.row(i / mask.block_q());
    let mut next = 0;
    let mut start = 0;
    while start < row.len() {
        let block = (begin + start) / block_k;
        let end = ((block + 1) * block_k - begin).min(row.len());
        while next < listed.len() && (listed[next] as usize) < block {
            next += 1;
        }
        if listed.get(next).is_none_or(|&c| c as usize != block) {
            row[start..end].fill(f32::NEG_INFINITY);
        }
        start = end;
    }
}
