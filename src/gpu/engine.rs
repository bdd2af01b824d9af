//! The GPU engine: one device, one loaded module, launches on the caller's streams.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError,
};
use cudarc::nvrtc::Ptx;

use super::build_info::{FATBIN, KERNELS_BUILT};
use super::driver::{open_context, DeviceInfo};
use super::kernels::LoadedKernels;
use crate::attention_map::{map_launch, map_params, AttentionMap, MapSpec};
use crate::binding::{
    bind, bind_append, check_inputs, check_plan, AttentionOutput, KvAppend, Region, Regions,
    Tensors,
};
use crate::dtype::Element;
use crate::error::{AttentionError, DriverContext, Memory, Result};
use crate::launch::{append_launch, merge_launch};
use crate::merge::{bind_merge, MergeLayout, MergeTensors};
use crate::plan::{ForwardOptions, Plan};
use crate::problem::{AttentionProblem, Tensor};
use crate::tensor_maps::attach_tensor_maps;

/// Outputs of [`Engine::forward`], in device memory.
pub type DeviceOutput<T> = AttentionOutput<CudaSlice<T>, CudaSlice<f32>>;

/// Caller-owned device buffers for [`Engine::forward_into`] (any `CudaSlice` or view): the crate's one
/// tensor bundle ([`Tensors`]) over device buffers. The ALiBi slopes and sinks must be in device memory
/// when the problem has them (upload them once, e.g. at model load), as must a ragged batch's i32
/// metadata.
pub type DeviceTensors<'a, T> = Tensors<
    &'a dyn DevicePtr<T>,
    &'a mut dyn DevicePtrMut<T>,
    &'a mut dyn DevicePtrMut<f32>,
    &'a mut dyn DevicePtrMut<u8>,
    &'a dyn DevicePtr<f32>,
    &'a dyn DevicePtr<i32>,
>;

/// Caller-owned device buffers of [`Engine::append_kv_into`].
pub type DeviceKvAppend<'a, T> =
    KvAppend<&'a dyn DevicePtr<T>, &'a mut dyn DevicePtrMut<T>, &'a dyn DevicePtr<i64>>;

/// An attention map of [`Engine::attention_map`], in device memory.
pub type DeviceAttentionMap = AttentionMap<CudaSlice<f32>>;

/// One CUDA device with the crate's kernels loaded. `Send + Sync`: share one engine across threads, each
/// launching on its own stream with [`Engine::forward_into`].
#[derive(Debug)]
pub struct Engine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    kernels: LoadedKernels,
}

impl Engine {
    /// Opens device `ordinal` and loads the kernels once.
    ///
    /// # Errors
    /// [`AttentionError::KernelsNotBuilt`] when the crate was built without nvcc,
    /// [`AttentionError::DriverNotFound`] without libcuda, [`AttentionError::NoDevice`] for a bad ordinal,
    /// or a driver error (e.g. no kernel image for this GPU's architecture).
    pub fn new(ordinal: usize) -> Result<Engine> {
        if !KERNELS_BUILT {
            return Err(AttentionError::KernelsNotBuilt);
        }
        let ctx = open_context(ordinal)?;
        let info = DeviceInfo::query(&ctx)?;
        let module = ctx
            .load_module(Ptx::from_binary(FATBIN.to_vec()))
            .context("loading the kernel module (does this build hold the GPU's architecture? see `attn info`)")?;
        let kernels = LoadedKernels::load(&module, &info)?;
        let stream = ctx.default_stream();
        Ok(Engine {
            ctx,
            stream,
            info,
            kernels,
        })
    }

    /// The device this engine runs on.
    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Checks that `needed` bytes fit in the device memory free now (before allocating them).
    ///
    /// # Errors
    /// [`AttentionError::OutOfMemory`] with the numbers, naming `what`.
    pub fn check_device_budget(&self, what: &'static str, needed: usize) -> Result<()> {
        let (free, _total) = self
            .ctx
            .mem_get_info()
            .context("reading free device memory")?;
        if needed > free {
            return Err(AttentionError::OutOfMemory {
                memory: Memory::Device,
                what,
                needed,
                free,
            });
        }
        Ok(())
    }

