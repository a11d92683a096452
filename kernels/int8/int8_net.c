/* HDRNN with CMSIS-NN-style int8 training: the scheme of reference.py, bit for bit.
 *
 * One SGD step on m samples (see reference.py for the scales):
 *   input    a0 = (254 p + 255) / 510                          (q7, 0..127)
 *   forward  acc = a_prev . wq (int32), z = sat16(requant(acc) + bq), a = LUT[clamp(z)]
 *   output   d = (a - 127 y) DLUT[z], dq = q15(d)     (DLUT: sigmoid' in Q16, see reference.py)
 *   layer l  (last to first) e = dq . wq_l (old int8 weights), dq_prev = q15(q15(e) DLUT[z_prev]);
 *            w_l -= (float)(dq^T a_prev) * c_w, b_l -= (float)sum(dq) * c_b  (float32 masters)
 *   then     every layer is requantised from its new maxabs.
 * Dense layers run the inner loops of int8_ops.h (plain or SIMD, chosen at build time). Pruned
 * layers are stored by columns (CSC: per input, the kept weights and their uint16 output rows) and
 * skip twice: pruned weights, and inputs that are zero (most MNIST pixels), in the forward
 * product, the weight gradient and the back-propagation. Skipping a weight whose gradient is 0
 * is exact: w - (float)0 * c == w. */
#define _POSIX_C_SOURCE 200112L  /* posix_memalign */
#include "int8_net.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_list.h"
#include "int8_ops.h"
#include "int8_sigmoid_lut.h"

#define A_ONE 127
#define LUT_HALF 2048
#define DLUT_HALF 4096
#define MAX_BATCH 512

typedef struct {
    int n_in, n_out, ld;
    float *b;         /* float32 master biases */
    int16_t *bq;      /* biases in z units (Q8.8) */
    float maxabs;     /* of the master weights; scale s_w = maxabs / 127 */
    int32_t m0;       /* requantisation: z = (acc * m0 + 2^(r-1)) >> r */
    int r;
    /* dense storage (n_out x ld), or NULL when sparse */
    float *w;
    int8_t *wq;
    int8_t *wq4;      /* wq in i8_fc_forward's layout (i8_pack_weights) */
    float *colmax;    /* ld: max_j |w[j][i]| of the dense masters (kept by i8_fc_update) */
    /* CSC storage when pruned, in blocks of `block` consecutive output rows (1 or 8) */
    int sparse, nnz, block;
    int32_t *colptr;  /* n_in + 1, in weights */
    uint16_t *row;    /* nnz / block: first output row of each kept block */
    float *wv;        /* nnz float32 masters */
    int8_t *wqv;      /* nnz int8 */
    int32_t *gv;      /* layer 0 in 8-row blocks: the mini-batch's int32 gradient of each kept weight */
} layer_t;

/* 8 int32 as one value (GCC/Clang vector extensions: one AVX2 register, two NEON q registers). */
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int8_t v8b __attribute__((vector_size(8)));
typedef int16_t v8h __attribute__((vector_size(16)));
static inline v8i load8i(const int32_t *p) { v8i v; memcpy(&v, p, sizeof v); return v; }
static inline void store8i(int32_t *p, v8i v) { memcpy(p, &v, sizeof v); }
#if defined(__AVX2__)  /* one vpmovsx each (the generic conversion compiles to byte shifts) */
#include <immintrin.h>
static inline v8i widen8b(const int8_t *p) { return (v8i)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline v8i widen8h(const int16_t *p) { return (v8i)_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)p)); }
#else
static inline v8i widen8b(const int8_t *p) { v8b v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, v8i); }
static inline v8i widen8h(const int16_t *p) { v8h v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, v8i); }
#endif

/* Output row of the k-th kept weight of a pruned layer. */
static inline int row_of(const layer_t *L, int k) {
    return L->block == 1 ? L->row[k] : L->row[k / L->block] + k % L->block;
}

struct i8_net {
    int n_layers;     /* weight layers */
    int sizes[16];
    layer_t L[15];
    int max_batch;    /* the largest mini-batch train() takes (given at create) */
    int cap;          /* samples the buffers below hold: max(max_batch, 64), evaluation's chunk */
    uint8_t *act[16]; /* act[l]: cap x ld(l) q7 activations, zero padded; act[0] = inputs */
    uint16_t *zi[16]; /* zi[l]: cap x ld(l+1) derivative-LUT index of layer l's z */
    int32_t *acc;     /* cap x max n: accumulators, errors before q15 */
    int32_t *z;       /* cap x n_out of the last layer */
    int16_t *dq, *dq2;/* cap x max n: q15 errors of the current / previous layer */
    int16_t *packed;  /* cap x max ld int16: activations packed for i8_fc_update */
    int32_t *pairs;   /* (cap + 1) / 2 x max n int32: i8_fc_update's scratch */
    /* nonzero activations of a layer's input, by sample and by column (pruned layers) */
    int32_t *nz_ptr;  /* cap + 1 */
    uint16_t *nz_i;   /* cap x max ld */
    uint8_t *nz_x;
    int32_t *c_ptr;   /* max ld + 1 */
    uint16_t *c_s;    /* cap x max ld */
    uint8_t *c_x;
    int32_t *g;       /* max n: gradients of one column */
    int listed;       /* the layer whose input the lists hold, -1 if none */
    block_list bl;    /* layer 0 in 8-row blocks: the kept blocks at each sample's nonzero inputs */
    int maxn, maxld;
    char error[256];  /* the last failure's message (i8_error) */
};

const char *i8_error(const i8_net *n) { return n->error; }
const char *i8_path(void) { return i8_ops_path(); }

static int fail(i8_net *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->error, sizeof n->error, fmt, ap);
    va_end(ap);
    return -1;
}

