/* ecufl-prng-dump SEED: print every stream of ecufl_rand.h that kernels/golden/prng.json pins down,
 * one "name: values" line each, so tests/test_prng_c.py can check the C generator on any platform
 * (x86, under sanitizers, ARM under qemu) against the golden file, hashes included:
 *   genrand_u32, gauss (IEEE bits as hex), by_array_u32, epoch1/epoch2 (shuffles of 1000),
 *   init_784_30_10_f64 (bits), init_784_32_16_10_scaled_f32 (bits), in transport order. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ecufl_rand.h"

static void print_params_f64(const char *name, int n_sizes, const int *sizes, uint32_t seed) {
    double *arrays[2 * 16];
    for (int l = 0; l < n_sizes - 1; l++) {
        arrays[2 * l] = malloc(sizeof(double) * (size_t)sizes[l] * sizes[l + 1]);
        arrays[2 * l + 1] = malloc(sizeof(double) * (size_t)sizes[l + 1]);
    }
    ecufl_init_params(n_sizes, sizes, seed, 0, arrays, NULL);
    printf("%s:", name);
    for (int l = 0; l < n_sizes - 1; l++) {
        size_t counts[2] = {(size_t)sizes[l] * sizes[l + 1], (size_t)sizes[l + 1]};
        for (int a = 0; a < 2; a++) {
            for (size_t k = 0; k < counts[a]; k++) {
                uint64_t bits;
                memcpy(&bits, &arrays[2 * l + a][k], sizeof bits);
                printf(" %016" PRIx64, bits);
            }
            free(arrays[2 * l + a]);
        }
    }
    printf("\n");
}

static void print_params_f32_scaled(const char *name, int n_sizes, const int *sizes, uint32_t seed) {
    float *arrays[2 * 16];
    for (int l = 0; l < n_sizes - 1; l++) {
        arrays[2 * l] = malloc(sizeof(float) * (size_t)sizes[l] * sizes[l + 1]);
        arrays[2 * l + 1] = malloc(sizeof(float) * (size_t)sizes[l + 1]);
    }
    ecufl_init_params(n_sizes, sizes, seed, 1, NULL, arrays);
    printf("%s:", name);
    for (int l = 0; l < n_sizes - 1; l++) {
        size_t counts[2] = {(size_t)sizes[l] * sizes[l + 1], (size_t)sizes[l + 1]};
        for (int a = 0; a < 2; a++) {
            for (size_t k = 0; k < counts[a]; k++) {
                uint32_t bits;
                memcpy(&bits, &arrays[2 * l + a][k], sizeof bits);
                printf(" %08" PRIx32, bits);
            }
            free(arrays[2 * l + a]);
        }
    }
    printf("\n");
}

int main(int argc, char **argv) {
    char *end = NULL;
    unsigned long long v = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
    if (argc != 2 || !end || *end || end == argv[1] || argv[1][0] == '-' || v > 0xffffffffULL) {
        fprintf(stderr, "usage: ecufl-prng-dump SEED (0..4294967295)\n");
        return 2;
    }
    uint32_t seed = (uint32_t)v;
    ecufl_mt r;
    ecufl_mt_init_genrand(&r, seed);
    printf("genrand_u32:");
    for (int i = 0; i < 16; i++) printf(" %" PRIu32, ecufl_mt_u32(&r));
    printf("\ngauss:");
    ecufl_mt_init_genrand(&r, seed);
    for (int i = 0; i < 16; i++) {
        double g = ecufl_mt_gauss(&r);
        uint64_t bits;
        memcpy(&bits, &g, sizeof bits);
        printf(" %016" PRIx64, bits);
    }
    printf("\nby_array_u32:");
    ecufl_mt_seed_python(&r, seed);
    for (int i = 0; i < 16; i++) printf(" %" PRIu32, ecufl_mt_u32(&r));
    printf("\n");
    int32_t order[1000];
    ecufl_order o;
    ecufl_order_init(&o, seed, 1, order, 1000);
    for (int e = 1; e <= 2; e++) {
        ecufl_order_next(&o, order, 1000);
        printf("epoch%d:", e);
        for (int i = 0; i < 1000; i++) printf(" %" PRId32, order[i]);
        printf("\n");
    }
    int small[] = {784, 30, 10}, deep[] = {784, 32, 16, 10};
    print_params_f64("init_784_30_10_f64", 3, small, seed);
    print_params_f32_scaled("init_784_32_16_10_scaled_f32", 4, deep, seed);
    return 0;
}
