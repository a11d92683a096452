/* native_job JOB OUT: train any kernel of the C ABI (common/ecufl_kernel.h: c, c-plain, eigen)
 * on one job and write the trained parameters: the emulated i.MX6's trainer (kernels/arm/emulate.py).
 *
 * JOB is the int8 job runner's format (kernels/int8/int8_check.c), so one writer serves both:
 *   int32 n_sizes, int32 sizes[n_sizes], int32 n_images, int32 n_order, int32 batch, float64 lr,
 *   float32 params [w1 b1 w2 b2 ...], uint8 images[n_images * sizes[0]], uint8 labels[n_images],
 *   int32 order[n_order], int32 n_masks (must be 0: the float kernels do not prune here).
 * OUT: float32 params in the same order.
 * Counted by the plugin: ecufl_net_train only (reading the job, creating the net, writing the
 * result are outside). Errors: one line on stderr, exit 1 (bad job) or 2 (usage). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_kernel.h"

static FILE *job;

static void *take(size_t bytes, const char *what)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "native_job: out of memory reading %s (%zu bytes)\n", what, bytes);
        exit(1);
    }
    if (fread(p, 1, bytes, job) != bytes) {
        fprintf(stderr, "native_job: job file truncated while reading %s\n", what);
        exit(1);
    }
    return p;
}

static int take_int(const char *what)
{
    int32_t v;
    memcpy(&v, take(4, what), 4); /* tiny leak per header field: the process is short-lived */
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: native_job JOB OUT\n");
        return 2;
    }
    if (!(job = fopen(argv[1], "rb"))) {
        fprintf(stderr, "native_job: cannot open %s\n", argv[1]);
        return 1;
    }
    int ns = take_int("n_sizes");
    if (ns < 2 || ns > ECUFL_MAX_SIZES) {
        fprintf(stderr, "native_job: bad layer count %d\n", ns);
        return 1;
    }
    int sizes[ECUFL_MAX_SIZES];
    for (int l = 0; l < ns; l++) sizes[l] = take_int("sizes");
    int n_images = take_int("n_images"), n_order = take_int("n_order"), batch = take_int("batch");
    double lr;
    memcpy(&lr, take(8, "lr"), 8);
    if (n_images < 0 || n_order < 0 || batch < 1) {
        fprintf(stderr, "native_job: bad counts (images %d, order %d, batch %d)\n", n_images, n_order, batch);
        return 1;
    }
    float *params[2 * ECUFL_MAX_SIZES];
    for (int l = 0; l + 1 < ns; l++) {
        params[2 * l] = take(sizeof(float) * (size_t)sizes[l] * sizes[l + 1], "weights");
        params[2 * l + 1] = take(sizeof(float) * (size_t)sizes[l + 1], "biases");
    }
    uint8_t *images = take((size_t)n_images * sizes[0], "images");
    uint8_t *labels = take((size_t)n_images, "labels");
    int32_t *order = take(sizeof(int32_t) * (size_t)n_order, "order");
    if (take_int("n_masks") != 0) {
        fprintf(stderr, "native_job: pruning masks are not supported by the float kernels' job runner\n");
        return 1;
    }
    fclose(job);
    char err[256];
    ecufl_net *net = ecufl_net_create(ns, sizes, batch, err, sizeof err);
    if (!net) {
        fprintf(stderr, "native_job: %s\n", err);
        return 1;
    }
    if (ecufl_net_set_params(net, (const float *const *)params) != 0 ||
        ecufl_net_train(net, images, labels, n_images, order, n_order, lr, batch) != 0 ||
        ecufl_net_get_params(net, params) != 0) {
        fprintf(stderr, "native_job: %s\n", ecufl_net_error(net));
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        fprintf(stderr, "native_job: cannot write %s\n", argv[2]);
        return 1;
    }
    for (int l = 0; l + 1 < ns; l++) {
        fwrite(params[2 * l], sizeof(float), (size_t)sizes[l] * sizes[l + 1], out);
        fwrite(params[2 * l + 1], sizeof(float), (size_t)sizes[l + 1], out);
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "native_job: cannot write %s\n", argv[2]);
        return 1;
    }
    printf("native_job: %s, %d samples trained\n", ecufl_net_describe(), n_order);
    ecufl_net_destroy(net);
    return 0;
}
