/* HDRNN in float32, with pruned layers in CSC storage: the C kernel's --prune path (sparse_f32.h).
 *
 * Every weight matrix is stored by input column: dense layers as W^T (n_in x n_out), pruned ones
 * as CSC (per input i, the kept weights and their uint16 output rows). Both layouts make the three
 * products loops over the nonzero inputs of a sample:
 *   forward   z[s][:] += x[s][i] * W[:, i]           for x[s][i] != 0
 *   gradient  G[:, i]  = sum_s x[s][i] delta[s][:]    only columns with a nonzero input get work
 *   backprop  e[s][i]  = W[:, i] . delta[s][:]        (layers above the first)
 * so an MNIST image (about 80% zero pixels) costs its nonzero pixels only, and a pruned matrix its
 * kept weights only. A weight whose gradient is 0 is left alone: w - (lr/m) * 0 == w. */
#define _POSIX_C_SOURCE 200112L
#include "sparse_f32.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n_in, n_out;
    float *b;
    float *wt;        /* dense: n_in x n_out (W transposed), NULL when sparse */
    int sparse, nnz, block;
    int32_t *colptr;  /* n_in + 1, in weights */
    uint16_t *row;    /* nnz / block: first output row of each kept block of `block` rows */
    float *wv;        /* nnz */
} layer_t;

/* 8 floats as one value: GCC/Clang vector extensions give one AVX register on x86 and two NEON
 * q registers on ARMv7, without intrinsics (the compiler would not vectorise these short loops). */
typedef float v8f __attribute__((vector_size(32)));
static inline v8f load8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

static inline int row_of(const layer_t *L, int k) {
    return L->block == 1 ? L->row[k] : L->row[k / L->block] + k % L->block;
}

struct sf_net {
    int n_layers, sizes[16], maxn, cap;
    layer_t L[15];
    float *act[16];   /* cap x n_l */
    float *d, *d2;    /* cap x maxn: deltas of the current / previous layer */
    float *g;         /* maxn: one column of a gradient */
    int32_t *nz_ptr;  /* nonzero inputs by sample (cap + 1) and by column (maxn + 1) */
    uint16_t *nz_i, *c_s;
    float *nz_x, *c_x;
    int32_t *c_ptr;
};

static char last_error[256];
const char *sf_last_error(void) { return last_error; }

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

static void *zalloc(size_t bytes) {
    void *p = NULL;
    bytes = (bytes + 63) / 64 * 64;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void free_buffers(sf_net *n) {
    for (int l = 0; l <= n->n_layers; l++) { free(n->act[l]); n->act[l] = NULL; }
    free(n->d); free(n->d2); free(n->g); free(n->nz_ptr); free(n->nz_i); free(n->c_s);
    free(n->nz_x); free(n->c_x); free(n->c_ptr);
    n->d = n->d2 = n->g = n->nz_x = n->c_x = NULL;
    n->nz_ptr = n->c_ptr = NULL;
    n->nz_i = n->c_s = NULL;
    n->cap = 0;
}

static int ensure_capacity(sf_net *n, int m) {
    if (m <= n->cap) return 0;
    free_buffers(n);
    int cap = m < 64 ? 64 : m;
    size_t big = (size_t)cap * n->maxn;
    for (int l = 0; l <= n->n_layers; l++)
        if (!(n->act[l] = zalloc(sizeof(float) * (size_t)cap * n->sizes[l]))) goto oom;
    if (!(n->d = zalloc(4 * big)) || !(n->d2 = zalloc(4 * big)) || !(n->g = zalloc(4 * (size_t)n->maxn)) ||
        !(n->nz_ptr = zalloc(4 * ((size_t)cap + 1))) || !(n->c_ptr = zalloc(4 * ((size_t)n->maxn + 1))) ||
        !(n->nz_i = zalloc(2 * big)) || !(n->c_s = zalloc(2 * big)) || !(n->nz_x = zalloc(4 * big)) ||
        !(n->c_x = zalloc(4 * big)))
        goto oom;
    n->cap = cap;
    return 0;
oom:
    free_buffers(n);
    return fail("out of memory for a mini-batch of %d samples", m);
}

void sf_destroy(sf_net *n) {
    if (!n) return;
    for (int l = 0; l < n->n_layers; l++) {
        layer_t *L = &n->L[l];
        free(L->b); free(L->wt); free(L->colptr); free(L->row); free(L->wv);
    }
    free_buffers(n);
    free(n);
}

sf_net *sf_create(int n_sizes, const int *sizes, const float *const *params) {
    if (n_sizes < 2 || n_sizes > 16) { fail("need 2..16 layers, got %d", n_sizes); return NULL; }
    for (int l = 0; l < n_sizes; l++)
        if (sizes[l] < 1 || sizes[l] > 65535) { fail("layer %d has size %d (1..65535)", l, sizes[l]); return NULL; }
    sf_net *n = calloc(1, sizeof *n);
    if (!n) { fail("out of memory"); return NULL; }
    n->n_layers = n_sizes - 1;
    memcpy(n->sizes, sizes, sizeof(int) * n_sizes);
    for (int l = 0; l < n_sizes; l++) n->maxn = sizes[l] > n->maxn ? sizes[l] : n->maxn;
    for (int l = 0; l < n->n_layers; l++) {
        layer_t *L = &n->L[l];
        L->n_in = sizes[l];
        L->n_out = sizes[l + 1];
        L->b = zalloc(sizeof(float) * L->n_out);
        L->wt = zalloc(sizeof(float) * (size_t)L->n_in * L->n_out);
        if (!L->b || !L->wt) { sf_destroy(n); fail("out of memory"); return NULL; }
    }
    sf_set_params(n, params);
    return n;
}

int sf_set_params(sf_net *n, const float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        layer_t *L = &n->L[l];
        const float *w = params[2 * l];
        memcpy(L->b, params[2 * l + 1], sizeof(float) * L->n_out);
        for (int i = 0; i < L->n_in; i++) {
            if (L->sparse) {
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) L->wv[k] = w[(long)row_of(L, k) * L->n_in + i];
            } else {
                for (int j = 0; j < L->n_out; j++) L->wt[(long)i * L->n_out + j] = w[(long)j * L->n_in + i];
            }
        }
    }
    return 0;
}

