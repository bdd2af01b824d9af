//! Measuring one kernel on one shape: check first (a wrong kernel is never timed), then warm-up, then
//! timed runs rotating between input sets; CUDA events on the GPU, the wall clock on the host. The
//! checking launch is timed on the wall clock for the time budget, which may cut the runs after it.
//!
//! Every shape of one dtype is a slice of the same storage: batch * seq * hidden is (at most) the same
//! for every shape, so the input sets are generated and uploaded once per dtype. A ragged batch
//! (`--varlen`) slices its packed q, k, v (or its paged cache) from the same storage and passes its i32
//! metadata with every call (uploaded once per record on the GPU, outside the timed runs).

use std::sync::Arc;
use std::time::Instant;

use cuda_attention::cli::bench::budget::{Budget, Runs};
use cuda_attention::cli::bench::results::{Check, Memory, Record, Status, Timing};
use cuda_attention::cli::bench::slice_check::{
    check_ragged_rows, check_rows, sample_ragged_rows, sample_rows,
};
use cuda_attention::cli::bench::sweep::{Case, Sweep};
use cuda_attention::cli::bench::table::human_bytes;
use cuda_attention::cli::bench::varlen::RaggedLayout;
use cuda_attention::cli::inputs::{Aligned, Inputs};
use cuda_attention::cli::runner::Runner;
use cuda_attention::cli::{buffer_bytes, CliError, CliResult};
use cuda_attention::emulator::Schedule;
use cuda_attention::host_memory::{vec_filled, HostWorkspace};
use cuda_attention::{
    AttentionError, AttentionProblem, DeviceTensors, Element, Engine, ForwardOptions, HostTensors,
    Plan, Tensor,
};
use cudarc::driver::sys::{cudaError_enum, CUdevice_attribute, CUevent_flags};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError};

/// Free device memory kept in reserve when deciding whether a naive score workspace fits.
const MEMORY_MARGIN: usize = 256 << 20;
/// Host kernels always make at least this many timed runs, whatever the time budget.
pub(super) const MIN_HOST_RUNS: usize = 3;

/// What `memory.peak_bytes` means, for the results' settings.
pub const MEMORY_METHOD: &str = "exact accounting: bytes of the buffers one call reads and writes \
     (q, k, v, out, the naive kernels' f32 score workspace, flash's split-KV partial states, and a ragged \
     batch's i32 metadata; a paged cache counted whole, page tails included); device memory for GPU kernels, host memory for cpu and \
     emulator kernels (the CPU backend's per-thread scratch is not counted)";

/// What a record's `check` compares, for the results' settings.
pub fn check_method(rows: usize) -> String {
    format!(
        "before timing, {rows} sampled query rows of the kernel's output on the timed shape (input set \
         0, output poisoned with NaN first; a ragged batch's rows through its metadata, each over its own \
         sequence's keys) against the f64 reference for those rows, by FlashAttention's rule (2 x the \
         error of the naive formula in the input precision, plus an f32 floor), applied to the sampled \
         rows"
    )
}

/// Converts a driver error into the crate's error with a context.
pub(super) fn driver(context: &'static str) -> impl Fn(DriverError) -> AttentionError {
    move |source| AttentionError::Driver { context, source }
}

/// The record of a run that failed with `error`: out of memory, unsupported, or another error.
pub(super) fn failed(case: &Case, kernel: &str, error: AttentionError) -> Record {
    match error {
        AttentionError::KernelUnsupported { reason, .. } => {
            case.record(kernel, Status::Skipped, Some(reason))
        }
        AttentionError::OutOfMemory { .. }
        | AttentionError::Driver {
            source: DriverError(cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY),
            ..
        } => case.record(kernel, Status::OutOfMemory, Some(error.to_string())),
        other => case.record(kernel, Status::Error, Some(other.to_string())),
    }
}

/// Keeps the checking launch's `seconds` in the budget and returns the runs that fit after it, noting in
/// the record what the budget cut.
pub(super) fn budget_runs(
    budget: &mut Budget,
    sweep: &Sweep,
    record: &mut Record,
    case: &Case,
    kernel: Runner,
    seconds: f64,
) -> Runs {
    budget.observe(kernel, case, seconds);
    let left = budget.left_for_runs(seconds);
    let runs = Runs::fitting(sweep.warmup, sweep.iters.max(1), seconds, left);
    record.reason = runs.note(sweep.warmup, sweep.iters.max(1));
    runs
}

