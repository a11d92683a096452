// hdrnn_eigen.cpp: HDRNN in C++17 with Eigen matrix expressions, exporting the C ABI of
// common/ecufl_kernel.h (the same as the C kernel, so the same binding and trainer drive it).
//
// Written as an Eigen user would: a mini-batch is a row-major (m, n) matrix, one sample per row;
// each layer keeps its weights transposed, wt = W^T (n_in, n_out), so a layer is
// sigmoid(A * wt + b), and the products of the dense layers run in Eigen's GEMM.
// MNIST is ~80% zero pixels, so the mini-batch's input is an Eigen sparse matrix (CSR, a Map over
// buffers allocated at create): the first layer's forward product x * wt and its weight update
// wt -= x^T * (step * delta) are Eigen's sparse x dense products, which touch only nonzero pixels.
// Those products add one weight row per nonzero pixel; they run over fixed-width column panels of
// the first layer (padded to a multiple of 8 columns), so each row addition is a few packet
// instructions (see for_each_panel). Sigmoid is an array expression (vectorised exp).
// Compiled with the C kernel's SIMD flags (AVX2+FMA / NEON); Release builds define NDEBUG, hence
// EIGEN_NO_DEBUG. Initial weights come from the project's PRNG (ecufl_rand.h). Single-threaded.
#include <Eigen/Dense>
#include <Eigen/SparseCore>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>
#include <type_traits>
#include <string>
#include <vector>

#include "ecufl_kernel.h"
#include "ecufl_rand.h"

#ifndef ECUFL_COMPILER
#define ECUFL_COMPILER "unknown"
#endif
#ifndef ECUFL_FLAGS
#define ECUFL_FLAGS ""
#endif

namespace {
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVec = Eigen::RowVectorXf;
// The mini-batch's input, (m, 784), by sample (CSR: each sample's nonzero pixels).
using BySample = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::RowMajor, int>>;
}  // namespace

// Training and evaluation never allocate: every matrix is sized at create. The test build
// (-DEIGEN_RUNTIME_NO_MALLOC, asserts on: tests/test_eigen.py) makes any heap allocation by Eigen
// inside them abort, e.g. a product evaluated into a temporary inside a larger expression.
struct NoAllocation {
#ifdef EIGEN_RUNTIME_NO_MALLOC
    NoAllocation() { Eigen::internal::set_is_malloc_allowed(false); }
    ~NoAllocation() { Eigen::internal::set_is_malloc_allowed(true); }
#endif
};

// p / 255.0f for every byte value (one correctly rounded division each, done once).
static const std::array<float, 256> pixel_value = [] {
    std::array<float, 256> t{};
    for (int p = 0; p < 256; p++) t[p] = float(p) / 255.0f;
    return t;
}();

// Ask for the n bytes at p to be brought into the cache: a mini-batch's images are rows scattered
// over the 47 MB training set, and without this the scan waits on memory (+5-15% per epoch).
static inline void request(const uint8_t *p, int n) {
#if defined(__GNUC__)
    for (int k = 0; k < n; k += 64) __builtin_prefetch(p + k);
    __builtin_prefetch(p + n - 1);
#else
    (void)p, (void)n;
#endif
}

// Compressed sparse storage allocated once, for a Map: outer starts, inner indices, values.
struct SparseBuffers {
    std::vector<int> start, index;
    std::vector<float> value;
    void reserve(int outer, size_t nnz) {
        start.assign(size_t(outer) + 1, 0);
        index.assign(nnz, 0);
        value.assign(nnz, 0.0f);
    }
};

struct ecufl_net {
    std::vector<int> sizes;
    int max_batch = 0;
    int ld1 = 0;                // sizes[1] rounded up to 8: wt[0], b[0], act[1], delta[0] have ld1
                                // columns, the padding ones hold 0 (and stay 0 through training)
    std::vector<Mat> wt;        // wt[l] = W_l^T, (n_in, n_out)
    std::vector<RowVec> b;      // b[l], (1, n_out)
    std::vector<Mat> act;       // act[l], (max_batch, sizes[l]) for l >= 1 (act[0] is the sparse input)
    std::vector<Mat> delta;     // delta[l], (max_batch, sizes[l+1])
    Mat step_delta;             // (lr/m) * delta[0], the first layer's update
    Mat y;                      // one-hot labels of the mini-batch
    SparseBuffers by_sample;    // the input, CSR (m rows)
    char error[256] = "";
    std::string info;           // ecufl_net_describe's JSON, written at create

