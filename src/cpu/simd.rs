//! The CPU backend's softmax arithmetic over a row of scores, written as plain lane loops that the
//! compiler vectorises, compiled three times (AVX-512, AVX2 + FMA, and the baseline) and chosen at run
//! time by the CPU's features: the binary never requires AVX2 or AVX-512.
//!
//! - [`row_max`]: the maximum, NaN if any score is NaN (`f32::max` would drop a NaN and hide bad input).
//! - [`exp_shifted`]: `p = exp(s - m)` in place, `-inf` scores giving exactly 0, and the sum of `p`.
//!
//! `exp` is a Cody-Waite range reduction (`x = n ln 2 + r`, `|r| <= ln 2 / 2`) and a degree-7 polynomial
//! for `e^r` (the Taylor coefficients, whose truncation error `r^8 / 8!` is below 2^-30 on that range),
//! scaled by `2^n` through the exponent bits. Its error is within 2 ulp of the correctly rounded result
//! on `[-87, 0]` (checked against f64 in the tests below); below -87 it returns 0 (true value < 2^-125).
//! NaN in gives NaN out.

/// Lanes per step: one AVX-512 register of f32 (two AVX2 registers, four SSE ones).
const LANES: usize = 16;

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in two: `LN2_HI` has few enough mantissa bits that `n * LN2_HI` is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 * 2^23`: adding it rounds a float of magnitude below 2^22 to an integer, held in the low
/// mantissa bits of the sum.
const ROUNDER: f32 = 12_582_912.0;
/// Below this, `exp` returns 0.
const UNDERFLOW: f32 = -87.0;

/// `a * b + c`, fused where the caller is compiled with FMA (`f32::mul_add` would call the C library
/// without it).
#[inline(always)]
fn mad<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` for `x <= 0` (or NaN, which it returns); `-inf` and anything below [`UNDERFLOW`] give 0.
#[inline(always)]
fn exp_lane<const FMA: bool>(x: f32) -> f32 {
    // Comparisons with NaN are false: a NaN goes through and comes out NaN.
    let clamped = if x < UNDERFLOW { UNDERFLOW } else { x };
    let shifted = mad::<FMA>(clamped, LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = mad::<FMA>(-n, LN2_LO, mad::<FMA>(-n, LN2_HI, clamped));
    // e^r = 1 + r + r^2/2! + ... + r^7/7!, in Horner form.
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = mad::<FMA>(p, r, c);
    }
    // 2^n through the exponent field: n is in [-126, 0] here, so the biased exponent is in [1, 127].
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDER.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < UNDERFLOW {
        0.0
    } else {
        p * scale
    }
}

#[inline(always)]
fn row_max_body<const FMA: bool>(scores: &[f32]) -> f32 {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = scores.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let x = chunk[lane];
            max[lane] = if x > max[lane] { x } else { max[lane] };
            nan[lane] |= x.is_nan();
        }
    }
    for (lane, &x) in tail.iter().enumerate() {
        max[lane] = if x > max[lane] { x } else { max[lane] };
        nan[lane] |= x.is_nan();
    }
    if nan.iter().any(|&n| n) {
        return f32::NAN;
    }
    max.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn exp_shifted_body<const FMA: bool>(scores: &mut [f32], m: f32) -> f32 {
    let mut sum = [0.0f32; LANES];
    let mut chunks = scores.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            let p = exp_lane::<FMA>(chunk[lane] - m);
            chunk[lane] = p;
            sum[lane] += p;
        }
    }
    for (lane, x) in chunks.into_remainder().iter_mut().enumerate() {
        let p = exp_lane::<FMA>(*x - m);
        *x = p;
        sum[lane] += p;
    }
    sum.iter().sum()
}

/// The features this CPU offers, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        // std caches the CPUID answers: these are loads of a static after the first call.
        if is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The name of the vector width the softmax runs at on this CPU (for `attn info` and the benchmark notes).
pub fn simd_level() -> &'static str {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => "avx512f",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => "avx2+fma",
        Level::Baseline => "baseline",
    }
}

/// Defines `$name` as `$body` compiled for each feature level, dispatched at run time.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            mod by_feature {
                #[target_feature(enable = "avx512f,fma")]
                pub(super) unsafe fn avx512($($arg: $ty),*) -> $ret {
                    super::$body::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                pub(super) unsafe fn avx2($($arg: $ty),*) -> $ret {
                    super::$body::<true>($($arg),*)
                }
            }
            match level() {
                // SAFETY: level() returned these only after detecting the features they are compiled for.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { by_feature::avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { by_feature::avx2($($arg),*) },
                Level::Baseline => $body::<false>($($arg),*),
            }
        }
    };
}

dispatched! {
    /// The largest score, NaN if any is NaN, `-inf` for an empty row.
    fn row_max(scores: &[f32]) -> f32 = row_max_body
}

dispatched! {
    /// Replaces each score `s` by `exp(s - m)` (0 for `s = -inf` or far below `m`) and returns their sum.
    /// `m` must not be `-inf` (every `p` would be NaN); a NaN `m` or score gives NaN.
    fn exp_shifted(scores: &mut [f32], m: f32) -> f32 = exp_shifted_body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_on_its_range() {
        let mut worst = 0;
        let mut x = 0.0f32;
        while x > UNDERFLOW {
            let mut one = [x];
            exp_shifted(&mut one, 0.0);
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps(one[0], exact));
            x = x - 1e-3 - x.abs() * 1e-4;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        let mut edges = [0.0, -0.0, f32::NEG_INFINITY, -87.5, -1e30, f32::NAN];
        let sum = exp_shifted(&mut edges, 0.0);
        assert_eq!(&edges[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(edges[5].is_nan() && sum.is_nan());
    }

    #[test]
    fn every_level_agrees_with_the_scalar_body() {
        // 37 scores: two full lanes of 16 and a tail, through whatever level this CPU dispatches to.
        let scores: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 * -0.37).collect();
        let mut fast = scores.clone();
        let sum = exp_shifted(&mut fast, 1.5);
        let mut plain = scores.clone();
        let fused = level() != Level::Baseline;
        let plain_sum = if fused {
            exp_shifted_body::<true>(&mut plain, 1.5)
        } else {
            exp_shifted_body::<false>(&mut plain, 1.5)
        };
        assert_eq!(fast, plain);
        assert!((sum - plain_sum).abs() <= 1e-6 * plain_sum);
        assert_eq!(row_max(&scores), 0.0);
        assert_eq!(row_max(&[]), f32::NEG_INFINITY);
        let mut with_nan = scores;
        with_nan[35] = f32::NAN;
        assert!(row_max(&with_nan).is_nan());
    }
}