    /// The CUDA context (to create streams and buffers for [`Engine::forward_into`]).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream [`Engine::forward`] launches on.
    pub fn default_stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Validates `problem` for element type `T` and decides which kernel will run, and why.
    ///
    /// # Errors
    /// The problem's validation error, or [`AttentionError::KernelUnsupported`].
    pub fn plan<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
    ) -> Result<Plan> {
        Plan::new(problem, T::DTYPE, options, self.info.caps())
    }

    /// Convenience call for a dense batch: plans, allocates the outputs (and workspace) on the engine's
    /// stream and runs. Returns without waiting for the GPU. Ragged batches, whose metadata lives in
    /// device buffers, run through [`Engine::forward_into`].
    ///
    /// # Errors
    /// Those of [`Engine::plan`], [`AttentionError::InvalidArgument`] for a ragged problem,
    /// [`AttentionError::BufferTooSmall`] for short inputs, [`AttentionError::OutOfMemory`] when the
    /// outputs and workspace exceed free device memory.
    pub fn forward<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
    ) -> Result<DeviceOutput<T>> {
        if problem.ragged_layout().is_some() {
            return Err(AttentionError::InvalidArgument(
                "Engine::forward takes dense batches: run a ragged batch with Engine::forward_into and its \
                 metadata buffers"
                    .into(),
            ));
        }
        let plan = self.plan::<T>(problem, options)?;
        let shape = &problem.shape;
        check_inputs(problem, q.len(), k.len(), v.len())?;
        let out_len = problem.required_len(Tensor::Out)?;
        let lse_len = if options.return_lse {
            shape.lse_elements()?
        } else {
            0
        };
        let weights_len = if options.return_weights {
            shape.score_elements()?
        } else {
            0
        };
        let needed = [
            out_len.checked_mul(size_of::<T>()),
            lse_len.checked_mul(4),
            weights_len.checked_mul(4),
            Some(plan.workspace_bytes()),
        ]
        .into_iter()
        .try_fold(0usize, |acc, n| acc.checked_add(n?))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "device memory for outputs and workspace",
            detail: format!(
                "{out_len} outputs, {weights_len} weights, {} workspace bytes",
                plan.workspace_bytes()
            ),
        })?;
        self.check_device_budget("attention outputs and workspace", needed)?;

        let stream = &self.stream;
        // The output is zeroed: strided layouts leave gaps the kernels never write, which the caller may
        // still read back (the host backends return them as 0 too).
        let mut out = stream
            .alloc_zeros::<T>(out_len)
            .context("allocating the output")?;
        // SAFETY (lse, weights, workspace): every element is written by the kernels before anything reads
        // it: each lse row by the flash or naive softmax kernel, each weight by naive_scores then
        // naive_softmax (masked ones as 0), the workspace by naive_scores before naive_softmax and
        // naive_pv read it, or, split-KV, every partial state of a row the combine reads by the split flash
        // launch before it.
        let mut lse = options
            .return_lse
            .then(|| unsafe { stream.alloc::<f32>(lse_len) })
            .transpose()
            .context("allocating the logsumexp")?;
        let mut weights = options
            .return_weights
            .then(|| unsafe { alloc_unset::<f32>(stream, weights_len) })
            .transpose()
            .context("allocating the attention weights")?;
        let mut workspace = (plan.workspace_bytes() > 0)
            .then(|| unsafe { stream.alloc::<u8>(plan.workspace_bytes()) })
            .transpose()
            .context("allocating the workspace (naive scores or split-KV partial states)")?;
        let alibi_slopes = problem
            .alibi_slopes
            .as_ref()
            .map(|slopes| stream.clone_htod(slopes.as_ref()))
            .transpose()
            .context("uploading the ALiBi slopes")?;
        let sinks = problem
            .sinks
            .as_ref()
            .map(|sinks| stream.clone_htod(sinks.as_ref()))
            .transpose()
            .context("uploading the sinks")?;
        let block_mask = upload_block_mask(stream, problem)?;
        let mut tensors: DeviceTensors<'_, T> = Tensors::new(q, k, v, &mut out);
        tensors.lse = lse.as_mut().map(|b| b as &mut dyn DevicePtrMut<f32>);
        tensors.weights = weights.as_mut().map(|b| b as &mut dyn DevicePtrMut<f32>);
        tensors.workspace = workspace.as_mut().map(|b| b as &mut dyn DevicePtrMut<u8>);
        tensors.alibi_slopes = alibi_slopes.as_ref().map(|b| b as &dyn DevicePtr<f32>);
        tensors.sinks = sinks.as_ref().map(|b| b as &dyn DevicePtr<f32>);
        if let Some((offsets, indices)) = &block_mask {
            tensors = tensors.with_block_mask(
                offsets as &dyn DevicePtr<i32>,
                indices as &dyn DevicePtr<i32>,
            );
        }
        self.forward_into(stream, &plan, tensors)?;
        Ok(DeviceOutput { out, lse, weights })
    }

    /// Runs `plan` on caller-owned buffers on `stream`: no allocation, no host synchronisation, no host
    /// read of device memory. The buffers go through the crate's one binding step
    /// ([`crate::binding::bind`]).
    ///
    /// Capturable in a CUDA graph (`stream.begin_capture`) when cudarc's event tracking is off for the
    /// buffers (`CudaContext::disable_event_tracking` before allocating them): with it on and more than
    /// one stream, each buffer use makes the stream wait on the buffer's last read or write event,
    /// recorded before the capture, which the driver refuses during a capture (the capture is
    /// invalidated; `tests/emulated_driver.rs` shows both cases on the emulated driver).
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] when the plan was made for another element type or the CPU
    /// backend, or the stream belongs to another device; the binding step's errors; a driver error from
    /// the launch.
    pub fn forward_into<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &Plan,
        tensors: DeviceTensors<'_, T>,
    ) -> Result<()> {
        check_plan(plan, T::DTYPE, false, "Engine::plan")?;
        if stream.context().cu_ctx() != self.ctx.cu_ctx() {
            return Err(AttentionError::InvalidArgument(
                "the stream belongs to another CUDA context: create it from engine.context()"
                    .into(),
            ));
        }
        let Tensors {
            q,
            k,
            v,
            out,
            lse,
            weights,
            workspace,
            alibi_slopes,
            sinks,
            cu_seqlens_q,
            cu_seqlens_k,
            seqused_k,
            block_table,
            block_row_offsets,
            block_col_indices,
        } = tensors;
        // The guards record the buffers' use on `stream` (cudarc's event tracking) until the launch is
        // enqueued.
        let (q_ptr, _q_guard) = q.device_ptr(stream);
        let (k_ptr, _k_guard) = k.device_ptr(stream);
        let (v_ptr, _v_guard) = v.device_ptr(stream);
        let out_len = out.len();
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let lse_len = lse.as_ref().map(|b| b.len());
        let (lse_ptr, _lse_guard) = lse.map(|b| b.device_ptr_mut(stream)).unzip();
        let weights_len = weights.as_ref().map(|b| b.len());
        let (weights_ptr, _weights_guard) = weights.map(|b| b.device_ptr_mut(stream)).unzip();
        let workspace_len = workspace.as_ref().map(|b| b.len());
        let (workspace_ptr, _workspace_guard) = workspace.map(|b| b.device_ptr_mut(stream)).unzip();
        let alibi_len = alibi_slopes.as_ref().map(|b| b.len());
        let (alibi_ptr, _alibi_guard) = alibi_slopes.map(|b| b.device_ptr(stream)).unzip();
        let region = |address: u64, len: usize, elem_bytes: usize| Region {
            address,
            len,
            elem_bytes,
        };
        // The read-only f32 and i32 extras: their region, and the guard that records their use.
        let sinks_len = sinks.as_ref().map(|b| b.len());
        let (sinks_ptr, _sinks_guard) = sinks.map(|b| b.device_ptr(stream)).unzip();
        let sinks = sinks_ptr.zip(sinks_len).map(|(a, n)| region(a, n, 4));
        let i32_region =
            |ptr: Option<u64>, len: Option<usize>| ptr.zip(len).map(|(a, n)| region(a, n, 4));
        let lens = [
            &cu_seqlens_q,
            &cu_seqlens_k,
            &seqused_k,
            &block_table,
            &block_row_offsets,
            &block_col_indices,
        ]
        .map(|b| b.as_ref().map(|b| b.len()));
        let (cu_q_ptr, _cu_q_guard) = cu_seqlens_q.map(|b| b.device_ptr(stream)).unzip();
        let (cu_k_ptr, _cu_k_guard) = cu_seqlens_k.map(|b| b.device_ptr(stream)).unzip();
        let (used_ptr, _used_guard) = seqused_k.map(|b| b.device_ptr(stream)).unzip();
        let (table_ptr, _table_guard) = block_table.map(|b| b.device_ptr(stream)).unzip();
        let (offsets_ptr, _offsets_guard) = block_row_offsets.map(|b| b.device_ptr(stream)).unzip();
        let (indices_ptr, _indices_guard) = block_col_indices.map(|b| b.device_ptr(stream)).unzip();
        let cu_seqlens_q = i32_region(cu_q_ptr, lens[0]);
        let cu_seqlens_k = i32_region(cu_k_ptr, lens[1]);
        let seqused_k = i32_region(used_ptr, lens[2]);
        let block_table = i32_region(table_ptr, lens[3]);
        let element = size_of::<T>();
        let regions = Regions {
            q: region(q_ptr, q.len(), element),
            k: region(k_ptr, k.len(), element),
            v: region(v_ptr, v.len(), element),
            out: region(out_ptr, out_len, element),
            lse: lse_ptr.zip(lse_len).map(|(a, n)| region(a, n, 4)),
            weights: weights_ptr.zip(weights_len).map(|(a, n)| region(a, n, 4)),
            workspace: workspace_ptr
                .zip(workspace_len)
                .map(|(a, n)| region(a, n, 1)),
            alibi_slopes: alibi_ptr.zip(alibi_len).map(|(a, n)| region(a, n, 4)),
            sinks,
            cu_seqlens_q,
            cu_seqlens_k,
            seqused_k,
            block_table,
            block_row_offsets: i32_region(offsets_ptr, lens[4]),
            block_col_indices: i32_region(indices_ptr, lens[5]),
        };
        let mut params = bind(plan, &regions)?;
        attach_tensor_maps(plan, &mut params, super::tensor_map::encode_tiled)?;
        self.kernels.launch(stream, plan.launches(), &params)
    }
}