static void *zalloc(size_t bytes) {  /* aligned for the SIMD loads, zeroed (padding must be 0) */
    void *p = NULL;
    bytes = (bytes + I8_ALIGN - 1) / I8_ALIGN * I8_ALIGN;
    if (bytes == 0) bytes = I8_ALIGN;
    if (posix_memalign(&p, I8_ALIGN, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* A pixel p as the q7 input (254 p + 255) / 510 (reference.input_q), for every byte value. */
#define Q7(p) (uint8_t)((254 * (p) + 255) / 510)
#define Q7x4(p) Q7(p), Q7(p + 1), Q7(p + 2), Q7(p + 3)
#define Q7x16(p) Q7x4(p), Q7x4(p + 4), Q7x4(p + 8), Q7x4(p + 12)
#define Q7x64(p) Q7x16(p), Q7x16(p + 16), Q7x16(p + 32), Q7x16(p + 48)
static const uint8_t input_q[256] = {Q7x64(0), Q7x64(64), Q7x64(128), Q7x64(192)};

/* ---- quantisation -------------------------------------------------------------------------- */
static void multiplier(float maxabs, int32_t *m0, int *r) {
    double real = (double)maxabs * 256.0 / 16129.0;
    if (real == 0.0) { *m0 = 0; *r = 31; return; }
    int e;
    double frac = frexp(real, &e);
    int64_t q = (int64_t)floor(frac * 2147483648.0 + 0.5);
    if (q == ((int64_t)1 << 31)) { q >>= 1; e++; }
    int rr = 31 - e;
    *m0 = (int32_t)q;
    *r = rr < 1 ? 1 : rr > 62 ? 62 : rr;
}

static void requantise(layer_t *L, float maxabs) {
    L->maxabs = maxabs;
    float qmul = maxabs > 0.0f ? 127.0f / maxabs : 0.0f;
    if (L->sparse) {
        i8_quantise(L->wv, I8_LD(L->nnz), qmul, L->wqv);  /* padded to 32 with zeros */
    } else {
        i8_quantise(L->w, L->n_out * L->ld, qmul, L->wq);
        i8_pack_weights(L->wq, L->n_out, L->ld, L->wq4);
    }
    multiplier(maxabs, &L->m0, &L->r);
    for (int j = 0; j < L->n_out; j++) {
        double q = floor((double)L->b[j] * 256.0 + 0.5);
        L->bq[j] = (int16_t)(q > 32767.0 ? 32767.0 : q < -32768.0 ? -32768.0 : q);
    }
}

static void dense_colmax(layer_t *L) {  /* after the masters change outside a training step */
    if (L->sparse) return;
    for (int i = 0; i < L->ld; i++) L->colmax[i] = 0.0f;
    for (int j = 0; j < L->n_out; j++)
        for (int i = 0; i < L->ld; i++) {
            float v = fabsf(L->w[(long)j * L->ld + i]);
            L->colmax[i] = v > L->colmax[i] ? v : L->colmax[i];
        }
}

static float master_maxabs(const layer_t *L) {
    float mx = 0.0f;
    long n = L->sparse ? L->nnz : (long)L->n_out * L->ld;
    const float *v = L->sparse ? L->wv : L->w;
    for (long k = 0; k < n; k++) mx = fabsf(v[k]) > mx ? fabsf(v[k]) : mx;
    return mx;
}

/* q15(x): k = max(0, bitlength(max|x|) - 15); x_q = sat16((x + 2^(k-1)) >> k). Returns k. */
static int q15(const int32_t *x, long n, int16_t *out) {
    uint32_t mx = 0;
    for (long i = 0; i < n; i++) {
        uint32_t v = x[i] < 0 ? (uint32_t)0 - (uint32_t)x[i] : (uint32_t)x[i];
        mx = v > mx ? v : mx;
    }
    int bits = 0;
    while (mx >> bits) bits++;
    int k = bits > 15 ? bits - 15 : 0;
    int32_t half = k ? (int32_t)1 << (k - 1) : 0;
    for (long i = 0; i < n; i++) {
        int32_t v = k ? (int32_t)(((int64_t)x[i] + half) >> k) : x[i];
        out[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    return k;
}

/* ---- buffers ------------------------------------------------------------------------------- */
static void free_buffers(i8_net *n) {
    for (int l = 0; l <= n->n_layers; l++) { free(n->act[l]); n->act[l] = NULL; free(n->zi[l]); n->zi[l] = NULL; }
    free(n->acc); free(n->z); free(n->dq); free(n->dq2); free(n->packed); free(n->pairs); n->pairs = NULL;
    free(n->nz_ptr); free(n->nz_i); free(n->nz_x); free(n->c_ptr); free(n->c_s); free(n->c_x); free(n->g);
    n->acc = n->z = n->nz_ptr = n->c_ptr = n->g = NULL; n->dq = n->dq2 = n->packed = NULL;
    n->nz_i = n->c_s = NULL; n->nz_x = n->c_x = NULL;
    free(n->bl.ptr); free(n->bl.k); free(n->bl.r); free(n->bl.v);
    n->bl.ptr = n->bl.k = n->bl.r = NULL; n->bl.v = NULL;
    n->cap = 0;
}

/* Layer 0 pruned in blocks of 8 rows: walked through the block lists (block_list.h). */
static int blocked_first(const i8_net *n) { return n->L[0].sparse && n->L[0].block == 8; }

/* (Re)allocate every mini-batch buffer for up to m samples (at least 64: evaluation's chunk).
 * Called by i8_create and i8_set_mask only: training and evaluation never allocate. */
static int reserve(i8_net *n, int m) {
    free_buffers(n);
    int cap = m < 64 ? 64 : m;
    int cap2 = (cap + 1) / 2 * 2;
    for (int l = 0; l <= n->n_layers; l++)
        if (!(n->act[l] = zalloc((size_t)cap2 * I8_LD(n->sizes[l]))) ||
            !(n->zi[l] = zalloc((size_t)cap * 2 * I8_LD(n->sizes[l < n->n_layers ? l + 1 : l])))) goto oom;
    if (!(n->acc = zalloc((size_t)cap * n->maxld * 4)) ||
        !(n->z = zalloc((size_t)cap * n->sizes[n->n_layers] * 4)) ||
        !(n->dq = zalloc((size_t)cap * n->maxld * 2)) || !(n->dq2 = zalloc((size_t)cap * n->maxld * 2)) ||
        !(n->packed = zalloc((size_t)cap2 * n->maxld * 2)) || !(n->pairs = zalloc((size_t)cap2 / 2 * n->maxn * 4)) || !(n->nz_ptr = zalloc(4 * ((size_t)cap + 1))) ||
        !(n->nz_i = zalloc((size_t)cap * n->maxld * 2)) || !(n->nz_x = zalloc((size_t)cap * n->maxld)) ||
        !(n->c_ptr = zalloc(4 * ((size_t)n->maxld + 1))) || !(n->c_s = zalloc((size_t)cap * n->maxld * 2)) ||
        !(n->c_x = zalloc((size_t)cap * n->maxld)) || !(n->g = zalloc(4 * (size_t)n->maxn)))
        goto oom;
    if (blocked_first(n)) {  /* a block appears at most once per sample; 16 entries of slack */
        size_t entries = (size_t)cap * (n->L[0].nnz / 8) + 32;
        if (!(n->bl.ptr = zalloc(4 * ((size_t)cap + 1))) || !(n->bl.k = zalloc(4 * entries)) || !(n->bl.r = zalloc(4 * entries)) ||
            !(n->bl.v = zalloc(entries)))
            goto oom;
    }
    n->cap = cap;
    return 0;
oom:
    free_buffers(n);
    return fail(n, "out of memory for a mini-batch of %d samples", m);
}

/* ---- create / params ----------------------------------------------------------------------- */
static void free_layer(layer_t *L) {
    free(L->b); free(L->bq); free(L->w); free(L->wq); free(L->wq4); free(L->colmax);
    free(L->colptr); free(L->row); free(L->wv); free(L->wqv); free(L->gv);
    memset(L, 0, sizeof *L);
}

void i8_destroy(i8_net *n) {
    if (!n) return;
    for (int l = 0; l < n->n_layers; l++) free_layer(&n->L[l]);
    free_buffers(n);
    free(n);
}

/* Prepare: the layers (zero parameters) and the buffers of a mini-batch of max_batch samples. */
i8_net *i8_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    char msg[256] = "";
    if (n_sizes < 2 || n_sizes > 16) {
        snprintf(msg, sizeof msg, "need 2..16 layers, got %d", n_sizes);
    } else if (max_batch < 1 || max_batch > MAX_BATCH) {
        snprintf(msg, sizeof msg, "batch size %d: the int8 kernel needs 1..%d (int32 bound)", max_batch, MAX_BATCH);
    } else {
        for (int l = 0; l < n_sizes && !msg[0]; l++)
            if (sizes[l] < 1 || sizes[l] > 65535) snprintf(msg, sizeof msg, "layer %d has size %d (1..65535)", l, sizes[l]);
        for (int l = 2; l < n_sizes && !msg[0]; l++)
            if (sizes[l] > MAX_BATCH) snprintf(msg, sizeof msg, "layer %d: at most %d outputs (int32 bound)", l, MAX_BATCH);
    }
    i8_net *n = msg[0] ? NULL : calloc(1, sizeof *n);
    if (!msg[0] && !n) snprintf(msg, sizeof msg, "out of memory");
    if (n) {
        n->n_layers = n_sizes - 1;
        n->max_batch = max_batch;
        memcpy(n->sizes, sizes, sizeof(int) * n_sizes);
        for (int l = 0; l < n_sizes; l++) {
            n->maxn = sizes[l] > n->maxn ? sizes[l] : n->maxn;
            n->maxld = I8_LD(sizes[l]) > n->maxld ? I8_LD(sizes[l]) : n->maxld;
        }
        for (int l = 0; l < n->n_layers && !msg[0]; l++) {
            layer_t *L = &n->L[l];
            L->n_in = sizes[l]; L->n_out = sizes[l + 1]; L->ld = I8_LD(L->n_in);
            L->b = zalloc(sizeof(float) * L->n_out);
            L->bq = zalloc(sizeof(int16_t) * L->n_out);
            L->w = zalloc(sizeof(float) * (size_t)L->n_out * L->ld);
            L->wq = zalloc((size_t)L->n_out * L->ld);
            L->wq4 = zalloc((size_t)I8_LD8(L->n_out) * L->ld);
            L->colmax = zalloc(sizeof(float) * L->ld);
            if (!L->b || !L->bq || !L->w || !L->wq || !L->wq4 || !L->colmax) snprintf(msg, sizeof msg, "out of memory");
        }
        if (!msg[0] && reserve(n, max_batch < 64 ? 64 : max_batch) != 0) snprintf(msg, sizeof msg, "%s", n->error);
        if (!msg[0])
            for (int l = 0; l < n->n_layers; l++) {  /* the zero weights' quantisation (m0 = 0) */
                dense_colmax(&n->L[l]);
                requantise(&n->L[l], 0.0f);
            }
    }
    if (msg[0]) {
        i8_destroy(n);
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", msg);
        return NULL;
    }
    return n;
}

int i8_set_params(i8_net *n, const float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        layer_t *L = &n->L[l];
        const float *w = params[2 * l], *b = params[2 * l + 1];
        memcpy(L->b, b, sizeof(float) * L->n_out);
        if (L->sparse) {  /* keep the mask: only the kept positions take the new values */
            for (int i = 0; i < L->n_in; i++)
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) L->wv[k] = w[(long)row_of(L, k) * L->n_in + i];
        } else {
            for (int j = 0; j < L->n_out; j++)
                memcpy(L->w + (long)j * L->ld, w + (long)j * L->n_in, sizeof(float) * L->n_in);
            dense_colmax(L);
        }
        requantise(L, master_maxabs(L));
    }
    return 0;
}

int i8_get_params(const i8_net *n, float *const *params) {
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        float *w = params[2 * l];
        memcpy(params[2 * l + 1], L->b, sizeof(float) * L->n_out);
        if (L->sparse) {
            memset(w, 0, sizeof(float) * (size_t)L->n_out * L->n_in);
            for (int i = 0; i < L->n_in; i++)
                for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) w[(long)row_of(L, k) * L->n_in + i] = L->wv[k];
        } else {
            for (int j = 0; j < L->n_out; j++)
                memcpy(w + (long)j * L->n_in, L->w + (long)j * L->ld, sizeof(float) * L->n_in);
        }
    }
    return 0;
}

