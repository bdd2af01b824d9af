//! The table of shapes (ragged lengths, odd head dims, GQA/MQA, causal, three memory orders), random
//! inputs for a problem, and the standard ALiBi slopes.

use cuda_attention::Tensor;
use cuda_attention::{AttentionProblem, AttentionShape, Element, Layout, Strides};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::common;

/// Memory order of the four tensors in a case.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    Bshd,
    Bhsd,
    /// q and out `[b, s, h, d]` with padding after each head, row and batch; k and v `[b, h, s, d]`
    /// with padding too, so no stride equals the contiguous one.
    Padded,
}

/// One shape of the table.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub order: Order,
}

#[allow(clippy::too_many_arguments)]
pub const fn case(
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
    causal: bool,
    order: Order,
) -> Case {
    Case {
        batch,
        seq_q,
        seq_k,
        heads_q,
        heads_kv,
        head_dim,
        causal,
        order,
    }
}

/// Ragged lengths, odd head dims, GQA/MQA, causal with seq_q < seq_k and seq_q > seq_k, three layouts,
/// an empty key sequence.
pub const CASES: &[Case] = &[
    case(1, 1, 1, 1, 1, 64, false, Order::Bshd),
    case(1, 31, 33, 4, 2, 40, false, Order::Bhsd),
    case(1, 31, 33, 4, 2, 40, true, Order::Padded),
    case(1, 113, 203, 2, 1, 59, true, Order::Padded),
    case(1, 113, 203, 1, 1, 64, false, Order::Bshd),
    case(2, 33, 17, 4, 1, 128, true, Order::Bshd),
    case(1, 33, 17, 4, 2, 59, false, Order::Bhsd),
    case(2, 2, 5, 2, 2, 1, true, Order::Bshd),
    case(1, 5, 2, 4, 1, 64, true, Order::Padded),
    case(3, 1, 147, 4, 2, 128, false, Order::Padded),
    case(1, 1, 147, 4, 1, 40, true, Order::Bhsd),
    case(2, 17, 0, 4, 2, 40, false, Order::Bshd),
    case(1, 9, 0, 2, 1, 64, true, Order::Padded),
    case(1, 64, 64, 2, 2, 128, true, Order::Bhsd),
];

impl Case {
    pub fn problem(&self) -> AttentionProblem {
        let shape = AttentionShape::new(self.batch, self.seq_q, self.heads_q, self.head_dim)
            .with_seq_k(self.seq_k)
            .with_heads_kv(self.heads_kv);
        let problem = AttentionProblem::new(shape).with_causal(self.causal);
        match self.order {
            Order::Bshd => problem.with_layout(Layout::Bshd),
            Order::Bhsd => problem.with_layout(Layout::Bhsd),
            Order::Padded => {
                let d = self.head_dim;
                let head = d + 2;
                let seq = self.heads_q * head + 3;
                let q = Strides {
                    batch: self.seq_q * seq + 5,
                    seq,
                    head,
                };
                let kv_head = self.seq_k * (d + 1) + 2;
                let kv = Strides {
                    batch: self.heads_kv * kv_head + 4,
                    seq: d + 1,
                    head: kv_head,
                };
                problem.with_strides(q, kv, kv, q)
            }
        }
    }

    /// Query rows that see no key.
    pub fn fully_masked_rows(&self) -> usize {
        if self.seq_k == 0 {
            self.seq_q
        } else if self.causal {
            self.seq_q.saturating_sub(self.seq_k)
        } else {
            0
        }
    }
}

/// Random q, k, v of the lengths the problem's strides need (padding included).
pub fn inputs<T: Element>(
    problem: &AttentionProblem,
    seed: u64,
    range: f32,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = common::random(&mut rng, problem.required_len(Tensor::Q).unwrap(), range);
    let k = common::random(&mut rng, problem.required_len(Tensor::K).unwrap(), range);
    let v = common::random(&mut rng, problem.required_len(Tensor::V).unwrap(), range);
    (q, k, v)
}

/// The standard ALiBi slopes for `heads` heads: `m_h = 2^(-8 (h + 1) / heads)`.
pub fn geometric_slopes(heads: usize) -> Vec<f32> {
    (0..heads)
        .map(|h| (-8.0 * (h + 1) as f64 / heads as f64).exp2() as f32)
        .collect()
}
