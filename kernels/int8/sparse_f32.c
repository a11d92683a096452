/* HDRNN in float32, with pruned layers in block-CSC storage: kernel c-sparse, the C kernel's
 * --prune path. Float arithmetic of the numpy reference (held to the float tolerance). Exports
 * the C ABI of common/ecufl_kernel.h (core symbols and the optional ecufl_net_set_mask).
 *
 * Layers start dense and switch to block-CSC storage when a mask is set, after which the pruned
 * weights are neither stored nor touched. Memory: create() allocates the buffers of a mini-batch
 * of max_batch samples, set_mask() the new storage and the block lists; a training step never
 * allocates.
 *
 * Layouts (every row padded with zeros to a multiple of 8 floats, one v8f):
 *   layer 0 (input: MNIST pixels, ~80% zero)  dense: W^T (n_in x ld_out); pruned: block-CSC by
 *       input pixel (per pixel, the kept blocks of 8 consecutive output rows, or single weights).
 *       Every product walks the NONZERO pixels only, and per pixel the kept blocks only:
 *         forward   z[s][rows] += x[s][i] * W[rows, i]              (per sample, its pixels)
 *         gradient  W[rows, i] -= step * sum_s x[s][i] d[s][rows]  (per pixel, its samples)
 *       so at 90% block sparsity both cost ~1/10 of the dense walk (which itself costs the
 *       nonzero pixels only). Layer 0's input delta is never needed.
 *   layers >= 1 (dense inputs: sigmoid outputs)  dense: W (n_out x ld_in) row-major, products as
 *       dot products (forward), axpys (back-propagation) and outer products (gradient);
 *       pruned (multi-hidden configs): block-CSC by input, walked over all inputs.
 * All deltas are computed (with the weights before the step) before any weight changes; the
 * sigmoid is the C kernel's vectorised one (kernels/c/simd.h vf_sigmoid).
 * A weight whose gradient is 0 is left alone: w - step * 0 == w. */
#define _POSIX_C_SOURCE 200112L
#include "block_list.h"
#include "ecufl_kernel.h"
#include "ecufl_rand.h"
#include "simd.h"  /* kernels/c: vf_sigmoid, the C kernel's vectorised sigmoid */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LD8(n) (((n) + 7) & ~7)

/* 8 floats as one value: GCC/Clang vector extensions give one AVX register on x86 and two NEON
 * q registers on ARMv7, without intrinsics. */
