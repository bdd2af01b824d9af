//! Helpers shared by the integration tests (each test crate includes this module with `mod common;`).

use cuda_attention::Element;
use rand::rngs::StdRng;
use rand::Rng;

/// `len` values uniform in `[-magnitude, magnitude)`, rounded to `T`.
pub fn random<T: Element>(rng: &mut StdRng, len: usize, magnitude: f32) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32(rng.random_range(-magnitude..magnitude)))
        .collect()
}
