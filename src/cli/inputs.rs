//! Random q, k, v for benchmarks and checks, in 16-byte-aligned host storage (the flash kernel loads
//! 16-byte rows, on the GPU and in the emulator alike), allocated through the host memory guard
//! ([`crate::host_memory`]): a size too large for this machine is an error, never an abort.

use std::ops::{Deref, DerefMut};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::host_memory::vec_filled;
use crate::{AttentionError, AttentionProblem, Element, Result, Tensor};

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
    ///
    /// # Errors
    /// [`AttentionError::SizeOverflow`] or [`AttentionError::OutOfMemory`] (host) naming `what`.
    pub fn filled(what: &'static str, len: usize, value: T) -> Result<Self> {
        let spare = ALIGN / size_of::<T>();
        let padded = len
            .checked_add(spare)
            .ok_or_else(|| AttentionError::SizeOverflow {
                what,
                detail: format!("{len} elements"),
            })?;
        let storage = vec_filled(what, padded, value)?;
        let offset = storage.as_ptr().align_offset(ALIGN);
        if offset > spare {
            return Err(AttentionError::InvalidArgument(format!(
                "a buffer of {} cannot be aligned to {ALIGN} bytes",
                T::DTYPE
            )));
        }
        Ok(Aligned {
            storage,
            offset,
            len,
        })
    }

    /// Copies `values` into aligned storage.
    ///
    /// # Errors
    /// As [`Aligned::filled`].
    pub fn from_slice(what: &'static str, values: &[T]) -> Result<Self> {
        let mut aligned = Aligned::filled(what, values.len(), T::default())?;
        aligned.copy_from_slice(values);
        Ok(aligned)
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
///
/// # Errors
/// As [`Aligned::filled`].
pub fn uniform<T: Element>(what: &'static str, len: usize, seed: u64) -> Result<Aligned<T>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Aligned::filled(what, len, T::default())?;
    for x in values.iter_mut() {
        *x = T::from_f32(rng.random_range(-1.0..1.0));
    }
    Ok(values)
}

/// q, k and v, sized for a problem's strides.
pub struct Inputs<T> {
    /// q.
    pub q: Aligned<T>,
    /// k.
    pub k: Aligned<T>,
    /// v.
    pub v: Aligned<T>,
}

impl<T: Element> Inputs<T> {
    /// Deterministic inputs for `seed`, uniform in [-1, 1).
    ///
    /// # Errors
    /// The problem's size errors, and those of [`Aligned::filled`].
    pub fn random(problem: &AttentionProblem, seed: u64) -> Result<Self> {
        Ok(Inputs {
            q: uniform("q", problem.required_len(Tensor::Q)?, seed.wrapping_mul(3))?,
            k: uniform(
                "k",
                problem.required_len(Tensor::K)?,
                seed.wrapping_mul(3) + 1,
            )?,
            v: uniform(
                "v",
                problem.required_len(Tensor::V)?,
                seed.wrapping_mul(3) + 2,
            )?,
        })
    }

    /// `len` values per tensor, uniform in [-1, 1): storage a sweep slices every shape from.
    ///
    /// # Errors
    /// As [`Aligned::filled`].
    pub fn random_len(len: usize, seed: u64) -> Result<Self> {
        Ok(Inputs {
            q: uniform("q", len, seed.wrapping_mul(3))?,
            k: uniform("k", len, seed.wrapping_mul(3) + 1)?,
            v: uniform("v", len, seed.wrapping_mul(3) + 2)?,
        })
    }

    /// A copy with every tensor rotated by `shift` elements: other values at other addresses, made at
    /// the speed of a copy.
    ///
    /// # Errors
    /// As [`Aligned::filled`].
    pub fn rotated(&self, shift: usize) -> Result<Self> {
        let rotate = |what, x: &Aligned<T>| -> Result<Aligned<T>> {
            let mut copy = Aligned::from_slice(what, x)?;
            if !copy.is_empty() {
                let n = copy.len();
                copy.rotate_left(shift % n);
            }
            Ok(copy)
        };
        Ok(Inputs {
            q: rotate("q", &self.q)?,
            k: rotate("k", &self.k)?,
            v: rotate("v", &self.v)?,
        })
    }
}
