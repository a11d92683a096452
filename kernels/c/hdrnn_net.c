/* hdrnn_net.c: the C ABI of ecufl_kernel.h for the C kernel: memory, parameters, mini-batch loop,
 * evaluation. The arithmetic of a mini-batch is in the path file linked with it (hdrnn.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_rand.h"
#include "hdrnn.h"

#ifndef ECUFL_COMPILER
#define ECUFL_COMPILER "unknown"
#endif
#ifndef ECUFL_FLAGS
#define ECUFL_FLAGS ""
#endif

static int fail(ecufl_net *net, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(net->error, sizeof net->error, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* Bump allocator over one 64-byte aligned block: every array starts on a cache line. */
typedef struct { char *base; size_t used; } arena;
static void *take(arena *a, size_t bytes) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += round_up(bytes, 64);
    return p;
}

static void lay_out(ecufl_net *net, arena *a) {
    int L = net->n_layers, B = net->max_batch, n0 = net->sizes[0];
    for (int l = 0; l < L; l++) {
        size_t wn = (size_t)net->sizes[l] * (size_t)net->ld[l + 1];
        net->w[l] = take(a, wn * sizeof(float));
        net->gw[l] = take(a, wn * sizeof(float));
        net->b[l] = take(a, (size_t)net->ld[l + 1] * sizeof(float));
        net->gb[l] = take(a, (size_t)net->ld[l + 1] * sizeof(float));
        net->delta[l] = take(a, (size_t)B * net->ld[l + 1] * sizeof(float));
    }
    int widest = 0;
    for (int l = 0; l <= L; l++) {
        net->act[l] = take(a, (size_t)B * net->ld[l] * sizeof(float));
        if (net->ld[l] > widest) widest = net->ld[l];
    }
    net->nz_index = take(a, (size_t)B * n0 * sizeof(int32_t));
    net->nz_value = take(a, (size_t)B * n0 * sizeof(float));
    net->nz_start = take(a, (size_t)(B + 1) * sizeof(int));
    net->sample_pixels = take(a, (size_t)B * sizeof *net->sample_pixels);
    net->sample_inputs = take(a, (size_t)B * sizeof *net->sample_inputs);
    net->pixel_samples = take(a, (size_t)n0 * ((B + HDRNN_WORD_BITS - 1) / HDRNN_WORD_BITS) * sizeof(hdrnn_bits));
    net->pixels_any = take(a, (size_t)((n0 + HDRNN_WORD_BITS - 1) / HDRNN_WORD_BITS) * sizeof(hdrnn_bits));
    net->by_pixel_sample = take(a, (size_t)B * sizeof(int32_t));
    net->by_pixel_value = take(a, (size_t)B * sizeof(float));
    net->scratch = take(a, (size_t)widest * sizeof(float));
}

ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    char msg[256] = "";
    if (n_sizes < 2 || n_sizes > ECUFL_MAX_SIZES) {
        snprintf(msg, sizeof msg, "need 2 to %d layer sizes, got %d", ECUFL_MAX_SIZES, n_sizes);
    } else if (max_batch < 1 || max_batch > 1 << 16) {
        snprintf(msg, sizeof msg, "max_batch must be in 1..65536, got %d", max_batch);
    } else {
        for (int l = 0; l < n_sizes; l++)
            if (sizes[l] < 1 || sizes[l] > 1 << 20) {
                snprintf(msg, sizeof msg, "layer size %d is %d, must be in 1..1048576", l, sizes[l]);
                break;
            }
    }
    if (msg[0]) {
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", msg);
        return NULL;
    }
    ecufl_net *net = calloc(1, sizeof *net);
    if (!net) {
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "out of memory");
        return NULL;
    }
    net->n_sizes = n_sizes;
    net->n_layers = n_sizes - 1;
    net->max_batch = max_batch;
    for (int l = 0; l < n_sizes; l++) {
        net->sizes[l] = sizes[l];
        /* the input row is read by index only; later rows are padded to the vector width */
        net->ld[l] = l == 0 ? sizes[0] : (int)round_up((size_t)sizes[l], (size_t)hdrnn_path_vector_width);
    }
    arena a = {NULL, 0};
    lay_out(net, &a); /* first pass: measure */
    net->memory_bytes = a.used;
    net->memory = aligned_alloc(64, a.used);
    if (!net->memory) {
        free(net);
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "out of memory (%zu bytes)", a.used);
        return NULL;
    }
    memset(net->memory, 0, a.used); /* padding of weights/biases/deltas must be 0 */
    a = (arena){net->memory, 0};
    lay_out(net, &a);
    snprintf(net->info, sizeof net->info,
             "{\"kernel\": \"c\", \"path\": \"%s\", \"layout\": \"%s\", \"compiler\": \"%s\", \"flags\": \"%s\"}",
             hdrnn_path_name, hdrnn_path_transposed ? "transposed, padded" : "book (n_out, n_in)", ECUFL_COMPILER, ECUFL_FLAGS);
    return net;
}