impl Engine {
    /// Writes `rows` new K/V rows (`[rows, heads_kv, head_dim]`, contiguous) into the paged cache of
    /// `problem` at their slots (`slot = page * page_size + row`; negative: a padding token, skipped) on
    /// `stream`: one launch, no allocation, no host synchronisation, no host read of the slots, so a
    /// server can capture it in a CUDA graph with the forward (as [`Engine::forward_into`]). The buffers go
    /// through the binding step [`crate::binding::bind_append`].
    ///
    /// # Errors
    /// The binding step's errors; [`AttentionError::InvalidArgument`] for a stream of another context; a
    /// driver error from the launch.
    pub fn append_kv_into<T: Element>(
        &self,
        stream: &CudaStream,
        problem: &AttentionProblem,
        rows: usize,
        tensors: DeviceKvAppend<'_, T>,
    ) -> Result<()> {
        if stream.context().cu_ctx() != self.ctx.cu_ctx() {
            return Err(AttentionError::InvalidArgument(
                "the stream belongs to another CUDA context: create it from engine.context()"
                    .into(),
            ));
        }
        let KvAppend {
            k_new,
            v_new,
            slot_mapping,
            k_cache,
            v_cache,
        } = tensors;
        let element = size_of::<T>();
        let (k_new_ptr, _k_new_guard) = k_new.device_ptr(stream);
        let (v_new_ptr, _v_new_guard) = v_new.device_ptr(stream);
        let (slots_ptr, _slots_guard) = slot_mapping.device_ptr(stream);
        let (k_cache_len, v_cache_len) = (k_cache.len(), v_cache.len());
        let (k_cache_ptr, _k_cache_guard) = k_cache.device_ptr_mut(stream);
        let (v_cache_ptr, _v_cache_guard) = v_cache.device_ptr_mut(stream);
        let region = |address: u64, len: usize, elem_bytes: usize| Region {
            address,
            len,
            elem_bytes,
        };
        let regions = KvAppend {
            k_new: region(k_new_ptr, k_new.len(), element),
            v_new: region(v_new_ptr, v_new.len(), element),
            slot_mapping: region(slots_ptr, slot_mapping.len(), 8),
            k_cache: region(k_cache_ptr, k_cache_len, element),
            v_cache: region(v_cache_ptr, v_cache_len, element),
        };
        let params = bind_append(problem, rows, &regions)?;
        let s = &problem.shape;
        let launch = append_launch(s.heads_kv, s.head_dim, rows, T::DTYPE)?;
        self.kernels
            .launch(stream, std::slice::from_ref(&launch), &params)
    }
}

