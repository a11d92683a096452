/* hdrnn_opt.c: the optimised path. Same results as hdrnn_plain.c up to float32 rounding order.
 *
 * What makes it fast:
 *   - Weights are stored transposed, w[l] = (n_in, ld[l+1]), so every product is a sum of
 *     contiguous weight rows scaled by one input value ("sum_rows"), vectorised over the outputs.
 *     Rows are padded with zeros to the vector width: no scalar tails anywhere.
 *   - sum_rows keeps up to 8 vectors of outputs in registers across the whole input sum.
 *   - ~80% of MNIST pixels are 0: the first layer visits only the nonzero pixels of each sample,
 *     both forward (sum of the rows of w1 at those pixels) and in the weight update (only the
 *     rows of pixels nonzero in some sample of the mini-batch change; first_layer_step_*).
 *     The nonzero pixels are found 16 or 32 bytes at a time (simd.h vb_nonzero_mask: compare,
 *     movemask) and visited by their bits; the scan also records which pixels the mini-batch
 *     touches (pixels_any) and, for wide layers, which samples touch each pixel (pixel_samples).
 *   - Sigmoid is vectorised (simd.h vf_sigmoid), a few ulp from libm's expf.
 *   - All deltas are computed before any weight changes, then each weight row is updated once
 *     per mini-batch straight from the summed gradient, still in registers (no gradient matrix).
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

/* Weight rows requested ahead in the first layer's forward sum (in rows). Measured on x86 (AVX2,
 * w1 of 784-128-10 is 401 KB, beyond L1): +7%. Off elsewhere: unmeasured on the Cortex-A9, and
 * its projection (kernels/arm) counts every load as an L1 hit, so there a prefetch is pure cost. */
#if defined(__x86_64__) || defined(__i386__)
#define ROWS_AHEAD 8
#else
#define ROWS_AHEAD 0
#endif

/* Ask for the n bytes at p to be brought into the cache (the images of a mini-batch are rows
 * scattered over the 47 MB training set: without this the scan waits on memory). */
static inline void prefetch_bytes(const void *p, int n) {
#if defined(__GNUC__)
    for (int k = 0; k < n; k += 64) __builtin_prefetch((const char *)p + k);
    __builtin_prefetch((const char *)p + n - 1);
#else
    (void)p, (void)n;
#endif
}

/* out[0 .. NV*VF_WIDTH) = sum over k < count of vals[k*vstride] * row_k[same columns], where
 * row_k = base + (idx ? idx[k] : k) * stride. Accumulators stay in registers (NV is a constant
 * after inlining, the v loops unroll); with few vectors two independent sums (even/odd k) hide
 * the latency of the multiply-adds. The sparse (idx) and dense cases are separate loops so the
 * compiler sees a plain pointer walk in each. update = 1: out -= step * sum instead of out = sum.
 * ahead > 0 (single-sum sparse loop): prefetch the row that many entries further on. */
static ALWAYS_INLINE void sum_rows_block(float *out, const float *base, int stride, const int32_t *idx,
                                         const float *vals, int vstride, int count, const int NV, const int dual,
                                         int update, float step, int ahead) {
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
            if (ahead && k + ahead < count) prefetch_bytes(base + (size_t)idx[k + ahead] * stride, NV * VF_WIDTH * sizeof(float));
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
    if (dual)
        for (int v = 0; v < NV; v++) a0[v] = vf_add(a0[v], a1[v]);
    if (update) { /* out -= step * sum: product rounded, then subtracted, as the reference does */
        vf st = vf_set1(step);
        for (int v = 0; v < NV; v++) vf_store(out + v * VF_WIDTH, vf_sub(vf_load(out + v * VF_WIDTH), vf_mul(st, a0[v])));
    } else {
        for (int v = 0; v < NV; v++) vf_store(out + v * VF_WIDTH, a0[v]);
    }
}

/* out[0..n) for n a multiple of VF_WIDTH, in blocks of 8, 4, 2, 1 vectors (one function per
 * block size, so each keeps its accumulators in registers). update = 0: out = the sums;
 * update = 1: out -= step * the sums (a weight row's SGD step, the gradient never stored). */
#define SUM_ROWS_N(NV, DUAL)                                                                              \
    static void sum_rows_##NV(float *o, const float *b, int st, const int32_t *ix, const float *x, int xs, \
                              int c, int update, float step, int ahead) {                                 \
        sum_rows_block(o, b, st, ix, x, xs, c, NV, DUAL, update, step, ahead);                            \
    }
SUM_ROWS_N(8, 0)
SUM_ROWS_N(4, 1)
SUM_ROWS_N(2, 1)
SUM_ROWS_N(1, 1)

