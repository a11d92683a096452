/*
 * ecufl-a9-microbench NAME ITERATIONS: run one known-count loop of loops.S and print
 * "NAME ITERATIONS NANOSECONDS" (CLOCK_MONOTONIC around the call only).
 * ecufl-a9-microbench --list: print the loop names, one a line.
 *
 * Each loop is called directly (bl mb_NAME) so the counting plugin can open its region at the
 * loop's entry and close it at the return site; the register fill and the clock reads lie outside.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOOPS(X) X(alu) X(alu_arm) X(mul) X(load) X(store) X(branch) X(vfp_add) X(vfp_mul) \
    X(vfp_mla) X(vfp_div) X(vfp_load) X(neon_fadd_q) X(neon_fmul_q) X(neon_fmla_q)          \
    X(neon_fmla_d) X(neon_int_q) X(neon_imul_q) X(neon_load_2) X(neon_store_2) X(call)

#define DECLARE(name) void mb_##name(unsigned long n, float *buf);
LOOPS(DECLARE)
void mb_fill_regs(const float *values);

/* 1.0 everywhere: products and sums stay normal numbers, never denormals or infinities */
static float scratch[64] __attribute__((aligned(64)));

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
#define PRINT(name) puts(#name);
        LOOPS(PRINT)
        return 0;
    }
    char *end;
    unsigned long n = argc == 3 ? strtoul(argv[2], &end, 10) : 0;
    if (argc != 3 || *end || n == 0) {
        fprintf(stderr, "usage: ecufl-a9-microbench NAME ITERATIONS (ITERATIONS >= 1) | --list\n");
        return 2;
    }
    for (int i = 0; i < 64; i++) {
        scratch[i] = 1.0f;
    }
    struct timespec t0, t1;
    mb_fill_regs(scratch);
    clock_gettime(CLOCK_MONOTONIC, &t0);
#define RUN(name) else if (strcmp(argv[1], #name) == 0) mb_##name(n, scratch);
    if (0) {
    }
    LOOPS(RUN)
    else {
        fprintf(stderr, "ecufl-a9-microbench: unknown loop %s (see --list)\n", argv[1]);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%s %lu %.0f\n", argv[1], n, ns);
    return 0;
}
