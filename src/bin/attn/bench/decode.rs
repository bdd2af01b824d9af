//! Timing decode steps (`attn bench --decode`): the storage of `cuda_attention::cli::bench::decode` (q per
//! input set, K and V one copy each repeating a pattern), the copy whose bandwidth is the records'
//! ceiling, and the runners: the GPU kernels timed by CUDA events after an L2 flush, the host kernels by
//! the wall clock. As for the other sweeps, a kernel is checked on sampled rows before it is timed, and
//! the budget may skip a shape or cut its runs.

use std::sync::Arc;
use std::time::Instant;

use cuda_attention::cli::bench::budget::Budget;
use cuda_attention::cli::bench::decode::{self, DecodeInputs};
use cuda_attention::cli::bench::results::{CopyBandwidth, Memory, Record, Status, Timing};
use cuda_attention::cli::bench::slice_check::{check_rows_in, sample_rows, Elements};
use cuda_attention::cli::bench::sweep::{Case, Sweep};
use cuda_attention::cli::bench::table::human_bytes;
use cuda_attention::cli::inputs::Aligned;
use cuda_attention::cli::runner::Runner;
use cuda_attention::cli::{CliError, CliResult};
use cuda_attention::emulator::Schedule;
use cuda_attention::host_memory::{vec_filled, HostWorkspace};
use cuda_attention::{
    AttentionError, AttentionProblem, DeviceTensors, Element, Engine, HostTensors, Plan,
};
use cudarc::driver::{CudaSlice, CudaStream};

use super::timing::{
    budget_runs, driver, failed, keep_check, tensor_bytes, EventTimer, Lens, MIN_HOST_RUNS,
};

/// Timed copies behind the copy bandwidth (after one untimed copy).
const COPY_RUNS: usize = 10;

/// Refuses, before the sweep, one whose K, V, q sets, output and L2 flush buffer (for the dtype that
/// needs most) exceed the device's free memory: they are allocated once, for the largest shape.
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
        let storage = Sweep::decode_storage(&of_dtype)?;
        let needed = storage
            .device_bytes(sweep.input_sets, dtype.size_bytes())
            .and_then(|bytes| bytes.checked_add(flush_bytes));
        if needed.is_none_or(|n| n > free) {
            return Err(CliError::Rejected(format!(
                "attn bench --decode: the {dtype} K and V of the largest step ({} each), the q sets, the \
                 output and the L2 flush buffer need {} of device memory and {} is free: use smaller \
                 --batches or shorter --contexts",
                human_bytes((storage.kv_len * dtype.size_bytes()) as u64),
                needed.map_or("more than the address space".into(), |n| human_bytes(n as u64)),
                human_bytes(free as u64)
            )));
        }
    }
    Ok(())
}

/// The check of a decode step's output: sampled rows against the f64 reference, K and V read through
/// their pattern when `periodic`, else from the slices given.
fn check_decode<T: Element>(
    case: &Case,
    problem: &AttentionProblem,
    [q, k, v, out]: [&[T]; 4],
    periodic: bool,
    rows: usize,
) -> Result<cuda_attention::cli::bench::results::Check, AttentionError> {
    let sampled = sample_rows(
        &problem.shape,
        rows,
        case.batch as u64 ^ problem.shape.seq_k as u64,
    );
    let (k, v) = if periodic {
        (Elements::Periodic(k), Elements::Periodic(v))
    } else {
        (Elements::Slice(k), Elements::Slice(v))
    };
    check_rows_in(problem, [Elements::Slice(q), k, v], out, &sampled)
}

/// The record of `kernel` on `case` before it runs: the plan's split count and GQA packing and the bytes
/// its buffers take in `space`.
fn planned_record<T>(
    case: &Case,
    kernel: Runner,
    plan: &Plan,
    space: &str,
) -> Result<Record, AttentionError> {
    let mut record = case.record(kernel.name(), Status::Ok, None);
    record.splits = Some(plan.splits());
    record.gqa_packing = Some(plan.gqa_packing().unwrap_or(1));
    record.memory = Some(Memory {
        peak_bytes: (tensor_bytes::<T>(plan.problem())? + plan.workspace_bytes()) as u64,
        space: space.into(),
    });
    Ok(record)
}

/// Fills `buffer` on the device with `pattern` repeated (element `i` is `pattern[i % pattern.len()]`):
/// the pattern is uploaded once, then the filled prefix is copied after itself, doubling it each time.
fn fill_periodic<T: Element>(
    stream: &Arc<CudaStream>,
    buffer: &mut CudaSlice<T>,
    pattern: &[T],
) -> Result<(), AttentionError> {
    let len = buffer.len();
    let first = pattern.len().min(len);
    if first == 0 {
        return Ok(());
    }
    stream
        .memcpy_htod(&pattern[..first], &mut buffer.slice_mut(..first))
        .map_err(driver("uploading the K/V pattern"))?;
    let mut filled = first;
    while filled < len {
        let chunk = filled.min(len - filled);
        let (done, mut rest) = buffer.split_at_mut(filled);
        stream
            .memcpy_dtod(&done.slice(..chunk), &mut rest.slice_mut(..chunk))
            .map_err(driver("tiling the K/V pattern"))?;
        filled += chunk;
    }
    Ok(())
}