int i8_set_mask(i8_net *n, int l, const uint8_t *mask, int block) {
    if (l < 0 || l >= n->n_layers) return fail(n, "no weight layer %d", l);
    layer_t *L = &n->L[l];
    long size = (long)L->n_out * L->n_in;
    if (block != 1 && block != 8) return fail(n, "block %d: 1 or 8 rows", block);
    if (L->n_out % block) return fail(n, "block %d does not divide the %d outputs of layer %d", block, L->n_out, l);
    for (int j0 = 0; j0 < L->n_out; j0 += block)  /* a block is kept or pruned as a whole */
        for (int i = 0; i < L->n_in; i++)
            for (int r = 1; r < block; r++)
                if (!mask[(long)(j0 + r) * L->n_in + i] != !mask[(long)j0 * L->n_in + i])
                    return fail(n, "mask of layer %d is not made of whole %d-row blocks", l, block);
    float *dense = malloc(sizeof(float) * (size_t)size);  /* pruning is rare: not in the step loop */
    if (!dense) return fail(n, "out of memory");
    if (L->sparse) {
        memset(dense, 0, sizeof(float) * (size_t)size);
        for (int i = 0; i < L->n_in; i++)
            for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) dense[(long)row_of(L, k) * L->n_in + i] = L->wv[k];
    } else {
        for (int j = 0; j < L->n_out; j++)
            memcpy(dense + (long)j * L->n_in, L->w + (long)j * L->ld, sizeof(float) * L->n_in);
    }
    long nnz = 0;
    for (long k = 0; k < size; k++) nnz += mask[k] != 0;
    free(L->colptr); free(L->row); free(L->wv); free(L->wqv); free(L->gv);
    L->colptr = zalloc(sizeof(int32_t) * (L->n_in + 1));
    L->row = zalloc(sizeof(uint16_t) * (nnz / block + 16));  /* + 16: bl_emit reads 16 */
    L->wv = zalloc(sizeof(float) * I8_LD(nnz));
    L->wqv = zalloc(I8_LD(nnz));
    L->gv = l == 0 && block == 8 ? zalloc(sizeof(int32_t) * I8_LD(nnz)) : NULL;
    if (!L->colptr || !L->row || !L->wv || !L->wqv || (l == 0 && block == 8 && !L->gv)) {
        free(dense);
        return fail(n, "out of memory");
    }
    long k = 0;
    for (int i = 0; i < L->n_in; i++) {
        L->colptr[i] = (int32_t)k;
        for (int j = 0; j < L->n_out; j++)
            if (mask[(long)j * L->n_in + i]) {
                if (j % block == 0) L->row[k / block] = (uint16_t)j;
                L->wv[k] = dense[(long)j * L->n_in + i];
                k++;
            }
    }
    L->block = block;
    L->colptr[L->n_in] = (int32_t)k;
    L->nnz = (int)nnz;
    free(dense);
    free(L->w); free(L->wq); free(L->wq4); free(L->colmax);  /* the dense copies are gone: the footprint is the CSC one */
    L->colmax = NULL;
    L->w = NULL; L->wq = NULL; L->wq4 = NULL;
    L->sparse = 1;
    requantise(L, master_maxabs(L));
    return reserve(n, n->cap);  /* the block lists are sized by the kept blocks: allocated now, not in a step */
}