/// Stores the slice check in the record; false, with the record marked as a failed check, when the kernel
/// got the checked rows wrong (such a kernel is never timed).
pub(super) fn keep_check(record: &mut Record, check: Check) -> bool {
    let passed = check.passed;
    record.check = Some(check);
    if !passed {
        record.status = Status::FailedCheck;
        record.reason = Some("wrong output on the checked rows: not timed".into());
    }
    passed
}

/// Checks sampled rows of `out`, the output of `case` (its `problem`, and `layout` when ragged) on input
/// set `inputs`, against the f64 reference.
fn check_case<T: Element>(
    case: &Case,
    problem: &AttentionProblem,
    layout: Option<&RaggedLayout>,
    [q, k, v, out]: [&[T]; 4],
    rows: usize,
) -> Result<Check, AttentionError> {
    match (&case.ragged, layout) {
        (Some(ragged), Some(layout)) => {
            let sampled = sample_ragged_rows(&ragged.lengths, case.heads, rows, case.seq as u64);
            check_ragged_rows(problem, layout, &ragged.lengths, [q, k, v, out], &sampled)
        }
        _ => {
            let sampled = sample_rows(&problem.shape, rows, case.seq as u64);
            check_rows(problem, q, k, v, out, &sampled)
        }
    }
}

/// Bytes of q, k, v and out of `problem` in element type `T`.
pub(super) fn tensor_bytes<T>(problem: &AttentionProblem) -> Result<usize, AttentionError> {
    let mut elements = 0;
    for tensor in Tensor::ALL {
        elements += problem.required_len(tensor)?;
    }
    Ok(elements * size_of::<T>())
}

/// Input sets for every case of one dtype, on the host.
pub struct HostSets<T> {
    pub sets: Vec<Inputs<T>>,
    /// Elements of the largest output.
    pub out_len: usize,
}

impl<T: Element> HostSets<T> {
    /// `sweep.input_sets` sets large enough for every case in `cases`: the first uniform in [-1, 1),
    /// the others rotations of it (other values at other addresses).
    pub fn new(sweep: &Sweep, cases: &[Case]) -> Result<Self, AttentionError> {
        let (input_len, out_len) = Sweep::buffer_lens(cases)?;
        let first = Inputs::<T>::random_len(input_len, 2024)?;
        let mut sets = Vec::with_capacity(sweep.input_sets);
        for set in 1..sweep.input_sets {
            sets.push(first.rotated(set * 7919)?);
        }
        sets.insert(0, first);
        Ok(HostSets { sets, out_len })
    }
}

/// Times the host kernels (cpu, emulator) of one dtype.
pub struct HostRunner<'a, T> {
    sweep: &'a Sweep,
    host: &'a HostSets<T>,
    out: Aligned<T>,
}

impl<'a, T: Element> HostRunner<'a, T> {
    pub fn new(sweep: &'a Sweep, host: &'a HostSets<T>) -> Result<Self, AttentionError> {
        Ok(HostRunner {
            sweep,
            host,
            out: Aligned::filled("attention output", host.out_len, T::default())?,
        })
    }

