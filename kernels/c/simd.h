/* simd.h: the few vector operations the optimised path needs, for the instruction set the
 * compiler targets. Chosen at build time from the compiler's macros:
 *   AVX2 + FMA (x86-64-v3)  8 floats, fused multiply-add (one rounding instead of two)
 *   NEON (ARMv7, -mfpu=neon) 4 floats, vmla (multiply then add, two roundings: the Cortex-A9 has
 *                            no fused multiply-add; NEON flushes denormals to zero)
 *   SSE2 (any x86-64)       4 floats, multiply then add
 *   none                    1 float, plain C (still blocked)
 *
 * Besides arithmetic it provides vf_exp / vf_sigmoid (a vectorised expf: Cephes-style range
 * reduction and polynomial, a few ulp from libm's expf) and vb_nonzero_mask (which bytes of a
 * block of pixels are nonzero, one bit each) for the optimised path's sparse first layer.
 */
#ifndef ECUFL_SIMD_H
#define ECUFL_SIMD_H

#include <math.h>
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VF_WIDTH 8
#define VF_NAME "avx2"
typedef __m256 vf;
static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_set1(float x) { return _mm256_set1_ps(x); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vf_madd(vf acc, vf a, vf b) { return _mm256_fmadd_ps(a, b, acc); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline float vf_sum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
/* lanes where a > b keep x, the others become +0 */
static inline vf vf_keep_gt(vf x, vf a, vf b) { return _mm256_and_ps(x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
/* n rounded to the nearest integer (|n| < 2^22), and 2^n for an integral n in -126..127 */
static inline vf vf_round(vf n) { return _mm256_round_ps(n, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vf_pow2i(vf n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
/* Bytes p[0..VB_WIDTH): bit k of the result is set iff p[k] != 0. */
#define VB_WIDTH 32
static inline uint32_t vb_nonzero_mask(const uint8_t *p) {
    __m256i zero = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)p), _mm256_setzero_si256());
    return ~(uint32_t)_mm256_movemask_epi8(zero);
}
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#define VF_WIDTH 4
#define VF_NAME "neon"
typedef float32x4_t vf;
static inline vf vf_zero(void) { return vdupq_n_f32(0.0f); }
static inline vf vf_set1(float x) { return vdupq_n_f32(x); }
static inline vf vf_load(const float *p) { return vld1q_f32(p); }
static inline void vf_store(float *p, vf v) { vst1q_f32(p, v); }
static inline vf vf_madd(vf acc, vf a, vf b) { return vmlaq_f32(acc, a, b); }
static inline vf vf_add(vf a, vf b) { return vaddq_f32(a, b); }
static inline vf vf_sub(vf a, vf b) { return vsubq_f32(a, b); }
static inline vf vf_mul(vf a, vf b) { return vmulq_f32(a, b); }
static inline float vf_sum(vf v) {
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
}
static inline vf vf_min(vf a, vf b) { return vminq_f32(a, b); }
static inline vf vf_max(vf a, vf b) { return vmaxq_f32(a, b); }
/* ARMv7 NEON has no division: reciprocal estimate (8 bits) and two Newton-Raphson steps
 * (vrecps: 2 - b r), about 1 ulp; then one multiply. b must be finite (1/inf would give NaN). */
static inline vf vf_div(vf a, vf b) {
    float32x4_t r = vrecpeq_f32(b);
    r = vmulq_f32(vrecpsq_f32(b, r), r);
    r = vmulq_f32(vrecpsq_f32(b, r), r);
    return vmulq_f32(a, r);
}
static inline vf vf_keep_gt(vf x, vf a, vf b) {
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), vcgtq_f32(a, b)));
}
/* vcvt truncates toward zero: add +-0.5 first (round half away from zero) */
static inline vf vf_round(vf n) {
    uint32x4_t sign = vandq_u32(vreinterpretq_u32_f32(n), vdupq_n_u32(0x80000000u));
    float32x4_t half = vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(vdupq_n_f32(0.5f)), sign));
    return vcvtq_f32_s32(vcvtq_s32_f32(vaddq_f32(n, half)));
}
static inline vf vf_pow2i(vf n) {
    return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
}
#define VB_WIDTH 16
static inline uint32_t vb_nonzero_mask(const uint8_t *p) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vld1q_u8(p);
    uint8x16_t bits = vandq_u8(vtstq_u8(v, v), vld1q_u8(bit)); /* a nonzero byte keeps its bit */
    uint8x8_t t = vpadd_u8(vget_low_u8(bits), vget_high_u8(bits)); /* pairwise sums: 8 -> 4 -> 2 bytes */
    t = vpadd_u8(t, t);
    t = vpadd_u8(t, t);
    return vget_lane_u16(vreinterpret_u16_u8(t), 0);
}
#elif defined(__SSE2__)
#include <emmintrin.h>
#define VF_WIDTH 4
#define VF_NAME "sse2"
typedef __m128 vf;
static inline vf vf_zero(void) { return _mm_setzero_ps(); }
static inline vf vf_set1(float x) { return _mm_set1_ps(x); }
static inline vf vf_load(const float *p) { return _mm_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm_storeu_ps(p, v); }
static inline vf vf_madd(vf acc, vf a, vf b) { return _mm_add_ps(acc, _mm_mul_ps(a, b)); }
static inline vf vf_add(vf a, vf b) { return _mm_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm_mul_ps(a, b); }
static inline float vf_sum(vf v) {
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline vf vf_min(vf a, vf b) { return _mm_min_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm_max_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm_div_ps(a, b); }
static inline vf vf_keep_gt(vf x, vf a, vf b) { return _mm_and_ps(x, _mm_cmpgt_ps(a, b)); }
/* cvtps rounds to nearest (the default MXCSR mode) */
static inline vf vf_round(vf n) { return _mm_cvtepi32_ps(_mm_cvtps_epi32(n)); }
static inline vf vf_pow2i(vf n) {
    return _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23));
}
#define VB_WIDTH 16
static inline uint32_t vb_nonzero_mask(const uint8_t *p) {
    __m128i zero = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), _mm_setzero_si128());
    return (uint32_t)_mm_movemask_epi8(zero) ^ 0xFFFFu;
}
#else
#define VF_WIDTH 1
#define VF_NAME "scalar"
typedef float vf;
static inline vf vf_zero(void) { return 0.0f; }
static inline vf vf_set1(float x) { return x; }
static inline vf vf_load(const float *p) { return *p; }
static inline void vf_store(float *p, vf v) { *p = v; }
static inline vf vf_madd(vf acc, vf a, vf b) { return acc + a * b; }
static inline vf vf_add(vf a, vf b) { return a + b; }
static inline vf vf_sub(vf a, vf b) { return a - b; }
static inline vf vf_mul(vf a, vf b) { return a * b; }
static inline float vf_sum(vf v) { return v; }
#define VB_WIDTH 8
static inline uint32_t vb_nonzero_mask(const uint8_t *p) {
    uint32_t m = 0;
    for (int k = 0; k < VB_WIDTH; k++) m |= (uint32_t)(p[k] != 0) << k;
    return m;
}
#endif

