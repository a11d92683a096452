/* hdrnn_opt.c: the optimised path. Same results as hdrnn_plain.c up to float32 rounding order.
 *
 * What makes it fast:
 *   - Weights are stored transposed, w[l] = (n_in, ld[l+1]), so every product is a sum of
 *     contiguous weight rows scaled by one input value ("sum_rows"), vectorised over the outputs.
 *     Rows are padded with zeros to the vector width: no scalar tails anywhere.
 *   - sum_rows keeps up to 8 vectors of outputs in registers across the whole input sum.
 *   - ~80% of MNIST pixels are 0: the first layer visits only the nonzero pixels of each sample,
 *     both forward (sum of the rows of w1 at those pixels) and in the weight update (each pixel's
 *     row of w1 is updated from the samples of the mini-batch in which that pixel is nonzero).
 *   - All deltas are computed before any weight changes, then each weight row is updated once
 *     per mini-batch straight from the summed gradient (no gradient matrix is stored).
 */
#include <math.h>
#include <string.h>

#include "hdrnn.h"
#include "simd.h"

const char hdrnn_path_name[] = VF_NAME;
const int hdrnn_path_transposed = 1;
const int hdrnn_path_vector_width = VF_WIDTH;

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* out[0 .. NV*VF_WIDTH) = sum over k < count of vals[k*vstride] * row_k[same columns], where
 * row_k = base + (idx ? idx[k] : k) * stride. Accumulators stay in registers (NV is a constant
 * after inlining, the v loops unroll); with few vectors two independent sums (even/odd k) hide
 * the latency of the multiply-adds. The sparse (idx) and dense cases are separate loops so the
 * compiler sees a plain pointer walk in each. */
static ALWAYS_INLINE void sum_rows_block(float *out, const float *base, int stride, const int32_t *idx,
                                         const float *vals, int vstride, int count, const int NV, const int dual) {
    vf a0[8], a1[8];
    for (int v = 0; v < NV; v++) a0[v] = a1[v] = vf_zero();
    int k = 0;
    if (idx) {
        if (dual)
            for (; k + 1 < count; k += 2) {
                const float *r0 = base + (size_t)idx[k] * stride, *r1 = base + (size_t)idx[k + 1] * stride;
                vf x0 = vf_set1(vals[(size_t)k * vstride]), x1 = vf_set1(vals[(size_t)(k + 1) * vstride]);
                for (int v = 0; v < NV; v++) {
                    a0[v] = vf_madd(a0[v], x0, vf_load(r0 + v * VF_WIDTH));
                    a1[v] = vf_madd(a1[v], x1, vf_load(r1 + v * VF_WIDTH));
                }
            }
        for (; k < count; k++) {
            const float *r0 = base + (size_t)idx[k] * stride;
            vf x0 = vf_set1(vals[(size_t)k * vstride]);
            for (int v = 0; v < NV; v++) a0[v] = vf_madd(a0[v], x0, vf_load(r0 + v * VF_WIDTH));
        }
    } else {
        const float *r0 = base;
        if (dual)
            for (; k + 1 < count; k += 2, r0 += 2 * (size_t)stride) {
                vf x0 = vf_set1(vals[(size_t)k * vstride]), x1 = vf_set1(vals[(size_t)(k + 1) * vstride]);
                for (int v = 0; v < NV; v++) {
                    a0[v] = vf_madd(a0[v], x0, vf_load(r0 + v * VF_WIDTH));
                    a1[v] = vf_madd(a1[v], x1, vf_load(r0 + stride + v * VF_WIDTH));
                }
            }
        for (; k < count; k++, r0 += stride) {
            vf x0 = vf_set1(vals[(size_t)k * vstride]);
            for (int v = 0; v < NV; v++) a0[v] = vf_madd(a0[v], x0, vf_load(r0 + v * VF_WIDTH));
        }
    }
    for (int v = 0; v < NV; v++) vf_store(out + v * VF_WIDTH, dual ? vf_add(a0[v], a1[v]) : a0[v]);
}

/* out[0..n) for n a multiple of VF_WIDTH, in blocks of 8, 4, 2, 1 vectors (one function per
 * block size, so each keeps its accumulators in registers). */