/* ---- sparse products (pruned layers, CSC) ---------------------------------------------------- */
/* Lists the nonzero activations of a (m x ld, n_in used) by sample (nz_*) and by column (c_*). */
static void list_nonzero(i8_net *n, int layer, const uint8_t *a, int m, int n_in, int ld) {
    if (n->listed == layer) return;
    n->listed = layer;
    int32_t cnt = 0;
    for (int i = 0; i <= n_in; i++) n->c_ptr[i] = 0;
    for (int s = 0; s < m; s++) {
        n->nz_ptr[s] = cnt;
        const uint8_t *ar = a + (long)s * ld;
        for (int i0 = 0; i0 < n_in; i0 += 8) {  /* rows are padded to 32: 8 bytes at a time */
            uint64_t word;
            memcpy(&word, ar + i0, 8);
            if (!word) continue;  /* most of an MNIST image is background */
            for (int i = i0; i < i0 + 8 && i < n_in; i++)
                if (ar[i]) { n->nz_i[cnt] = (uint16_t)i; n->nz_x[cnt] = ar[i]; cnt++; n->c_ptr[i + 1]++; }
        }
    }
    n->nz_ptr[m] = cnt;
    for (int i = 0; i < n_in; i++) n->c_ptr[i + 1] += n->c_ptr[i];
    for (int s = 0; s < m; s++)  /* counting sort by column; within a column, samples ascend */
        for (int t = n->nz_ptr[s]; t < n->nz_ptr[s + 1]; t++) {
            int i = n->nz_i[t], pos = n->c_ptr[i]++;
            n->c_s[pos] = (uint16_t)s;
            n->c_x[pos] = n->nz_x[t];
        }
    for (int i = n_in; i > 0; i--) n->c_ptr[i] = n->c_ptr[i - 1];
    n->c_ptr[0] = 0;
}

