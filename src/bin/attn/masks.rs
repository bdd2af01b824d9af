//! The flags that shape the scores, shared by `attn check` and `attn weights`: the causal mask, the
//! sliding window, a block-sparse pattern, the soft cap, ALiBi and the softmax scale.

use clap::Args;
use cuda_attention::cli::sparse_spec::SparseSpec;
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
    /// Block-sparse mask (self-attention): bigbird[:block=64,window=1,global=1,random=3,seed=0] or
    /// longformer[:block=64,window=256,global=0+511] (window in blocks for bigbird, tokens for longformer).
    #[arg(long, value_name = "SPEC")]
    pub sparse: Option<SparseSpec>,
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
        if let Some(spec) = &self.sparse {
            let s = problem.shape;
            if s.seq_q != s.seq_k {
                return Err(reject(format!(
                    "--sparse {} is a self-attention pattern: it needs seq_q == seq_k (got {} and {})",
                    spec.name(),
                    s.seq_q,
                    s.seq_k
                )));
            }
            problem = problem.with_block_mask(spec.build(s.seq_q).map_err(reject)?);
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
    if let Some(mask) = &problem.block_mask {
        words += &format!(
            " block-sparse {}x{} ({:.1}% of blocks)",
            mask.block_q(),
            mask.block_k(),
            100.0 * mask.density()
        );
    }
    if problem.alibi_slopes.is_some() {
        words += " alibi";
    }
    if let Some(scale) = problem.scale {
        words += &format!(" scale {scale}");
    }
    words
}