static void sum_rows_8(float *o, const float *b, int st, const int32_t *ix, const float *x, int xs, int c) {
    sum_rows_block(o, b, st, ix, x, xs, c, 8, 0);
}
static void sum_rows_4(float *o, const float *b, int st, const int32_t *ix, const float *x, int xs, int c) {
    sum_rows_block(o, b, st, ix, x, xs, c, 4, 1);
}
static void sum_rows_2(float *o, const float *b, int st, const int32_t *ix, const float *x, int xs, int c) {
    sum_rows_block(o, b, st, ix, x, xs, c, 2, 1);
}
static void sum_rows_1(float *o, const float *b, int st, const int32_t *ix, const float *x, int xs, int c) {
    sum_rows_block(o, b, st, ix, x, xs, c, 1, 1);
}

static void sum_rows(float *out, int n, const float *base, int stride, const int32_t *idx,
                     const float *vals, int vstride, int count) {
    int c = 0;
    for (; c + 8 * VF_WIDTH <= n; c += 8 * VF_WIDTH) sum_rows_8(out + c, base + c, stride, idx, vals, vstride, count);
    if (c + 4 * VF_WIDTH <= n) {
        sum_rows_4(out + c, base + c, stride, idx, vals, vstride, count);
        c += 4 * VF_WIDTH;
    }
    if (c + 2 * VF_WIDTH <= n) {
        sum_rows_2(out + c, base + c, stride, idx, vals, vstride, count);
        c += 2 * VF_WIDTH;
    }
    if (c < n) sum_rows_1(out + c, base + c, stride, idx, vals, vstride, count);
}

static inline float dot(const float *a, const float *b, int n) {
    vf acc = vf_zero();
    for (int c = 0; c < n; c += VF_WIDTH) acc = vf_madd(acc, vf_load(a + c), vf_load(b + c));
    return vf_sum(acc);
}

/* row[0..n) -= step * g[0..n): product rounded, then subtracted, as the reference does. */
static inline void update_row(float *row, const float *g, int n, float step) {
    vf st = vf_set1(step);
    for (int c = 0; c < n; c += VF_WIDTH) vf_store(row + c, vf_sub(vf_load(row + c), vf_mul(st, vf_load(g + c))));
}

/* z = sigmoid(z + b) on the n real outputs, a vector at a time (simd.h's vf_sigmoid, a few ulp
 * from libm's expf); the padding is set back to 0. */
static inline void bias_sigmoid(float *z, const float *b, int n, int ld) {
    for (int c = 0; c < ld; c += VF_WIDTH) vf_store(z + c, vf_sigmoid(vf_add(vf_load(z + c), vf_load(b + c))));
    for (int j = n; j < ld; j++) z[j] = 0.0f;
}

/* p / 255.0f for every byte, folded by the compiler (correctly rounded, as the division). */
#define PV(p) ((float)(p) / 255.0f)
#define PV4(p) PV(p), PV(p + 1), PV(p + 2), PV(p + 3)
#define PV16(p) PV4(p), PV4(p + 4), PV4(p + 8), PV4(p + 12)
#define PV64(p) PV16(p), PV16(p + 16), PV16(p + 32), PV16(p + 48)
static const float pixel_value[256] = {PV64(0), PV64(64), PV64(128), PV64(192)};

/* The nonzero pixels of one image: 8 bytes at a time, all-zero words skipped (MNIST's borders),
 * the others compacted without branches (a pixel's slot is written, kept only if nonzero). */
static int nonzero_pixels(const uint8_t *pixels, int n, int32_t *index, float *value) {
    int nnz = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, pixels + i, sizeof word);
        if (!word) continue;
        for (int k = i; k < i + 8; k++) {
            index[nnz] = k;
            value[nnz] = pixel_value[pixels[k]];
            nnz += pixels[k] != 0;
        }
    }
    for (; i < n; i++) {
        index[nnz] = i;
        value[nnz] = pixel_value[pixels[i]];
        nnz += pixels[i] != 0;
    }
    return nnz;
}