    /// Checks, then times `kernel` on `case` as far as `budget` allows.
    pub fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        match self.try_measure(case, kernel, budget) {
            Ok(record) => record,
            Err(error) => failed(case, kernel.name(), error),
        }
    }

    fn try_measure(
        &mut self,
        case: &Case,
        kernel: Runner,
        budget: &mut Budget,
    ) -> Result<Record, AttentionError> {
        let problem = case.problem();
        let backend = kernel.open(0, Schedule::default())?;
        let plan = backend.plan::<T>(
            &problem,
            ForwardOptions::default().with_kernel(kernel.kernel()),
        )?;
        let workspace = plan.workspace_bytes();
        let mut scratch = HostWorkspace::new(workspace)?;
        let lens = Lens::of(&problem)?;
        let layout = case.ragged.as_ref().map(|r| r.layout()).transpose()?;
        let out = &mut self.out[..lens.out];
        let mut run = |set: &Inputs<T>, out: &mut [T]| -> Result<(), AttentionError> {
            let (q, k, v) = (&set.q[..lens.q], &set.k[..lens.k], &set.v[..lens.v]);
            let mut tensors = HostTensors::new(q, k, v, out);
            if workspace > 0 {
                tensors.workspace = Some(scratch.as_bytes_mut());
            }
            if let Some(layout) = &layout {
                tensors = tensors.with_metadata(
                    &layout.cu_seqlens_q,
                    layout.cu_seqlens_k.as_deref(),
                    layout.seqused_k.as_deref(),
                    layout.block_table.as_deref(),
                );
            }
            backend.forward_into_host(&plan, tensors)
        };
        let mut record = case.record(kernel.name(), Status::Ok, None);
        let metadata_bytes = layout.as_ref().map_or(0, RaggedLayout::bytes);
        record.memory = Some(Memory {
            peak_bytes: (tensor_bytes::<T>(&problem)? + workspace + metadata_bytes) as u64,
            space: "host".into(),
        });

        // Check on input set 0, into a NaN-poisoned output.
        out.fill(T::from_f32(f32::NAN));
        let first = &self.host.sets[0];
        let launched = Instant::now();
        run(first, out)?;
        let seconds = launched.elapsed().as_secs_f64();
        let check = check_case(
            case,
            &problem,
            layout.as_ref(),
            [
                &first.q[..lens.q],
                &first.k[..lens.k],
                &first.v[..lens.v],
                out,
            ],
            self.sweep.check_rows,
        )?;
        let runs = budget_runs(budget, self.sweep, &mut record, case, kernel, seconds);
        if !keep_check(&mut record, check) {
            return Ok(record);
        }

        let sets = &self.host.sets;
        for w in 0..runs.warmup {
            run(&sets[(w + 1) % sets.len()], out)?;
        }
        let mut times = Vec::with_capacity(runs.timed);
        let started = Instant::now();
        for i in 0..runs.timed {
            let set = &sets[i % sets.len()];
            let start = Instant::now();
            run(set, out)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            if times.len() >= MIN_HOST_RUNS
                && started.elapsed().as_secs_f64() > self.sweep.host_seconds
            {
                break;
            }
        }
        record.timing = Some(Timing::from_times(times, record.flops));
        Ok(record)
    }
}

/// Element counts of the four tensors of one problem.
#[derive(Clone, Copy)]
pub(super) struct Lens {
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub out: usize,
}

impl Lens {
    pub(super) fn of(problem: &AttentionProblem) -> Result<Lens, AttentionError> {
        Ok(Lens {
            q: problem.required_len(Tensor::Q)?,
            k: problem.required_len(Tensor::K)?,
            v: problem.required_len(Tensor::V)?,
            out: problem.required_len(Tensor::Out)?,
        })
    }
}

/// One input set in device memory.
struct DeviceSet<T> {
    q: CudaSlice<T>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
}

/// An optional device buffer as the tensor bundle takes it.
fn device_i32(buffer: &Option<CudaSlice<i32>>) -> Option<&dyn DevicePtr<i32>> {
    buffer.as_ref().map(|b| b as &dyn DevicePtr<i32>)
}

/// A ragged batch's metadata in device memory.
struct DeviceLayout {
    cu_seqlens_q: CudaSlice<i32>,
    cu_seqlens_k: Option<CudaSlice<i32>>,
    seqused_k: Option<CudaSlice<i32>>,
    block_table: Option<CudaSlice<i32>>,
}

impl DeviceLayout {
    fn upload(stream: &Arc<CudaStream>, layout: &RaggedLayout) -> Result<Self, AttentionError> {
        let upload = |buffer: &Option<Vec<i32>>| {
            buffer
                .as_deref()
                .map(|b| stream.clone_htod(b))
                .transpose()
                .map_err(driver("uploading the ragged metadata"))
        };
        Ok(DeviceLayout {
            cu_seqlens_q: stream
                .clone_htod(&layout.cu_seqlens_q)
                .map_err(driver("uploading the ragged metadata"))?,
            cu_seqlens_k: upload(&layout.cu_seqlens_k)?,
            seqused_k: upload(&layout.seqused_k)?,
            block_table: upload(&layout.block_table)?,
        })
    }
}