typedef float v8f __attribute__((vector_size(32)));
static inline v8f load8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }
static inline v8f splat8(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

typedef struct {
    int n_in, n_out, ld_in, ld_out;
    float *b;         /* ld_out, zero padded */
    float *w;         /* dense: layer 0 W^T (n_in x ld_out), others W (n_out x ld_in); NULL when sparse */
    int sparse, nnz, block;
    int32_t *colptr;  /* n_in + 1, in weights */
    uint16_t *row;    /* nnz / block: first output row of each kept block of `block` rows */
    float *wv;        /* nnz (+ 8 zeros) */
    float *gv;        /* layer 0 in 8-row blocks: the mini-batch's gradient of each kept weight */
} layer_t;

static inline int row_of(const layer_t *L, int k) {
    return L->block == 1 ? L->row[k] : L->row[k / L->block] + k % L->block;
}

struct ecufl_net {
    int n_layers, sizes[16], ld[16];
    int max_batch;    /* the largest mini-batch train() takes (given at create) */
    int cap;          /* samples the buffers hold: max(max_batch, 64), evaluation's chunk */
    layer_t L[15];
    float *act[16];   /* act[l] (l >= 1): cap x ld[l]; layer 0's input lives in the lists below */
    float *delta[15]; /* delta[l]: cap x ld[l+1], error at layer l's output */
    float *gs;        /* max ld: one gradient row / block sums */
    float *zpart;     /* 4 x ld[1]: partial sums of layer 0's forward walk */
    /* the input pixels: nonzero ones by sample (nz_*) and by pixel (c_*) */
    int32_t *nz_ptr, *nz_i, *c_ptr, *c_s;
    float *nz_x, *c_x;
    block_list bl;    /* layer 0 in 8-row blocks: the kept blocks at each sample's nonzero pixels */
    float *bl_x;      /* float inputs (any data): each block-list entry's input value (bl.v unused) */
    int float_inputs; /* the current call's data are float inputs (bl_x, not bl.v) */
    char error[256];  /* the last failure's message (ecufl_net_error) */
    char info[128];   /* ecufl_net_describe's JSON */
};

const char *ecufl_net_error(const ecufl_net *n) { return n ? n->error : "no network"; }

static int fail(ecufl_net *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->error, sizeof n->error, fmt, ap);
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

/* p / 255.0f for every byte, folded by the compiler (correctly rounded, as numpy's division). */
#define PV(p) ((float)(p) / 255.0f)
#define PV4(p) PV(p), PV(p + 1), PV(p + 2), PV(p + 3)
#define PV16(p) PV4(p), PV4(p + 4), PV4(p + 8), PV4(p + 12)
#define PV64(p) PV16(p), PV16(p + 16), PV16(p + 32), PV16(p + 48)
static const float pixel_value[256] = {PV64(0), PV64(64), PV64(128), PV64(192)};

static void free_buffers(ecufl_net *n) {
    for (int l = 0; l <= n->n_layers; l++) { free(n->act[l]); n->act[l] = NULL; }
    for (int l = 0; l < n->n_layers; l++) { free(n->delta[l]); n->delta[l] = NULL; }
    free(n->gs); free(n->zpart); n->zpart = NULL; free(n->nz_ptr); free(n->nz_i); free(n->c_ptr); free(n->c_s); free(n->nz_x); free(n->c_x);
    free(n->bl.ptr); free(n->bl.k); free(n->bl.r); free(n->bl.v); free(n->bl_x);
    n->bl_x = NULL;
    n->gs = n->nz_x = n->c_x = NULL;
    n->nz_ptr = n->nz_i = n->c_ptr = n->c_s = n->bl.ptr = n->bl.k = n->bl.r = NULL;
    n->bl.v = NULL;
    n->cap = 0;
}

/* Layer 0 pruned in blocks of 8 rows: walked through the block lists. */
static int blocked_first(const ecufl_net *n) { return n->L[0].sparse && n->L[0].block == 8; }

/* (Re)allocate every mini-batch buffer for up to m samples (at least 64: evaluation's chunk).
 * Called by create and set_mask only: training and evaluation never allocate. */
static int reserve(ecufl_net *n, int m) {
    free_buffers(n);
    int cap = m < 64 ? 64 : m, maxld = 0;
    for (int l = 0; l <= n->n_layers; l++) maxld = n->ld[l] > maxld ? n->ld[l] : maxld;
    size_t pix = (size_t)cap * n->sizes[0];
    for (int l = 1; l <= n->n_layers; l++)
        if (!(n->act[l] = zalloc(sizeof(float) * (size_t)cap * n->ld[l])) ||
            !(n->delta[l - 1] = zalloc(sizeof(float) * (size_t)cap * n->ld[l]))) goto oom;
    if (!(n->gs = zalloc(4 * (size_t)maxld)) || !(n->zpart = zalloc(16 * (size_t)n->ld[1])) || !(n->nz_ptr = zalloc(4 * ((size_t)cap + 1))) ||
        !(n->c_ptr = zalloc(4 * ((size_t)n->sizes[0] + 1))) || !(n->nz_i = zalloc(4 * pix)) ||
        !(n->c_s = zalloc(4 * pix)) || !(n->nz_x = zalloc(4 * pix)) || !(n->c_x = zalloc(4 * pix)))
        goto oom;
    if (blocked_first(n)) {  /* a block appears at most once per sample; 16 entries of slack */
        size_t entries = (size_t)cap * (n->L[0].nnz / 8) + 32;
        if (!(n->bl.ptr = zalloc(4 * ((size_t)cap + 1))) || !(n->bl.k = zalloc(4 * entries)) || !(n->bl.r = zalloc(4 * entries)) ||
            !(n->bl.v = zalloc(entries)) || !(n->bl_x = zalloc(4 * entries)))
            goto oom;
    }
    n->cap = cap;
    return 0;
oom:
    free_buffers(n);
    return fail(n, "out of memory for a mini-batch of %d samples", m);
}

static void free_layer_storage(layer_t *L) {
    free(L->w); free(L->colptr); free(L->row); free(L->wv); free(L->gv);
    L->w = L->wv = L->gv = NULL; L->colptr = NULL; L->row = NULL;
}

void ecufl_net_destroy(ecufl_net *n) {
    if (!n) return;
    for (int l = 0; l < n->n_layers; l++) { free(n->L[l].b); free_layer_storage(&n->L[l]); }
    free_buffers(n);
    free(n);
}

/* Index of weight (j, i) of a dense layer in its storage. */
static inline long dense_index(const layer_t *L, int first, int j, int i) {
    return first ? (long)i * L->ld_out + j : (long)j * L->ld_in + i;
}

ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    char msg[256] = "";
    if (n_sizes < 2 || n_sizes > 16) {
        snprintf(msg, sizeof msg, "need 2..16 layers, got %d", n_sizes);
    } else if (max_batch < 1 || max_batch > 1 << 16) {
        snprintf(msg, sizeof msg, "max_batch must be in 1..65536, got %d", max_batch);
    } else {
        for (int l = 0; l < n_sizes && !msg[0]; l++)
            if (sizes[l] < 1 || sizes[l] > 65535) snprintf(msg, sizeof msg, "layer size %d is %d, must be in 1..65535", l, sizes[l]);
    }
    ecufl_net *n = msg[0] ? NULL : calloc(1, sizeof *n);
    if (!msg[0] && !n) snprintf(msg, sizeof msg, "out of memory");
    if (n) {
        n->n_layers = n_sizes - 1;
        n->max_batch = max_batch;
        memcpy(n->sizes, sizes, sizeof(int) * n_sizes);
        for (int l = 0; l < n_sizes; l++) n->ld[l] = LD8(sizes[l]);
        for (int l = 0; l < n->n_layers && !msg[0]; l++) {  /* zero parameters, dense */
            layer_t *L = &n->L[l];
            L->n_in = sizes[l]; L->n_out = sizes[l + 1];
            L->ld_in = n->ld[l]; L->ld_out = n->ld[l + 1];
            L->b = zalloc(sizeof(float) * L->ld_out);
            L->w = zalloc(sizeof(float) * (size_t)(l == 0 ? L->n_in * L->ld_out : L->n_out * L->ld_in));
            if (!L->b || !L->w) snprintf(msg, sizeof msg, "out of memory");
        }
        if (!msg[0] && reserve(n, max_batch < 64 ? 64 : max_batch) != 0) snprintf(msg, sizeof msg, "%s", n->error);
    }
    if (msg[0]) {
        ecufl_net_destroy(n);
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", msg);
        return NULL;
    }
    snprintf(n->info, sizeof n->info, "{\"kernel\": \"c-sparse\", \"path\": \"block-csc-float32\", \"bits\": 32}");
    return n;
}