/// Caller-owned device buffers of [`Engine::merge_states_into`].
pub type DeviceMergeTensors<'a, T> = MergeTensors<
    &'a dyn DevicePtr<T>,
    &'a dyn DevicePtr<f32>,
    &'a mut dyn DevicePtrMut<T>,
    &'a mut dyn DevicePtrMut<f32>,
>;

impl Engine {
    /// Merges two attention states (see [`crate::merge`]) on `stream` with the merge kernel: one launch,
    /// no allocation, no host synchronisation (graph-capturable).
    ///
    /// # Errors
    /// The binding step's errors ([`crate::merge::bind_merge`]); a stream of another context; a driver
    /// error from the launch.
    pub fn merge_states_into<T: Element>(
        &self,
        stream: &CudaStream,
        layout: &MergeLayout,
        tensors: DeviceMergeTensors<'_, T>,
    ) -> Result<()> {
        if stream.context().cu_ctx() != self.ctx.cu_ctx() {
            return Err(AttentionError::InvalidArgument(
                "the stream belongs to another CUDA context: create it from engine.context()"
                    .into(),
            ));
        }
        let MergeTensors {
            out_a,
            lse_a,
            out_b,
            lse_b,
            out,
            lse,
        } = tensors;
        let element = size_of::<T>();
        let region = |address: u64, len: usize, elem_bytes: usize| Region {
            address,
            len,
            elem_bytes,
        };
        let (a_ptr, _a_guard) = out_a.device_ptr(stream);
        let (b_ptr, _b_guard) = out_b.device_ptr(stream);
        let (la_ptr, _la_guard) = lse_a.device_ptr(stream);
        let (lb_ptr, _lb_guard) = lse_b.device_ptr(stream);
        let out_len = out.len();
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let lse_len = lse.as_ref().map(|b| b.len());
        let (lse_ptr, _lse_guard) = lse.map(|b| b.device_ptr_mut(stream)).unzip();
        let regions = MergeTensors {
            out_a: region(a_ptr, out_a.len(), element),
            lse_a: region(la_ptr, lse_a.len(), 4),
            out_b: region(b_ptr, out_b.len(), element),
            lse_b: region(lb_ptr, lse_b.len(), 4),
            out: region(out_ptr, out_len, element),
            lse: lse_ptr.zip(lse_len).map(|(a, n)| region(a, n, 4)),
        };
        let params = bind_merge(layout, &regions)?;
        let launch = merge_launch(layout.rows, layout.heads, layout.head_dim, T::DTYPE)?;
        self.kernels
            .launch(stream, std::slice::from_ref(&launch), &params)
    }
}