/// What a launch reads besides q, k and v: a ragged batch's metadata, a block-sparse mask's lists (row
/// offsets, key blocks), each in device memory when the case has one.
#[derive(Default)]
struct DeviceMetadata {
    layout: Option<DeviceLayout>,
    block_mask: Option<(CudaSlice<i32>, CudaSlice<i32>)>,
}

impl DeviceMetadata {
    /// Uploads `layout` and the block mask of `problem`, when there are.
    fn upload(
        stream: &Arc<CudaStream>,
        layout: Option<&RaggedLayout>,
        problem: &AttentionProblem,
    ) -> Result<Self, AttentionError> {
        let block_mask = problem
            .block_mask
            .as_ref()
            .map(|mask| {
                // The driver refuses 0-byte buffers: an empty key-block list uploads one unread entry.
                let indices: &[i32] = if mask.nnz() == 0 {
                    &[0]
                } else {
                    mask.col_indices()
                };
                Ok::<_, DriverError>((
                    stream.clone_htod(mask.row_offsets())?,
                    stream.clone_htod(indices)?,
                ))
            })
            .transpose()
            .map_err(driver("uploading the block mask"))?;
        Ok(DeviceMetadata {
            layout: layout
                .map(|layout| DeviceLayout::upload(stream, layout))
                .transpose()?,
            block_mask,
        })
    }
}

/// Times launches on one stream by CUDA events, each after an L2 flush (when there is a flush buffer).
pub(super) struct EventTimer {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    flush: Option<CudaSlice<u8>>,
}

impl EventTimer {
    /// A timer on `stream` whose flush writes [`l2_flush_bytes`] (none when the flush is off).
    pub(super) fn new(
        engine: &Engine,
        sweep: &Sweep,
        stream: &Arc<CudaStream>,
    ) -> Result<Self, AttentionError> {
        let flush_bytes = l2_flush_bytes(engine, sweep)?;
        let flush = (flush_bytes > 0)
            .then(|| stream.alloc_zeros::<u8>(flush_bytes))
            .transpose()
            .map_err(driver("allocating the L2 flush buffer"))?;
        Ok(EventTimer {
            context: engine.context().clone(),
            stream: stream.clone(),
            flush,
        })
    }

    /// Milliseconds of each of `runs` calls of `launch(i)` (which must enqueue its work on the timer's
    /// stream), each between two events recorded after the flush; waits for the stream once, at the end.
    pub(super) fn time(
        &mut self,
        runs: usize,
        mut launch: impl FnMut(usize) -> Result<(), AttentionError>,
    ) -> Result<Vec<f64>, AttentionError> {
        let event = || {
            self.context
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver("creating an event"))
        };
        let mut pairs = Vec::with_capacity(runs);
        for i in 0..runs {
            if let Some(flush) = self.flush.as_mut() {
                self.stream
                    .memset_zeros(flush)
                    .map_err(driver("flushing the L2 cache"))?;
            }
            let (start, end) = (event()?, event()?);
            start
                .record(&self.stream)
                .map_err(driver("recording an event"))?;
            launch(i)?;
            end.record(&self.stream)
                .map_err(driver("recording an event"))?;
            pairs.push((start, end));
        }
        self.stream
            .synchronize()
            .map_err(driver("waiting for the timed runs"))?;
        pairs
            .iter()
            .map(|(start, end)| {
                start
                    .elapsed_ms(end)
                    .map(f64::from)
                    .map_err(driver("reading an event"))
            })
            .collect()
    }
}

/// One launch of `plan` on the first `lens` elements of an input set and the output, with the workspace
/// and the metadata (of a ragged batch, of a block mask).
fn launch<T: Element>(
    engine: &Engine,
    stream: &Arc<CudaStream>,
    plan: &Plan,
    (lens, set, out): (Lens, &DeviceSet<T>, &mut CudaSlice<T>),
    workspace: &mut CudaSlice<u8>,
    metadata: &DeviceMetadata,
) -> Result<(), AttentionError> {
    let (q, k, v) = (
        set.q.slice(..lens.q),
        set.k.slice(..lens.k),
        set.v.slice(..lens.v),
    );
    let mut out = out.slice_mut(..lens.out);
    let mut tensors = DeviceTensors::new(&q, &k, &v, &mut out).with_workspace(workspace);
    if let Some(layout) = &metadata.layout {
        tensors = tensors.with_metadata(
            &layout.cu_seqlens_q,
            device_i32(&layout.cu_seqlens_k),
            device_i32(&layout.seqused_k),
            device_i32(&layout.block_table),
        );
    }
    if let Some((offsets, indices)) = &metadata.block_mask {
        tensors = tensors.with_block_mask(
            offsets as &dyn DevicePtr<i32>,
            indices as &dyn DevicePtr<i32>,
        );
    }
    engine.forward_into(stream, plan, tensors)
}

