/*
 * float_bits.h - bit-exact conversions between f32 and the 16-bit formats, as CUDA performs them.
 *
 * Shared by the emulation header (the __half / __nv_bfloat16 types the kernels see) and the emulator's
 * runtime (mma operands). Pure functions on integers: no memory is touched, so it does not matter that the
 * sanitized checker compiles some copies of them with instrumentation and some without.
 *
 * Rounding is to nearest, ties to even, with subnormals kept, overflow to infinity, and every NaN turned
 * into the canonical NaN CUDA's own host code returns (0x7fff for both formats).
 */
#ifndef CUDA_ATTENTION_EMULATOR_FLOAT_BITS_H
#define CUDA_ATTENTION_EMULATOR_FLOAT_BITS_H

#include <stdint.h>
#include <string.h>

namespace cuda_emu {

inline uint32_t float_to_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

inline float bits_to_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* f32 -> IEEE binary16, round to nearest even (CUDA's __float2half_rn). */
inline uint16_t float_to_half_bits(float value) {
    const uint32_t x = float_to_bits(value);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t u = x & 0x7fffffffu;
    if (u > 0x7f800000u) {
        return 0x7fff; /* NaN */
    }
    if (u >= 0x477ff000u) {
        return (uint16_t)(sign | 0x7c00u); /* infinity, or finite values that round past 65504 */
    }
    const uint32_t exponent = u >> 23;
    uint32_t mantissa = (u & 0x7fffffu) | 0x800000u;
    uint32_t shift;
    uint32_t base;
    if (exponent >= 113) {
        /* Normal half: keep 10 of the 23 mantissa bits. */
        shift = 13;
        base = ((exponent - 112) << 10);
        mantissa &= 0x7fffffu;
    } else {
        /* Subnormal half (or zero): value / 2^-24, shift 14..24+. */
        shift = 126 - exponent;
        base = 0;
        if (shift > 24) {
            return (uint16_t)sign; /* below half of the smallest subnormal: +-0 */
        }
        if (exponent == 0) {
            return (uint16_t)sign; /* f32 zero or subnormal */
        }
    }
    uint32_t result = base | (mantissa >> shift);
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (result & 1u))) {
        result += 1; /* may carry into the exponent, which is the right answer */
    }
    return (uint16_t)(sign | result);
}

/* IEEE binary16 -> f32, exact. */
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) {
        return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent != 0) {
        return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }
    if (mantissa == 0) {
        return bits_to_float(sign);
    }
    /* Subnormal: normalise. */
    uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        e -= 1;
    }
    return bits_to_float(sign | (e << 23) | ((mantissa & 0x3ffu) << 13));
}

/* f32 -> bfloat16, round to nearest even (CUDA's __float2bfloat16_rn). */
inline uint16_t float_to_bfloat16_bits(float value) {
    const uint32_t u = float_to_bits(value);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return 0x7fff; /* NaN */
    }
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* bfloat16 -> f32, exact. */
inline float bfloat16_bits_to_float(uint16_t b) { return bits_to_float((uint32_t)b << 16); }

} /* namespace cuda_emu */

#endif /* CUDA_ATTENTION_EMULATOR_FLOAT_BITS_H */
