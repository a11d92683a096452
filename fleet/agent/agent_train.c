/* agent_train.c: one TrainRequest -> the C kernel -> one TrainReply with a RoundReport.
 *
 * The kernel is the project's C kernel through its C ABI (kernels/common/ecufl_kernel.h), linked
 * statically; the network is created per request at the request's layer sizes and freed after.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent.pb-c.h"
#include "ecufl_kernel.h"

#define MAX_BATCH 4096
#if defined(__SANITIZE_ADDRESS__)
#define ECUFL_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ECUFL_UNDER_ASAN 1
#endif
#endif
#ifndef ECUFL_UNDER_ASAN
#define ECUFL_UNDER_ASAN 0
#endif
#define MAX_WIDTH 65536   /* neurons per layer: far beyond an ECU's network, and w_l stays < 2^32 bytes */
#define MAX_ORDER (1 << 27) /* indices per request (the frame cap allows 16 M), and every count fits an int */

/* Every size below comes from the peer: products are formed in 64 bits (size_t is 32-bit on ARM)
 * and each allocation is checked. */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double wall(void) {
    struct timeval t;
    gettimeofday(&t, NULL);
    return t.tv_sec + t.tv_usec * 1e-6;
}

/* CPU time of the calling thread: the clock the host's clients and `ecufl bench` time training with */
static double thread_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

/* VmHWM of /proc/self/status: the peak RSS of this program's own address space. getrusage's
 * ru_maxrss is not used: Linux carries it across fork+exec, so it would report the peak of
 * whatever process started the agent (a 150 MB Python, say) instead of the agent's. */
static uint64_t peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kib = 0;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %llu kB", &kib) == 1) break;
        fclose(f);
    }
    if (!kib) {
        struct rusage u;
        getrusage(RUSAGE_SELF, &u);
        kib = (unsigned long long)u.ru_maxrss;
    }
    return (uint64_t)kib * 1024;
}

/* The resident bytes of this program's own mappings (/proc/self/maps + mincore): what the board's
 * memory holds for the agent. Under qemu-user VmHWM is the emulator process's (guest memory plus
 * qemu's own translator and heap), while qemu shows the guest only its own mappings in
 * /proc/self/maps and passes mincore through: this figure is the guest's alone. On a board it is
 * VmRSS plus the page-cache pages of the mapped binary not yet touched (at most its 4 MB text).
 * A running maximum: sampled when memory is highest (the request, network, weights and the packed
 * reply all alive). */
static uint64_t resident_peak;
static void sample_resident(void) {
    static unsigned char vec[4096];
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    long page = sysconf(_SC_PAGESIZE);
    char line[512];
    uint64_t pages = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
        for (unsigned long at = lo; at < hi;) {
            unsigned long n = (hi - at) / (unsigned long)page;
            if (n > sizeof vec) n = sizeof vec;
            if (mincore((void *)at, n * (unsigned long)page, vec)) break; /* [vsyscall] and the like */
            for (unsigned long i = 0; i < n; i++) pages += vec[i] & 1;
            at += n * (unsigned long)page;
        }
    }
    fclose(f);
    if (pages * (uint64_t)page > resident_peak) resident_peak = pages * (uint64_t)page;
}

static int reply_error(const char *msg, uint8_t **out, size_t *out_len) {
    Ecufl__TrainReply rep = ECUFL__TRAIN_REPLY__INIT;
    rep.error = (char *)msg;
    *out_len = ecufl__train_reply__get_packed_size(&rep);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out) return -1;
    ecufl__train_reply__pack(&rep, *out);
    agent_log("refused a request: %s", msg);
    return 0;
}

static int check_order(const int32_t *idx, size_t n, int limit) {
    for (size_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= limit) return -1;
    return 0;
}