impl Engine {
    /// The attention map of `problem` described by `spec` ([`crate::attention_map`]), on the engine's
    /// stream: [`Engine::forward`] with the logsumexp (the plan's kernel, flash where it serves the
    /// problem), then the map kernel over the same q and k. Returns without waiting for the GPU; the
    /// forward's output is freed on the stream. Buffers of zero elements (`seq_k = 0`) get one.
    ///
    /// # Errors
    /// Those of [`MapSpec::layout`], short inputs ([`AttentionError::BufferTooSmall`]), the map and
    /// profile exceeding free device memory ([`AttentionError::OutOfMemory`]), no map kernel for `T`,
    /// those of [`Engine::forward`], a driver error from the launch.
    pub fn attention_map<T: Element>(
        &self,
        problem: &AttentionProblem,
        spec: &MapSpec,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
    ) -> Result<DeviceAttentionMap> {
        let layout = spec.layout(problem)?;
        check_inputs(problem, q.len(), k.len(), v.len())?;
        let launch = map_launch(&problem.shape, T::DTYPE)?;
        let forward = self.forward(problem, ForwardOptions::default().with_lse(true), q, k, v)?;
        let lse = forward.lse.ok_or_else(|| {
            AttentionError::InvalidArgument("the forward pass returned no lse".into())
        })?;
        drop(forward.out);
        let needed = layout
            .values
            .checked_add(layout.profile)
            .and_then(|n| n.checked_add(2))
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| AttentionError::SizeOverflow {
                what: "attention map in device memory",
                detail: format!(
                    "{} values and {} profile entries",
                    layout.values, layout.profile
                ),
            })?;
        self.check_device_budget("attention map values and key profile", needed)?;
        let stream = &self.stream;
        // Zeroed: the kernel only adds.
        let mut values = stream
            .alloc_zeros::<f32>(layout.values.max(1))
            .context("allocating the attention map")?;
        let mut key_profile = stream
            .alloc_zeros::<f32>(layout.profile.max(1))
            .context("allocating the key profile")?;
        let alibi_slopes = problem
            .alibi_slopes
            .as_ref()
            .map(|slopes| stream.clone_htod(slopes.as_ref()))
            .transpose()
            .context("uploading the ALiBi slopes")?;
        let block_mask = upload_block_mask(stream, problem)?;
        {
            let (q_ptr, _q_guard) = q.device_ptr(stream);
            let (k_ptr, _k_guard) = k.device_ptr(stream);
            let (lse_ptr, _lse_guard) = lse.device_ptr(stream);
            let (slopes_ptr, _slopes_guard) =
                alibi_slopes.as_ref().map(|b| b.device_ptr(stream)).unzip();
            let (values_ptr, _values_guard) = values.device_ptr_mut(stream);
            let (profile_ptr, _profile_guard) = key_profile.device_ptr_mut(stream);
            let (offsets_ptr, _offsets_guard) = block_mask
                .as_ref()
                .map(|(o, _)| o.device_ptr(stream))
                .unzip();
            let (indices_ptr, _indices_guard) = block_mask
                .as_ref()
                .map(|(_, i)| i.device_ptr(stream))
                .unzip();
            let params = crate::sys::AttentionParams {
                block_row_offsets: offsets_ptr.unwrap_or(0) as *const i32,
                block_col_indices: indices_ptr.unwrap_or(0) as *const i32,
                q: q_ptr as *const std::ffi::c_void,
                k: k_ptr as *const std::ffi::c_void,
                lse: lse_ptr as *mut f32,
                alibi_slopes: slopes_ptr.unwrap_or(0) as *const f32,
                map_values: values_ptr as *mut f32,
                map_key_profile: profile_ptr as *mut f32,
                ..map_params(problem, &layout)
            };
            // q and k reach what the validated problem addresses (check_inputs), lse is the forward's
            // [batch, heads_q, seq_q], the slopes the problem's [heads_q], values and profile the
            // layout's sizes: the kernel stays inside them.
            self.kernels
                .launch(stream, std::slice::from_ref(&launch), &params)?;
        }
        Ok(layout.output(values, key_profile))
    }
}