/// Times the GPU kernels of one dtype: the input sets uploaded once, one output buffer, an optional L2
/// flush buffer.
pub struct GpuRunner<'a, T> {
    engine: &'a Engine,
    sweep: &'a Sweep,
    host: &'a HostSets<T>,
    stream: Arc<CudaStream>,
    sets: Vec<DeviceSet<T>>,
    out: CudaSlice<T>,
    poison: Vec<T>,
    timer: EventTimer,
}

/// Bytes a flush writes between timed runs: twice the device's L2 cache (0 when the flush is off).
pub fn l2_flush_bytes(engine: &Engine, sweep: &Sweep) -> Result<usize, AttentionError> {
    if !sweep.flush_l2 {
        return Ok(0);
    }
    let l2 = engine
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
        .map_err(driver("reading the L2 cache size"))?;
    Ok(2 * l2.max(1 << 20) as usize)
}

/// Refuses, before the sweep, one whose input sets, output and L2 flush buffer (for the dtype that needs
/// most) exceed the device's free memory.
pub fn check_device_memory(
    engine: &Engine,
    sweep: &Sweep,
    cases: &[Case],
    flush_bytes: usize,
) -> CliResult<()> {
    let (free, _) = engine
        .context()
        .mem_get_info()
        .map_err(driver("reading free device memory"))?;
    for &dtype in &sweep.dtypes {
        let of_dtype: Vec<Case> = cases.iter().filter(|c| c.dtype == dtype).cloned().collect();
        let (input_len, out_len) = Sweep::buffer_lens(&of_dtype)?;
        let needed = buffer_bytes(
            &[sweep.input_sets * 3 + 1, input_len.max(out_len)],
            dtype.size_bytes(),
        )
        .and_then(|bytes| bytes.checked_add(flush_bytes));
        // These buffers are allocated once and must fit; the margin is asked of the naive workspace only.
        if needed.is_none_or(|n| n > free) {
            return Err(CliError::Rejected(format!(
                "attn bench: the {dtype} input sets, output and L2 flush buffer need {} of device memory and \
                 {} is free: use fewer --input-sets, a smaller --tokens or --hidden, or shorter --seqs",
                needed.map_or("more than the address space".into(), |n| human_bytes(n as u64)),
                human_bytes(free as u64)
            )));
        }
    }
    Ok(())
}

impl<'a, T: Element> GpuRunner<'a, T> {
    /// Uploads the input sets and allocates the output and the flush buffer.
    pub fn new(
        engine: &'a Engine,
        sweep: &'a Sweep,
        host: &'a HostSets<T>,
    ) -> Result<Self, AttentionError> {
        let stream = engine
            .context()
            .new_stream()
            .map_err(driver("creating a stream"))?;
        let mut sets = Vec::with_capacity(host.sets.len());
        for set in &host.sets {
            sets.push(DeviceSet {
                q: stream
                    .clone_htod(&set.q[..])
                    .map_err(driver("uploading q"))?,
                k: stream
                    .clone_htod(&set.k[..])
                    .map_err(driver("uploading k"))?,
                v: stream
                    .clone_htod(&set.v[..])
                    .map_err(driver("uploading v"))?,
            });
        }
        let out = stream
            .alloc_zeros::<T>(host.out_len.max(1))
            .map_err(driver("allocating the output"))?;
        let timer = EventTimer::new(engine, sweep, &stream)?;
        Ok(GpuRunner {
            engine,
            sweep,
            host,
            stream,
            sets,
            out,
            poison: vec_filled("poisoned output", host.out_len, T::from_f32(f32::NAN))?,
            timer,
        })
    }