/* acc[s][j] = sum over nonzero inputs i of sample s, over kept weights (j, i): x * wq. */
static void sparse_forward(const i8_net *n, const layer_t *L, int m, int32_t *acc) {
    /* local restrict copies: the int32 stores to acc must not force reloads of colptr */
    const int32_t *restrict colptr = L->colptr;
    const uint16_t *restrict row = L->row;
    const int8_t *restrict wqv = L->wqv;
    const int32_t *restrict nz_ptr = n->nz_ptr;
    const uint16_t *restrict nz_i = n->nz_i;
    const uint8_t *restrict nz_x = n->nz_x;
    for (int s = 0; s < m; s++) {
        int32_t *restrict as = acc + (long)s * L->n_out;
        for (int j = 0; j < L->n_out; j++) as[j] = 0;
        for (int t = nz_ptr[s]; t < nz_ptr[s + 1]; t++) {
            const int i = nz_i[t];
            const int32_t x = nz_x[t];
            const int k1 = colptr[i + 1];
            if (L->block == 8) {  /* whole blocks of 8 rows: a loop the compiler vectorises */
                for (int k = colptr[i]; k < k1; k += 8) {
                    int32_t *ab = as + row[k / 8];
                    store8i(ab, load8i(ab) + x * widen8b(wqv + k));
                }
            } else {
                for (int k = colptr[i]; k < k1; k++) as[row[k]] += x * wqv[k];
            }
        }
    }
}

/* For kept weights (j, i) in columns with a nonzero input: g = sum_s dq[s][j] x[s][i];
 * wv -= (float)g * c. Returns max |wv| over all kept weights. */
static float sparse_update(i8_net *n, layer_t *L, const int16_t *dq, float c) {
    int32_t *restrict g = n->g;
    const int32_t *restrict colptr = L->colptr;
    const int32_t *restrict c_ptr = n->c_ptr;
    const uint16_t *restrict c_s = n->c_s;
    const uint8_t *restrict c_x = n->c_x;
    const int n_out = L->n_out;
    for (int i = 0; i < L->n_in; i++) {
        const int k0 = colptr[i], nk = colptr[i + 1] - k0;
        if (c_ptr[i] == c_ptr[i + 1] || nk == 0) continue;
        const uint16_t *restrict rows = L->row + (L->block == 1 ? k0 : 0);
        for (int k = 0; k < nk; k++) g[k] = 0;
        for (int t = c_ptr[i]; t < c_ptr[i + 1]; t++) {
            const int16_t *restrict d = dq + (long)c_s[t] * n_out;
            const int32_t x = c_x[t];
            if (L->block == 8) {
                const uint16_t *restrict brows = L->row + k0 / 8;
                for (int kb = 0; kb < nk / 8; kb++)
                    store8i(g + 8 * kb, load8i(g + 8 * kb) + x * widen8h(d + brows[kb]));
            } else {
                for (int k = 0; k < nk; k++) g[k] += x * d[rows[k]];
            }
        }
        float *restrict wv = L->wv + k0;
        for (int k = 0; k < nk; k++) {
            float t = (float)g[k] * c;
            wv[k] = wv[k] - t;
        }
    }
    /* |w| compared as bit patterns: for finite floats their order is the order of |w| */
    uint32_t mx = 0;
    const uint32_t *bits = (const uint32_t *)(const void *)L->wv;
    for (int k = 0; k < L->nnz; k++) {
        uint32_t v = bits[k] & 0x7fffffffu;
        mx = v > mx ? v : mx;
    }
    float out;
    memcpy(&out, &mx, sizeof out);
    return out;
}

/* Layer 0 in 8-row blocks, through the block list: acc[s][rows] += x * wq[rows, i]. */
static void blocked_forward(const i8_net *n, const layer_t *L, int m, int32_t *acc) {
    const int8_t *restrict wqv = L->wqv;
    const int32_t *restrict blk_k = n->bl.k, *restrict blk_r = n->bl.r, *restrict ptr = n->bl.ptr;
    const uint8_t *restrict blk_v = n->bl.v;
    for (int s = 0; s < m; s++) {
        int32_t *restrict as = acc + (long)s * L->n_out;
        for (int j = 0; j < L->n_out; j++) as[j] = 0;
        const int e1 = ptr[s + 1];
        for (int e = ptr[s]; e < e1; e++) {
            const int k = blk_k[e];
            int32_t *ab = as + blk_r[e];
            store8i(ab, load8i(ab) + (int32_t)blk_v[e] * widen8b(wqv + k));
        }
    }
}

/* Layer 0 in 8-row blocks: G[rows, i] = sum_s x[s][i] dq[s][rows] (int32, exact in any order)
 * through the block list, then every kept weight's step wv -= (float)G * c in one sweep (a block
 * no sample touched has G = 0: w - 0 * c == w). Returns max |wv|. */