#if VF_WIDTH > 1
/* e^x in every lane, within a few ulp of libm's expf (Cephes' expf: x = n ln2 + r with |r| <=
 * ln2 / 2, ln2 split in two so n ln2 is exact, a degree-5 polynomial for (e^r - 1 - r) / r^2,
 * scaled by 2^n built in the exponent bits). x is clamped to [-87, 88] so that 2^n stays a
 * normal float: e^x saturates at 1.6e-38 and 1.65e38 (libm goes on to 0 and inf). */
static inline vf vf_exp(vf x) {
    x = vf_min(vf_max(x, vf_set1(-87.0f)), vf_set1(88.0f));
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_sub(x, vf_mul(n, vf_set1(0.693359375f))); /* n * 0.693359375 is exact (9 + 8 bits) */
    r = vf_sub(r, vf_mul(n, vf_set1(-2.12194440e-4f)));
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_madd(vf_set1(1.3981999507e-3f), p, r);
    p = vf_madd(vf_set1(8.3334519073e-3f), p, r);
    p = vf_madd(vf_set1(4.1665795894e-2f), p, r);
    p = vf_madd(vf_set1(1.6666665459e-1f), p, r);
    p = vf_madd(vf_set1(5.0000001201e-1f), p, r);
    vf e = vf_add(vf_madd(r, p, vf_mul(r, r)), vf_set1(1.0f)); /* 1 + r + r^2 p */
    return vf_mul(e, vf_pow2i(n));
}
/* 1 / (1 + e^-z) in every lane, a few ulp from the same formula with libm's expf. Below
 * z = -88 the result is +0 (libm's gives 0 from -88.7 on, and tiny subnormals between). */
static inline vf vf_sigmoid(vf z) {
    vf s = vf_div(vf_set1(1.0f), vf_add(vf_set1(1.0f), vf_exp(vf_sub(vf_zero(), z))));
    return vf_keep_gt(s, z, vf_set1(-88.0f));
}
#else
static inline vf vf_exp(vf x) { return expf(x); }
static inline vf vf_sigmoid(vf z) { return 1.0f / (1.0f + expf(-z)); }
#endif

#endif