    int fail(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(error, sizeof error, fmt, ap);
        va_end(ap);
        return -1;
    }
    int layers() const { return int(sizes.size()) - 1; }

    // The m samples as a sparse (m, 784) CSR matrix: each image's nonzero pixels as p / 255.
    // MNIST's borders are zero: all-zero 8-byte words are skipped; the rest is compacted without
    // branches (every pixel's slot is written, kept only if the pixel is nonzero).
    BySample input(const uint8_t *images, const int32_t *rows, int first, int m) {
        const int n0 = sizes[0];
        int *start = by_sample.start.data(), *index = by_sample.index.data();
        float *value = by_sample.value.data();
        int nnz = 0;
        auto image = [&](int s) { return images + size_t(rows ? rows[s] : first + s) * n0; };
        const int ahead = 2;  // images requested ahead of the scan (as the C kernel does)
        for (int s = 0; s < ahead && s < m; s++) request(image(s), n0);
        for (int s = 0; s < m; s++) {
            const uint8_t *pixels = image(s);
            if (s + ahead < m) request(image(s + ahead), n0);
            start[s] = nnz;
            int i = 0;
            for (; i + 8 <= n0; i += 8) {
                std::uint64_t word;
                std::memcpy(&word, pixels + i, 8);
                if (!word) continue;
                for (int k = i; k < i + 8; k++) {
                    index[nnz] = k;
                    value[nnz] = pixel_value[pixels[k]];
                    nnz += pixels[k] != 0;
                }
            }
            for (; i < n0; i++) {
                index[nnz] = i;
                value[nnz] = pixel_value[pixels[i]];
                nnz += pixels[i] != 0;
            }
        }
        start[m] = nnz;
        return BySample(m, n0, nnz, start, index, value);
    }

    // The m samples of float inputs (any data, ecufl_net_train_f32) as the same CSR matrix: the
    // nonzero inputs as they are (zeros are skipped as zero pixels are, so p / 255 given as floats
    // is the same matrix as the pixels p).
    BySample input(const float *inputs, const int32_t *rows, int first, int m) {
        const int n0 = sizes[0];
        int *start = by_sample.start.data(), *index = by_sample.index.data();
        float *value = by_sample.value.data();
        int nnz = 0;
        for (int s = 0; s < m; s++) {
            const float *x = inputs + size_t(rows ? rows[s] : first + s) * n0;
            start[s] = nnz;
            for (int i = 0; i < n0; i++) {
                index[nnz] = i;
                value[nnz] = x[i];
                nnz += x[i] != 0.0f;
            }
        }
        start[m] = nnz;
        return BySample(m, n0, nnz, start, index, value);
    }

    // sigmoid as an Eigen array expression: vectorised exp (Eigen's polynomial, about 1 ulp) and
    // an IEEE division (divps), 8% of the epoch at 784-32-10 against libm's expf per element.
    // ARMv7 NEON has no divide instruction: Eigen's packet division there is a reciprocal
    // estimate plus Newton steps, which over an epoch drove the weights 4e-3 away from the
    // reference, so that build keeps the C library's expf and a real division per element.
    template <typename Block>
    static void sigmoid(Block &&z) {
#if defined(EIGEN_VECTORIZE_NEON) && !EIGEN_ARCH_ARM64
        z = z.unaryExpr([](float v) { return 1.0f / (1.0f + std::exp(-v)); });
#else
        z.array() = (1.0f + (-z.array()).exp()).inverse();
#endif
    }

    // The first layer's products go through its columns in panels of fixed width (128, 32,
    // then 8 columns): Eigen compiles a fixed-size row operation into straight packet
    // instructions, where a dynamic-size row pays a run-time alignment prologue and loop for
    // every nonzero pixel (which made narrow layers 2x slower than the C kernel).
    template <typename Op>
    void for_each_panel(Op op) const {
        int c = 0;
        for (; c + 128 <= ld1; c += 128) op(std::integral_constant<int, 128>{}, c);
        for (; c + 32 <= ld1; c += 32) op(std::integral_constant<int, 32>{}, c);
        for (; c < ld1; c += 8) op(std::integral_constant<int, 8>{}, c);
    }