static void sum_rows(float *out, int n, const float *base, int stride, const int32_t *idx,
                     const float *vals, int vstride, int count, int update, float step, int ahead) {
    int c = 0;
    for (; c + 8 * VF_WIDTH <= n; c += 8 * VF_WIDTH)
        sum_rows_8(out + c, base + c, stride, idx, vals, vstride, count, update, step, ahead);
    if (c + 4 * VF_WIDTH <= n) {
        sum_rows_4(out + c, base + c, stride, idx, vals, vstride, count, update, step, ahead);
        c += 4 * VF_WIDTH;
    }
    if (c + 2 * VF_WIDTH <= n) {
        sum_rows_2(out + c, base + c, stride, idx, vals, vstride, count, update, step, ahead);
        c += 2 * VF_WIDTH;
    }
    if (c < n) sum_rows_1(out + c, base + c, stride, idx, vals, vstride, count, update, step, ahead);
}

/* rows[idx[k]][0 .. NV*VF_WIDTH) += vals[k] * d[same columns] for k < count: one sample's
 * contribution to the gradient rows of its nonzero pixels, d held in registers. */
static ALWAYS_INLINE void add_to_rows_block(float *rows, int stride, const int32_t *idx, const float *vals,
                                            int count, const float *d, const int NV) {
    vf dv[8];
    for (int v = 0; v < NV; v++) dv[v] = vf_load(d + v * VF_WIDTH);
    for (int k = 0; k < count; k++) {
        float *r = rows + (size_t)idx[k] * stride;
        vf x = vf_set1(vals[k]);
        for (int v = 0; v < NV; v++) vf_store(r + v * VF_WIDTH, vf_madd(vf_load(r + v * VF_WIDTH), x, dv[v]));
    }
}
#define ADD_TO_ROWS_N(NV)                                                                                  \
    static void add_to_rows_##NV(float *rows, int stride, const int32_t *idx, const float *vals, int count, \
                                 const float *d) {                                                         \
        add_to_rows_block(rows, stride, idx, vals, count, d, NV);                                          \
    }
ADD_TO_ROWS_N(8)
ADD_TO_ROWS_N(4)
ADD_TO_ROWS_N(2)
ADD_TO_ROWS_N(1)

