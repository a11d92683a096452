/* trainer.c: ecufl-train-c / -c-plain / -eigen / -int8, HDRNN on MNIST without Python.
 *
 * Any data (issue 17): when --data-dir holds train-inputs.idx (and test-inputs.idx), the trainer
 * reads those instead of MNIST, with train-targets.idx / test-targets.idx: class labels (uint8,
 * one dimension) or real-valued targets (float32 IDX, type 0x0D, samples x outputs); inputs are
 * uint8 pixels or float32 values in [0, 1] (ecufl_idx.h, ecufl_data_read). Float inputs or real
 * targets train through ecufl_net_train_f32 (an autoencoder: targets = inputs); uint8 pixels with
 * labels through ecufl_net_train, as MNIST. "test_accuracy" is then the fraction of test samples
 * whose outputs are all within 0.5 of their targets.
 *
 * The same experiment as `ecufl train --kernel K` (same options, same PRNG streams, same order
 * of samples), linked statically against one kernel through the C ABI of ecufl_kernel.h.
 * Prints test accuracy, training time and peak RSS; --out writes an ecufl weight file (.npz).
 * The training set is freed before the test set is read: the peak is the 47 MB training set
 * plus the network and the program. Exit codes: 0 ok, 2 bad option/value (also: --layers that do
 * not fit the data), 1 bad file or data. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, getrusage, stat under -std=c11 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "ecufl_args.h"
#include "ecufl_idx.h"
#include "ecufl_kernel.h"
#include "ecufl_npz.h"
#include "ecufl_rand.h"

#ifndef ECUFL_TRAINER_KERNEL
#define ECUFL_TRAINER_KERNEL "c"
#endif

static const char *prog = "ecufl-train";

static int die(int code, const char *msg) {
    fprintf(stderr, "%s: %s\n", prog, msg);
    return code;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long peak_rss_bytes(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss * 1024L; /* Linux: KiB */
}

/* Parameter arrays in transport order, sized for the layers. */
static float **alloc_params(const ecufl_args *a) {
    float **arrays = calloc(2 * (size_t)(a->n_sizes - 1), sizeof *arrays);
    for (int l = 0; arrays && l < a->n_sizes - 1; l++) {
        arrays[2 * l] = malloc(sizeof(float) * (size_t)a->sizes[l] * a->sizes[l + 1]);
        arrays[2 * l + 1] = malloc(sizeof(float) * (size_t)a->sizes[l + 1]);
        if (!arrays[2 * l] || !arrays[2 * l + 1]) return NULL;
    }
    return arrays;
}

static void free_params(const ecufl_args *a, float **arrays) {
    for (int l = 0; arrays && l < a->n_sizes - 1; l++) {
        free(arrays[2 * l]);
        free(arrays[2 * l + 1]);
    }
    free(arrays);
}

/* The data must fit the network: one line naming the file's split otherwise. */
static int check_fit(const ecufl_args *a, const ecufl_idx *x, const ecufl_idx *y, const char *split, char *err, size_t errlen) {
    int width = x->rows * x->cols, n_out = a->sizes[a->n_sizes - 1];
    if (width != a->sizes[0]) {
        snprintf(err, errlen, "%s inputs have %d values per sample: the network's first layer (--layers) takes %d",
                 split, width, a->sizes[0]);
        return -1;
    }
    if (y->dims > 1 && y->rows * y->cols != n_out) {
        snprintf(err, errlen, "%s targets have %d values per sample: the network's last layer (--layers) has %d",
                 split, y->rows * y->cols, n_out);
        return -1;
    }
    return 0;
}

/* Float path (ecufl_net_*_f32) when inputs are float32 or targets real-valued: uint8 inputs are
 * then turned into p / 255.0f (the value the uint8 path gives them). 0, or -1 out of memory. */
static int as_float_inputs(ecufl_idx *x) {
    if (x->type == ECUFL_IDX_F32) return 0;
    size_t n = (size_t)x->count * x->rows * x->cols;
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) return -1;
    for (size_t k = 0; k < n; k++) f[k] = (float)x->data[k] / 255.0f;
    free(x->data);
    x->data = (uint8_t *)f;
    x->type = ECUFL_IDX_F32;
    return 0;
}

static int float_data(const ecufl_idx *x, const ecufl_idx *y) { return x->type == ECUFL_IDX_F32 || y->dims > 1; }

