/* int8_check JOB OUT: train the int8 network on a job written by tests (tests/test_int8_arm.py)
 * and write the result, so the same C code can be checked bit for bit against the numpy
 * reference on any target - in particular the Cortex-A9 build under qemu-arm.
 *
 * JOB (little-endian): int32 n_sizes, int32 sizes[n_sizes], int32 n_images, int32 n_order,
 *   int32 batch, float64 lr, float32 params [w1 b1 w2 b2 ...], uint8 images[n_images * sizes[0]],
 *   uint8 labels[n_images], int32 order[n_order], int32 n_masks, then per mask: int32 layer,
 *   int32 after (samples of order trained before the mask is applied), int32 block (1 or 8 rows),
 *   uint8 mask[n_out * n_in].
 * OUT: float32 params (same order), then per layer int8 wq[n_out * n_in] and float32 maxabs.
 * Errors: one line on stderr, exit 1 (bad file) or 2 (bad usage). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "int8_net.h"

static FILE *job;

static void *take(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p || fread(p, 1, bytes, job) != bytes) {
        fprintf(stderr, "int8_check: job file truncated while reading %s\n", what);
        exit(1);
    }
    return p;
}

static int take_int(const char *what) {
    int32_t *p = take(4, what), v = *p;
    free(p);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: int8_check JOB OUT\n");
        return 2;
    }
    if (!(job = fopen(argv[1], "rb"))) {
        fprintf(stderr, "int8_check: cannot open %s\n", argv[1]);
        return 1;
    }
    int ns = take_int("n_sizes");
    if (ns < 2 || ns > 16) { fprintf(stderr, "int8_check: bad layer count %d\n", ns); return 1; }
    int sizes[16];
    for (int l = 0; l < ns; l++) sizes[l] = take_int("sizes");
    int n_images = take_int("n_images"), n_order = take_int("n_order"), batch = take_int("batch");
    double *lrp = take(8, "lr"), lr = *lrp;
    free(lrp);
    float *params[32];
    for (int l = 0; l + 1 < ns; l++) {
        params[2 * l] = take(sizeof(float) * (size_t)sizes[l] * sizes[l + 1], "weights");
        params[2 * l + 1] = take(sizeof(float) * (size_t)sizes[l + 1], "biases");
    }
    uint8_t *images = take((size_t)n_images * sizes[0], "images");
    uint8_t *labels = take((size_t)n_images, "labels");
    int32_t *order = take(sizeof(int32_t) * (size_t)n_order, "order");
    char err[256];
    i8_net *net = i8_create(ns, sizes, batch, err, sizeof err);
    if (!net) { fprintf(stderr, "int8_check: %s\n", err); return 1; }
    i8_set_params(net, (const float *const *)params);
    int n_masks = take_int("n_masks"), done = 0;
    for (int k = 0; k <= n_masks; k++) {
        int layer = -1, after = n_order, block = 1;
        uint8_t *mask = NULL;
        if (k < n_masks) {
            layer = take_int("mask layer");
            after = take_int("mask after");
            block = take_int("mask block");
            if (layer < 0 || layer + 1 >= ns || after < done || after > n_order) {
                fprintf(stderr, "int8_check: bad mask header (layer %d, after %d)\n", layer, after);
                return 1;
            }
            mask = take((size_t)sizes[layer] * sizes[layer + 1], "mask");
        }
        if (after > done && i8_train(net, images, labels, n_images, order + done, after - done, lr, batch) != 0) {
            fprintf(stderr, "int8_check: %s\n", i8_error(net));
            return 1;
        }
        done = after;
        if (mask && i8_set_mask(net, layer, mask, block) != 0) { fprintf(stderr, "int8_check: %s\n", i8_error(net)); return 1; }
        free(mask);
    }
    fclose(job);
    FILE *out = fopen(argv[2], "wb");
    if (!out) { fprintf(stderr, "int8_check: cannot write %s\n", argv[2]); return 1; }
    i8_get_params(net, params);
    for (int l = 0; l + 1 < ns; l++) {
        fwrite(params[2 * l], sizeof(float), (size_t)sizes[l] * sizes[l + 1], out);
        fwrite(params[2 * l + 1], sizeof(float), (size_t)sizes[l + 1], out);
    }
    for (int l = 0; l + 1 < ns; l++) {
        size_t nw = (size_t)sizes[l] * sizes[l + 1];
        int8_t *wq = malloc(nw);
        float maxabs;
        i8_get_quantised(net, l, wq, &maxabs);
        fwrite(wq, 1, nw, out);
        fwrite(&maxabs, sizeof maxabs, 1, out);
        free(wq);
    }
    fclose(out);
    printf("int8_check: %s path, %d samples trained\n", i8_path(), n_order);
    i8_destroy(net);
    return 0;
}
