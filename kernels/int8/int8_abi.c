/* The int8 kernel behind the native kernels' one C ABI (kernels/common/ecufl_kernel.h), so the
 * standalone trainer (common/trainer.c -> ecufl-train-int8) and any ABI user run it unchanged.
 * Parameters cross the ABI as float32 masters; initial weights come from the project PRNG
 * (common/ecufl_rand.h), the same as ecufl.kernels.prng.init_params. */
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_kernel.h"
#include "ecufl_rand.h"
#include "int8_net.h"

struct ecufl_net {
    i8_net *net;
    int n_sizes, max_batch, sizes[ECUFL_MAX_SIZES];
    char error[256];
};

static int set_error(ecufl_net *e, const char *msg) {
    snprintf(e->error, sizeof e->error, "%s", msg);
    return -1;
}

/* Parameter arrays of the network's shapes (zeros), freed by free_params. */
static float **alloc_params(int n_sizes, const int *sizes) {
    float **p = calloc(2 * (size_t)(n_sizes - 1), sizeof *p);
    if (!p) return NULL;
    for (int l = 0; l + 1 < n_sizes; l++) {
        p[2 * l] = calloc((size_t)sizes[l] * sizes[l + 1], sizeof(float));
        p[2 * l + 1] = calloc((size_t)sizes[l + 1], sizeof(float));
    }
    return p;
}

static void free_params(int n_sizes, float **p) {
    if (!p) return;
    for (int l = 0; l + 1 < n_sizes; l++) { free(p[2 * l]); free(p[2 * l + 1]); }
    free(p);
}

ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    if (n_sizes < 2 || n_sizes > ECUFL_MAX_SIZES) {
        snprintf(err, errlen, "need 2..%d layer sizes, got %d", ECUFL_MAX_SIZES, n_sizes);
        return NULL;
    }
    if (max_batch < 1 || max_batch > 512) {
        snprintf(err, errlen, "batch size %d: the int8 kernel needs 1..512 (int32 bound)", max_batch);
        return NULL;
    }
    ecufl_net *e = calloc(1, sizeof *e);
    float **zeros = alloc_params(n_sizes, sizes);
    if (!e || !zeros) {
        snprintf(err, errlen, "out of memory");
        free(e); free_params(n_sizes, zeros);
        return NULL;
    }
    e->net = i8_create(n_sizes, sizes, (const float *const *)zeros);
    free_params(n_sizes, zeros);
    if (e->net && i8_reserve(e->net, max_batch) != 0) {  /* all memory now: training never allocates */
        i8_destroy(e->net);
        e->net = NULL;
    }
    if (!e->net) {
        snprintf(err, errlen, "%s", i8_last_error());
        free(e);
        return NULL;
    }
    e->n_sizes = n_sizes;
    e->max_batch = max_batch;
    memcpy(e->sizes, sizes, sizeof(int) * n_sizes);
    return e;
}

void ecufl_net_destroy(ecufl_net *e) {
    if (!e) return;
    i8_destroy(e->net);
    free(e);
}

const char *ecufl_net_error(const ecufl_net *e) { return e->error; }

int ecufl_net_set_params(ecufl_net *e, const float *const *arrays) {
    return i8_set_params(e->net, arrays) ? set_error(e, i8_last_error()) : 0;
}

int ecufl_net_get_params(const ecufl_net *e, float *const *arrays) { return i8_get_params(e->net, arrays); }

int ecufl_net_init_params(ecufl_net *e, uint32_t seed, int scaled) {
    float **p = alloc_params(e->n_sizes, e->sizes);
    if (!p) return set_error(e, "out of memory");
    ecufl_init_params(e->n_sizes, e->sizes, seed, scaled, NULL, p);
    int rc = i8_set_params(e->net, (const float *const *)p);
    free_params(e->n_sizes, p);
    return rc ? set_error(e, i8_last_error()) : 0;
}

int ecufl_net_train(ecufl_net *e, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size) {
    if (batch_size > e->max_batch) return set_error(e, "batch size larger than max_batch given at create");
    return i8_train(e->net, images, labels, n_images, order, n, lr, batch_size) ? set_error(e, i8_last_error()) : 0;
}

int ecufl_net_evaluate(ecufl_net *e, const uint8_t *images, const uint8_t *labels, int n, double *loss, int *correct) {
    return i8_evaluate(e->net, images, labels, n, loss, correct) ? set_error(e, i8_last_error()) : 0;
}

long ecufl_net_weight_bytes(const ecufl_net *e) { return i8_weight_bytes(e->net); }

const char *ecufl_net_describe(void) {
    static char text[160];
    snprintf(text, sizeof text, "{\"kernel\": \"int8\", \"path\": \"%s\", \"bits\": 8}", i8_path());
    return text;
}
