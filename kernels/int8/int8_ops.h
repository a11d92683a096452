/* The int8 kernel's inner loops, CMSIS-NN manner: one signature, two implementations selected at
 * build time - int8_ops_plain.c (portable C, the readable truth) and int8_ops_simd.c (AVX2 on x86,
 * NEON on ARMv7). Both produce identical bits: integer sums are exact, and the float32 update is
 * the same two roundings (multiply, then subtract; no fused multiply-add) in every lane.
 *
 * Layouts: a layer's master weights w (float32) and quantised weights wq (int8) are row-major
 * (n_out x ld) with ld = n_in rounded up to 32 and zero padding; activations a (uint8, q7 values
 * 0..127) are (m x ld) with zero padding, so no loop needs a tail. */
#ifndef ECUFL_INT8_OPS_H
#define ECUFL_INT8_OPS_H
#include <stdint.h>

#define I8_ALIGN 32
#define I8_LD(n) (((n) + 31) & ~31)

/* Which implementation was compiled in ("plain", "avx2", "neon"). */
const char *i8_ops_path(void);

/* After every requantisation of a dense layer: wq (row-major) copied into the layout i8_fc_forward
 * reads, wq4 (I8_LD8(n_out) * ld bytes). plain / neon: not used. avx2: groups of 4 consecutive
 * inputs interleaved, wq4[((i / 4) * I8_LD8(n_out) + j) * 4 + i % 4] = wq[j * ld + i] (rows past
 * n_out are 0), so one broadcast of 4 inputs times one vector is 8 outputs x 4 inputs (vpmaddubsw). */
#define I8_LD8(n) (((n) + 7) & ~7)
void i8_pack_weights(const int8_t *wq, int n_out, int ld, int8_t *wq4);

/* acc[s * n_out + j] = sum_i a[s * ld + i] * wq[j * ld + i]  for s < m, j < n_out (exact int32);
 * wq4 is wq packed by i8_pack_weights. */
void i8_fc_forward(const uint8_t *a, int m, const int8_t *wq, const int8_t *wq4, int n_out, int ld, int32_t *acc);

/* Per batch, before i8_fc_update on these activations: an int16 copy of a in the layout the
 * implementation wants (plain: unused; avx2: pairs of samples interleaved; neon: widened rows).
 * scratch holds at least ((m + 1) / 2) * 2 * ld int16. */
void i8_pack_acts(const uint8_t *a, int m, int ld, int16_t *scratch);

/* For every row j < n_out: g_i = sum_s dq[s * n_out + j] * a[s * ld + i] (exact int32), then
 * w[j * ld + i] = w[j * ld + i] - (float)g_i * c. colmax[i] holds max_j |w[j * ld + i]| and is kept
 * up to date; returns max |w| over the whole matrix. A column whose inputs are all zero in the
 * batch has g = 0, and w - 0.0f * c == w: an implementation may skip it (and its colmax stays).
 * scratch: ((m + 1) / 2) * n_out int32 the implementation may use (avx2: the error pairs). */
float i8_fc_update(const uint8_t *a, const int16_t *packed, int m, const int16_t *dq, int n_out,
                   int ld, float c, float *w, float *colmax, int32_t *scratch);

/* wq[i] = clamp(rint_even(w[i] * qmul), -127, 127) for i < n (n a multiple of 32). */
void i8_quantise(const float *w, int n, float qmul, int8_t *wq);

#endif