int ecufl_net_set_params(ecufl_net *n, const float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        layer_t *L = &n->L[l];
        const float *w = params[2 * l];
        memcpy(L->b, params[2 * l + 1], sizeof(float) * L->n_out);
        if (L->sparse) {  /* the mask stays: only the kept positions take the new values */
            for (int i = 0; i < L->n_in; i++)
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) L->wv[k] = w[(long)row_of(L, k) * L->n_in + i];
        } else {
            for (int j = 0; j < L->n_out; j++)
                for (int i = 0; i < L->n_in; i++) L->w[dense_index(L, l == 0, j, i)] = w[(long)j * L->n_in + i];
        }
    }
    return 0;
}

/* Layer l's weights in the book's shape (n_out x n_in), zeros where pruned. */
static void dense_copy(const layer_t *L, int first, float *w) {
    if (L->sparse) {
        memset(w, 0, sizeof(float) * (size_t)L->n_in * L->n_out);
        for (int i = 0; i < L->n_in; i++)
            for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) w[(long)row_of(L, k) * L->n_in + i] = L->wv[k];
    } else {
        for (int j = 0; j < L->n_out; j++)
            for (int i = 0; i < L->n_in; i++) w[(long)j * L->n_in + i] = L->w[dense_index(L, first, j, i)];
    }
}

int ecufl_net_get_params(const ecufl_net *n, float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        memcpy(params[2 * l + 1], n->L[l].b, sizeof(float) * n->L[l].n_out);
        dense_copy(&n->L[l], l == 0, params[2 * l]);
    }
    return 0;
}

/* Drawn in the book's layout, then set (init is a Prepare step: it may allocate). */
int ecufl_net_init_params(ecufl_net *n, uint32_t seed, int scaled) {
    float *p[2 * (ECUFL_MAX_SIZES - 1)] = {0};
    int ok = 1;
    for (int l = 0; l < n->n_layers; l++) {
        ok &= (p[2 * l] = malloc(sizeof(float) * (size_t)n->sizes[l] * n->sizes[l + 1])) != NULL;
        ok &= (p[2 * l + 1] = malloc(sizeof(float) * (size_t)n->sizes[l + 1])) != NULL;
    }
    if (ok) {
        ecufl_init_params(n->n_layers + 1, n->sizes, seed, scaled, NULL, p);
        ecufl_net_set_params(n, (const float *const *)p);
    }
    for (int l = 0; l < n->n_layers; l++) { free(p[2 * l]); free(p[2 * l + 1]); }
    return ok ? 0 : fail(n, "out of memory");
}

int ecufl_net_set_mask(ecufl_net *n, int l, const uint8_t *mask, int block) {
    if (l < 0 || l >= n->n_layers) return fail(n, "no weight layer %d", l);
    layer_t *L = &n->L[l];
    long size = (long)L->n_in * L->n_out, nnz = 0;
    if (block != 1 && block != 8) return fail(n, "block %d: 1 or 8 rows", block);
    if (L->n_out % block) return fail(n, "block %d does not divide the %d outputs of layer %d", block, L->n_out, l);
    for (int j0 = 0; j0 < L->n_out; j0 += block)
        for (int i = 0; i < L->n_in; i++)
            for (int r = 1; r < block; r++)
                if (!mask[(long)(j0 + r) * L->n_in + i] != !mask[(long)j0 * L->n_in + i])
                    return fail(n, "mask of layer %d is not made of whole %d-row blocks", l, block);
    for (long k = 0; k < size; k++) nnz += mask[k] != 0;
    float *dense = malloc(sizeof(float) * (size_t)size);  /* (n_out x n_in); pruning is rare */
    int32_t *colptr = zalloc(sizeof(int32_t) * (L->n_in + 1));
    uint16_t *row = zalloc(sizeof(uint16_t) * (nnz / block + 16));  /* + 16: bl_emit reads 16 */
    float *wv = zalloc(sizeof(float) * (size_t)(nnz + 8));
    float *gv = l == 0 && block == 8 ? zalloc(sizeof(float) * (size_t)(nnz + 8)) : NULL;
    if (!dense || !colptr || !row || !wv || (l == 0 && block == 8 && !gv)) {
        free(dense); free(colptr); free(row); free(wv); free(gv);
        return fail(n, "out of memory");
    }
    dense_copy(L, l == 0, dense);
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
    free_layer_storage(L);
    L->colptr = colptr; L->row = row; L->wv = wv; L->gv = gv;
    L->nnz = (int)nnz;
    L->block = block;
    L->sparse = 1;
    return reserve(n, n->cap);  /* the block lists are sized by the kept blocks: allocated now, not in a step */
}

