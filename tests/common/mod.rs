//! Helpers shared by the integration tests (each test crate includes this module with `mod common;`).
#![allow(dead_code)] // each test crate uses a different subset

pub mod backends;
pub mod cpu_support;
pub mod guarded;

use cuda_attention::Element;
use rand::rngs::StdRng;
use rand::Rng;

/// `len` values uniform in `[-magnitude, magnitude)`, rounded to `T`.
pub fn random<T: Element>(rng: &mut StdRng, len: usize, magnitude: f32) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32(rng.random_range(-magnitude..magnitude)))
        .collect()
}

/// Values in 16-byte-aligned storage (the tensor-core kernels load 16-byte rows with cp.async, and the
/// binding step refuses q, k and v that are not aligned for them).
pub struct Aligned<T> {
    storage: Vec<u128>,
    len: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> Aligned<T> {
    /// `len` values uniform in `[-magnitude, magnitude)`.
    pub fn random(len: usize, magnitude: f32, rng: &mut StdRng) -> Self {
        Aligned::from_slice(&random::<T>(rng, len, magnitude))
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        let bytes = std::mem::size_of_val(values);
        let mut storage = vec![0u128; bytes.div_ceil(16).max(1)];
        // SAFETY: storage holds at least `bytes` bytes, and T is a plain number type.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr() as *const u8,
                storage.as_mut_ptr() as *mut u8,
                bytes,
            )
        };
        Aligned {
            storage,
            len: values.len(),
            _marker: std::marker::PhantomData,
        }
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the storage holds len values of T and is 16-byte aligned.
        unsafe { std::slice::from_raw_parts(self.storage.as_ptr() as *const T, self.len) }
    }
}