int sf_get_params(const sf_net *n, float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        float *w = params[2 * l];
        memcpy(params[2 * l + 1], L->b, sizeof(float) * L->n_out);
        if (L->sparse) memset(w, 0, sizeof(float) * (size_t)L->n_in * L->n_out);
        for (int i = 0; i < L->n_in; i++) {
            if (L->sparse) {
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) w[(long)row_of(L, k) * L->n_in + i] = L->wv[k];
            } else {
                for (int j = 0; j < L->n_out; j++) w[(long)j * L->n_in + i] = L->wt[(long)i * L->n_out + j];
            }
        }
    }
    return 0;
}

int sf_set_mask(sf_net *n, int l, const uint8_t *mask, int block) {
    if (l < 0 || l >= n->n_layers) return fail("no weight layer %d", l);
    layer_t *L = &n->L[l];
    long size = (long)L->n_in * L->n_out, nnz = 0;
    if (block != 1 && block != 8) return fail("block %d: 1 or 8 rows", block);
    if (L->n_out % block) return fail("block %d does not divide the %d outputs of layer %d", block, L->n_out, l);
    for (int j0 = 0; j0 < L->n_out; j0 += block)
        for (int i = 0; i < L->n_in; i++)
            for (int r = 1; r < block; r++)
                if (!mask[(long)(j0 + r) * L->n_in + i] != !mask[(long)j0 * L->n_in + i])
                    return fail("mask of layer %d is not made of whole %d-row blocks", l, block);
    for (long k = 0; k < size; k++) nnz += mask[k] != 0;
    float *dense = malloc(sizeof(float) * (size_t)size);  /* (n_out x n_in); pruning is rare */
    int32_t *colptr = zalloc(sizeof(int32_t) * (L->n_in + 1));
    uint16_t *row = zalloc(sizeof(uint16_t) * (nnz ? nnz / block : 1));
    float *wv = zalloc(sizeof(float) * (nnz ? nnz : 1));
    if (!dense || !colptr || !row || !wv) {
        free(dense); free(colptr); free(row); free(wv);
        return fail("out of memory");
    }
    for (long k = 0; k < size; k++) dense[k] = 0.0f;
    for (int i = 0; i < L->n_in; i++) {
        if (L->sparse) {
            for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) dense[(long)row_of(L, k) * L->n_in + i] = L->wv[k];
        } else {
            for (int j = 0; j < L->n_out; j++) dense[(long)j * L->n_in + i] = L->wt[(long)i * L->n_out + j];
        }
    }
    long k = 0;
    for (int i = 0; i < L->n_in; i++) {
        colptr[i] = (int32_t)k;
        for (int j = 0; j < L->n_out; j++)
            if (mask[(long)j * L->n_in + i]) {
                if (j % block == 0) row[k / block] = (uint16_t)j;
                wv[k] = dense[(long)j * L->n_in + i];
                k++;
            }
    }
    colptr[L->n_in] = (int32_t)k;
    free(dense);
    free(L->wt); free(L->colptr); free(L->row); free(L->wv);
    L->wt = NULL;
    L->colptr = colptr; L->row = row; L->wv = wv;
    L->nnz = (int)nnz;
    L->block = block;
    L->sparse = 1;
    return 0;
}