/* The nonzero inputs listed by sample (nz_ptr / nz_i / nz_x) also by input (c_ptr / c_s / c_x):
 * a counting sort, so within an input the samples ascend. */
static void by_input(ecufl_net *n, int m) {
    const int n_in = n->sizes[0];
    const int32_t cnt = n->nz_ptr[m];
    const int32_t *restrict nz_i = n->nz_i;
    const float *restrict nz_x = n->nz_x;
    int32_t *restrict c_ptr = n->c_ptr;
    for (int t = 0; t < cnt; t++) c_ptr[nz_i[t] + 1]++;
    for (int i = 0; i < n_in; i++) c_ptr[i + 1] += c_ptr[i];
    for (int s = 0; s < m; s++)
        for (int t = n->nz_ptr[s]; t < n->nz_ptr[s + 1]; t++) {
            int pos = c_ptr[nz_i[t]]++;
            n->c_s[pos] = s;
            n->c_x[pos] = nz_x[t];
        }
    for (int i = n_in; i > 0; i--) c_ptr[i] = c_ptr[i - 1];
    c_ptr[0] = 0;
}

/* ---- the input layer's nonzero pixels ------------------------------------------------------ */
/* By sample: 8 pixels at a time, all-zero words skipped (MNIST's background), the others
 * compacted without branches; then by pixel (counting sort; within a pixel, samples ascend). */
static void list_pixels(ecufl_net *n, const uint8_t *images, const int32_t *idx, int m) {
    const int n_in = n->sizes[0];
    int32_t cnt = 0;
    int32_t *restrict nz_i = n->nz_i, *restrict c_ptr = n->c_ptr;
    float *restrict nz_x = n->nz_x;
    memset(c_ptr, 0, sizeof(int32_t) * (n_in + 1));
    for (int s = 0; s < m; s++) {
        const uint8_t *px = images + (long)(idx ? idx[s] : s) * n_in;
        n->nz_ptr[s] = cnt;
        int i = 0;
        for (; i + 8 <= n_in; i += 8) {
            uint64_t word;
            memcpy(&word, px + i, 8);
            if (!word) continue;
            for (int k = i; k < i + 8; k++) {
                nz_i[cnt] = k;
                nz_x[cnt] = pixel_value[px[k]];
                cnt += px[k] != 0;
            }
        }
        for (; i < n_in; i++) {
            nz_i[cnt] = i;
            nz_x[cnt] = pixel_value[px[i]];
            cnt += px[i] != 0;
        }
    }
    n->nz_ptr[m] = cnt;
    by_input(n, m);
}

/* The samples of a train/evaluate call: uint8 pixels or float inputs, labels or real targets. */
typedef struct {
    const uint8_t *images;  /* (n, n_in) pixels p (entering as p / 255), or NULL */
    const float *inputs;    /* (n, n_in) float inputs as they are (ecufl_net_train_f32), or NULL */
    const uint8_t *labels;  /* class indices (one-hot targets), or NULL */
    const float *targets;   /* (n, n_out) real-valued targets, or NULL */
} data_t;

/* list_pixels for float inputs: the nonzero inputs by sample, as they are, then by input. */
static void list_inputs(ecufl_net *n, const float *inputs, const int32_t *idx, int m) {
    const int n_in = n->sizes[0];
    int32_t cnt = 0;
    int32_t *restrict nz_i = n->nz_i, *restrict c_ptr = n->c_ptr;
    float *restrict nz_x = n->nz_x;
    memset(c_ptr, 0, sizeof(int32_t) * (n_in + 1));
    for (int s = 0; s < m; s++) {
        const float *x = inputs + (long)(idx ? idx[s] : s) * n_in;
        n->nz_ptr[s] = cnt;
        for (int i = 0; i < n_in; i++) {
            nz_i[cnt] = i;
            nz_x[cnt] = x[i];
            cnt += x[i] != 0.0f;
        }
    }
    n->nz_ptr[m] = cnt;
    by_input(n, m);
}

/* bl_build for float inputs: the same entries (kept blocks at each nonzero input), each entry's
 * input value in n->bl_x (bl_emit writes up to 16 entries past the count: so does this). */