static float blocked_update(i8_net *n, layer_t *L, int m, const int16_t *dq, float c) {
    int32_t *restrict gv = L->gv;
    float *restrict wv = L->wv;
    const int32_t *restrict blk_k = n->bl.k, *restrict blk_r = n->bl.r, *restrict ptr = n->bl.ptr;
    const uint8_t *restrict blk_v = n->bl.v;
    for (int s = 0; s < m; s++) {
        const int16_t *restrict ds = dq + (long)s * L->n_out;
        const int e1 = ptr[s + 1];
        for (int e = ptr[s]; e < e1; e++) {
            const int k = blk_k[e];
            store8i(gv + k, load8i(gv + k) + (int32_t)blk_v[e] * widen8h(ds + blk_r[e]));
        }
    }
    uint32_t mx = 0;  /* |w| compared as bit patterns: for finite floats their order is |w|'s */
    const int nnz = L->nnz;
    for (int k = 0; k < nnz; k++) {
        float t = (float)gv[k] * c;  /* rounded before the subtraction: no FMA (-ffp-contract=off) */
        wv[k] = wv[k] - t;
        gv[k] = 0;
        uint32_t b;
        memcpy(&b, wv + k, 4);
        b &= 0x7fffffffu;
        mx = b > mx ? b : mx;
    }
    float out;
    memcpy(&out, &mx, sizeof out);
    return out;
}

/* ---- forward / backward -------------------------------------------------------------------- */
static void load_inputs(i8_net *n, const uint8_t *images, const int32_t *idx, int m) {
    const uint8_t *t = input_q;
    const int n_in = n->sizes[0], ld = I8_LD(n_in);
    for (int s = 0; s < m; s++) {
        const uint8_t *src = images + (long)(idx ? idx[s] : s) * n_in;
        uint8_t *dst = n->act[0] + (long)s * ld;
        int i = 0;
        for (; i + 8 <= n_in; i += 8) {  /* background pixels 8 at a time: 0 maps to 0 */
            uint64_t word;
            memcpy(&word, src + i, 8);
            if (!word) { memset(dst + i, 0, 8); continue; }
            for (int k = i; k < i + 8; k++) dst[k] = t[src[k]];
        }
        for (; i < n_in; i++) dst[i] = t[src[i]];
    }
}

/* Float inputs (any data, i8_train_f32): x in [0, 1] -> q7 round_half_up(127 x), clamped to
 * 0..127 (reference.input_q). 127 x + 0.5 is exact in double for a float32 x. */
static inline uint8_t q7_of(float x) {
    double q = floor((double)x * 127.0 + 0.5);
    return (uint8_t)(q < 0.0 ? 0.0 : q > 127.0 ? 127.0 : q);
}

static void load_inputs_f32(i8_net *n, const float *inputs, const int32_t *idx, int m) {
    const int n_in = n->sizes[0], ld = I8_LD(n_in);
    for (int s = 0; s < m; s++) {
        const float *src = inputs + (long)(idx ? idx[s] : s) * n_in;
        uint8_t *dst = n->act[0] + (long)s * ld;
        for (int i = 0; i < n_in; i++) dst[i] = q7_of(src[i]);
    }
}

static void forward(i8_net *n, int m) {
    n->listed = -1;  /* new activations */
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        if (l == 0 && blocked_first(n)) {
            bl_build(L->colptr, L->row, n->act[0], L->ld, NULL, m, L->n_in, L->n_out, &n->bl);
            blocked_forward(n, L, m, n->acc);
        } else if (L->sparse) {
            list_nonzero(n, l, n->act[l], m, L->n_in, L->ld);
            sparse_forward(n, L, m, n->acc);
        } else i8_fc_forward(n->act[l], m, L->wq, L->wq4, L->n_out, L->ld, n->acc);
        const int ldn = I8_LD(L->n_out);
        const int64_t half = (int64_t)1 << (L->r - 1);
        const int last = l == n->n_layers - 1;
        for (int s = 0; s < m; s++)
            for (int j = 0; j < L->n_out; j++) {
                int64_t z = (((int64_t)n->acc[s * L->n_out + j] * L->m0 + half) >> L->r) + L->bq[j];
                z = z > 32767 ? 32767 : z < -32768 ? -32768 : z;
                if (last) n->z[s * L->n_out + j] = (int32_t)z;
                int64_t zc = z > LUT_HALF - 1 ? LUT_HALF - 1 : z < -LUT_HALF ? -LUT_HALF : z;
                int64_t zd = z > DLUT_HALF - 1 ? DLUT_HALF - 1 : z < -DLUT_HALF ? -DLUT_HALF : z;
                n->zi[l][(long)s * ldn + j] = (uint16_t)(zd + DLUT_HALF);
                n->act[l + 1][(long)s * ldn + j] = (uint8_t)ecufl_int8_sigmoid_lut[zc + LUT_HALF];
            }
    }
}

/* targets (real-valued, any data) or labels (one-hot): the target of output j is the q7
 * round_half_up(127 y) (exact for one-hot: 0 or 127). */
