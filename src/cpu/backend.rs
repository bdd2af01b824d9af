//! The CPU backend: exact attention with f32 accumulation on all cores, for machines without a GPU.
//!
//! Algorithm: FlashAttention's forward on the CPU (src/cpu/tile.rs): tiles of query rows x keys sized
//! for the L1/L2 caches, `S = Q K^T` and `O += P V` through the `gemm` crate's micro-kernels, the online
//! softmax between them (vectorised, dispatched at run time to AVX-512, AVX2 or the baseline), f16/bf16
//! widened to f32 per tile, f32 accumulation. Every mask here (causal, sliding window) keeps a contiguous
//! range of keys per row whose bounds grow with the row; under a block mask a task's rows lie in one query
//! block and only the key blocks it lists are computed. Memory per thread is a few tiles, whatever the sequence length.
//!
//! Work is split into tasks of (batch, key/value head, block of query rows) covering every query head
//! of the group (stacked into one product per tile, sharing each widened K/V tile), taken from a shared queue by
//! `available_parallelism` scoped threads. Ragged batches run sequence by sequence, each as a dense
//! problem of batch 1 over views of the caller's buffers (the metadata validated first). Each task owns
//! its disjoint slices of the logsumexp and the weights and returns its output rows, which are scattered
//! through the out strides at the end. Results do not depend on the number of threads.

use std::sync::Mutex;

use crate::binding::{bind, bind_append, check_plan, HostKvAppend, HostOutput, HostTensors};
use crate::cpu::ragged::for_each_sequence;
use crate::cpu::tile::{self, Context, Scratch, Task, TaskSlices};
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::host_memory::{check_budget, forward_host, vec_filled};
use crate::merge::{bind_merge, merge_host, HostMergeTensors, MergeLayout};
use crate::metadata::Metadata;
use crate::plan::{ForwardOptions, Plan};
use crate::problem::{checked_product, AttentionProblem};

/// Tasks per thread to aim for, so that uneven (causal) rows still balance.
const TASKS_PER_THREAD: usize = 4;
/// Below this many multiply-adds (b * hq * sq * sk * d) the work runs on the calling thread alone.
const SINGLE_THREAD_WORK: usize = 1 << 18;

/// The CPU backend: the same call contract as the GPU engine and the emulator (a [`Plan`], a
/// [`HostTensors`] bundle, a [`HostOutput`]), computed by the tiled loop above. Cheap to create, no state.
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
    // Scratch per thread (tiles, tile_sizes in tile.rs) and the output rows every task keeps until the
    // scatter: checked against the host memory budget first.
    let per_thread = Scratch::values(problem)
        .and_then(|n| n.checked_mul(threads))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "CPU backend scratch",
            detail: format!(
                "{threads} threads x heads per group {} x head_dim {}",
                problem.heads_ratio(),
                shape.head_dim
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
            .map(|_| scope.spawn(|| run_queue(&context, &queue)))
            .collect();
        let mut results = run_queue(&context, &queue);
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

/// Rows per task: enough tasks for every thread to get several, within [`tile::rows_per_task`]'s limits.
fn rows_per_task(problem: &AttentionProblem, threads: usize) -> usize {
    let s = problem.shape;
    let groups = s.batch * s.heads_kv;
    let blocks_per_group = (threads * TASKS_PER_THREAD).div_ceil(groups).max(1);
    tile::rows_per_task(problem, s.seq_q.div_ceil(blocks_per_group))
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

/// Runs tasks from the queue until it is empty; returns each task's output rows.
fn run_queue<'s, T: Element, I>(context: &Context<'_, T>, queue: &Mutex<I>) -> Vec<(Task, Vec<T>)>
where
    I: Iterator<Item = TaskSlices<'s>>,
{
    let mut results = Vec::new();
    let mut scratch = Scratch::new(context.problem);
    loop {
        let next = queue
            .lock()
            .expect("a CPU attention worker panicked")
            .next();
        let Some(slices) = next else { break };
        let task = slices.task;
        results.push((task, context.run_task(slices, &mut scratch)));
    }
    results
}
