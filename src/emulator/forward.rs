//! Attention through the emulated kernels, on host slices: the same plan, launches and binding step as
//! the GPU engine.

use super::hopper::TensorMap;
use super::Emulator;
use crate::binding::{bind, bind_append, check_plan, HostKvAppend, HostOutput, HostTensors};
use crate::dtype::Element;
use crate::error::Result;
use crate::host_memory::forward_host;
use crate::launch::{append_launch, merge_launch};
use crate::merge::{bind_merge, HostMergeTensors, MergeLayout};
use crate::metadata::Metadata;
use crate::plan::{ForwardOptions, KernelChoice, Plan};
use crate::problem::AttentionProblem;
use crate::tensor_maps::attach_tensor_maps;

impl Emulator {
    /// Validates `problem` for element type `T` and picks the kernel, as the GPU engine would on an
    /// sm_80 device; [`KernelChoice::FlashSm90`] plans for the emulated sm_90a device instead
    /// ([`Emulator::hopper_caps`]).
    ///
    /// # Errors
    /// The problem's validation error, or [`AttentionError::KernelUnsupported`].
    pub fn plan<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
    ) -> Result<Plan> {
        let caps = if options.kernel == KernelChoice::FlashSm90 {
            self.hopper_caps()
        } else {
            self.caps()
        };
        Plan::new(problem, T::DTYPE, options, caps)
    }

    /// Plans, allocates the outputs (within the host memory budget, before any of them) and runs.
    ///
    /// # Errors
    /// Those of [`Emulator::plan`], short inputs ([`AttentionError::BufferTooSmall`]), outputs too large
    /// for this machine ([`AttentionError::OutOfMemory`]), and those of [`Emulator::forward_into`].
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

    /// [`Emulator::forward`] for a ragged batch and its metadata (host slices, read by the kernels as
    /// device memory).
    ///
    /// # Errors
    /// As [`Emulator::forward`].
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

    /// Writes `rows` new K/V rows into the paged cache of `problem` through the slot mapping, with the
    /// append kernel (the binding step [`crate::binding::bind_append`] checks the buffers).
    ///
    /// # Errors
    /// The binding step's errors; [`AttentionError::KernelUnsupported`] when no append kernel serves `T`;
    /// [`AttentionError::Emulation`] when the kernel breaks a rule the emulator checks.
    pub fn append_kv_into<T: Element>(
        &self,
        problem: &AttentionProblem,
        rows: usize,
        tensors: HostKvAppend<'_, T>,
    ) -> Result<()> {
        let params = bind_append(problem, rows, &tensors.regions())?;
        let s = &problem.shape;
        let launch = append_launch(s.heads_kv, s.head_dim, rows, T::DTYPE)?;
        // SAFETY: the binding step checked every buffer against the validated problem, and the exclusive
        // borrows of the caches keep other code away during the launch.
        unsafe { self.launch(&launch, &params) }
    }

    /// Merges two attention states (see [`crate::merge`]) with the merge kernel.
    ///
    /// # Errors
    /// The binding step's errors ([`crate::merge::bind_merge`]); no merge kernel for `T`; an emulation
    /// error.
    pub fn merge_states_into<T: Element>(
        &self,
        layout: &MergeLayout,
        tensors: HostMergeTensors<'_, T>,
    ) -> Result<()> {
        let params = bind_merge(layout, &tensors.regions())?;
        let launch = merge_launch(layout.rows, layout.heads, layout.head_dim, T::DTYPE)?;
        // SAFETY: the binding step checked every buffer against the layout; the exclusive borrows of the
        // outputs keep other code away during the launch.
        unsafe { self.launch(&launch, &params) }
    }

    /// Runs `plan` on the emulated device into caller-owned host buffers: the launches and the binding
    /// step are exactly the GPU engine's ([`crate::binding::bind`]). When the problem has ALiBi slopes or
    /// sinks and the bundle none, the problem's own values are read.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] for a plan made for another element type or for the CPU
    /// backend; the binding step's errors; [`AttentionError::Emulation`] when a kernel breaks a rule the
    /// emulator checks.
    pub fn forward_into<T: Element>(&self, plan: &Plan, tensors: HostTensors<'_, T>) -> Result<()> {
        check_plan(plan, T::DTYPE, false, "Emulator::plan")?;
        let mut params = bind(plan, &tensors.regions_with_slopes_of(plan.problem()))?;
        attach_tensor_maps(plan, &mut params, |request| {
            // SAFETY: the map holds the address of a tensor that the binding step checked against the
            // plan; `tensors` borrows it for this whole call, and the map lives in `params` only.
            unsafe { TensorMap::encode_tiled(request.address as *const u8, &request.spec) }
                .map(|map| map.0)
        })?;
        for launch in plan.launches() {
            // SAFETY: the binding step checked every buffer against the validated problem (lengths reach
            // what the shape and strides address, alignment, no output overlapping another buffer), and
            // the exclusive borrows of out, lse, weights and workspace keep other code away during the
            // launches.
            unsafe { self.launch(launch, &params)? };
        }
        Ok(())
    }
}