static void train_batch(i8_net *n, int m, const uint8_t *labels, const float *targets, const int32_t *idx, double lr) {
    forward(n, m);
    const int nl = n->n_layers;
    const int n_out = n->sizes[nl], ldo = I8_LD(n_out);
    for (int s = 0; s < m; s++)
        for (int j = 0; j < n_out; j++) {
            int32_t a = n->act[nl][(long)s * ldo + j];
            int32_t y = targets ? q7_of(targets[(long)idx[s] * n_out + j]) : labels[idx[s]] == j ? A_ONE : 0;
            n->acc[s * n_out + j] = (a - y) * (int32_t)ecufl_int8_sigmoid_derivative_lut[n->zi[nl - 1][(long)s * ldo + j]];
        }
    int k = q15(n->acc, (long)m * n_out, n->dq);
    double s_d = ldexp(1.0, k) / 8323072.0;  /* 127 * 65536 */
    float new_maxabs[15];
    for (int l = nl - 1; l >= 0; l--) {
        layer_t *L = &n->L[l];
        double s_prev = 0.0;
        if (l > 0) {  /* back-propagate through the old int8 weights first */
            int32_t *e = n->acc;
            memset(e, 0, sizeof(int32_t) * (size_t)m * L->n_in);
            const int n_in = L->n_in, n_out = L->n_out, ld = L->ld;
            const int8_t *restrict wq = L->wq;
            const int16_t *restrict dqs = n->dq;
            for (int s = 0; s < m; s++) {
                int32_t *restrict er = e + (long)s * n_in;
                for (int j = 0; j < n_out && !L->sparse; j++) {  /* local bounds: a vectorised axpy */
                    const int32_t d = dqs[s * n_out + j];
                    if (!d) continue;
                    const int8_t *restrict wr = wq + (long)j * ld;
                    for (int i = 0; i < n_in; i++) er[i] += d * wr[i];
                }
                if (L->sparse) {
                    const int16_t *ds = n->dq + (long)s * L->n_out;
                    for (int i = 0; i < L->n_in; i++) {
                        int32_t sum = 0;
                        for (int kk = L->colptr[i]; kk < L->colptr[i + 1]; kk++) sum += ds[row_of(L, kk)] * L->wqv[kk];
                        er[i] = sum;
                    }
                }
            }
            int k1 = q15(e, (long)m * L->n_in, n->dq2);
            const int ldp = I8_LD(L->n_in);
            for (int s = 0; s < m; s++)
                for (int i = 0; i < L->n_in; i++) {
                    int32_t ds = ecufl_int8_sigmoid_derivative_lut[n->zi[l - 1][(long)s * ldp + i]];
                    e[s * L->n_in + i] = (int32_t)n->dq2[s * L->n_in + i] * ds;  /* < 2^15 * 2^14 */
                }
            int k2 = q15(e, (long)m * L->n_in, n->dq2);
            s_prev = s_d * (double)L->maxabs / 127.0 * ldexp(1.0, k1 + k2) / 65536.0;
        }
        const float c_w = (float)(lr / (double)m * s_d / 127.0);
        const float c_b = (float)(lr / (double)m * s_d);
        if (l == 0 && blocked_first(n)) {
            new_maxabs[l] = blocked_update(n, L, m, n->dq, c_w);
        } else if (L->sparse) {
            list_nonzero(n, l, n->act[l], m, L->n_in, L->ld);  /* kept from the forward pass if still there */
            new_maxabs[l] = sparse_update(n, L, n->dq, c_w);
        } else {
            i8_pack_acts(n->act[l], m, L->ld, n->packed);
            new_maxabs[l] = i8_fc_update(n->act[l], n->packed, m, n->dq, L->n_out, L->ld, c_w, L->w, L->colmax, n->pairs);
        }
        for (int j = 0; j < L->n_out; j++) {
            int32_t gb = 0;
            for (int s = 0; s < m; s++) gb += n->dq[s * L->n_out + j];
            float t = (float)gb * c_b;
            L->b[j] = L->b[j] - t;
        }
        int16_t *tmp = n->dq; n->dq = n->dq2; n->dq2 = tmp;
        s_d = s_prev;
    }
    for (int l = 0; l < nl; l++) requantise(&n->L[l], new_maxabs[l]);
}

/* The epoch order visits the training images at random: each image is a fresh trip to memory. */
static void prefetch_images(const uint8_t *images, const int32_t *idx, int m, int n_in) {
    for (int s = 0; s < m; s++) {
        const char *p = (const char *)(images + (long)idx[s] * n_in);
        for (int b = 0; b < n_in; b += 64) __builtin_prefetch(p + b);
        __builtin_prefetch(p + n_in - 1);
    }
}

/* Label of sample `row` below the outputs; its float inputs and targets finite. */
static int check_sample(i8_net *n, const float *inputs, const float *targets, const uint8_t *labels, int row) {
    const int n_in = n->sizes[0], n_out = n->sizes[n->n_layers];
    if (labels && labels[row] >= n_out) return fail(n, "label %d at index %d is not below %d", labels[row], row, n_out);
    if (inputs)
        for (int i = 0; i < n_in; i++)
            if (!isfinite(inputs[(long)row * n_in + i])) return fail(n, "input %d of sample %d is not finite", i, row);
    if (targets)
        for (int j = 0; j < n_out; j++)
            if (!isfinite(targets[(long)row * n_out + j])) return fail(n, "target %d of sample %d is not finite", j, row);
    return 0;
}

/* images (uint8 pixels) or inputs (floats); labels or targets. */
static int train(i8_net *n, const uint8_t *images, const float *inputs, const uint8_t *labels, const float *targets,
                 int n_images, const int32_t *order, int count, double lr, int batch_size) {
    if (batch_size < 1 || batch_size > n->max_batch)
        return fail(n, "batch size %d is outside 1..%d (the net's max_batch)", batch_size, n->max_batch);
    if (!(lr > 0.0) || !isfinite(lr)) return fail(n, "learning rate %g: must be positive and finite", lr);
    for (int i = 0; i < count; i++) {
        if (order[i] < 0 || order[i] >= n_images) return fail(n, "order[%d] = %d is outside 0..%d", i, order[i], n_images - 1);
        if (check_sample(n, inputs, targets, labels, order[i])) return -1;
    }
    /* float inputs (any data): no prefetch (a check inside prefetch_images made GCC 12 drop every
     * prefetch instruction, MNIST's too: int8 and c-sparse epochs 1.25x slower) */
    if (images) prefetch_images(images, order, count < batch_size ? count : batch_size, n->sizes[0]);
    for (int k = 0; k < count; k += batch_size) {
        int m = count - k < batch_size ? count - k : batch_size;
        if (images && k + m < count)  /* the next mini-batch's images travel from memory while this one trains */
            prefetch_images(images, order + k + m, count - k - m < batch_size ? count - k - m : batch_size, n->sizes[0]);
        if (images) load_inputs(n, images, order + k, m);
        else load_inputs_f32(n, inputs, order + k, m);
        train_batch(n, m, labels, targets, order + k, lr);
    }
    return 0;
}

