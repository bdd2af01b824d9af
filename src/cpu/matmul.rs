//! The two products of the CPU backend's tile loop, on row-major f32 tiles, through the `gemm` crate's
//! micro-kernels (runtime-dispatched to AVX-512, AVX2 + FMA or the baseline; single-threaded here: the
//! backend parallelises over tasks). `gemm` was chosen over `matrixmultiply` by measurement on the
//! tile shapes these calls see (BENCHMARKS.md, "CPU backend").
//!
//! Every call checks the slice lengths against the dimensions before handing pointers to `gemm`, so the
//! unsafe call never reads or writes outside the slices.

/// A row-major matrix view: `rows` rows of `cols` values, row `r` starting at `r * stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl Dims {
    /// Elements a slice needs to hold this view.
    fn span(self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.stride + self.cols
        }
    }

    fn fits(self, len: usize) -> bool {
        self.span() <= len && (self.rows <= 1 || self.cols <= self.stride)
    }
}

/// `dst = a b^T` with `a` `[m][k]`, `b` `[n][k]` and `dst` `[m][n]` (the scores `S = Q K^T`).
pub(super) fn product_nt(dst: &mut [f32], d: Dims, a: &[f32], ad: Dims, b: &[f32], bd: Dims) {
    call(
        dst,
        d,
        false,
        a,
        ad,
        b,
        bd,
        (1, bd.stride),
        (bd.cols, bd.rows),
    );
}

/// `dst += a b` with `a` `[m][k]`, `b` `[k][n]` and `dst` `[m][n]` (the output `O += P V`).
pub(super) fn accumulate_nn(dst: &mut [f32], d: Dims, a: &[f32], ad: Dims, b: &[f32], bd: Dims) {
    call(
        dst,
        d,
        true,
        a,
        ad,
        b,
        bd,
        (bd.stride, 1),
        (bd.rows, bd.cols),
    );
}

/// `dst = (accumulate ? dst : 0) + a B`, where B is `b` read as a `[k][n]` matrix (`b_shape`) with
/// `(row step, column step)` = `b_steps`.
#[allow(clippy::too_many_arguments)]
fn call(
    dst: &mut [f32],
    d: Dims,
    accumulate: bool,
    a: &[f32],
    ad: Dims,
    b: &[f32],
    bd: Dims,
    b_steps: (usize, usize),
    b_shape: (usize, usize),
) {
    let k = ad.cols;
    assert!(
        ad.rows == d.rows && b_shape == (k, d.cols),
        "[{}x{}] x [{}x{}] into [{}x{}]",
        ad.rows,
        k,
        b_shape.0,
        b_shape.1,
        d.rows,
        d.cols
    );
    assert!(
        d.fits(dst.len()) && ad.fits(a.len()) && bd.fits(b.len()),
        "matrix views exceed their slices"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(d.stride).take(d.rows) {
                row[..d.cols].fill(0.0);
            }
        }
        return;
    }
    let isize_of = |x: usize| isize::try_from(x).expect("tile strides fit in isize");
    // SAFETY: the views were checked to lie inside their slices (`fits`): dst spans
    // (rows - 1) * stride + cols elements, a the same for [m][k], and B [k][n] read at
    // x * b_steps.0 + j * b_steps.1, whose largest offset is that of bd's last element; dst does not
    // alias a or b (a unique borrow against two shared ones). gemm computes
    // dst := alpha dst + beta a B and only reads dst when `read_dst` is true.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            k,
            dst.as_mut_ptr(),
            1,
            isize_of(d.stride),
            accumulate,
            a.as_ptr(),
            1,
            isize_of(ad.stride),
            b.as_ptr(),
            isize_of(b_steps.1),
            isize_of(b_steps.0),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|x| a(i, x) as f64 * b(x, j) as f64).sum();
            }
        }
        c
    }

    #[test]
    fn products_match_a_plain_loop_with_strides_and_ragged_sizes() {
        for &(m, n, k) in &[(1, 1, 1), (5, 33, 7), (64, 113, 64), (31, 64, 128)] {
            let stride = n + 3;
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37) % 17) as f32 * 0.25 - 2.0)
                .collect();
            let bt: Vec<f32> = (0..n * k)
                .map(|i| ((i * 11) % 13) as f32 * 0.5 - 3.0)
                .collect();
            let mut s = vec![f32::NAN; m * stride];
            let dims = |rows, cols, stride| Dims { rows, cols, stride };
            product_nt(
                &mut s,
                dims(m, n, stride),
                &a,
                dims(m, k, k),
                &bt,
                dims(n, k, k),
            );
            let expected = naive(m, n, k, |i, x| a[i * k + x], |x, j| bt[j * k + x]);
            for i in 0..m {
                for j in 0..n {
                    assert!(
                        (s[i * stride + j] as f64 - expected[i * n + j]).abs() <= 1e-3,
                        "S ({i}, {j})"
                    );
                }
                assert!(
                    s[i * stride + n..(i + 1) * stride]
                        .iter()
                        .all(|x| x.is_nan()),
                    "padding untouched"
                );
            }
            // dst += S V with V [n][k].
            let v: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
            let mut o = vec![1.0f32; m * k];
            accumulate_nn(
                &mut o,
                dims(m, k, k),
                &s,
                dims(m, n, stride),
                &v,
                dims(n, k, k),
            );
            let expected = naive(m, k, n, |i, j| s[i * stride + j], |j, x| v[j * k + x]);
            for (got, want) in o.iter().zip(&expected) {
                assert!((*got as f64 - (want + 1.0)).abs() <= 1e-3 * want.abs().max(1.0));
            }
        }
    }
}
