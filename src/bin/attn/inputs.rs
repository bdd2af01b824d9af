//! Random q, k, v for benchmarks and checks.

use cuda_attention::{AttentionProblem, Element, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// q, k and v filled with uniform values in [-1, 1), sized for `problem`'s strides.
pub struct Inputs<T> {
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub v: Vec<T>,
}

impl<T: Element> Inputs<T> {
    /// Deterministic inputs for `seed`.
    pub fn random(problem: &AttentionProblem, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut fill = |len: usize| -> Vec<T> {
            (0..len)
                .map(|_| T::from_f32(rng.random_range(-1.0..1.0)))
                .collect()
        };
        Ok(Inputs {
            q: fill(problem.required_len("q")?),
            k: fill(problem.required_len("k")?),
            v: fill(problem.required_len("v")?),
        })
    }
}