static void bl_build_f32(ecufl_net *n, const float *inputs, const int32_t *idx, int m) {
    const layer_t *L = &n->L[0];
    const int n_in = n->sizes[0], narrow = n->sizes[1] <= 64;
    block_list *bl = &n->bl;
    int32_t cnt = 0;
    for (int s = 0; s < m; s++) {
        const float *x = inputs + (long)(idx ? idx[s] : s) * n_in;
        bl->ptr[s] = cnt;
        for (int i = 0; i < n_in; i++) {
            if (x[i] == 0.0f) continue;
            int32_t next = bl_emit(L->colptr, L->row, i, 0, bl->k, bl->r, bl->v, cnt, narrow);
            for (int32_t e = cnt; e < next; e++) n->bl_x[e] = x[i];
            cnt = next;
        }
    }
    bl->ptr[m] = cnt;
}

/* ---- forward ------------------------------------------------------------------------------- */
/* z (ld_out) = layer 0's pre-activation of sample s, without the bias. */
static void forward_first(const ecufl_net *n, const layer_t *L, int s, float *restrict z) {
    const int ld = L->ld_out;
    for (int c = 0; c < ld; c += 8) store8(z + c, splat8(0.0f));
    const int32_t *restrict nz_i = n->nz_i;
    const float *restrict nz_x = n->nz_x;
    const int t0 = n->nz_ptr[s], t1 = n->nz_ptr[s + 1];
    if (!L->sparse) {
        for (int c = 0; c < ld; c += 64) {  /* up to 8 vectors of outputs kept in registers */
            const int nv = (ld - c) / 8 < 8 ? (ld - c) / 8 : 8;
            v8f acc[8];
            for (int v = 0; v < 8; v++) acc[v] = splat8(0.0f);
            for (int t = t0; t < t1; t++) {
                const float *restrict wr = L->w + (long)nz_i[t] * ld + c;
                const v8f x = splat8(nz_x[t]);
                for (int v = 0; v < nv; v++) acc[v] += x * load8(wr + 8 * v);
            }
            for (int v = 0; v < nv; v++) store8(z + c + 8 * v, acc[v]);
        }
        return;
    }
    const int32_t *restrict colptr = L->colptr;
    const uint16_t *restrict row = L->row;
    const float *restrict wv = L->wv;
    if (L->block == 8) {  /* one vector operation per kept block at a nonzero pixel */
        /* Consecutive pixels keep mostly the same rows, so one accumulator row would chain every
         * few entries through a store and a reload; entries alternate over 4 copies of z instead. */
        float *restrict zp = n->zpart;
        for (int c = 0; c < 4 * ld; c += 8) store8(zp + c, splat8(0.0f));
        const int32_t *restrict blk_k = n->bl.k, *restrict blk_r = n->bl.r;
        const uint8_t *restrict blk_v = n->bl.v;
        const float *restrict blk_x = n->bl_x;
        const int e0 = n->bl.ptr[s], e1 = n->bl.ptr[s + 1];
        int e = e0;
        /* the entries' input values: pixel bytes (p / 255), or float inputs (bl_build_f32) */
#define BLOCKED_FORWARD(VALUE)                                                            \
        for (; e + 4 <= e1; e += 4)                                                       \
            for (int q = 0; q < 4; q++) {                                                 \
                const int k = blk_k[e + q];                                               \
                float *zb = zp + q * ld + blk_r[e + q];                                   \
                store8(zb, load8(zb) + splat8(VALUE(e + q)) * load8(wv + k));             \
            }                                                                             \
        for (; e < e1; e++) {                                                             \
            const int k = blk_k[e];                                                       \
            float *zb = zp + blk_r[e];                                                    \
            store8(zb, load8(zb) + splat8(VALUE(e)) * load8(wv + k));                     \
        }
#define PIXEL(e) pixel_value[blk_v[e]]
#define INPUT(e) blk_x[e]
        if (n->float_inputs) {
            BLOCKED_FORWARD(INPUT)
        } else {
            BLOCKED_FORWARD(PIXEL)
        }
        for (int c = 0; c < ld; c += 8)
            store8(z + c, (load8(zp + c) + load8(zp + ld + c)) + (load8(zp + 2 * ld + c) + load8(zp + 3 * ld + c)));
        return;
    }
    for (int t = t0; t < t1; t++) {
        const int i = nz_i[t];
        const float x = nz_x[t];
        for (int k = colptr[i]; k < colptr[i + 1]; k++) z[row[k]] += x * wv[k];
    }
}

/* z (ld_out) = layer l's (l >= 1) pre-activation from the dense activations a (ld_in), no bias. */
static void forward_hidden(const layer_t *L, const float *restrict a, float *restrict z) {
    if (!L->sparse) {
        for (int j = 0; j < L->n_out; j++) {
            const float *restrict wr = L->w + (long)j * L->ld_in;
            v8f acc = splat8(0.0f);
            for (int c = 0; c < L->ld_in; c += 8) acc += load8(a + c) * load8(wr + c);
            float sum = 0.0f;
            for (int q = 0; q < 8; q++) sum += acc[q];
            z[j] = sum;
        }
        for (int j = L->n_out; j < L->ld_out; j++) z[j] = 0.0f;
        return;
    }
    memset(z, 0, sizeof(float) * L->ld_out);
    for (int i = 0; i < L->n_in; i++)
        for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) z[row_of(L, k)] += a[i] * L->wv[k];
}