void ecufl_net_destroy(ecufl_net *net) {
    if (!net) return;
    free(net->memory);
    free(net);
}

const char *ecufl_net_error(const ecufl_net *net) { return net ? net->error : "no network"; }

/* Position of book weight (j, i) of layer l (n_out x n_in) inside the path's layout. */
static size_t weight_index(const ecufl_net *net, int l, int j, int i) {
    return hdrnn_path_transposed ? (size_t)i * net->ld[l + 1] + j : (size_t)j * net->sizes[l] + i;
}

int ecufl_net_set_params(ecufl_net *net, const float *const *arrays) {
    for (int l = 0; l < net->n_layers; l++) {
        int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        const float *w = arrays[2 * l], *b = arrays[2 * l + 1];
        for (int j = 0; j < n_out; j++) {
            if (!isfinite(b[j])) return fail(net, "b%d[%d] is not finite", l + 1, j);
            net->b[l][j] = b[j];
            for (int i = 0; i < n_in; i++) {
                float v = w[(size_t)j * n_in + i];
                if (!isfinite(v)) return fail(net, "w%d[%d,%d] is not finite", l + 1, j, i);
                net->w[l][weight_index(net, l, j, i)] = v;
            }
        }
    }
    return 0;
}

int ecufl_net_get_params(const ecufl_net *net, float *const *arrays) {
    for (int l = 0; l < net->n_layers; l++) {
        int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        for (int j = 0; j < n_out; j++) {
            arrays[2 * l + 1][j] = net->b[l][j];
            for (int i = 0; i < n_in; i++)
                arrays[2 * l][(size_t)j * n_in + i] = net->w[l][weight_index(net, l, j, i)];
        }
    }
    return 0;
}

int ecufl_net_init_params(ecufl_net *net, uint32_t seed, int scaled) {
    /* Draw into the book layout inside the gradient arrays (free until training), then set. */
    float *arrays[2 * HDRNN_MAX_LAYERS];
    for (int l = 0; l < net->n_layers; l++) {
        arrays[2 * l] = net->gw[l];
        arrays[2 * l + 1] = net->gb[l];
    }
    ecufl_init_params(net->n_sizes, net->sizes, seed, scaled, NULL, arrays);
    int rc = ecufl_net_set_params(net, (const float *const *)arrays);
    for (int l = 0; l < net->n_layers; l++) {
        memset(net->gw[l], 0, (size_t)net->sizes[l] * net->ld[l + 1] * sizeof(float));
        memset(net->gb[l], 0, (size_t)net->ld[l + 1] * sizeof(float));
    }
    return rc;
}

/* The data's labels are below the outputs; float inputs and targets of the rows used are finite. */
static int check_data(ecufl_net *net, const hdrnn_data *d, const int32_t *order, int n_rows, int n) {
    int n0 = net->sizes[0], n_out = net->sizes[net->n_layers];
    if (d->labels) {
        for (int k = 0; k < n_rows; k++)
            if (d->labels[k] >= n_out) return fail(net, "label %d at index %d is not below %d", d->labels[k], k, n_out);
    }
    for (int k = 0; k < n && (d->inputs || d->targets); k++) {
        size_t row = (size_t)(order ? order[k] : k);
        if (d->inputs)
            for (int i = 0; i < n0; i++)
                if (!isfinite(d->inputs[row * n0 + i])) return fail(net, "input %d of sample %zu is not finite", i, row);
        if (d->targets)
            for (int j = 0; j < n_out; j++)
                if (!isfinite(d->targets[row * n_out + j])) return fail(net, "target %d of sample %zu is not finite", j, row);
    }
    return 0;
}