/* Nonzero entries of x (m x n_in) by sample (nz_*) and by column (c_*). */
static void list_nonzero(sf_net *n, const float *x, int m, int n_in) {
    int32_t cnt = 0;
    for (int i = 0; i <= n_in; i++) n->c_ptr[i] = 0;
    for (int s = 0; s < m; s++) {
        n->nz_ptr[s] = cnt;
        const float *xs = x + (long)s * n_in;
        for (int i0 = 0; i0 < n_in; i0 += 8) {
            const int i1 = i0 + 8 < n_in ? i0 + 8 : n_in;
            int any = 0;
            for (int i = i0; i < i1; i++) any |= xs[i] != 0.0f;
            if (!any) continue;  /* MNIST background: 8 zero pixels at a time */
            for (int i = i0; i < i1; i++) {  /* branch-free compaction */
                n->nz_i[cnt] = (uint16_t)i;
                n->nz_x[cnt] = xs[i];
                int nz = xs[i] != 0.0f;
                cnt += nz;
                n->c_ptr[i + 1] += nz;
            }
        }
    }
    n->nz_ptr[m] = cnt;
    for (int i = 0; i < n_in; i++) n->c_ptr[i + 1] += n->c_ptr[i];
    for (int s = 0; s < m; s++)
        for (int t = n->nz_ptr[s]; t < n->nz_ptr[s + 1]; t++) {
            int pos = n->c_ptr[n->nz_i[t]]++;
            n->c_s[pos] = (uint16_t)s;
            n->c_x[pos] = n->nz_x[t];
        }
    for (int i = n_in; i > 0; i--) n->c_ptr[i] = n->c_ptr[i - 1];
    n->c_ptr[0] = 0;
}

static void forward(sf_net *n, int m, int keep_lists_of) {
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        const int n_out = L->n_out;
        list_nonzero(n, n->act[l], m, L->n_in);
        float *z = n->act[l + 1];
        for (int s = 0; s < m; s++) {
            float *restrict zs = z + (long)s * n_out;
            for (int j = 0; j < n_out; j++) zs[j] = 0.0f;
            for (int t = n->nz_ptr[s]; t < n->nz_ptr[s + 1]; t++) {
                const int i = n->nz_i[t];
                const float x = n->nz_x[t];
                if (L->sparse) {
                    const int k1 = L->colptr[i + 1];
                    const uint16_t *restrict row = L->row;
                    const float *restrict wv = L->wv;
                    if (L->block == 8) {  /* one 8-wide vector operation per kept block */
                        for (int k = L->colptr[i]; k < k1; k += 8) {
                            float *zb = zs + row[k / 8];
                            store8(zb, load8(zb) + x * load8(wv + k));
                        }
                    } else {
                        for (int k = L->colptr[i]; k < k1; k++) zs[row[k]] += x * wv[k];
                    }
                } else {
                    const float *restrict wc = L->wt + (long)i * n_out;
                    for (int j = 0; j < n_out; j++) zs[j] += x * wc[j];
                }
            }
            for (int j = 0; j < n_out; j++) zs[j] = 1.0f / (1.0f + expf(-(zs[j] + L->b[j])));
        }
    }
    if (keep_lists_of >= 0 && keep_lists_of != n->n_layers - 1)
        list_nonzero(n, n->act[keep_lists_of], m, n->sizes[keep_lists_of]);
}

