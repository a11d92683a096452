/* trainer.c: ecufl-train-c / -c-plain / -eigen / -int8, HDRNN on MNIST without Python.
 *
 * The same experiment as `ecufl train --kernel K` (same options, same PRNG streams, same order
 * of samples), linked statically against one kernel through the C ABI of ecufl_kernel.h.
 * Prints test accuracy, training time and peak RSS; --out writes an ecufl weight file (.npz).
 * The training set is freed before the test set is read: the peak is the 47 MB training set
 * plus the network and the program. Exit codes: 0 ok, 2 bad option/value, 1 bad file or data. */
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

    ecufl_idx images, labels;
    if (ecufl_mnist_read(dir, "train", &images, &labels, err, sizeof err)) return die(1, err);
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
        if (ecufl_net_train(net, images.data, labels.data, images.count, order, n, a.lr, a.batch_size))
            return die(1, ecufl_net_error(net));
        epoch_seconds[e] = now() - t0;
        train_seconds += epoch_seconds[e];
    }
    free(images.data);
    free(labels.data);
    free(order);

    ecufl_idx test_images, test_labels;
    if (ecufl_mnist_read(dir, "t10k", &test_images, &test_labels, err, sizeof err)) return die(1, err);
    double loss;
    int correct;
    if (ecufl_net_evaluate(net, test_images.data, test_labels.data, test_images.count, &loss, &correct))
        return die(1, ecufl_net_error(net));
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