/// Times the GPU kernels of one dtype on decode steps: q sets, K, V and the output in device memory.
pub struct DecodeGpuRunner<'a, T> {
    engine: &'a Engine,
    sweep: &'a Sweep,
    inputs: &'a DecodeInputs<T>,
    stream: Arc<CudaStream>,
    q_sets: Vec<CudaSlice<T>>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
    out: CudaSlice<T>,
    poison: Vec<T>,
    timer: EventTimer,
    /// The copy bandwidth the records' fractions are taken of.
    copy_gb_s: Option<f64>,
}

impl<'a, T: Element> DecodeGpuRunner<'a, T> {
    /// Uploads q, fills K with its pattern, times the copy of K into V (unless `copy` was measured
    /// already: then its bandwidth is used), then fills V. Returns the runner and the copy it measured.
    pub fn new(
        engine: &'a Engine,
        sweep: &'a Sweep,
        inputs: &'a DecodeInputs<T>,
        copy: Option<&CopyBandwidth>,
    ) -> Result<(Self, Option<CopyBandwidth>), AttentionError> {
        let stream = engine
            .context()
            .new_stream()
            .map_err(driver("creating a stream"))?;
        let storage = inputs.storage;
        let q_sets = inputs
            .q_sets
            .iter()
            .map(|q| stream.clone_htod(&q[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(driver("uploading q"))?;
        let alloc = |len: usize, what| stream.alloc_zeros::<T>(len.max(1)).map_err(driver(what));
        let mut k = alloc(storage.kv_len, "allocating k")?;
        let mut v = alloc(storage.kv_len, "allocating v")?;
        let out = alloc(storage.q_len, "allocating the output")?;
        let mut timer = EventTimer::new(engine, sweep, &stream)?;
        fill_periodic(&stream, &mut k, &inputs.k_pattern)?;
        let measured = match copy {
            Some(_) => None,
            None => {
                stream
                    .memcpy_dtod(&k, &mut v)
                    .map_err(driver("copying k into v"))?;
                let times = timer.time(COPY_RUNS, |_| {
                    stream
                        .memcpy_dtod(&k, &mut v)
                        .map_err(driver("copying k into v"))
                })?;
                let bytes = 2 * (k.len() * size_of::<T>()) as u64;
                Some(CopyBandwidth::from_times(
                    bytes,
                    times,
                    "device".into(),
                    format!(
                        "device-to-device copy (cuMemcpyDtoDAsync) of {} on {}, timed by CUDA events \
                         after the L2 flush, median of {COPY_RUNS}",
                        human_bytes(bytes / 2),
                        engine.device().name
                    ),
                ))
            }
        };
        fill_periodic(&stream, &mut v, &inputs.v_pattern)?;
        let copy_gb_s = copy.or(measured.as_ref()).map(|c| c.bandwidth_gb_s);
        let runner = DecodeGpuRunner {
            engine,
            sweep,
            inputs,
            stream,
            q_sets,
            k,
            v,
            out,
            poison: vec_filled("poisoned output", storage.q_len, T::from_f32(f32::NAN))?,
            timer,
            copy_gb_s,
        };
        Ok((runner, measured))
    }

    /// Checks, then times `kernel` (flash) on `case` as far as `budget` allows.
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
        let options = decode::options(case.split()).with_kernel(kernel.kernel());
        let plan = self.engine.plan::<T>(&problem, options)?;
        let lens = Lens::of(&problem)?;
        let mut record = planned_record::<T>(case, kernel, &plan, "device")?;
        // The split workspace (small: f32 partial rows), when the plan splits.
        let mut workspace = self
            .stream
            .alloc_zeros::<u8>(plan.workspace_bytes().max(16))
            .map_err(driver("allocating the split-KV workspace"))?;
        let (engine, stream) = (self.engine, &self.stream);
        let (k, v) = (self.k.slice(..lens.k), self.v.slice(..lens.v));
        let launch = |q: &CudaSlice<T>, out: &mut CudaSlice<T>, workspace: &mut CudaSlice<u8>| {
            let q = q.slice(..lens.q);
            let mut out = out.slice_mut(..lens.out);
            let tensors = DeviceTensors::new(&q, &k, &v, &mut out).with_workspace(workspace);
            engine.forward_into(stream, &plan, tensors)
        };

        // Check on input set 0, into a NaN-poisoned output.
        stream
            .memcpy_htod(
                &self.poison[..lens.out],
                &mut self.out.slice_mut(..lens.out),
            )
            .map_err(driver("poisoning the output"))?;
        stream
            .synchronize()
            .map_err(driver("waiting for the stream"))?;
        let launched = Instant::now();
        launch(&self.q_sets[0], &mut self.out, &mut workspace)?;
        stream
            .synchronize()
            .map_err(driver("waiting for the checking run"))?;
        let seconds = launched.elapsed().as_secs_f64();
        let out = stream
            .clone_dtoh(&self.out.slice(..lens.out))
            .map_err(driver("downloading the output"))?;
        let check = check_decode(
            case,
            &problem,
            [
                &self.inputs.q_sets[0][..lens.q],
                &self.inputs.k_pattern,
                &self.inputs.v_pattern,
                &out,
            ],
            true,
            self.sweep.check_rows,
        )?;
        let runs = budget_runs(budget, self.sweep, &mut record, case, kernel, seconds);
        if !keep_check(&mut record, check) {
            return Ok(record);
        }

        let (sets, out) = (&self.q_sets, &mut self.out);
        let n = sets.len();
        for w in 0..runs.warmup {
            launch(&sets[(w + 1) % n], out, &mut workspace)?;
        }
        let times = self
            .timer
            .time(runs.timed, |i| launch(&sets[i % n], out, &mut workspace))?;
        record.timing = Some(Timing::from_times(times, record.flops));
        record.set_bandwidth(self.copy_gb_s);
        Ok(record)
    }
}

/// Times the host kernels (cpu, emulator) of one dtype on decode steps: K and V tiled whole on the host.
pub struct DecodeHostRunner<'a, T> {
    sweep: &'a Sweep,
    inputs: &'a DecodeInputs<T>,
    k: Aligned<T>,
    v: Aligned<T>,
    out: Aligned<T>,
    copy_gb_s: Option<f64>,
}

impl<'a, T: Element> DecodeHostRunner<'a, T> {
    /// Tiles K, times the copy of K into V (unless `copy` was measured already: then its bandwidth is
    /// used), then tiles V. Returns the runner and the copy it measured.
    pub fn new(
        sweep: &'a Sweep,
        inputs: &'a DecodeInputs<T>,
        copy: Option<&CopyBandwidth>,
    ) -> Result<(Self, Option<CopyBandwidth>), AttentionError> {
        let storage = inputs.storage;
        let k = decode::tile("k", &inputs.k_pattern, storage.kv_len)?;
        let mut v = Aligned::filled("v", storage.kv_len, T::default())?;
        let measured = match copy {
            Some(_) => None,
            None => {
                v.copy_from_slice(&k);
                let times = (0..COPY_RUNS)
                    .map(|_| {
                        let start = Instant::now();
                        v.copy_from_slice(&k);
                        start.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                let bytes = 2 * std::mem::size_of_val(&k[..]) as u64;
                Some(CopyBandwidth::from_times(
                    bytes,
                    times,
                    "host".into(),
                    format!(
                        "host memcpy (copy_from_slice) of {} on one thread, wall clock, median of \
                         {COPY_RUNS}: the host's, not a GPU number",
                        human_bytes(bytes / 2)
                    ),
                ))
            }
        };
        v.copy_from_slice(&decode::tile("v", &inputs.v_pattern, storage.kv_len)?);
        let copy_gb_s = copy.or(measured.as_ref()).map(|c| c.bandwidth_gb_s);
        let runner = DecodeHostRunner {
            sweep,
            inputs,
            k,
            v,
            out: Aligned::filled("attention output", storage.q_len, T::default())?,
            copy_gb_s,
        };
        Ok((runner, measured))
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
        let options = decode::options(case.split()).with_kernel(kernel.kernel());
        let plan = backend.plan::<T>(&problem, options)?;
        let mut record = planned_record::<T>(case, kernel, &plan, "host")?;
        let mut scratch = HostWorkspace::new(plan.workspace_bytes())?;
        let lens = Lens::of(&problem)?;
        let (k, v) = (&self.k[..lens.k], &self.v[..lens.v]);
        let out = &mut self.out[..lens.out];
        let mut run = |q: &[T], out: &mut [T]| -> Result<(), AttentionError> {
            let mut tensors = HostTensors::new(&q[..lens.q], k, v, out);
            if plan.workspace_bytes() > 0 {
                tensors.workspace = Some(scratch.as_bytes_mut());
            }
            backend.forward_into_host(&plan, tensors)
        };

        // Check on input set 0, into a NaN-poisoned output.
        out.fill(T::from_f32(f32::NAN));
        let first = &self.inputs.q_sets[0];
        let launched = Instant::now();
        run(first, out)?;
        let seconds = launched.elapsed().as_secs_f64();
        let check = check_decode(
            case,
            &problem,
            [&first[..lens.q], k, v, out],
            false,
            self.sweep.check_rows,
        )?;
        let runs = budget_runs(budget, self.sweep, &mut record, case, kernel, seconds);
        if !keep_check(&mut record, check) {
            return Ok(record);
        }

        let sets = &self.inputs.q_sets;
        for w in 0..runs.warmup {
            run(&sets[(w + 1) % sets.len()], out)?;
        }
        let mut times = Vec::with_capacity(runs.timed);
        let started = Instant::now();
        for i in 0..runs.timed {
            let start = Instant::now();
            run(&sets[i % sets.len()], out)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            if times.len() >= MIN_HOST_RUNS
                && started.elapsed().as_secs_f64() > self.sweep.host_seconds
            {
                break;
            }
        }
        record.timing = Some(Timing::from_times(times, record.flops));
        record.set_bandwidth(self.copy_gb_s);
        Ok(record)
    }
}