int agent_handle(const agent_dataset *ds, const agent_config *cfg, const uint8_t *req_buf, size_t req_len,
                 uint8_t **out, size_t *out_len) {
    char msg[256];
    double t_start = wall(), cpu0 = cpu_seconds(), t0 = now();
    Ecufl__TrainRequest *req = ecufl__train_request__unpack(NULL, req_len, req_buf);
    if (!req) return reply_error("TrainRequest does not parse", out, out_len);
    int rc = -1;
    ecufl_net *net = NULL;
    float **arrays = NULL;
    int n_sizes = (int)req->n_layers;
    int sizes[ECUFL_MAX_SIZES];
    if (n_sizes < 2 || n_sizes > ECUFL_MAX_SIZES) {
        snprintf(msg, sizeof msg, "layers: need 2..%d sizes, got %d", ECUFL_MAX_SIZES, n_sizes);
        goto error;
    }
    for (int i = 0; i < n_sizes; i++) {
        if (req->layers[i] < 1 || req->layers[i] > MAX_WIDTH) {
            snprintf(msg, sizeof msg, "layers: size %u out of range 1..%d", req->layers[i], MAX_WIDTH);
            goto error;
        }
        sizes[i] = (int)req->layers[i];
    }
    if (!ds->inputs && sizes[0] != 784) { snprintf(msg, sizeof msg, "layers: the input must be 784, got %d", sizes[0]); goto error; }
    if (ds->inputs && sizes[0] != ds->n_in) { /* any data: the board's inputs fix the first layer */
        snprintf(msg, sizeof msg, "layers: the input must be %d (the board's train-inputs.idx), got %d", ds->n_in, sizes[0]);
        goto error;
    }
    if (ds->targets && sizes[n_sizes - 1] != ds->n_out) {
        snprintf(msg, sizeof msg, "layers: the output must be %d (the board's train-targets.idx), got %d", ds->n_out,
                 sizes[n_sizes - 1]);
        goto error;
    }
    if (req->n_params != (size_t)(2 * (n_sizes - 1))) {
        snprintf(msg, sizeof msg, "params: expected %d arrays, got %zu", 2 * (n_sizes - 1), req->n_params);
        goto error;
    }
    if (req->batch_size < 1 || req->batch_size > MAX_BATCH || !(req->lr > 0)) {
        snprintf(msg, sizeof msg, "batch_size %u / lr %g out of range", req->batch_size, req->lr);
        goto error;
    }
    if (req->n_order > MAX_ORDER || req->n_eval_order > (size_t)ds->n) {
        snprintf(msg, sizeof msg, "order: %zu training and %zu evaluation indices (at most %d and the board's %d)",
                 req->n_order, req->n_eval_order, MAX_ORDER, ds->n);
        goto error;
    }
    if (check_order(req->order, req->n_order, ds->n) || check_order(req->eval_order, req->n_eval_order, ds->n)) {
        snprintf(msg, sizeof msg, "order: an index is outside 0..%d (the board holds %d samples)", ds->n - 1, ds->n);
        goto error;
    }
    arrays = calloc(req->n_params, sizeof *arrays);
    if (!arrays) { snprintf(msg, sizeof msg, "out of memory"); goto error; }
    for (size_t a = 0; a < req->n_params; a++) {
        int l = (int)a / 2;
        uint64_t want = (a % 2 == 0 ? (uint64_t)sizes[l + 1] * (uint64_t)sizes[l] : (uint64_t)sizes[l + 1]) * sizeof(float);
        if ((uint64_t)req->params[a].len != want) {
            snprintf(msg, sizeof msg, "params[%zu]: %zu bytes, expected %llu", a, req->params[a].len,
                     (unsigned long long)want);
            goto error;
        }
        arrays[a] = malloc((size_t)want); /* aligned copy: the wire bytes need not be float-aligned */
        if (!arrays[a]) { snprintf(msg, sizeof msg, "out of memory for params[%zu]", a); goto error; }
        memcpy(arrays[a], req->params[a].data, (size_t)want);
    }
    char kerr[256] = "";
    net = ecufl_net_create(n_sizes, sizes, (int)req->batch_size, kerr, sizeof kerr);
    if (!net) { snprintf(msg, sizeof msg, "kernel: %s", kerr); goto error; }
    if (ecufl_net_set_params(net, (const float *const *)arrays)) {
        snprintf(msg, sizeof msg, "kernel: %s", ecufl_net_error(net)); goto error;
    }
    double setup = now() - t0;
    t0 = now();
    double train_cpu0 = thread_cpu_seconds();
    int failed = 0;
    if (req->n_order && ds->inputs) /* any data */
        failed = ecufl_net_train_f32(net, ds->inputs, ds->targets, ds->labels, ds->n, req->order, (int)req->n_order,
                                     req->lr, (int)req->batch_size);
    else if (req->n_order)
        failed = ecufl_net_train(net, ds->images, ds->labels, ds->n, req->order, (int)req->n_order, req->lr,
                                 (int)req->batch_size);
    if (failed) {
        snprintf(msg, sizeof msg, "kernel: %s", ecufl_net_error(net)); goto error;
    }
    double train = now() - t0, train_cpu = thread_cpu_seconds() - train_cpu0;
    double loss = 0;
    int correct = 0;
    if (req->n_eval_order && ds->inputs) { /* any data: the same gather, in float32 */
        size_t n = req->n_eval_order, w = (size_t)ds->n_in, o = (size_t)ds->n_out;
        float *in = malloc(sizeof(float) * n * w), *tg = ds->targets ? malloc(sizeof(float) * n * o) : NULL;
        uint8_t *lb = ds->targets ? NULL : malloc(n);
        if (!in || (ds->targets ? !tg : !lb)) {
            free(in);
            free(tg);
            free(lb);
            snprintf(msg, sizeof msg, "out of memory for %zu evaluation samples", n);
            goto error;
        }
        for (size_t i = 0; i < n; i++) {
            size_t r = (size_t)req->eval_order[i];
            memcpy(in + i * w, ds->inputs + r * w, sizeof(float) * w);
            if (tg) memcpy(tg + i * o, ds->targets + r * o, sizeof(float) * o);
            else lb[i] = ds->labels[r];
        }
        int e = ecufl_net_evaluate_f32(net, in, tg, lb, (int)n, &loss, &correct);
        free(in);
        free(tg);
        free(lb);
        if (e) { snprintf(msg, sizeof msg, "kernel: %s", ecufl_net_error(net)); goto error; }
    } else if (req->n_eval_order) {
        /* evaluate() takes the first n images: gather the eval samples into a scratch copy */
        size_t n = req->n_eval_order; /* <= ds->n, so n * 784 <= the board's images (fits size_t) */
        uint8_t *im = malloc(n * 784), *lb = malloc(n);
        if (!im || !lb) {
            free(im);
            free(lb);
            snprintf(msg, sizeof msg, "out of memory for %zu evaluation samples", n);
            goto error;
        }
        for (size_t i = 0; i < n; i++) {
            memcpy(im + i * 784, ds->images + (size_t)req->eval_order[i] * 784, 784);
            lb[i] = ds->labels[req->eval_order[i]];
        }
        int e = ecufl_net_evaluate(net, im, lb, (int)n, &loss, &correct);
        free(im);
        free(lb);
        if (e) { snprintf(msg, sizeof msg, "kernel: %s", ecufl_net_error(net)); goto error; }
    }
    if (ecufl_net_get_params(net, arrays)) { snprintf(msg, sizeof msg, "kernel: %s", ecufl_net_error(net)); goto error; }

    t0 = now();
    Ecufl__TrainReply rep = ECUFL__TRAIN_REPLY__INIT;
    Ecufl__RoundReport rr = ECUFL__ROUND_REPORT__INIT;
    ProtobufCBinaryData *outp = calloc(req->n_params, sizeof *outp);
    if (!outp) { snprintf(msg, sizeof msg, "out of memory for the reply"); goto error; }
    for (size_t a = 0; a < req->n_params; a++) {
        outp[a].data = (uint8_t *)arrays[a];
        outp[a].len = req->params[a].len;
    }
    rep.n_params = req->n_params;
    rep.params = outp;
    char hostname[64] = "";
    gethostname(hostname, sizeof hostname - 1);
    rr.partition_id = req->partition_id;
    rr.num_partitions = req->num_partitions;
    rr.server_round = req->server_round;
    rr.kernel = "c";
    rr.dtype = "float32";
    rr.n_layers = req->n_layers;
    rr.layers = req->layers;
    rr.samples = (uint32_t)req->n_order;
    rr.batch_size = req->batch_size;
    rr.lr = req->lr;
    rr.setup_seconds = setup;
    rr.train_seconds = train;
    rr.train_cpu_seconds = train_cpu;
    rr.local_loss = req->n_eval_order ? loss : 0;
    rr.local_accuracy = req->n_eval_order ? (double)correct / req->n_eval_order : 0;
    rr.ecufl_version = "agent-0.1.0";
    rr.hostname = hostname;
    rr.pid = (uint32_t)getpid();
    rr.trainer = (char *)cfg->node;
    rr.started_at = t_start;
    rr.cpu_seconds = cpu_seconds() - cpu0;
    /* the reply buffer is the last allocation of the request: reserve and touch it before sampling */
    rr.peak_rss_bytes = UINT64_MAX;
    rr.trainer_peak_rss_bytes = UINT64_MAX;
    rr.serialise_seconds = 1.0;
    rr.finished_at = 1.0;
    rep.report = &rr;
    size_t room = ecufl__train_reply__get_packed_size(&rep);
    *out = calloc(1, room);
#if !ECUFL_UNDER_ASAN /* ASan's terabytes of shadow mappings make the walk take minutes */
    sample_resident();
#endif
    rr.peak_rss_bytes = peak_rss_bytes();
    rr.trainer_peak_rss_bytes = resident_peak;
    rr.serialise_seconds = now() - t0;
    rr.finished_at = wall();
    *out_len = ecufl__train_reply__get_packed_size(&rep);
    if (*out && *out_len <= room) {
        ecufl__train_reply__pack(&rep, *out);
        rc = 0;
    }
    free(outp);
    agent_log("round %u: trained %zu samples (%d-...-%d, batch %u) in %.3f s, peak RSS %.1f MiB "
              "(own mappings resident: %.1f MiB)", req->server_round, req->n_order, sizes[0], sizes[n_sizes - 1],
              req->batch_size, train, rr.peak_rss_bytes / 1048576.0, rr.trainer_peak_rss_bytes / 1048576.0);
    goto done;
error:
    rc = reply_error(msg, out, out_len);
done:
    if (net) ecufl_net_destroy(net);
    if (arrays) {
        for (size_t a = 0; a < req->n_params; a++) free(arrays[a]);
        free(arrays);
    }
    ecufl__train_request__free_unpacked(req, NULL);
    return rc;
}
