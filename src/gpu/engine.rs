//! The GPU engine: one device, one loaded module, launches on the caller's streams.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::nvrtc::Ptx;

use super::build_info::{FATBIN, KERNELS_BUILT};
use super::driver::{open_context, DeviceInfo};
use super::kernels::LoadedKernels;
use crate::dtype::Element;
use crate::error::{AttentionError, DriverContext, Result};
use crate::launch::plan_launches;
use crate::params::{attention_params, BufferAddresses};
use crate::plan::{ForwardOptions, KernelKind, Plan};
use crate::problem::AttentionProblem;

/// Outputs of [`Engine::forward`], in device memory.
#[derive(Debug)]
pub struct DeviceOutput<T> {
    /// Attention output, laid out by the problem's `out_strides`.
    pub out: CudaSlice<T>,
    /// f32 logsumexp `[batch, heads_q, seq_q]`, when asked for.
    pub lse: Option<CudaSlice<f32>>,
    /// f32 attention weights `[batch, heads_q, seq_q, seq_k]`, when asked for.
    pub weights: Option<CudaSlice<f32>>,
}

/// Caller-owned device buffers for [`Engine::forward_into`]: any `CudaSlice` or view.
pub struct DeviceTensors<'a, T> {
    /// q, laid out by the problem's `q_strides`.
    pub q: &'a dyn DevicePtr<T>,
    /// k.
    pub k: &'a dyn DevicePtr<T>,
    /// v.
    pub v: &'a dyn DevicePtr<T>,
    /// out, written through the problem's `out_strides`.
    pub out: &'a mut dyn DevicePtrMut<T>,
    /// f32 `[batch, heads_q, seq_q]`; required when the plan asks for the logsumexp.
    pub lse: Option<&'a mut dyn DevicePtrMut<f32>>,
    /// f32 `[batch, heads_q, seq_q, seq_k]`; required when the plan asks for the weights.
    pub weights: Option<&'a mut dyn DevicePtrMut<f32>>,
    /// At least `plan.workspace_bytes` bytes, 16-byte aligned; required when that is not 0.
    pub workspace: Option<&'a mut dyn DevicePtrMut<u8>>,
    /// f32 ALiBi slopes `[heads_q]` in device memory, holding the problem's `alibi_slopes`; required
    /// exactly when the problem has them (upload them once, e.g. at model load).
    pub alibi_slopes: Option<&'a dyn DevicePtr<f32>>,
}

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

    /// Convenience call: plans, allocates the outputs (and workspace) on the engine's stream and runs.
    /// Returns without waiting for the GPU.
    ///
    /// # Errors
    /// Those of [`Engine::plan`], [`AttentionError::BufferTooSmall`] for short inputs,
    /// [`AttentionError::OutOfMemory`] when the outputs and workspace exceed free device memory.
    pub fn forward<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
    ) -> Result<DeviceOutput<T>> {
        let plan = self.plan::<T>(problem, options)?;
        let shape = &problem.shape;
        let out_len = problem.required_len("out")?;
        problem.check_lengths(q.len(), k.len(), v.len(), out_len)?;
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
            out_len * size_of::<T>(),
            lse_len * 4,
            weights_len * 4,
            plan.workspace_bytes,
        ]
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n))
        .ok_or_else(|| AttentionError::SizeOverflow {
            what: "device memory for outputs and workspace",
            detail: format!(
                "{out_len} outputs, {weights_len} weights, {} workspace bytes",
                plan.workspace_bytes
            ),
        })?;
        let (free, _total) = self
            .ctx
            .mem_get_info()
            .context("reading free device memory")?;
        if needed > free {
            return Err(AttentionError::OutOfMemory {
                what: "attention outputs and workspace",
                needed,
                free,
            });
        }

        let stream = &self.stream;
        // SAFETY (all four allocations): every element is written by the kernels before it is read
        // (out, lse and weights by the naive kernels; the workspace by naive_scores).
        let mut out = unsafe { stream.alloc::<T>(out_len) }.context("allocating the output")?;
        let mut lse = options
            .return_lse
            .then(|| unsafe { stream.alloc::<f32>(lse_len) })
            .transpose()
            .context("allocating the logsumexp")?;
        let mut weights = options
            .return_weights
            .then(|| unsafe { stream.alloc::<f32>(weights_len) })
            .transpose()
            .context("allocating the attention weights")?;
        let mut workspace = (plan.workspace_bytes > 0)
            .then(|| unsafe { stream.alloc::<u8>(plan.workspace_bytes) })
            .transpose()
            .context("allocating the naive score workspace")?;
        let alibi_slopes = problem
            .alibi_slopes
            .as_ref()
            .map(|slopes| stream.clone_htod(slopes.as_ref()))
            .transpose()
            .context("uploading the ALiBi slopes")?;
        self.forward_into(
            stream,
            &plan,
            DeviceTensors {
                q,
                k,
                v,
                out: &mut out,
                lse: lse.as_mut().map(|b| b as &mut dyn DevicePtrMut<f32>),
                weights: weights.as_mut().map(|b| b as &mut dyn DevicePtrMut<f32>),
                workspace: workspace.as_mut().map(|b| b as &mut dyn DevicePtrMut<u8>),
                alibi_slopes: alibi_slopes.as_ref().map(|b| b as &dyn DevicePtr<f32>),
            },
        )?;
        Ok(DeviceOutput { out, lse, weights })
    }

    /// Runs `plan` on caller-owned buffers on `stream`: no allocation, no host synchronisation.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] when the plan's dtype differs from `T`, the stream belongs to
    /// another device, or a buffer the plan needs is missing or misaligned;
    /// [`AttentionError::BufferTooSmall`] for a short buffer; a driver error from the launch.
    pub fn forward_into<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &Plan,
        tensors: DeviceTensors<'_, T>,
    ) -> Result<()> {
        if plan.dtype != T::DTYPE {
            return Err(AttentionError::InvalidArgument(format!(
                "the plan was made for {} but the buffers hold {}: plan with the buffers' element type",
                plan.dtype,
                T::DTYPE
            )));
        }
        if stream.context().cu_ctx() != self.ctx.cu_ctx() {
            return Err(AttentionError::InvalidArgument(
                "the stream belongs to another CUDA context: create it from engine.context()"
                    .into(),
            ));
        }
        let problem = &plan.problem;
        let shape = &problem.shape;
        let DeviceTensors {
            q,
            k,
            v,
            out,
            lse,
            weights,
            workspace,
            alibi_slopes,
        } = tensors;
        match (&problem.alibi_slopes, &alibi_slopes) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(AttentionError::InvalidArgument(
                    "pass alibi_slopes in DeviceTensors exactly when the problem has ALiBi slopes"
                        .into(),
                ))
            }
            (Some(_), Some(slopes)) if slopes.len() < shape.heads_q => {
                return Err(AttentionError::BufferTooSmall {
                    tensor: "alibi_slopes",
                    needed: shape.heads_q,
                    len: slopes.len(),
                })
            }
            _ => {}
        }
        problem.check_lengths(q.len(), k.len(), v.len(), out.len())?;
        let lse = required_buffer("lse", lse, plan.options.return_lse, shape.lse_elements()?)?;
        let weights = required_buffer(
            "weights",
            weights,
            plan.options.return_weights,
            shape.score_elements()?,
        )?;
        let workspace = required_buffer(
            "workspace",
            workspace,
            plan.workspace_bytes > 0,
            plan.workspace_bytes,
        )?;

        let (q_ptr, _q_guard) = q.device_ptr(stream);
        let (k_ptr, _k_guard) = k.device_ptr(stream);
        let (v_ptr, _v_guard) = v.device_ptr(stream);
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let (lse_ptr, _lse_guard) = lse.map(|b| b.device_ptr_mut(stream)).unzip();
        let (weights_ptr, _weights_guard) = weights.map(|b| b.device_ptr_mut(stream)).unzip();
        let (workspace_ptr, _workspace_guard) = workspace.map(|b| b.device_ptr_mut(stream)).unzip();
        let (alibi_ptr, _alibi_guard) = alibi_slopes.map(|b| b.device_ptr(stream)).unzip();
        let scores = match plan.kernel {
            KernelKind::Naive => weights_ptr.or(workspace_ptr).unwrap_or(0),
            KernelKind::Flash => 0,
        };
        if scores % 16 != 0 {
            return Err(AttentionError::InvalidArgument(
                "the naive workspace or weights buffer is not 16-byte aligned: pass a buffer from alloc".into(),
            ));
        }
        let params = attention_params(
            problem,
            BufferAddresses {
                q: q_ptr,
                k: k_ptr,
                v: v_ptr,
                out: out_ptr,
                lse: lse_ptr.unwrap_or(0),
                scores,
                alibi_slopes: alibi_ptr.unwrap_or(0),
            },
        );
        let launches = plan_launches(plan, q_ptr, k_ptr, v_ptr)?;
        self.kernels.launch(stream, &launches, &params)
    }
}

/// Checks an optional buffer against the plan: present and long enough when needed.
fn required_buffer<'a, U>(
    tensor: &'static str,
    buffer: Option<&'a mut dyn DevicePtrMut<U>>,
    needed_by_plan: bool,
    needed: usize,
) -> Result<Option<&'a mut dyn DevicePtrMut<U>>> {
    match buffer {
        None if needed_by_plan => Err(AttentionError::InvalidArgument(format!(
            "the plan needs a {tensor} buffer of {needed} elements but none was passed"
        ))),
        Some(b) if b.len() < needed => Err(AttentionError::BufferTooSmall {
            tensor,
            needed,
            len: b.len(),
        }),
        other => Ok(other),
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
}
