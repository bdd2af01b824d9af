/*
 * fp16.h - __half and __nv_bfloat16 (and their pairs) for kernels compiled as plain C++.
 *
 * Same storage as CUDA's types (16 bits in a member __x), the same conversion functions with the same
 * rounding (see float_bits.h), and the host-side conveniences cuda_fp16.h offers: implicit conversion
 * from and to float, and arithmetic that computes in f32 and rounds once.
 */
#ifndef CUDA_ATTENTION_EMULATOR_FP16_H
#define CUDA_ATTENTION_EMULATOR_FP16_H

#include <math.h>
#include <stdint.h>

#include "float_bits.h"
#include "vector_types.h"

struct __half {
    uint16_t __x;
    __half() = default;
    __half(float f) : __x(cuda_emu::float_to_half_bits(f)) {}
    operator float() const { return cuda_emu::half_bits_to_float(__x); }
};

struct __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(cuda_emu::float_to_bfloat16_bits(f)) {}
    operator float() const { return cuda_emu::bfloat16_bits_to_float(__x); }
};

typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

struct __attribute__((aligned(4))) __half2 {
    __half x;
    __half y;
};

struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x;
    __nv_bfloat16 y;
};

typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit types must be 2 bytes");
static_assert(sizeof(__half2) == 4 && sizeof(__nv_bfloat162) == 4, "pairs must be 4 bytes");

/* Bits. */
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) {
    __half h;
    h.__x = u;
    return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 h;
    h.__x = u;
    return h;
}

/* f16 conversions. */
inline float __half2float(__half h) { return cuda_emu::half_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) { return __ushort_as_half(cuda_emu::float_to_half_bits(f)); }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline __half2 __float2half2_rn(float f) { return __floats2half2_rn(f, f); }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2{lo, hi}; }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }

/* bf16 conversions. */
inline float __bfloat162float(__nv_bfloat16 h) { return cuda_emu::bfloat16_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    return __ushort_as_bfloat16(cuda_emu::float_to_bfloat16_bits(f));
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __floats2bfloat162_rn(f, f); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162{lo, hi}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }

/* Arithmetic: computed in f32, rounded once, as the f32 emulation in cuda_fp16.hpp does. */
#define CUDA_EMU_16BIT_OPERATORS(T, to_float, from_float)                                                          \
    inline T operator+(T a, T b) { return from_float(to_float(a) + to_float(b)); }                                 \
    inline T operator-(T a, T b) { return from_float(to_float(a) - to_float(b)); }                                 \
    inline T operator*(T a, T b) { return from_float(to_float(a) * to_float(b)); }                                 \
    inline T operator/(T a, T b) { return from_float(to_float(a) / to_float(b)); }                                 \
    inline T operator-(T a) {                                                                                      \
        T r = a;                                                                                                   \
        r.__x ^= 0x8000u;                                                                                          \
        return r;                                                                                                  \
    }                                                                                                              \
    inline T &operator+=(T &a, T b) { return a = a + b; }                                                          \
    inline T &operator-=(T &a, T b) { return a = a - b; }                                                          \
    inline T &operator*=(T &a, T b) { return a = a * b; }                                                          \
    inline T &operator/=(T &a, T b) { return a = a / b; }                                                          \
    inline bool operator==(T a, T b) { return to_float(a) == to_float(b); }                                        \
    inline bool operator!=(T a, T b) { return to_float(a) != to_float(b); }                                        \
    inline bool operator<(T a, T b) { return to_float(a) < to_float(b); }                                          \
    inline bool operator>(T a, T b) { return to_float(a) > to_float(b); }                                          \
    inline bool operator<=(T a, T b) { return to_float(a) <= to_float(b); }                                        \
    inline bool operator>=(T a, T b) { return to_float(a) >= to_float(b); }

CUDA_EMU_16BIT_OPERATORS(__half, __half2float, __float2half_rn)
CUDA_EMU_16BIT_OPERATORS(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef CUDA_EMU_16BIT_OPERATORS

inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __half __hmax(__half a, __half b) { return __float2half_rn(fmaxf(__half2float(a), __half2float(b))); }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return a + b; }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return a * b; }
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16_rn(fmaxf(__bfloat162float(a), __bfloat162float(b)));
}

#endif /* CUDA_ATTENTION_EMULATOR_FP16_H */
