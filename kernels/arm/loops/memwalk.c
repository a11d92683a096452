/*
 * ecufl-a9-memwalk BYTES STRIDE PASSES: read one word every STRIDE bytes of a BYTES-long array,
 * PASSES times, inside mw_walk() (the counted region), and print the sum.
 *
 * A synthetic access pattern with known cache behaviour: with 32-byte lines and STRIDE 32, a
 * sweep touches BYTES/32 distinct lines; an array that fits a cache misses it only on the first
 * pass, one that exceeds an LRU cache of the same associativity pattern misses every access.
 * Timed on a board (--time), the same loop is a streaming read test: bytes per second.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__attribute__((noinline)) uint32_t mw_walk(const uint32_t *a, unsigned long words, unsigned long step,
                                           unsigned long passes)
{
    uint32_t sum = 0;
    for (unsigned long p = 0; p < passes; p++) {
        for (unsigned long i = 0; i < words; i += step) {
            sum += a[i];
        }
    }
    return sum;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ecufl-a9-memwalk BYTES STRIDE PASSES [--time]\n");
        return 2;
    }
    unsigned long bytes = strtoul(argv[1], NULL, 10), stride = strtoul(argv[2], NULL, 10);
    unsigned long passes = strtoul(argv[3], NULL, 10);
    if (bytes < 4 || stride < 4 || stride % 4 || passes < 1) {
        fprintf(stderr, "ecufl-a9-memwalk: BYTES >= 4, STRIDE a multiple of 4, PASSES >= 1\n");
        return 2;
    }
    uint32_t *a = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!a) {
        return 3;
    }
    for (unsigned long i = 0; i < bytes / 4; i++) {
        a[i] = (uint32_t)i;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t sum = mw_walk(a, bytes / 4, stride / 4, passes);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("memwalk %lu %lu %lu %u %.0f\n", bytes, stride, passes, sum, ns);
    return 0;
}
