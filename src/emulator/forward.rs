//! Attention through the emulated kernels, on host slices: the same plan, launches and parameters as
//! the GPU engine, validated like the CPU backend.

use super::{Emulator, Schedule};
use crate::dtype::Element;
use crate::error::{AttentionError, Result};
use crate::launch::plan_launches;
use crate::params::{attention_params, BufferAddresses};
use crate::plan::{ForwardOptions, KernelKind, Plan};
use crate::problem::AttentionProblem;

/// What [`Emulator::forward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorOutput<T> {
    /// Output laid out per `problem.out_strides`, `problem.required_len("out")` elements (gaps between
    /// strided rows are `T::default()`).
    pub out: Vec<T>,
    /// Logsumexp `[batch, heads_q, seq_q]` (natural log, `-inf` for a row that sees no key), if asked.
    pub lse: Option<Vec<f32>>,
    /// Attention weights `[batch, heads_q, seq_q, seq_k]` (0 where masked), if asked.
    pub weights: Option<Vec<f32>>,
}

impl Emulator {
    /// Validates `problem` for element type `T` and picks the kernel, as the GPU engine would on an
    /// sm_80 device.
    ///
    /// # Errors
    /// The problem's validation error, or [`AttentionError::KernelUnsupported`].
    pub fn plan<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
    ) -> Result<Plan> {
        Plan::new(problem, T::DTYPE, options, self.caps())
    }

    /// Runs attention on the emulated device into newly allocated buffers (lse and weights when
    /// `options` asks for them).
    ///
    /// # Errors
    /// As [`Emulator::forward_into`].
    pub fn forward<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Result<EmulatorOutput<T>> {
        problem.validate()?;
        let shape = problem.shape;
        let mut out = vec![T::default(); problem.required_len("out")?];
        let mut lse = options
            .return_lse
            .then(|| shape.lse_elements())
            .transpose()?
            .map(|n| vec![0.0f32; n]);
        let mut weights = options
            .return_weights
            .then(|| shape.score_elements())
            .transpose()?
            .map(|n| vec![0.0f32; n]);
        self.forward_into(
            problem,
            options,
            q,
            k,
            v,
            &mut out,
            lse.as_deref_mut(),
            weights.as_deref_mut(),
        )?;
        Ok(EmulatorOutput { out, lse, weights })
    }

    /// Runs attention on the emulated device into caller-owned buffers: `out` through
    /// `problem.out_strides` (elements outside the strided tensor are left alone), and, when given, the
    /// contiguous f32 logsumexp `[batch, heads_q, seq_q]` and weights `[batch, heads_q, seq_q, seq_k]`.
    /// The plan and the launches are exactly the GPU engine's on an sm_80 device ([`crate::launch`]);
    /// the naive kernel's f32 score workspace, when no weights buffer is given, is allocated here and
    /// filled with NaN.
    ///
    /// # Errors
    /// Whatever [`AttentionProblem::validate`] reports; [`AttentionError::BufferTooSmall`] naming the
    /// first of q, k, v, out, lse and weights that is too short; [`AttentionError::InvalidArgument`] when
    /// `options` asks for the logsumexp or the weights and no buffer is given;
    /// [`AttentionError::KernelUnsupported`] when the chosen kernel cannot run this problem (flash with
    /// buffers that are not 16-byte aligned);
    /// [`AttentionError::Emulation`] when a kernel breaks a rule the emulator checks.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_into<T: Element>(
        &self,
        problem: &AttentionProblem,
        options: ForwardOptions,
        q: &[T],
        k: &[T],
        v: &[T],
        out: &mut [T],
        lse: Option<&mut [f32]>,
        weights: Option<&mut [f32]>,
    ) -> Result<()> {
        let plan = self.plan::<T>(problem, options)?;
        problem.check_lengths(q.len(), k.len(), v.len(), out.len())?;
        let shape = problem.shape;
        let lse = checked_output("lse", lse, options.return_lse, shape.lse_elements()?)?;
        let weights = checked_output(
            "weights",
            weights,
            options.return_weights,
            shape.score_elements()?,
        )?;
        let launches = plan_launches(
            &plan,
            q.as_ptr() as u64,
            k.as_ptr() as u64,
            v.as_ptr() as u64,
        )?;

        // Naive: S, then P in place, in the caller's weights buffer or a NaN-filled workspace (a kernel
        // that reads a score it never wrote then shows NaN). Flash writes no scores.
        let mut workspace = Vec::new();
        let scores = match (plan.kernel, weights) {
            (KernelKind::Flash, _) => std::ptr::null_mut(),
            (KernelKind::Naive, Some(buffer)) => buffer.as_mut_ptr(),
            (KernelKind::Naive, None) => {
                workspace = vec![f32::NAN; shape.score_elements()?];
                workspace.as_mut_ptr()
            }
        };
        let params = attention_params(
            problem,
            BufferAddresses {
                q: q.as_ptr() as u64,
                k: k.as_ptr() as u64,
                v: v.as_ptr() as u64,
                out: out.as_mut_ptr() as u64,
                lse: lse.map_or(0, |buffer| buffer.as_mut_ptr() as u64),
                scores: scores as u64,
                alibi_slopes: problem
                    .alibi_slopes
                    .as_ref()
                    .map_or(0, |s| s.as_ptr() as u64),
            },
        );
        for launch in &launches {
            // SAFETY: the problem is validated and every buffer was checked to hold what its shape and
            // strides reach (q, k, v, out by check_lengths; lse, scores by checked_output or allocated
            // with score_elements), so the kernels stay inside them; the exclusive borrows of out, lse
            // and weights (and the local workspace) keep other code away during the launches.
            unsafe { self.launch(launch, &params)? };
        }
        drop(workspace);
        Ok(())
    }
}

/// Runs attention through the emulated kernels under `schedule` into caller-owned buffers: shorthand for
/// `Emulator::new().with_schedule(schedule).forward_into(...)`.
///
/// # Errors
/// As [`Emulator::forward_into`].
#[allow(clippy::too_many_arguments)]
pub fn attention_into<T: Element>(
    problem: &AttentionProblem,
    options: ForwardOptions,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    lse: Option<&mut [f32]>,
    weights: Option<&mut [f32]>,
    schedule: Schedule,
) -> Result<()> {
    Emulator::new()
        .with_schedule(schedule)
        .forward_into(problem, options, q, k, v, out, lse, weights)
}

/// An optional output buffer: required when asked for, and at least `needed` long when given.
fn checked_output<'a>(
    tensor: &'static str,
    buffer: Option<&'a mut [f32]>,
    required: bool,
    needed: usize,
) -> Result<Option<&'a mut [f32]>> {
    match buffer {
        None if required => Err(AttentionError::InvalidArgument(format!(
            "the options ask for the {tensor} but no {tensor} buffer was passed: pass one of {needed} f32 values"
        ))),
        Some(buffer) if buffer.len() < needed => {
            Err(AttentionError::BufferTooSmall { tensor, needed, len: buffer.len() })
        }
        other => Ok(other),
    }
}
