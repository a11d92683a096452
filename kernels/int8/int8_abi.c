/* The int8 kernel behind the native kernels' one C ABI (kernels/common/ecufl_kernel.h): the core
 * symbols, so the Python binding (kernels/native.py), the standalone trainer (common/trainer.c ->
 * ecufl-train-int8) and the board agent run it unchanged, plus the optional pruning and
 * quantisation symbols. Parameters cross the ABI as float32 masters; initial weights come from
 * the project PRNG (common/ecufl_rand.h), the same as ecufl.kernels.prng.init_params. The same
 * file serves both paths (libecufl_int8_plain, libecufl_int8): only the inner loops differ. */
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_kernel.h"
#include "ecufl_rand.h"
#include "int8_net.h"

struct ecufl_net {
    i8_net *net;
    int n_sizes, sizes[ECUFL_MAX_SIZES];
    char info[160];                         /* ecufl_net_describe's JSON */
};

ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    i8_net *core = i8_create(n_sizes, sizes, max_batch, err, errlen);  /* checks sizes and max_batch */
    ecufl_net *e = core ? calloc(1, sizeof *e) : NULL;
    if (core && !e) {
        i8_destroy(core);
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "out of memory");
        return NULL;
    }
    if (!e) return NULL;
    e->net = core;
    e->n_sizes = n_sizes;
    memcpy(e->sizes, sizes, sizeof(int) * n_sizes);
    snprintf(e->info, sizeof e->info, "{\"kernel\": \"int8\", \"path\": \"%s\", \"bits\": 8}", i8_path());
    return e;
}

void ecufl_net_destroy(ecufl_net *e) {
    if (!e) return;
    i8_destroy(e->net);
    free(e);
}

const char *ecufl_net_error(const ecufl_net *e) { return e ? i8_error(e->net) : "no network"; }

int ecufl_net_set_params(ecufl_net *e, const float *const *arrays) { return i8_set_params(e->net, arrays); }

int ecufl_net_get_params(const ecufl_net *e, float *const *arrays) { return i8_get_params(e->net, arrays); }

/* Drawn in the book's layout, then set (init is a Prepare step: it may allocate). */
int ecufl_net_init_params(ecufl_net *e, uint32_t seed, int scaled) {
    float *p[2 * (ECUFL_MAX_SIZES - 1)] = {0};
    int ok = 1;
    for (int l = 0; l + 1 < e->n_sizes; l++) {
        ok &= (p[2 * l] = malloc(sizeof(float) * (size_t)e->sizes[l] * e->sizes[l + 1])) != NULL;
        ok &= (p[2 * l + 1] = malloc(sizeof(float) * (size_t)e->sizes[l + 1])) != NULL;
    }
    int rc = -1;
    if (ok) {
        ecufl_init_params(e->n_sizes, e->sizes, seed, scaled, NULL, p);
        rc = i8_set_params(e->net, (const float *const *)p);
    }
    for (int l = 0; l + 1 < e->n_sizes; l++) { free(p[2 * l]); free(p[2 * l + 1]); }
    return ok ? rc : -1;
}

int ecufl_net_train(ecufl_net *e, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size) {
    return i8_train(e->net, images, labels, n_images, order, n, lr, batch_size);
}

int ecufl_net_evaluate(ecufl_net *e, const uint8_t *images, const uint8_t *labels, int n, double *loss, int *correct) {
    return i8_evaluate(e->net, images, labels, n, loss, correct);
}

/* optional: any data (float inputs as q7, real-valued targets as q7 targets: int8_net.h) */
int ecufl_net_train_f32(ecufl_net *e, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int n, double lr, int batch_size) {
    return i8_train_f32(e->net, inputs, targets, labels, n_samples, order, n, lr, batch_size);
}

int ecufl_net_evaluate_f32(ecufl_net *e, const float *inputs, const float *targets, const uint8_t *labels,
                           int n, double *loss, int *correct) {
    return i8_evaluate_f32(e->net, inputs, targets, labels, n, loss, correct);
}

long ecufl_net_weight_bytes(const ecufl_net *e) { return i8_weight_bytes(e->net); }

const char *ecufl_net_describe(const ecufl_net *e) { return e->info; }

/* optional: pruning */
int ecufl_net_set_mask(ecufl_net *e, int layer, const uint8_t *mask, int block) {
    return i8_set_mask(e->net, layer, mask, block);
}

/* optional: quantised training */
long ecufl_net_master_bytes(const ecufl_net *e) { return i8_master_bytes(e->net); }

int ecufl_net_get_quantised(ecufl_net *e, int layer, int8_t *wq, float *maxabs) {
    return i8_get_quantised(e->net, layer, wq, maxabs);
}

int ecufl_net_forward_trace(ecufl_net *e, const uint8_t *images, int n, uint8_t *const *acts, int32_t *z) {
    return i8_forward_trace(e->net, images, n, acts, z);
}