static void train_batch(sf_net *n, int m, const uint8_t *labels, const int32_t *idx, float step) {
    const int nl = n->n_layers, n_out = n->sizes[nl];
    forward(n, m, nl - 1);  /* leaves the lists of the last layer's input */
    const float *a = n->act[nl];
    for (int s = 0; s < m; s++)
        for (int j = 0; j < n_out; j++) {
            float v = a[s * n_out + j], y = labels[idx[s]] == j ? 1.0f : 0.0f;
            n->d[s * n_out + j] = (v - y) * v * (1.0f - v);
        }
    for (int l = nl - 1; l >= 0; l--) {
        layer_t *L = &n->L[l];
        const int no = L->n_out, ni = L->n_in;
        if (l != nl - 1) list_nonzero(n, n->act[l], m, ni);
        if (l > 0) {  /* back-propagate through the weights before they change */
            const float *ap = n->act[l];
            for (int s = 0; s < m; s++) {
                const float *ds = n->d + (long)s * no;
                for (int i = 0; i < ni; i++) {
                    float e = 0.0f;
                    if (L->sparse)
                        for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) e += ds[row_of(L, k)] * L->wv[k];
                    else
                        for (int j = 0; j < no; j++) e += ds[j] * L->wt[(long)i * no + j];
                    float v = ap[(long)s * ni + i];
                    n->d2[(long)s * ni + i] = e * v * (1.0f - v);
                }
            }
        }
        /* gradient by column, only where some sample has a nonzero input; then the update */
        float *restrict g = n->g;
        for (int i = 0; i < ni; i++) {
            if (n->c_ptr[i] == n->c_ptr[i + 1]) continue;
            if (L->sparse) {
                const int k0 = L->colptr[i], nk = L->colptr[i + 1] - k0;
                for (int k = 0; k < nk; k++) g[k] = 0.0f;
                for (int t = n->c_ptr[i]; t < n->c_ptr[i + 1]; t++) {
                    const float *restrict ds = n->d + (long)n->c_s[t] * no;
                    const float x = n->c_x[t];
                    if (L->block == 8) {
                        const uint16_t *restrict brows = L->row + k0 / 8;
                        for (int kb = 0; kb < nk / 8; kb++)
                            store8(g + 8 * kb, load8(g + 8 * kb) + x * load8(ds + brows[kb]));
                    } else {
                        const uint16_t *restrict rows = L->row + k0;
                        for (int k = 0; k < nk; k++) g[k] += x * ds[rows[k]];
                    }
                }
                float *restrict wv = L->wv + k0;
                for (int k = 0; k < nk; k++) wv[k] -= step * g[k];
            } else {
                for (int j = 0; j < no; j++) g[j] = 0.0f;
                for (int t = n->c_ptr[i]; t < n->c_ptr[i + 1]; t++) {
                    const float *restrict ds = n->d + (long)n->c_s[t] * no;
                    const float x = n->c_x[t];
                    for (int j = 0; j < no; j++) g[j] += x * ds[j];
                }
                float *restrict wc = L->wt + (long)i * no;
                for (int j = 0; j < no; j++) wc[j] -= step * g[j];
            }
        }
        for (int j = 0; j < no; j++) {
            float gb = 0.0f;
            for (int s = 0; s < m; s++) gb += n->d[s * no + j];
            L->b[j] -= step * gb;
        }
        float *tmp = n->d; n->d = n->d2; n->d2 = tmp;
    }
}

static void load_inputs(sf_net *n, const uint8_t *images, const int32_t *idx, int m) {
    const int n_in = n->sizes[0];
    for (int s = 0; s < m; s++) {
        const uint8_t *src = images + (long)(idx ? idx[s] : s) * n_in;
        float *dst = n->act[0] + (long)s * n_in;
        for (int i = 0; i < n_in; i++) dst[i] = (float)src[i] / 255.0f;  /* as numpy: one division */
    }
}

int sf_train(sf_net *n, const uint8_t *images, const uint8_t *labels, int n_images, const int32_t *order,
             int count, double lr, int batch_size) {
    if (batch_size < 1) return fail("batch size %d: must be >= 1", batch_size);
    if (!(lr > 0.0) || !isfinite(lr)) return fail("learning rate %g: must be positive and finite", lr);
    for (int i = 0; i < count; i++)
        if (order[i] < 0 || order[i] >= n_images) return fail("order[%d] = %d is outside 0..%d", i, order[i], n_images - 1);
    if (ensure_capacity(n, batch_size) != 0) return -1;
    for (int k = 0; k < count; k += batch_size) {
        int m = count - k < batch_size ? count - k : batch_size;
        load_inputs(n, images, order + k, m);
        train_batch(n, m, labels, order + k, (float)(lr / m));
    }
    return 0;
}

int sf_evaluate(sf_net *n, const uint8_t *images, const uint8_t *labels, int count, double *loss, int *correct) {
    if (ensure_capacity(n, 64) != 0) return -1;
    const int nl = n->n_layers, n_out = n->sizes[nl];
    double sum = 0.0;
    int ok = 0;
    for (int k = 0; k < count; k += n->cap) {
        int m = count - k < n->cap ? count - k : n->cap;
        load_inputs(n, images + (long)k * n->sizes[0], NULL, m);
        forward(n, m, -1);
        const float *a = n->act[nl];
        for (int s = 0; s < m; s++) {
            int best = 0;
            for (int j = 0; j < n_out; j++) {
                double v = a[s * n_out + j], y = labels[k + s] == j ? 1.0 : 0.0;
                sum += 0.5 * (v - y) * (v - y);
                if (a[s * n_out + j] > a[s * n_out + best]) best = j;
            }
            ok += best == labels[k + s];
        }
    }
    *loss = count ? sum / count : 0.0;
    *correct = ok;
    return 0;
}

long sf_weight_bytes(const sf_net *n) {
    long b = 0;
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        b += L->sparse ? (long)L->nnz * 4 + 2L * (L->nnz / L->block) + 4L * (L->n_in + 1) : 4L * L->n_in * L->n_out;
        b += 4L * L->n_out;
    }
    return b;
}