    void forward(const BySample &x, int m) {
        for (int l = 0; l < layers(); l++) {
            const int n_in = sizes[l], n_out = sizes[l + 1];
            if (l == 0) {
                for_each_panel([&](auto P, int c) {
                    act[1].topRows(m).template middleCols<P>(c).noalias() = x * wt[0].template middleCols<P>(c);
                });
            } else {
                act[l + 1].topRows(m).leftCols(n_out).noalias() = act[l].topRows(m).leftCols(n_in) * wt[l];
            }
            auto z = act[l + 1].topRows(m).leftCols(n_out);
            z.rowwise() += b[l].head(n_out);
            sigmoid(z);
        }
    }

    // targets (n, sizes[L]) real-valued, or NULL: one-hot rows of labels.
    void backward_update(const BySample &x, const uint8_t *labels, const float *targets, const int32_t *rows, int m,
                         float step) {
        const int L = layers();
        auto yb = y.topRows(m);
        if (targets) {
            for (int s = 0; s < m; s++)
                yb.row(s) = Eigen::Map<const RowVec>(targets + size_t(rows[s]) * sizes[L], sizes[L]);
        } else {
            yb.setZero();
            for (int s = 0; s < m; s++) yb(s, labels[rows[s]]) = 1.0f;
        }
        auto a = act[L].topRows(m).leftCols(sizes[L]).array();
        delta[L - 1].topRows(m).leftCols(sizes[L]) = ((a - yb.array()) * a * (1.0f - a)).matrix();  // BP1
        for (int l = L - 1; l >= 1; l--) {                                                             // BP2
            auto al = act[l].topRows(m).leftCols(sizes[l]).array();
            auto dl = delta[l - 1].topRows(m).leftCols(sizes[l]);
            dl.noalias() = delta[l].topRows(m).leftCols(sizes[l + 1]) * wt[l].transpose();
            dl.array() *= al * (1.0f - al);
        }
        for (int l = 0; l < L; l++) {  // BP3, BP4, w -= (lr/m) * sum(grad)
            auto d = delta[l].topRows(m);
            b[l] -= step * d.colwise().sum();
            if (l == 0) {
                // x^T by sample is column-major: each sample's row of step * delta is added to
                // the weight rows of its nonzero pixels. The step goes into delta first (a
                // scalar times the sparse x would be evaluated into a new sparse matrix).
                auto sd = step_delta.topRows(m);
                sd.noalias() = step * d;
                for_each_panel([&](auto P, int c) {
                    wt[0].template middleCols<P>(c).noalias() -= x.transpose() * sd.template middleCols<P>(c);
                });
            } else {
                wt[l].noalias() -= step * (act[l].topRows(m).leftCols(sizes[l]).transpose() * d);
            }
        }
    }
};

// ecufl_net_describe's JSON: what this build vectorises with and whether allocations are checked.
static std::string describe_build() {
#if defined(EIGEN_VECTORIZE_AVX2) && defined(EIGEN_VECTORIZE_FMA)
    const char *simd = "avx2";
#elif defined(EIGEN_VECTORIZE_NEON)
    const char *simd = "neon";
#elif defined(EIGEN_VECTORIZE_SSE2)
    const char *simd = "sse2";
#else
    const char *simd = "none";
#endif
#if defined(EIGEN_RUNTIME_NO_MALLOC) && !defined(EIGEN_NO_DEBUG)
    const char *no_malloc = "true";  // allocations in train/evaluate abort (the test build)
#else
    const char *no_malloc = "false";
#endif
    char text[512];
    std::snprintf(text, sizeof text,
                  "{\"kernel\": \"eigen\", \"path\": \"%s\", \"eigen\": \"%d.%d.%d\", \"compiler\": \"%s\", \"flags\": \"%s\", "
                  "\"no_malloc_checked\": %s}",
                  simd, EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, ECUFL_COMPILER, ECUFL_FLAGS, no_malloc);
    return text;
}