/* a = sigmoid(z + b) on the n real outputs (in place); the padding stays 0. */
static void bias_sigmoid(float *z, const float *b, int n, int ld) {
    for (int c = 0; c < ld; c += VF_WIDTH) vf_store(z + c, vf_sigmoid(vf_add(vf_load(z + c), vf_load(b + c))));
    for (int j = n; j < ld; j++) z[j] = 0.0f;
}

static void forward(ecufl_net *n, const data_t *data, const int32_t *idx, int m) {
    const uint8_t *images = data->images;
    n->float_inputs = images == NULL;
    if (!images) {
        if (blocked_first(n)) bl_build_f32(n, data->inputs, idx, m);
        else list_inputs(n, data->inputs, idx, m);
    } else if (blocked_first(n)) bl_build(n->L[0].colptr, n->L[0].row, images, n->sizes[0], idx, m, n->sizes[0], n->sizes[1], &n->bl);
    else list_pixels(n, images, idx, m);
    for (int s = 0; s < m; s++) {
        float *z = n->act[1] + (long)s * n->ld[1];
        forward_first(n, &n->L[0], s, z);
        bias_sigmoid(z, n->L[0].b, n->sizes[1], n->ld[1]);
        for (int l = 1; l < n->n_layers; l++) {
            const layer_t *L = &n->L[l];
            z = n->act[l + 1] + (long)s * L->ld_out;
            forward_hidden(L, n->act[l] + (long)s * L->ld_in, z);
            bias_sigmoid(z, L->b, L->n_out, L->ld_out);
        }
    }
}

