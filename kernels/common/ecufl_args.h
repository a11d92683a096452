/* ecufl_args.h: the command line of the standalone trainers, the same options as `ecufl train`.
 * Kept apart from the trainer so the board tools (emulation runs, subsets) can extend it. */
#ifndef ECUFL_ARGS_H
#define ECUFL_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ecufl_kernel.h"

typedef struct ecufl_args {
    int sizes[ECUFL_MAX_SIZES];
    int n_sizes;
    int epochs;
    int batch_size;
    double lr;
    uint32_t seed;
    long train_limit; /* 0: the whole training set */
    int shuffle;
    int scaled_init;
    int json;
    const char *init;     /* weight file (.npz) to start from, or NULL */
    const char *out;      /* weight file (.npz) to write, or NULL */
    const char *data_dir; /* MNIST directory; NULL: $ECUFL_DATA, then "." */
} ecufl_args;

/* 0: ready to run; 1: --help was asked (usage printed); 2: error, one line in err. */
int ecufl_args_parse(ecufl_args *a, int argc, char **argv, char *err, size_t errlen);
void ecufl_args_usage(FILE *f, const char *prog);
/* "784,30,10" -> sizes; 0 or -1 with a message naming what is wrong. */
int ecufl_parse_layers(const char *text, int *sizes, int *n_sizes, char *err, size_t errlen);

#endif