extern "C" {

ecufl_net *ecufl_net_create(int n_sizes, const int *sizes, int max_batch, char *err, int errlen) {
    char msg[256] = "";
    if (n_sizes < 2 || n_sizes > ECUFL_MAX_SIZES)
        std::snprintf(msg, sizeof msg, "need 2 to %d layer sizes, got %d", ECUFL_MAX_SIZES, n_sizes);
    else if (max_batch < 1 || max_batch > 1 << 16)
        std::snprintf(msg, sizeof msg, "max_batch must be in 1..65536, got %d", max_batch);
    else
        for (int l = 0; l < n_sizes; l++)
            if (sizes[l] < 1 || sizes[l] > 1 << 20) {
                std::snprintf(msg, sizeof msg, "layer size %d is %d, must be in 1..1048576", l, sizes[l]);
                break;
            }
    if (!msg[0]) {
        try {
            auto *net = new ecufl_net;
            net->sizes.assign(sizes, sizes + n_sizes);
            net->max_batch = max_batch;
            net->ld1 = (sizes[1] + 7) / 8 * 8;
            for (int l = 0; l < n_sizes - 1; l++) {
                const int width = l == 0 ? net->ld1 : sizes[l + 1];  // the padding stays 0
                net->wt.push_back(Mat::Zero(sizes[l], width));
                net->b.push_back(RowVec::Zero(width));
                net->delta.push_back(Mat::Zero(max_batch, width));
                net->act.push_back(l == 0 ? Mat() : Mat::Zero(max_batch, sizes[l]));  // act[0]: the sparse input
            }
            net->act.push_back(Mat::Zero(max_batch, sizes[n_sizes - 1]));
            net->act[1] = Mat::Zero(max_batch, net->ld1);
            net->y = Mat::Zero(max_batch, sizes[n_sizes - 1]);
            net->step_delta = Mat::Zero(max_batch, net->ld1);
            net->by_sample.reserve(max_batch, size_t(max_batch) * sizes[0]);
            net->info = describe_build();
            return net;
        } catch (const std::bad_alloc &) {
            std::snprintf(msg, sizeof msg, "out of memory");
        }
    }
    if (err && errlen > 0) std::snprintf(err, size_t(errlen), "%s", msg);
    return nullptr;
}

void ecufl_net_destroy(ecufl_net *net) { delete net; }

const char *ecufl_net_error(const ecufl_net *net) { return net ? net->error : "no network"; }

int ecufl_net_set_params(ecufl_net *net, const float *const *arrays) {
    for (int l = 0; l < net->layers(); l++) {
        const int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        Eigen::Map<const Mat> w(arrays[2 * l], n_out, n_in);
        Eigen::Map<const RowVec> b(arrays[2 * l + 1], n_out);
        if (!w.allFinite()) return net->fail("w%d holds NaN or Inf", l + 1);
        if (!b.allFinite()) return net->fail("b%d holds NaN or Inf", l + 1);
        net->wt[l].leftCols(n_out) = w.transpose();
        net->b[l].head(n_out) = b;
    }
    return 0;
}

int ecufl_net_get_params(const ecufl_net *net, float *const *arrays) {
    for (int l = 0; l < net->layers(); l++) {
        const int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        Eigen::Map<Mat>(arrays[2 * l], n_out, n_in) = net->wt[l].leftCols(n_out).transpose();
        Eigen::Map<RowVec>(arrays[2 * l + 1], n_out) = net->b[l].head(n_out);
    }
    return 0;
}

int ecufl_net_init_params(ecufl_net *net, uint32_t seed, int scaled) {
    std::vector<std::vector<float>> store;
    std::vector<float *> arrays;
    for (int l = 0; l < net->layers(); l++) {
        store.emplace_back(size_t(net->sizes[l]) * net->sizes[l + 1]);
        store.emplace_back(size_t(net->sizes[l + 1]));
    }
    for (auto &a : store) arrays.push_back(a.data());
    ecufl_init_params(int(net->sizes.size()), net->sizes.data(), seed, scaled, nullptr, arrays.data());
    return ecufl_net_set_params(net, arrays.data());
}

// The samples of a train/evaluate call: uint8 pixels or float inputs, labels or real targets.
struct Data {
    const uint8_t *images;
    const float *inputs;
    const uint8_t *labels;
    const float *targets;
};

// Labels below the outputs; float inputs and targets of the rows used finite.
static int check_data(ecufl_net *net, const Data &d, const int32_t *order, int n_rows, int n) {
    const int n0 = net->sizes[0], n_out = net->sizes.back();
    if (d.labels)
        for (int k = 0; k < n_rows; k++)
            if (d.labels[k] >= n_out) return net->fail("label %d at index %d is not below %d", d.labels[k], k, n_out);
    for (int k = 0; k < n && (d.inputs || d.targets); k++) {
        const size_t row = size_t(order ? order[k] : k);
        if (d.inputs)
            for (int i = 0; i < n0; i++)
                if (!std::isfinite(d.inputs[row * n0 + i])) return net->fail("input %d of sample %zu is not finite", i, row);
        if (d.targets)
            for (int j = 0; j < n_out; j++)
                if (!std::isfinite(d.targets[row * n_out + j])) return net->fail("target %d of sample %zu is not finite", j, row);
    }
    return 0;
}

static int train(ecufl_net *net, const Data &d, int n_images, const int32_t *order, int n, double lr, int batch_size) {
    if (!(lr > 0 && std::isfinite(lr))) return net->fail("lr must be a positive finite number, got %g", lr);
    if (batch_size < 1 || batch_size > net->max_batch)
        return net->fail("batch_size %d is outside 1..%d (the net's max_batch)", batch_size, net->max_batch);
    if (n < 0 || n_images < 0) return net->fail("negative sample count");
    for (int k = 0; k < n; k++)
        if (order[k] < 0 || order[k] >= n_images)
            return net->fail("order[%d] = %d is outside 0..%d", k, order[k], n_images - 1);
    if (check_data(net, d, order, n_images, n)) return -1;
    [[maybe_unused]] const NoAllocation no_allocation;
    for (int k = 0; k < n; k += batch_size) {
        const int m = n - k < batch_size ? n - k : batch_size;
        const float step = float(lr / m);
        BySample x = d.images ? net->input(d.images, order + k, 0, m) : net->input(d.inputs, order + k, 0, m);
        net->forward(x, m);
        net->backward_update(x, d.labels, d.targets, order + k, m, step);
    }
    return 0;
}

static int evaluate(ecufl_net *net, const Data &d, int n, double *loss, int *correct) {
    if (n < 0) return net->fail("negative sample count");
    if (check_data(net, d, nullptr, n, n)) return -1;
    const int L = net->layers(), n_out = net->sizes.back();
    double sum = 0.0;
    int hits = 0;
    [[maybe_unused]] const NoAllocation no_allocation;
    for (int k = 0; k < n; k += net->max_batch) {
        const int m = n - k < net->max_batch ? n - k : net->max_batch;
        BySample x = d.images ? net->input(d.images, nullptr, k, m) : net->input(d.inputs, nullptr, k, m);
        net->forward(x, m);
        for (int s = 0; s < m; s++) {
            auto a = net->act[L].row(s).head(n_out);
            if (d.targets) {  // real-valued targets: correct when every output is within 0.5
                const float *y = d.targets + size_t(k + s) * n_out;
                bool near = true;
                for (int j = 0; j < n_out; j++) {
                    const float e = a(j) - y[j];
                    sum += double(e * e);
                    near = near && std::fabs(e) < 0.5f;
                }
                hits += near;
                continue;
            }
            Eigen::Index best;
            a.maxCoeff(&best);  // first largest, as np.argmax
            for (int j = 0; j < n_out; j++) {
                const float e = a(j) - (j == d.labels[k + s] ? 1.0f : 0.0f);
                sum += double(e * e);
            }
            hits += int(best) == d.labels[k + s];
        }
    }
    *loss = n ? 0.5 * sum / n : 0.0;
    *correct = hits;
    return 0;
}

int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size) {
    return train(net, Data{images, nullptr, labels, nullptr}, n_images, order, n, lr, batch_size);
}

int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct) {
    return evaluate(net, Data{images, nullptr, labels, nullptr}, n, loss, correct);
}

int ecufl_net_train_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                        int n_samples, const int32_t *order, int n, double lr, int batch_size) {
    if (!inputs || (!targets && !labels)) return net->fail("no inputs, or neither targets nor labels");
    return train(net, Data{nullptr, inputs, targets ? nullptr : labels, targets}, n_samples, order, n, lr, batch_size);
}

int ecufl_net_evaluate_f32(ecufl_net *net, const float *inputs, const float *targets, const uint8_t *labels,
                           int n, double *loss, int *correct) {
    if (!inputs || (!targets && !labels)) return net->fail("no inputs, or neither targets nor labels");
    return evaluate(net, Data{nullptr, inputs, targets ? nullptr : labels, targets}, n, loss, correct);
}

long ecufl_net_weight_bytes(const ecufl_net *net) {
    long total = 0;
    for (int l = 0; l < net->layers(); l++) total += long(net->sizes[l + 1]) * (net->sizes[l] + 1) * long(sizeof(float));
    return total;
}

const char *ecufl_net_describe(const ecufl_net *net) { return net->info.c_str(); }

}  // extern "C"
