/* ecufl_args.c: strict parsing of the trainers' options; every error is one line naming the flag. */
#include "ecufl_args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void ecufl_args_usage(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s [--layers 784,30,10] [--epochs 1] [--batch-size 10] [--lr 3.0] [--seed 1]\n"
            "       [--train-limit N] [--no-shuffle] [--scaled-init] [--init FILE.npz] [--out FILE.npz]\n"
            "       [--data-dir DIR] [--json]\n"
            "Train HDRNN on MNIST (raw IDX files%s in --data-dir, else $ECUFL_DATA) and print test accuracy,\n"
            "training time and peak RSS. Same options and same experiment as `ecufl train`.\n"
            "Any data: --data-dir with train-inputs.idx, train-targets.idx, test-inputs.idx, test-targets.idx\n"
            "(inputs uint8 or float32 in [0, 1]; targets uint8 class labels or float32 N x outputs).\n",
            prog,
#ifdef ECUFL_HAVE_ZLIB
            " or .gz"
#else
            ""
#endif
    );
}

static int parse_long(const char *text, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int ecufl_parse_layers(const char *text, int *sizes, int *n_sizes, char *err, size_t errlen) {
    int n = 0;
    const char *p = text;
    while (1) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 1000000 || (*end && *end != ',')) {
            snprintf(err, errlen, "--layers: '%s' is not a comma-separated list of positive sizes", text);
            return -1;
        }
        if (n == ECUFL_MAX_SIZES) {
            snprintf(err, errlen, "--layers: at most %d layers, got more in '%s'", ECUFL_MAX_SIZES, text);
            return -1;
        }
        sizes[n++] = (int)v;
        if (!*end) break;
        p = end + 1;
    }
    if (n < 2) {
        snprintf(err, errlen, "--layers: need at least an input and an output layer, got '%s'", text);
        return -1;
    }
    /* any sizes (issue 17): whether they fit the data is checked when the data is read (trainer.c) */
    *n_sizes = n;
    return 0;
}

int ecufl_args_parse(ecufl_args *a, int argc, char **argv, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    a->epochs = 1;
    a->batch_size = 10;
    a->lr = 3.0;
    a->seed = 1;
    a->shuffle = 1;
    int def[] = {784, 30, 10};
    memcpy(a->sizes, def, sizeof def);
    a->n_sizes = 3;
    for (int k = 1; k < argc; k++) {
        const char *opt = argv[k];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            ecufl_args_usage(stdout, argv[0]);
            return 1;
        }
        if (!strcmp(opt, "--no-shuffle")) { a->shuffle = 0; continue; }
        if (!strcmp(opt, "--scaled-init")) { a->scaled_init = 1; continue; }
        if (!strcmp(opt, "--json")) { a->json = 1; continue; }
        /* options with a value: "--name value" or "--name=value" */
        const char *value = NULL;
        char name[64];
        const char *eq = strchr(opt, '=');
        if (eq && (size_t)(eq - opt) < sizeof name) {
            memcpy(name, opt, (size_t)(eq - opt));
            name[eq - opt] = 0;
            value = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", opt);
        }
        static const char *const with_value[] = {"--layers", "--epochs", "--batch-size", "--lr", "--seed",
                                                 "--train-limit", "--init", "--out", "--data-dir", NULL};
        int known = 0;
        for (int i = 0; with_value[i]; i++) known |= !strcmp(name, with_value[i]);
        if (!known) {
            snprintf(err, errlen, "no such option: %s (see --help)", opt);
            return 2;
        }
        if (!value) {
            if (k + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", name);
                return 2;
            }
            value = argv[++k];
        }
        long v;
        if (!strcmp(name, "--layers")) {
            if (ecufl_parse_layers(value, a->sizes, &a->n_sizes, err, errlen)) return 2;
        } else if (!strcmp(name, "--epochs")) {
            if (parse_long(value, 0, 1000000, &v)) { snprintf(err, errlen, "--epochs must be an integer >= 0, got '%s'", value); return 2; }
            a->epochs = (int)v;
        } else if (!strcmp(name, "--batch-size")) {
            if (parse_long(value, 1, 65536, &v)) { snprintf(err, errlen, "--batch-size must be an integer in 1..65536, got '%s'", value); return 2; }
            a->batch_size = (int)v;
        } else if (!strcmp(name, "--train-limit")) {
            if (parse_long(value, 1, 1L << 30, &v)) { snprintf(err, errlen, "--train-limit must be an integer >= 1, got '%s'", value); return 2; }
            a->train_limit = v;
        } else if (!strcmp(name, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(value, &end, 10);
            if (!*value || *end || errno || value[0] == '-' || s > 0xffffffffULL) {
                snprintf(err, errlen, "--seed must be in 0..2^32-1, got '%s'", value);
                return 2;
            }
            a->seed = (uint32_t)s;
        } else if (!strcmp(name, "--lr")) {
            char *end;
            errno = 0;
            double lr = strtod(value, &end);
            if (!*value || *end || errno || !isfinite(lr) || !(lr > 0)) {
                snprintf(err, errlen, "--lr must be a positive finite number, got '%s'", value);
                return 2;
            }
            a->lr = lr;
        } else if (!strcmp(name, "--init")) {
            a->init = value;
        } else if (!strcmp(name, "--out")) {
            a->out = value;
        } else if (!strcmp(name, "--data-dir")) {
            a->data_dir = value;
        }
    }
    return 0;
}