    /// Checks, then times `kernel` (naive or flash) on `case` as far as `budget` allows.
    pub fn measure(&mut self, case: &Case, kernel: Runner, budget: &mut Budget) -> Record {
        match self.try_measure(case, kernel, budget) {
            Ok(record) => record,
            Err(error) => failed(case, kernel.name(), error),
        }
    }

    fn launch(
        &mut self,
        plan: &Plan,
        lens: Lens,
        set: usize,
        workspace: &mut CudaSlice<u8>,
        metadata: &DeviceMetadata,
    ) -> Result<(), AttentionError> {
        launch(
            self.engine,
            &self.stream,
            plan,
            (lens, &self.sets[set], &mut self.out),
            workspace,
            metadata,
        )
    }

    fn try_measure(
        &mut self,
        case: &Case,
        kernel: Runner,
        budget: &mut Budget,
    ) -> Result<Record, AttentionError> {
        let problem = case.problem();
        let plan = self.engine.plan::<T>(
            &problem,
            ForwardOptions::default().with_kernel(kernel.kernel()),
        )?;
        let lens = Lens::of(&problem)?;
        let layout = case.ragged.as_ref().map(|r| r.layout()).transpose()?;
        let mut record = case.record(kernel.name(), Status::Ok, None);
        let metadata_bytes = layout.as_ref().map_or(0, RaggedLayout::bytes);
        record.memory = Some(Memory {
            peak_bytes: (tensor_bytes::<T>(&problem)? + plan.workspace_bytes() + metadata_bytes)
                as u64,
            space: "device".into(),
        });

        // The naive score workspace: the one allocation that grows with seq^2 (flash has none, so no
        // margin is asked of it).
        self.stream
            .synchronize()
            .map_err(driver("waiting for the stream"))?;
        let (free, _) = self
            .engine
            .context()
            .mem_get_info()
            .map_err(driver("reading free device memory"))?;
        if plan.workspace_bytes() > 0 && plan.workspace_bytes() + MEMORY_MARGIN > free {
            record.status = Status::OutOfMemory;
            record.reason = Some(format!(
                "out of memory: the workspace needs {}, {} free",
                human_bytes(plan.workspace_bytes() as u64),
                human_bytes(free as u64)
            ));
            return Ok(record);
        }
        let mut workspace = self
            .stream
            .alloc_zeros::<u8>(plan.workspace_bytes().max(16))
            .map_err(driver("allocating the naive score workspace"))?;
        let metadata = DeviceMetadata::upload(&self.stream, layout.as_ref(), &problem)?;

        // Check on input set 0, into a NaN-poisoned output.
        self.stream
            .memcpy_htod(
                &self.poison[..lens.out],
                &mut self.out.slice_mut(..lens.out),
            )
            .map_err(driver("poisoning the output"))?;
        self.stream
            .synchronize()
            .map_err(driver("waiting for the stream"))?;
        let launched = Instant::now();
        self.launch(&plan, lens, 0, &mut workspace, &metadata)?;
        self.stream
            .synchronize()
            .map_err(driver("waiting for the checking run"))?;
        let seconds = launched.elapsed().as_secs_f64();
        let out = self
            .stream
            .clone_dtoh(&self.out.slice(..lens.out))
            .map_err(driver("downloading the output"))?;
        let first = &self.host.sets[0];
        let check = check_case(
            case,
            &problem,
            layout.as_ref(),
            [
                &first.q[..lens.q],
                &first.k[..lens.k],
                &first.v[..lens.v],
                &out,
            ],
            self.sweep.check_rows,
        )?;
        let runs = budget_runs(budget, self.sweep, &mut record, case, kernel, seconds);
        if !keep_check(&mut record, check) {
            return Ok(record);
        }

        let n = self.sets.len();
        for w in 0..runs.warmup {
            self.launch(&plan, lens, (w + 1) % n, &mut workspace, &metadata)?;
        }
        let (engine, stream, sets, out) = (self.engine, &self.stream, &self.sets, &mut self.out);
        let times = self.timer.time(runs.timed, |i| {
            launch(
                engine,
                stream,
                &plan,
                (lens, &sets[i % n], out),
                &mut workspace,
                &metadata,
            )
        })?;
        record.timing = Some(Timing::from_times(times, record.flops));
        Ok(record)
    }
}