/// The problem's block-sparse mask lists on the device (row offsets, key blocks), or `None` without a
/// mask; an empty key-block list uploads one unread entry (the driver refuses 0-byte allocations).
fn upload_block_mask(
    stream: &Arc<CudaStream>,
    problem: &AttentionProblem,
) -> Result<Option<(CudaSlice<i32>, CudaSlice<i32>)>> {
    problem
        .block_mask
        .as_ref()
        .map(|mask| -> std::result::Result<_, DriverError> {
            let indices: &[i32] = if mask.nnz() == 0 {
                &[0]
            } else {
                mask.col_indices()
            };
            Ok((
                stream.clone_htod(mask.row_offsets())?,
                stream.clone_htod(indices)?,
            ))
        })
        .transpose()
        .context("uploading the block mask")
}

/// `stream.alloc(len)`, except that a zero-length buffer (the weights when seq_k = 0) still gets storage
/// (one element): the driver refuses 0-byte allocations (`cuMemAlloc`: CUDA_ERROR_INVALID_VALUE) on
/// devices without memory pools, where cudarc allocates with it.
///
/// # Safety
/// As `CudaStream::alloc`: the memory is unset.
unsafe fn alloc_unset<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> std::result::Result<CudaSlice<T>, DriverError> {
    if len > 0 {
        return stream.alloc::<T>(len);
    }
    let storage = stream.alloc::<T>(1)?.leak();
    // SAFETY: `storage` was just allocated on `stream` for one T; the slice owns and frees it.
    Ok(stream.upgrade_device_ptr::<T>(storage, 0))
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
}