/* The same over a whole row of n floats (n a multiple of VF_WIDTH, rows of stride n). */
static void add_to_rows(float *rows, int n, const int32_t *idx, const float *vals, int count, const float *d) {
    int c = 0;
    for (; c + 8 * VF_WIDTH <= n; c += 8 * VF_WIDTH) add_to_rows_8(rows + c, n, idx, vals, count, d + c);
    if (c + 4 * VF_WIDTH <= n) {
        add_to_rows_4(rows + c, n, idx, vals, count, d + c);
        c += 4 * VF_WIDTH;
    }
    if (c + 2 * VF_WIDTH <= n) {
        add_to_rows_2(rows + c, n, idx, vals, count, d + c);
        c += 2 * VF_WIDTH;
    }
    if (c < n) add_to_rows_1(rows + c, n, idx, vals, count, d + c);
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

/* Bit k of the result: p[k] != 0, for k < len <= HDRNN_WORD_BITS (whole simd.h blocks, then
 * byte by byte). */
static inline hdrnn_bits nonzero_mask(const uint8_t *p, int len) {
    hdrnn_bits mask = 0;
    int k = 0;
    for (; k + VB_WIDTH <= len; k += VB_WIDTH) mask |= (hdrnn_bits)vb_nonzero_mask(p + k) << k;
    for (; k < len; k++) mask |= (hdrnn_bits)(p[k] != 0) << k;
    return mask;
}

/* Index of the lowest set bit of a nonzero word (tzcnt / rbit+clz). */
static inline int lowest_bit(hdrnn_bits x) {
#if defined(__GNUC__)
    return __builtin_ctzl(x);
#else
    int k = 0;
    while (!(x & 1)) x >>= 1, k++;
    return k;
#endif
}

/* The first layer's SGD step, w1[i] -= step * sum_s x[s][i] * delta[s], over the pixels nonzero
 * in some sample of the mini-batch. Two orders of the same sum:
 *   by pixel:  for each pixel, gather its samples (from its bits) and sum their delta rows in
 *              registers, then step its row: one pass over w1 and no gradient matrix, but a
 *              fixed cost per pixel (bit walk, call) that only pays when rows are wide;
 *   by sample: add each sample's delta into the gradient rows gw[0] of its nonzero pixels
 *              (load, multiply-add, store per vector), then step and clear those rows: no
 *              per-pixel setup, one store per vector and term more.
 * Measured on AVX2 (CPU time, one epoch): by sample is 1.2-1.5x faster up to 4 vectors of
 * outputs (784-8-10, 784-32-10 at batch 10 and 32), even at 8 and slower at 16 (784-128-10).
 * NEON (projected Cortex-A9 cycles, kernels/arm): by sample -10% at 2 vectors (784-8-10), +10%
 * at 8 (784-32-10). */
#define BY_SAMPLE_MAX_VECTORS 4
static int steps_by_sample(const ecufl_net *net) { return net->ld[1] <= BY_SAMPLE_MAX_VECTORS * VF_WIDTH; }

/* The nonzero pixels of one image, a word of pixels at a time by their bits: index and p / 255
 * in the sample's list, the pixels' bits in pixels_any, and (by-pixel steps only, else NULL) the
 * sample's bit in each such pixel's word of pixel_samples. */
static int nonzero_pixels(const uint8_t *pixels, int n, int32_t *index, float *value, hdrnn_bits *pixels_any,
                          hdrnn_bits *pixel_samples, int words, hdrnn_bits sample_bit) {
    int nnz = 0;
    for (int i = 0; i < n; i += HDRNN_WORD_BITS) {
        hdrnn_bits mask = nonzero_mask(pixels + i, n - i < HDRNN_WORD_BITS ? n - i : HDRNN_WORD_BITS);
        pixels_any[i / HDRNN_WORD_BITS] |= mask;
        while (mask) {
            int k = i + lowest_bit(mask);
            mask &= mask - 1;
            index[nnz] = k;
            value[nnz] = pixel_value[pixels[k]];
            if (pixel_samples) pixel_samples[(size_t)k * words] |= sample_bit;
            nnz++;
        }
    }
    return nnz;
}

/* The same for a row of float inputs (any data, ecufl_net_train_f32): the nonzero values as they
 * are, a word of inputs at a time; zero inputs are skipped exactly as zero pixels are. */
static int nonzero_inputs(const float *x, int n, int32_t *index, float *value, hdrnn_bits *pixels_any,
                          hdrnn_bits *pixel_samples, int words, hdrnn_bits sample_bit) {
    int nnz = 0;
    for (int i = 0; i < n; i += HDRNN_WORD_BITS) {
        int len = n - i < HDRNN_WORD_BITS ? n - i : HDRNN_WORD_BITS;
        hdrnn_bits mask = 0;
        for (int k = 0; k < len; k++) mask |= (hdrnn_bits)(x[i + k] != 0.0f) << k;
        pixels_any[i / HDRNN_WORD_BITS] |= mask;
        while (mask) {
            int k = i + lowest_bit(mask);
            mask &= mask - 1;
            index[nnz] = k;
            value[nnz] = x[k];
            if (pixel_samples) pixel_samples[(size_t)k * words] |= sample_bit;
            nnz++;
        }
    }
    return nnz;
}

void hdrnn_forward(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int first, int m) {
    const uint8_t *images = data->images;
    int n0 = net->sizes[0], nnz = 0, words = (m + HDRNN_WORD_BITS - 1) / HDRNN_WORD_BITS;
    hdrnn_bits *pixel_samples = steps_by_sample(net) ? NULL : net->pixel_samples;
    memset(net->pixels_any, 0, (size_t)((n0 + HDRNN_WORD_BITS - 1) / HDRNN_WORD_BITS) * sizeof *net->pixels_any);
    if (pixel_samples) memset(pixel_samples, 0, (size_t)n0 * words * sizeof *pixel_samples);
#define IMAGE(s) (images + (size_t)(rows ? rows[s] : first + (s)) * n0)
    enum { AHEAD = 2 }; /* images requested ahead of the scan */
    if (!images) { /* float inputs: the nonzero inputs of each sample, as they are */
        for (int s = 0; s < m; s++) {
            const float *x = data->inputs + (size_t)(rows ? rows[s] : first + s) * n0;
            net->sample_inputs[s] = x;
            net->nz_start[s] = nnz;
            nnz += nonzero_inputs(x, n0, net->nz_index + nnz, net->nz_value + nnz, net->pixels_any,
                                  pixel_samples ? pixel_samples + s / HDRNN_WORD_BITS : NULL, words,
                                  (hdrnn_bits)1 << (s % HDRNN_WORD_BITS));
        }
    } else {
    for (int s = 0; s < AHEAD && s < m; s++) prefetch_bytes(IMAGE(s), n0);
    for (int s = 0; s < m; s++) { /* the nonzero pixels of each sample, as p / 255 */
        const uint8_t *pixels = IMAGE(s);
        if (s + AHEAD < m) prefetch_bytes(IMAGE(s + AHEAD), n0);
        net->sample_pixels[s] = pixels;
        net->nz_start[s] = nnz;
        nnz += nonzero_pixels(pixels, n0, net->nz_index + nnz, net->nz_value + nnz, net->pixels_any,
                              pixel_samples ? pixel_samples + s / HDRNN_WORD_BITS : NULL, words,
                              (hdrnn_bits)1 << (s % HDRNN_WORD_BITS));
    }
    }
    net->nz_start[m] = nnz;
    for (int s = 0; s < m; s++) {
        int ld1 = net->ld[1], start = net->nz_start[s];
        float *z = net->act[1] + (size_t)s * ld1;
        sum_rows(z, ld1, net->w[0], ld1, net->nz_index + start, net->nz_value + start, 1,
                 net->nz_start[s + 1] - start, 0, 0.0f, ROWS_AHEAD);
        bias_sigmoid(z, net->b[0], net->sizes[1], ld1);
        for (int l = 1; l < net->n_layers; l++) {
            int ld_in = net->ld[l], ld_out = net->ld[l + 1];
            z = net->act[l + 1] + (size_t)s * ld_out;
            sum_rows(z, ld_out, net->w[l], ld_out, NULL, net->act[l] + (size_t)s * ld_in, 1, net->sizes[l], 0, 0.0f, 0);
            bias_sigmoid(z, net->b[l], net->sizes[l + 1], ld_out);
        }
    }
#undef IMAGE
}

static void first_layer_step_by_pixel(ecufl_net *net, const float *d, int m, float step, int float_inputs) {
    int ld = net->ld[1], words = (m + HDRNN_WORD_BITS - 1) / HDRNN_WORD_BITS;
    int32_t *sample = net->by_pixel_sample;
    float *value = net->by_pixel_value;
    for (int i = 0; i < net->sizes[0]; i++) {
        int count = 0;
        for (int w = 0; w < words; w++)
            for (hdrnn_bits bits = net->pixel_samples[(size_t)i * words + w]; bits; bits &= bits - 1) {
                int s = w * HDRNN_WORD_BITS + lowest_bit(bits);
                sample[count] = s;
                value[count++] = float_inputs ? net->sample_inputs[s][i] : pixel_value[net->sample_pixels[s][i]];
            }
        if (count) /* else pixel zero in every sample: its gradient is 0 */
            sum_rows(net->w[0] + (size_t)i * ld, ld, d, ld, sample, value, 1, count, 1, step, 0);
    }
}

static void first_layer_step_by_sample(ecufl_net *net, const float *d, int m, float step) {
    int ld = net->ld[1];
    float *grad = net->gw[0]; /* all zero between mini-batches */
    for (int s = 0; s < m; s++) {
        int start = net->nz_start[s];
        add_to_rows(grad, ld, net->nz_index + start, net->nz_value + start, net->nz_start[s + 1] - start,
                    d + (size_t)s * ld);
    }
    for (int w = 0; w * HDRNN_WORD_BITS < net->sizes[0]; w++)
        for (hdrnn_bits bits = net->pixels_any[w]; bits; bits &= bits - 1) {
            size_t i = (size_t)(w * HDRNN_WORD_BITS + lowest_bit(bits));
            /* row -= step * grad (product rounded, then subtracted), grad back to 0 */
            update_row(net->w[0] + i * ld, grad + i * ld, ld, step);
            memset(grad + i * ld, 0, (size_t)ld * sizeof *grad);
        }
}

void hdrnn_backward_update(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int m, float step) {
    int L = net->n_layers;
    { /* BP1 */
        int n_out = net->sizes[L], ld = net->ld[L];
        for (int s = 0; s < m; s++) {
            const float *a = net->act[L] + (size_t)s * ld;
            float *d = net->delta[L - 1] + (size_t)s * ld;
            if (data->targets) { /* real-valued targets */
                const float *y = data->targets + (size_t)rows[s] * n_out;
                for (int j = 0; j < n_out; j++) d[j] = (a[j] - y[j]) * a[j] * (1.0f - a[j]);
                continue;
            }
            for (int j = 0; j < n_out; j++) {
                float y = j == data->labels[rows[s]] ? 1.0f : 0.0f;
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
            if (steps_by_sample(net))
                first_layer_step_by_sample(net, d, m, step);
            else
                first_layer_step_by_pixel(net, d, m, step, data->images == NULL);
        } else {
            int ld_in = net->ld[l];
            for (int i = 0; i < net->sizes[l]; i++)
                sum_rows(net->w[l] + (size_t)i * ld_out, ld_out, d, ld_out, NULL, net->act[l] + i, ld_in, m, 1, step, 0);
        }
    }
}
