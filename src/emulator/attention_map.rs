//! Attention maps through the emulated kernels ([`crate::attention_map`]): the forward pass with the
//! logsumexp, then the `attention_map_*` kernel, on host slices.

use super::Emulator;
use crate::attention_map::{map_launch, map_params, HostAttentionMap, MapSpec};
use crate::binding::check_inputs;
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::host_memory::vec_filled;
use crate::plan::ForwardOptions;
use crate::problem::AttentionProblem;

impl Emulator {
    /// The attention map of `problem` described by `spec`: the forward pass (the plan's kernel, flash
    /// where it serves the problem) with the logsumexp, then the map kernel over the same q and k.
    ///
    /// # Errors
    /// Those of [`MapSpec::layout`], short inputs ([`AttentionError::BufferTooSmall`]), buffers too large
    /// for this machine ([`AttentionError::OutOfMemory`]), no map kernel for `T`
    /// ([`AttentionError::KernelUnsupported`]), and those of [`Emulator::forward`].
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
        let launch = map_launch(&problem.shape, T::DTYPE)?;
        layout.check_host_budget(0)?;
        let lse = self
            .forward(problem, ForwardOptions::default().with_lse(true), q, k, v)?
            .lse
            .ok_or_else(|| {
                AttentionError::InvalidArgument("the forward pass returned no lse".into())
            })?;
        let mut values = vec_filled("attention map values", layout.values, 0.0f32)?;
        let mut key_profile = vec_filled("attention map key profile", layout.profile, 0.0f32)?;
        let params = crate::sys::AttentionParams {
            q: q.as_ptr().cast(),
            k: k.as_ptr().cast(),
            v: v.as_ptr().cast(),
            lse: lse.as_ptr().cast_mut(),
            alibi_slopes: problem
                .alibi_slopes
                .as_deref()
                .map_or(std::ptr::null(), <[f32]>::as_ptr),
            map_values: values.as_mut_ptr(),
            map_key_profile: key_profile.as_mut_ptr(),
            block_row_offsets: problem
                .block_mask
                .as_deref()
                .map_or(std::ptr::null(), |m| m.row_offsets().as_ptr()),
            block_col_indices: problem
                .block_mask
                .as_deref()
                .map_or(std::ptr::null(), |m| m.col_indices().as_ptr()),
            ..map_params(problem, &layout)
        };
        // SAFETY: the problem is validated and q, k, v reach what its shape and strides address
        // (check_inputs); lse holds the forward's [batch, heads_q, seq_q] (read only, through the strides
        // problem_params gives it); the slopes are the problem's [heads_q] (validated); values and
        // key_profile are the layout's exact sizes, owned here and written only by the kernel; the block
        // mask's lists are the problem's (validated, read only, clamped by the kernel).
        unsafe { self.launch(&launch, &params)? };
        Ok(layout.output(values, key_profile))
    }
}