static void sizes_json(char *out, size_t cap, const ecufl_args *a) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int l = 0; l < a->n_sizes && n < cap; l++) n += (size_t)snprintf(out + n, cap - n, "%s%d", l ? ", " : "", a->sizes[l]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

int main(int argc, char **argv) {
    const char *slash = strrchr(argv[0], '/');
    prog = slash ? slash + 1 : argv[0];
    char err[512];
    ecufl_args a;
    int rc = ecufl_args_parse(&a, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc) return die(2, err);
    const char *dir = a.data_dir ? a.data_dir : getenv("ECUFL_DATA") ? getenv("ECUFL_DATA") : ".";

    ecufl_idx images, labels; /* MNIST, or any data: inputs and labels or targets */
    if (ecufl_data_read(dir, "train", &images, &labels, err, sizeof err)) return die(1, err);
    if (check_fit(&a, &images, &labels, "training", err, sizeof err)) return die(2, err); /* --layers vs the data */
    int floats = float_data(&images, &labels);
    if (floats && as_float_inputs(&images)) return die(1, "out of memory");
    int n = images.count;
    if (a.train_limit && a.train_limit < n) n = (int)a.train_limit;

    ecufl_net *net = ecufl_net_create(a.n_sizes, a.sizes, a.batch_size, err, sizeof err);
    if (!net) return die(2, err);
    if (a.init) {
        float **init = alloc_params(&a);
        if (!init) return die(1, "out of memory");
        if (ecufl_npz_read_params(a.init, a.n_sizes, a.sizes, init, err, sizeof err)) return die(1, err);
        if (ecufl_net_set_params(net, (const float *const *)init)) {
            snprintf(err, sizeof err, "--init %s: %s", a.init, ecufl_net_error(net));
            return die(1, err);
        }
        free_params(&a, init);
    } else {
        ecufl_net_init_params(net, a.seed, a.scaled_init);
    }

    int32_t *order = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    double *epoch_seconds = calloc((size_t)a.epochs + 1, sizeof(double));
    if (!order || !epoch_seconds) return die(1, "out of memory");
    ecufl_order epochs;
    ecufl_order_init(&epochs, a.seed, a.shuffle, order, n);
    double train_seconds = 0.0;
    for (int e = 0; e < a.epochs; e++) {
        ecufl_order_next(&epochs, order, n);
        double t0 = now();
        int failed = floats ? ecufl_net_train_f32(net, ecufl_idx_floats(&images), labels.dims > 1 ? ecufl_idx_floats(&labels) : NULL,
                                                  labels.dims > 1 ? NULL : labels.data, images.count, order, n, a.lr, a.batch_size)
                            : ecufl_net_train(net, images.data, labels.data, images.count, order, n, a.lr, a.batch_size);
        if (failed) return die(1, ecufl_net_error(net));
        epoch_seconds[e] = now() - t0;
        train_seconds += epoch_seconds[e];
    }
    free(images.data);
    free(labels.data);
    free(order);

    ecufl_idx test_images, test_labels;
    if (ecufl_data_read(dir, "test", &test_images, &test_labels, err, sizeof err)) return die(1, err);
    if (check_fit(&a, &test_images, &test_labels, "test", err, sizeof err)) return die(2, err);
    int test_floats = float_data(&test_images, &test_labels);
    if (test_floats && as_float_inputs(&test_images)) return die(1, "out of memory");
    double loss;
    int correct;
    int failed = test_floats ? ecufl_net_evaluate_f32(net, ecufl_idx_floats(&test_images),
                                                      test_labels.dims > 1 ? ecufl_idx_floats(&test_labels) : NULL,
                                                      test_labels.dims > 1 ? NULL : test_labels.data, test_images.count, &loss, &correct)
                             : ecufl_net_evaluate(net, test_images.data, test_labels.data, test_images.count, &loss, &correct);
    if (failed) return die(1, ecufl_net_error(net));
    double accuracy = test_images.count ? (double)correct / test_images.count : 0.0;
    long rss = peak_rss_bytes();

    char sizes[256];
    sizes_json(sizes, sizeof sizes, &a);
    if (a.out) {
        float **params = alloc_params(&a);
        if (!params) return die(1, "out of memory");
        ecufl_net_get_params(net, params);
        char meta[1024];
        snprintf(meta, sizeof meta,
                 "{\"batch_size\": %d, \"dtype\": \"float32\", \"epochs\": %d, \"format\": \"ecufl-weights/1\", "
                 "\"kernel\": \"%s\", \"lr\": %.17g, \"seed\": %u, \"sizes\": %s, \"trainer\": \"%s\"}",
                 a.batch_size, a.epochs, ECUFL_TRAINER_KERNEL, a.lr, (unsigned)a.seed, sizes, prog);
        if (ecufl_npz_write_params(a.out, a.n_sizes, a.sizes, (const float *const *)params, meta, err, sizeof err))
            return die(1, err);
        free_params(&a, params);
    }
    long samples = (long)n * a.epochs;
    if (a.json) {
        printf("{\"kernel\": \"%s\", \"sizes\": %s, \"dtype\": \"float32\", \"epochs\": %d, \"samples\": %ld, "
               "\"train_seconds\": %.6f, \"samples_per_second\": %.1f, \"test_accuracy\": %.6f, \"test_loss\": %.9g, "
               "\"peak_rss_bytes\": %ld, \"epoch_seconds\": [",
               ECUFL_TRAINER_KERNEL, sizes, a.epochs, samples, train_seconds,
               train_seconds > 0 ? samples / train_seconds : 0.0, accuracy, loss, rss);
        for (int e = 0; e < a.epochs; e++) printf("%s%.6f", e ? ", " : "", epoch_seconds[e]);
        printf("], \"kernel_info\": %s, \"out\": ", ecufl_net_describe(net));
        if (a.out) printf("\"%s\"}\n", a.out); else printf("null}\n");
    } else {
        printf("HDRNN %s kernel %s: %d epoch(s) of %d samples in %.3f s (%.0f samples/s), test accuracy %.4f "
               "(%d/%d), test loss %.6f, peak RSS %.1f MB\n",
               sizes, ECUFL_TRAINER_KERNEL, a.epochs, n, train_seconds, train_seconds > 0 ? samples / train_seconds : 0.0,
               accuracy, correct, test_images.count, loss, rss / 1e6);
        if (a.out) printf("weights written to %s\n", a.out);
    }
    free(test_images.data);
    free(test_labels.data);
    free(epoch_seconds);
    ecufl_net_destroy(net);
    return 0;
}
