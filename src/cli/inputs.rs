//! Random q, k, v for benchmarks and checks, in 16-byte-aligned host storage (the flash kernel loads
//! 16-byte rows, on the GPU and in the emulator alike).

use std::ops::{Deref, DerefMut};

use crate::{AttentionProblem, Element, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Alignment of every host buffer here, in bytes.
const ALIGN: usize = 16;

/// A host buffer of `T` whose first element sits on a 16-byte boundary.
pub struct Aligned<T> {
    storage: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: Element> Aligned<T> {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Self {
        let spare = ALIGN / size_of::<T>();
        let storage = vec![value; len + spare];
        let offset = storage.as_ptr().align_offset(ALIGN);
        assert!(
            offset <= spare,
            "a Vec of {} cannot be aligned to {ALIGN} bytes",
            T::DTYPE
        );
        Aligned {
            storage,
            offset,
            len,
        }
    }

    /// Copies `values` into aligned storage.
    pub fn from_slice(values: &[T]) -> Self {
        let mut aligned = Aligned::filled(values.len(), T::default());
        aligned.copy_from_slice(values);
        aligned
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.storage[self.offset..self.offset + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// `len` values uniform in [-1, 1), deterministic for `seed`.
pub fn uniform<T: Element>(len: usize, seed: u64) -> Aligned<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Aligned::filled(len, T::default());
    for x in values.iter_mut() {
        *x = T::from_f32(rng.random_range(-1.0..1.0));
    }
    values
}

/// q, k and v, sized for a problem's strides.
pub struct Inputs<T> {
    pub q: Aligned<T>,
    pub k: Aligned<T>,
    pub v: Aligned<T>,
}

impl<T: Element> Inputs<T> {
    /// Deterministic inputs for `seed`, uniform in [-1, 1).
    pub fn random(problem: &AttentionProblem, seed: u64) -> Result<Self> {
        Ok(Inputs {
            q: uniform(problem.required_len(Tensor::Q)?, seed.wrapping_mul(3)),
            k: uniform(problem.required_len(Tensor::K)?, seed.wrapping_mul(3) + 1),
            v: uniform(problem.required_len(Tensor::V)?, seed.wrapping_mul(3) + 2),
        })
    }

    /// `len` values per tensor, uniform in [-1, 1): storage a sweep slices every shape from.
    pub fn random_len(len: usize, seed: u64) -> Self {
        Inputs {
            q: uniform(len, seed.wrapping_mul(3)),
            k: uniform(len, seed.wrapping_mul(3) + 1),
            v: uniform(len, seed.wrapping_mul(3) + 2),
        }
    }

    /// A copy with every tensor rotated by `shift` elements: other values at other addresses, made at
    /// the speed of a copy.
    pub fn rotated(&self, shift: usize) -> Self {
        let rotate = |x: &Aligned<T>| {
            let mut copy = Aligned::from_slice(x);
            if !copy.is_empty() {
                let n = copy.len();
                copy.rotate_left(shift % n);
            }
            copy
        };
        Inputs {
            q: rotate(&self.q),
            k: rotate(&self.k),
            v: rotate(&self.v),
        }
    }
}