void hdrnn_forward(ecufl_net *net, const uint8_t *images, const int32_t *rows, int first, int m) {
    int n0 = net->sizes[0], nnz = 0;
    for (int s = 0; s < m; s++) { /* the nonzero pixels of each sample, as p / 255 */
        const uint8_t *pixels = images + (size_t)(rows ? rows[s] : first + s) * n0;
        net->nz_start[s] = nnz;
        nnz += nonzero_pixels(pixels, n0, net->nz_index + nnz, net->nz_value + nnz);
    }
    net->nz_start[m] = nnz;
    for (int s = 0; s < m; s++) {
        int ld1 = net->ld[1], start = net->nz_start[s];
        float *z = net->act[1] + (size_t)s * ld1;
        sum_rows(z, ld1, net->w[0], ld1, net->nz_index + start, net->nz_value + start, 1, net->nz_start[s + 1] - start);
        bias_sigmoid(z, net->b[0], net->sizes[1], ld1);
        for (int l = 1; l < net->n_layers; l++) {
            int ld_in = net->ld[l], ld_out = net->ld[l + 1];
            z = net->act[l + 1] + (size_t)s * ld_out;
            sum_rows(z, ld_out, net->w[l], ld_out, NULL, net->act[l] + (size_t)s * ld_in, 1, net->sizes[l]);
            bias_sigmoid(z, net->b[l], net->sizes[l + 1], ld_out);
        }
    }
}

/* The mini-batch by pixel: for each pixel, the samples in which it is nonzero and its values. */
static void group_by_pixel(ecufl_net *net, int m) {
    int n0 = net->sizes[0];
    int32_t *start = net->by_pixel_start;
    memset(start, 0, (size_t)(n0 + 1) * sizeof *start);
    for (int k = 0; k < net->nz_start[m]; k++) start[net->nz_index[k] + 1]++;
    for (int i = 0; i < n0; i++) start[i + 1] += start[i];
    for (int s = 0; s < m; s++)
        for (int k = net->nz_start[s]; k < net->nz_start[s + 1]; k++) {
            int pos = start[net->nz_index[k]]++;
            net->by_pixel_sample[pos] = s;
            net->by_pixel_value[pos] = net->nz_value[k];
        }
    for (int i = n0; i > 0; i--) start[i] = start[i - 1]; /* the fill advanced each start by its count */
    start[0] = 0;
}

void hdrnn_backward_update(ecufl_net *net, const uint8_t *labels, const int32_t *rows, int m, float step) {
    int L = net->n_layers;
    { /* BP1 */
        int n_out = net->sizes[L], ld = net->ld[L];
        for (int s = 0; s < m; s++) {
            const float *a = net->act[L] + (size_t)s * ld;
            float *d = net->delta[L - 1] + (size_t)s * ld;
            for (int j = 0; j < n_out; j++) {
                float y = j == labels[rows[s]] ? 1.0f : 0.0f;
                d[j] = (a[j] - y) * a[j] * (1.0f - a[j]);
            }
        }
    }
    for (int l = L - 1; l >= 1; l--) { /* BP2, with the weights before this step's update */
        int n_in = net->sizes[l], ld_in = net->ld[l], ld_out = net->ld[l + 1];
        for (int s = 0; s < m; s++) {
            const float *d = net->delta[l] + (size_t)s * ld_out;
            const float *a = net->act[l] + (size_t)s * ld_in;
            float *d_in = net->delta[l - 1] + (size_t)s * ld_in;
            for (int i = 0; i < n_in; i++)
                d_in[i] = dot(d, net->w[l] + (size_t)i * ld_out, ld_out) * a[i] * (1.0f - a[i]);
        }
    }
    float *g = net->scratch;
    for (int l = 0; l < L; l++) { /* BP3, BP4 and the step, one weight row at a time */
        int ld_out = net->ld[l + 1];
        const float *d = net->delta[l];
        memset(g, 0, (size_t)ld_out * sizeof *g);
        for (int s = 0; s < m; s++)
            for (int c = 0; c < ld_out; c += VF_WIDTH)
                vf_store(g + c, vf_add(vf_load(g + c), vf_load(d + (size_t)s * ld_out + c)));
        update_row(net->b[l], g, ld_out, step);
        if (l == 0) {
            group_by_pixel(net, m);
            for (int i = 0; i < net->sizes[0]; i++) {
                int start = net->by_pixel_start[i], count = net->by_pixel_start[i + 1] - start;
                if (!count) continue; /* pixel zero in every sample: its gradient is 0 */
                sum_rows(g, ld_out, d, ld_out, net->by_pixel_sample + start, net->by_pixel_value + start, 1, count);
                update_row(net->w[0] + (size_t)i * ld_out, g, ld_out, step);
            }
        } else {
            int ld_in = net->ld[l];
            for (int i = 0; i < net->sizes[l]; i++) {
                sum_rows(g, ld_out, d, ld_out, NULL, net->act[l] + i, ld_in, m);
                update_row(net->w[l] + (size_t)i * ld_out, g, ld_out, step);
            }
        }
    }
}