static int train(ecufl_net *net, const hdrnn_data *d, int n_images, const int32_t *order, int n, double lr,
                 int batch_size) {
    if (!(lr > 0 && isfinite(lr))) return fail(net, "lr must be a positive finite number, got %g", lr);
    if (batch_size < 1 || batch_size > net->max_batch)
        return fail(net, "batch_size %d is outside 1..%d (the net's max_batch)", batch_size, net->max_batch);
    if (n < 0 || n_images < 0) return fail(net, "negative sample count");
    for (int k = 0; k < n; k++)
        if (order[k] < 0 || order[k] >= n_images)
            return fail(net, "order[%d] = %d is outside 0..%d", k, order[k], n_images - 1);
    if (check_data(net, d, order, n_images, n)) return -1;
    for (int k = 0; k < n; k += batch_size) {
        int m = n - k < batch_size ? n - k : batch_size;
        float step = (float)(lr / m); /* lr/m of *this* mini-batch, rounded once (as numpy) */
        hdrnn_forward(net, d, order + k, 0, m);
        hdrnn_backward_update(net, d, order + k, m, step);
    }
    return 0;
}

static int evaluate(ecufl_net *net, const hdrnn_data *d, int n, double *loss, int *correct) {
    if (n < 0) return fail(net, "negative sample count");
    if (check_data(net, d, NULL, n, n)) return -1;
    int L = net->n_layers, n_out = net->sizes[L], ld = net->ld[L];
    double sum = 0.0;
    int hits = 0;
    for (int k = 0; k < n; k += net->max_batch) {
        int m = n - k < net->max_batch ? n - k : net->max_batch;
        hdrnn_forward(net, d, NULL, k, m);
        for (int s = 0; s < m; s++) {
            const float *a = net->act[L] + (size_t)s * ld;
            if (d->targets) { /* real-valued targets: correct when every output is within 0.5 */
                const float *y = d->targets + (size_t)(k + s) * n_out;
                int near = 1;
                for (int j = 0; j < n_out; j++) {
                    float e = a[j] - y[j];
                    sum += (double)(e * e);
                    near &= fabsf(e) < 0.5f;
                }
                hits += near;
                continue;
            }
            int best = 0;
            for (int j = 0; j < n_out; j++) {
                float e = a[j] - (j == d->labels[k + s] ? 1.0f : 0.0f);
                sum += (double)(e * e); /* float32 square, float64 sum: as the reference */
                if (a[j] > a[best]) best = j;
            }
            hits += best == d->labels[k + s];
        }
    }
    *loss = n ? 0.5 * sum / n : 0.0;
    *correct = hits;
    return 0;
}

int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size) {
    hdrnn_data d = {images, NULL, labels, NULL};
    return train(net, &d, n_images, order, n, lr, batch_size);
}

int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct) {
    hdrnn_data d = {images, NULL, labels, NULL};
    return evaluate(net, &d, n, loss, correct);
}

int ecufl_net_train_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int n, double lr, int batch_size) {
    if (!inputs || (!targets && !labels)) return fail(net, "no inputs, or neither targets nor labels");
    hdrnn_data d = {NULL, inputs, targets ? NULL : labels, targets};
    return train(net, &d, n_samples, order, n, lr, batch_size);
}

int ecufl_net_evaluate_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                           int n, double *loss, int *correct) {
    if (!inputs || (!targets && !labels)) return fail(net, "no inputs, or neither targets nor labels");
    hdrnn_data d = {NULL, inputs, targets ? NULL : labels, targets};
    return evaluate(net, &d, n, loss, correct);
}

long ecufl_net_weight_bytes(const ecufl_net *net) {
    long total = 0;
    for (int l = 0; l < net->n_layers; l++)
        total += (long)net->sizes[l + 1] * (net->sizes[l] + 1) * (long)sizeof(float);
    return total;
}

const char *ecufl_net_describe(const ecufl_net *net) { return net->info; }
