//! The flags that shape the scores, shared by `attn check` and `attn weights`: the causal mask, the
//! sliding window, the soft cap, ALiBi and the softmax scale.

use clap::Args;
use cuda_attention::cli::{alibi_slopes, reject, CliResult};
use cuda_attention::AttentionProblem;

#[derive(Args, Debug, Clone)]
pub struct MaskArgs {
    /// Bottom-right-aligned causal mask: query i sees key j iff j <= i + seq_k - seq_q.
    #[arg(long)]
    pub causal: bool,
    /// Sliding window: query i sees keys down to LEFT before its diagonal (default: unbounded).
    #[arg(long, value_name = "LEFT")]
    pub window_left: Option<usize>,
    /// Sliding window: query i sees keys up to RIGHT after its diagonal (default: unbounded).
    #[arg(long, value_name = "RIGHT")]
    pub window_right: Option<usize>,
    /// Soft cap: scaled scores s become CAP * tanh(s / CAP).
    #[arg(long, value_name = "CAP", allow_negative_numbers = true)]
    pub softcap: Option<f32>,
    /// ALiBi with the standard slopes: query head h of H subtracts 2^(-8 (h + 1) / H) * |diagonal - j|.
    #[arg(long)]
    pub alibi: bool,
    /// Softmax scale (default 1/sqrt(head_dim)); larger values sharpen the weights.
    #[arg(long, allow_negative_numbers = true)]
    pub scale: Option<f32>,
}

impl MaskArgs {
    /// `problem` with these masks and score adjustments; with `--alibi`, the slopes of query heads
    /// `first_head..` (as many as the problem has) of `total_heads` (the problem's own heads when it
    /// holds them all, one drawn head otherwise).
    ///
    /// # Errors
    /// [`cuda_attention::cli::CliError::Rejected`] when the slopes do not fit in host memory.
    pub fn apply(
        &self,
        problem: AttentionProblem,
        first_head: usize,
        total_heads: usize,
    ) -> CliResult<AttentionProblem> {
        let mut problem = problem
            .with_causal(self.causal)
            .with_window(self.window_left, self.window_right);
        if let Some(cap) = self.softcap {
            problem = problem.with_softcap(cap);
        }
        if let Some(scale) = self.scale {
            problem = problem.with_scale(scale);
        }
        if self.alibi {
            let count = problem.shape.heads_q;
            problem = problem
                .with_alibi_slopes(alibi_slopes(first_head, count, total_heads).map_err(reject)?);
        }
        Ok(problem)
    }
}

/// The masks and adjustments of `problem` in words, e.g. ` causal window (128, 0) softcap 30 alibi`
/// (empty when it has none; the scale only when it is not the default).
pub fn describe(problem: &AttentionProblem) -> String {
    let mut words = String::new();
    if problem.causal {
        words += " causal";
    }
    let bound = |b: Option<usize>| b.map_or("inf".to_string(), |b| b.to_string());
    if problem.window.left.is_some() || problem.window.right.is_some() {
        words += &format!(
            " window ({}, {})",
            bound(problem.window.left),
            bound(problem.window.right)
        );
    }
    if let Some(cap) = problem.softcap {
        words += &format!(" softcap {cap}");
    }
    if problem.alibi_slopes.is_some() {
        words += " alibi";
    }
    if let Some(scale) = problem.scale {
        words += &format!(" scale {scale}");
    }
    words
}