/* ---- backward and update ------------------------------------------------------------------- */
static void train_batch(ecufl_net *n, int m, const data_t *data, const int32_t *idx, float step) {
    const int nl = n->n_layers;
    const uint8_t *labels = data->labels;
    {  /* output error: (a - y) a (1 - a) */
        const int ld = n->ld[nl];
        for (int s = 0; s < m; s++) {
            const float *a = n->act[nl] + (long)s * ld;
            float *d = n->delta[nl - 1] + (long)s * ld;
            if (data->targets) {  /* real-valued targets; the padding's a = 0 gives d = 0 */
                const float *y = data->targets + (long)idx[s] * n->sizes[nl];
                for (int j = 0; j < n->sizes[nl]; j++) d[j] = (a[j] - y[j]) * a[j] * (1.0f - a[j]);
                continue;
            }
            for (int c = 0; c < ld; c += 8) {
                v8f av = load8(a + c);
                store8(d + c, av * av * (splat8(1.0f) - av));  /* (a - 0) a (1 - a); the label below */
            }
            const int j = labels[idx[s]];
            d[j] = (a[j] - 1.0f) * a[j] * (1.0f - a[j]);
        }
    }
    for (int l = nl - 1; l >= 1; l--) {  /* delta[l-1] = (W_l^T delta[l]) * a (1 - a), old weights */
        const layer_t *L = &n->L[l];
        const int ldi = L->ld_in, ldo = L->ld_out;
        for (int s = 0; s < m; s++) {
            const float *restrict d = n->delta[l] + (long)s * ldo;
            const float *restrict a = n->act[l] + (long)s * ldi;
            float *restrict e = n->delta[l - 1] + (long)s * ldi;
            if (!L->sparse) {
                for (int c = 0; c < ldi; c += 8) store8(e + c, splat8(0.0f));
                for (int j = 0; j < L->n_out; j++) {
                    const v8f dj = splat8(d[j]);
                    const float *restrict wr = L->w + (long)j * ldi;
                    for (int c = 0; c < ldi; c += 8) store8(e + c, load8(e + c) + dj * load8(wr + c));
                }
            } else {
                for (int i = 0; i < L->n_in; i++) {
                    float sum = 0.0f;
                    for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) sum += d[row_of(L, k)] * L->wv[k];
                    e[i] = sum;
                }
                for (int i = L->n_in; i < ldi; i++) e[i] = 0.0f;
            }
            for (int c = 0; c < ldi; c += 8) {
                v8f av = load8(a + c);
                store8(e + c, load8(e + c) * av * (splat8(1.0f) - av));
            }
        }
    }
    const v8f stepv = splat8(step);
    for (int l = 0; l < nl; l++) {
        layer_t *L = &n->L[l];
        const int ldo = L->ld_out;
        const float *restrict d = n->delta[l];
        float *restrict gs = n->gs;
        for (int c = 0; c < ldo; c += 8) {  /* biases */
            v8f gb = splat8(0.0f);
            for (int s = 0; s < m; s++) gb += load8(d + (long)s * ldo + c);
            store8(L->b + c, load8(L->b + c) - stepv * gb);
        }
        if (l == 0 && blocked_first(n)) {  /* the block lists again, then every kept weight's step */
            /* local copies: the vector stores (memcpy) may alias anything, struct fields included */
            float *restrict gv = L->gv, *restrict wv = L->wv;
            const int32_t *restrict blk_k = n->bl.k, *restrict blk_r = n->bl.r, *restrict blk_ptr = n->bl.ptr;
            const uint8_t *restrict blk_v = n->bl.v;
            const float *restrict blk_x = n->bl_x;
#define BLOCKED_GRADIENT(VALUE)                                                                       \
            for (int s = 0; s < m; s++) {                                                             \
                const float *restrict ds = d + (long)s * ldo;                                         \
                const int e1 = blk_ptr[s + 1];                                                        \
                for (int e = blk_ptr[s]; e < e1; e++) {                                               \
                    const int k = blk_k[e];                                                           \
                    store8(gv + k, load8(gv + k) + splat8(VALUE(e)) * load8(ds + blk_r[e]));          \
                }                                                                                     \
            }
            if (n->float_inputs) {
                BLOCKED_GRADIENT(INPUT)
            } else {
                BLOCKED_GRADIENT(PIXEL)
            }
            const int nnz = L->nnz;
            for (int k = 0; k < nnz; k += 8) {  /* untouched blocks: w - step * 0 == w */
                store8(wv + k, load8(wv + k) - stepv * load8(gv + k));
                store8(gv + k, splat8(0.0f));
            }
            continue;
        }
        if (l == 0) {  /* by pixel: only pixels that are nonzero in some sample get work */
            for (int i = 0; i < L->n_in; i++) {
                const int t0 = n->c_ptr[i], t1 = n->c_ptr[i + 1];
                if (t0 == t1) continue;
                if (!L->sparse) {
                    float *restrict wr = L->w + (long)i * ldo;
                    for (int c = 0; c < ldo; c += 64) {
                        const int nv = (ldo - c) / 8 < 8 ? (ldo - c) / 8 : 8;
                        v8f acc[8];
                        for (int v = 0; v < 8; v++) acc[v] = splat8(0.0f);
                        for (int t = t0; t < t1; t++) {
                            const float *restrict ds = d + (long)n->c_s[t] * ldo + c;
                            const v8f x = splat8(n->c_x[t]);
                            for (int v = 0; v < nv; v++) acc[v] += x * load8(ds + 8 * v);
                        }
                        for (int v = 0; v < nv; v++) store8(wr + c + 8 * v, load8(wr + c + 8 * v) - stepv * acc[v]);
                    }
                } else {
                    for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) {
                        const int r = L->row[k];
                        float acc = 0.0f;
                        for (int t = t0; t < t1; t++) acc += n->c_x[t] * d[(long)n->c_s[t] * ldo + r];
                        L->wv[k] -= step * acc;
                    }
                }
            }
            continue;
        }
        const int ldi = L->ld_in;
        const float *restrict a = n->act[l];
        if (!L->sparse) {  /* G = delta^T a, row by row, then W -= step G */
            for (int j = 0; j < L->n_out; j++) {
                for (int c = 0; c < ldi; c += 8) store8(gs + c, splat8(0.0f));
                for (int s = 0; s < m; s++) {
                    const v8f dj = splat8(d[(long)s * ldo + j]);
                    const float *restrict as = a + (long)s * ldi;
                    for (int c = 0; c < ldi; c += 8) store8(gs + c, load8(gs + c) + dj * load8(as + c));
                }
                float *restrict wr = L->w + (long)j * ldi;
                for (int c = 0; c < ldi; c += 8) store8(wr + c, load8(wr + c) - stepv * load8(gs + c));
            }
        } else {
            for (int i = 0; i < L->n_in; i++)
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) {
                    const int r = row_of(L, k);
                    float acc = 0.0f;
                    for (int s = 0; s < m; s++) acc += a[(long)s * ldi + i] * d[(long)s * ldo + r];
                    L->wv[k] -= step * acc;
                }
        }
    }
}

/* The epoch order visits the training images at random: each image is a fresh trip to memory. */
static void prefetch_images(const uint8_t *images, const int32_t *idx, int m, int n_in) {
    for (int s = 0; s < m; s++) {
        const char *p = (const char *)(images + (long)idx[s] * n_in);
        for (int b = 0; b < n_in; b += 64) __builtin_prefetch(p + b);
        __builtin_prefetch(p + n_in - 1);
    }
}

/* Labels of the samples used below the outputs; their float inputs and targets finite. */
static int check_sample(ecufl_net *n, const data_t *d, int row) {
    const int n_in = n->sizes[0], n_out = n->sizes[n->n_layers];
    if (d->labels && d->labels[row] >= n_out) return fail(n, "label %d at index %d is not below %d", d->labels[row], row, n_out);
    if (d->inputs)
        for (int i = 0; i < n_in; i++)
            if (!isfinite(d->inputs[(long)row * n_in + i])) return fail(n, "input %d of sample %d is not finite", i, row);
    if (d->targets)
        for (int j = 0; j < n_out; j++)
            if (!isfinite(d->targets[(long)row * n_out + j])) return fail(n, "target %d of sample %d is not finite", j, row);
    return 0;
}

