/* simd.h: the few vector operations the optimised path needs, for the instruction set the
 * compiler targets. Chosen at build time from the compiler's macros:
 *   AVX2 + FMA (x86-64-v3)  8 floats, fused multiply-add (one rounding instead of two)
 *   NEON (ARMv7, -mfpu=neon) 4 floats, vmla (multiply then add, two roundings: the Cortex-A9 has
 *                            no fused multiply-add; NEON flushes denormals to zero)
 *   SSE2 (any x86-64)       4 floats, multiply then add
 *   none                    1 float, plain C (still blocked)
 */
#ifndef ECUFL_SIMD_H
#define ECUFL_SIMD_H

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
#endif

#endif