int i8_train(i8_net *n, const uint8_t *images, const uint8_t *labels, int n_images,
             const int32_t *order, int count, double lr, int batch_size) {
    return train(n, images, NULL, labels, NULL, n_images, order, count, lr, batch_size);
}

int i8_train_f32(i8_net *n, const float *inputs, const float *targets, const uint8_t *labels, int n_samples,
                 const int32_t *order, int count, double lr, int batch_size) {
    if (!inputs || (!targets && !labels)) return fail(n, "no inputs, or neither targets nor labels");
    return train(n, NULL, inputs, targets ? NULL : labels, targets, n_samples, order, count, lr, batch_size);
}

/* Loss of the q7 outputs / 127 against the targets (real ones as they are); correct: argmax z ==
 * label, or with targets every output within 0.5 of its target. */
static int evaluate(i8_net *n, const uint8_t *images, const float *inputs, const uint8_t *labels, const float *targets,
                    int count, double *loss, int *correct) {
    if (inputs || targets)
        for (int i = 0; i < count; i++)
            if (check_sample(n, inputs, targets, NULL, i)) return -1;
    const int nl = n->n_layers, n_out = n->sizes[nl], ldo = I8_LD(n_out);
    double sum = 0.0;
    int ok = 0;
    for (int k = 0; k < count; k += n->cap) {
        int m = count - k < n->cap ? count - k : n->cap;
        if (images) load_inputs(n, images + (long)k * n->sizes[0], NULL, m);
        else load_inputs_f32(n, inputs + (long)k * n->sizes[0], NULL, m);
        forward(n, m);
        for (int s = 0; s < m; s++) {
            if (targets) {
                const float *y = targets + (long)(k + s) * n_out;
                int near = 1;
                for (int j = 0; j < n_out; j++) {
                    double e = n->act[nl][(long)s * ldo + j] / 127.0 - (double)y[j];
                    sum += 0.5 * e * e;
                    near &= fabs(e) < 0.5;
                }
                ok += near;
                continue;
            }
            int best = 0;
            for (int j = 0; j < n_out; j++) {
                double a = n->act[nl][(long)s * ldo + j] / 127.0, y = labels[k + s] == j ? 1.0 : 0.0;
                sum += 0.5 * (a - y) * (a - y);
                if (n->z[s * n_out + j] > n->z[s * n_out + best]) best = j;
            }
            ok += best == labels[k + s];
        }
    }
    *loss = count ? sum / count : 0.0;
    *correct = ok;
    return 0;
}

int i8_evaluate(i8_net *n, const uint8_t *images, const uint8_t *labels, int count, double *loss, int *correct) {
    return evaluate(n, images, NULL, labels, NULL, count, loss, correct);
}

int i8_evaluate_f32(i8_net *n, const float *inputs, const float *targets, const uint8_t *labels, int count,
                    double *loss, int *correct) {
    if (!inputs || (!targets && !labels)) return fail(n, "no inputs, or neither targets nor labels");
    if (!targets)
        for (int i = 0; i < count; i++)
            if (check_sample(n, NULL, NULL, labels, i)) return -1;
    return evaluate(n, NULL, inputs, targets ? NULL : labels, targets, count, loss, correct);
}

int i8_get_quantised(i8_net *n, int l, int8_t *wq, float *maxabs) {
    if (l < 0 || l >= n->n_layers) return fail(n, "no weight layer %d", l);
    const layer_t *L = &n->L[l];
    memset(wq, 0, (size_t)L->n_out * L->n_in);
    for (int j = 0; j < L->n_out; j++) {
        if (!L->sparse) memcpy(wq + (long)j * L->n_in, L->wq + (long)j * L->ld, L->n_in);
    }
    if (L->sparse)
        for (int i = 0; i < L->n_in; i++)
            for (int k = L->colptr[i]; k < L->colptr[i + 1]; k++) wq[(long)row_of(L, k) * L->n_in + i] = L->wqv[k];
    *maxabs = L->maxabs;
    return 0;
}

int i8_forward_trace(i8_net *n, const uint8_t *images, int count, uint8_t *const *acts, int32_t *z) {
    const int n_out = n->sizes[n->n_layers];
    for (int k = 0; k < count; k += n->cap) {  /* samples are independent: chunks of the buffers' size */
        const int m = count - k < n->cap ? count - k : n->cap;
        load_inputs(n, images + (long)k * n->sizes[0], NULL, m);
        forward(n, m);
        for (int l = 0; l <= n->n_layers; l++)
            for (int s = 0; s < m; s++)
                memcpy(acts[l] + (long)(k + s) * n->sizes[l], n->act[l] + (long)s * I8_LD(n->sizes[l]), n->sizes[l]);
        memcpy(z + (long)k * n_out, n->z, sizeof(int32_t) * (size_t)m * n_out);
    }
    return 0;
}

long i8_nonzero(const i8_net *n, int l) {
    const layer_t *L = &n->L[l];
    return L->sparse ? L->nnz : (long)L->n_out * L->n_in;
}

long i8_weight_bytes(const i8_net *n) {
    long b = 0;
    for (int l = 0; l < n->n_layers; l++) {
        const layer_t *L = &n->L[l];
        b += L->sparse ? (long)L->nnz + 2L * (L->nnz / L->block) + 4L * (L->n_in + 1) : (long)L->n_out * L->n_in;
        b += 2L * L->n_out + 8;  /* int16 biases, m0 and r */
    }
    return b;
}

long i8_master_bytes(const i8_net *n) {
    long b = 0;
    for (int l = 0; l < n->n_layers; l++)
        b += 4 * (i8_nonzero(n, l) + n->L[l].n_out);
    return b;
}