static int train(ecufl_net *n, const data_t *d, int n_images, const int32_t *order, int count, double lr, int batch_size) {
    if (batch_size < 1 || batch_size > n->max_batch)
        return fail(n, "batch_size %d is outside 1..%d (the net's max_batch)", batch_size, n->max_batch);
    if (!(lr > 0.0) || !isfinite(lr)) return fail(n, "learning rate %g: must be positive and finite", lr);
    for (int i = 0; i < count; i++) {
        if (order[i] < 0 || order[i] >= n_images) return fail(n, "order[%d] = %d is outside 0..%d", i, order[i], n_images - 1);
        /* the output error writes delta[label]: a label past the outputs would write past the row */
        if (check_sample(n, d, order[i])) return -1;
    }
    const uint8_t *images = d->images;
    /* float inputs (any data): no prefetch (a check inside prefetch_images made GCC 12 drop every
     * prefetch instruction, MNIST's too: int8 and c-sparse epochs 1.25x slower) */
    if (images) prefetch_images(images, order, count < batch_size ? count : batch_size, n->sizes[0]);
    for (int k = 0; k < count; k += batch_size) {
        int m = count - k < batch_size ? count - k : batch_size;
        if (images && k + m < count)  /* the next mini-batch's images travel from memory while this one trains */
            prefetch_images(images, order + k + m, count - k - m < batch_size ? count - k - m : batch_size, n->sizes[0]);
        forward(n, d, order + k, m);
        train_batch(n, m, d, order + k, (float)(lr / m));
    }
    return 0;
}

static int evaluate(ecufl_net *n, const data_t *d, int count, double *loss, int *correct) {
    const int nl = n->n_layers, n_out = n->sizes[nl], ld = n->ld[nl];
    for (int i = 0; i < count; i++)
        if (check_sample(n, d, i)) return -1;
    double sum = 0.0;
    int ok = 0;
    for (int k = 0; k < count; k += n->cap) {
        int m = count - k < n->cap ? count - k : n->cap;
        data_t chunk = *d;  /* rows k .. k + m */
        if (chunk.images) chunk.images += (long)k * n->sizes[0];
        if (chunk.inputs) chunk.inputs += (long)k * n->sizes[0];
        forward(n, &chunk, NULL, m);
        for (int s = 0; s < m; s++) {
            const float *a = n->act[nl] + (long)s * ld;
            if (d->targets) {  /* real-valued targets: correct when every output is within 0.5 */
                const float *y = d->targets + (long)(k + s) * n_out;
                int near = 1;
                for (int j = 0; j < n_out; j++) {
                    double v = a[j], e = v - y[j];
                    sum += 0.5 * e * e;
                    near &= fabs(e) < 0.5;
                }
                ok += near;
                continue;
            }
            int best = 0;
            for (int j = 0; j < n_out; j++) {
                double v = a[j], y = d->labels[k + s] == j ? 1.0 : 0.0;
                sum += 0.5 * (v - y) * (v - y);
                if (a[j] > a[best]) best = j;
            }
            ok += best == d->labels[k + s];
        }
    }
    *loss = count ? sum / count : 0.0;
    *correct = ok;
    return 0;
}

int ecufl_net_train(ecufl_net *n, const uint8_t *images, const uint8_t *labels, int n_images, const int32_t *order,
                    int count, double lr, int batch_size) {
    data_t d = {images, NULL, labels, NULL};
    return train(n, &d, n_images, order, count, lr, batch_size);
}

int ecufl_net_evaluate(ecufl_net *n, const uint8_t *images, const uint8_t *labels, int count, double *loss, int *correct) {
    data_t d = {images, NULL, labels, NULL};
    return evaluate(n, &d, count, loss, correct);
}

int ecufl_net_train_f32(ecufl_net *n, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int count, double lr, int batch_size) {
    if (!inputs || (!targets && !labels)) return fail(n, "no inputs, or neither targets nor labels");
    data_t d = {NULL, inputs, targets ? NULL : labels, targets};
    return train(n, &d, n_samples, order, count, lr, batch_size);
}

int ecufl_net_evaluate_f32(ecufl_net *n, const float *inputs, const float *targets, const uint8_t *labels,
                           int count, double *loss, int *correct) {
    if (!inputs || (!targets && !labels)) return fail(n, "no inputs, or neither targets nor labels");
    data_t d = {NULL, inputs, targets ? NULL : labels, targets};
    return evaluate(n, &d, count, loss, correct);
}

long ecufl_net_weight_bytes(const ecufl_net *n) {
    long b = 0;
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        b += L->sparse ? (long)L->nnz * 4 + 2L * (L->nnz / L->block) + 4L * (L->n_in + 1) : 4L * L->n_in * L->n_out;
        b += 4L * L->n_out;
    }
    return b;
}

const char *ecufl_net_describe(const ecufl_net *n) { return n->info; }
