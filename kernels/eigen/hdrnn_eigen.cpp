// hdrnn_eigen.cpp: HDRNN in C++17 with Eigen matrix expressions, exporting the C ABI of
// common/ecufl_kernel.h (the same as the C kernel, so the same binding and trainer drive it).
//
// Written as an Eigen user would: a mini-batch is a row-major (m, n) matrix, one sample per row;
// each layer keeps its weights transposed, wt = W^T (n_in, n_out), so a layer is
// sigmoid(A * wt + b) and the products run in Eigen's GEMM. The mini-batch's input is an Eigen
// sparse matrix (Map over buffers allocated at create: MNIST is ~80% zero pixels), so the first
// layer's forward product and weight gradient are sparse x dense products.
// Initial weights come from the project's PRNG (ecufl_rand.h). Single-threaded (no OpenMP).
#include <Eigen/Dense>
#include <Eigen/SparseCore>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>
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
using SparseBatch = Eigen::Map<const Eigen::SparseMatrix<float, Eigen::RowMajor, int>>;
}  // namespace

// p / 255.0f for every byte value (one correctly rounded division each, done once).
static const std::array<float, 256> pixel_value = [] {
    std::array<float, 256> t{};
    for (int p = 0; p < 256; p++) t[p] = float(p) / 255.0f;
    return t;
}();

struct ecufl_net {
    std::vector<int> sizes;
    int max_batch = 0;
    std::vector<Mat> wt;        // wt[l] = W_l^T, (n_in, n_out)
    std::vector<RowVec> b;      // b[l], (1, n_out)
    std::vector<Mat> act;       // act[l], (max_batch, sizes[l]) for l >= 1 (act[0] is the sparse input)
    std::vector<Mat> delta;     // delta[l], (max_batch, sizes[l+1])
    Mat y;                      // one-hot labels of the mini-batch
    std::vector<int> x_rows;    // the sparse input: row starts (m + 1) ...
    std::vector<int> x_cols;    // ... pixel indices ...
    std::vector<float> x_vals;  // ... and p / 255
    std::vector<float> x_step;  // lr/m * p / 255, for the first layer's update
    char error[256] = "";

    int fail(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(error, sizeof error, fmt, ap);
        va_end(ap);
        return -1;
    }
    int layers() const { return int(sizes.size()) - 1; }

    // The m samples as a sparse (m, 784) matrix over the preallocated buffers.
    SparseBatch input(const uint8_t *images, const int32_t *rows, int first, int m) {
        const int n0 = sizes[0];
        int nnz = 0;
        for (int s = 0; s < m; s++) {
            const uint8_t *pixels = images + size_t(rows ? rows[s] : first + s) * n0;
            x_rows[s] = nnz;
            for (int i = 0; i < n0; i++) {
                if (i + 8 <= n0 && i % 8 == 0) {  // skip all-zero runs of 8 pixels (the borders)
                    std::uint64_t word;
                    std::memcpy(&word, pixels + i, 8);
                    if (!word) {
                        i += 7;
                        continue;
                    }
                }
                x_cols[nnz] = i;  // branch-free: write the slot, keep it if the pixel is nonzero
                x_vals[nnz] = pixel_value[pixels[i]];
                nnz += pixels[i] != 0;
            }
        }
        x_rows[m] = nnz;
        return SparseBatch(m, n0, nnz, x_rows.data(), x_cols.data(), x_vals.data());
    }

    // sigmoid with the C library's expf and an IEEE division per element. Eigen's packet exp and
    // reciprocal are approximations on ARMv7 NEON (no divide instruction: vrecpe + Newton steps),
    // which over an epoch drove the weights 4e-3 away from the reference; elementwise work is a
    // small part of the time (n_out per sample against n_in * n_out multiply-adds).
    template <typename Block>
    static void sigmoid(Block &&z) { z = z.unaryExpr([](float v) { return 1.0f / (1.0f + std::exp(-v)); }); }

    void forward(const SparseBatch &x, int m) {
        for (int l = 0; l < layers(); l++) {
            auto z = act[l + 1].topRows(m);
            if (l == 0)
                z.noalias() = x * wt[0];
            else
                z.noalias() = act[l].topRows(m) * wt[l];
            z.rowwise() += b[l];
            sigmoid(z);
        }
    }

    void backward_update(const SparseBatch &x, const uint8_t *labels, const int32_t *rows, int m, float step) {
        const int L = layers();
        auto yb = y.topRows(m);
        yb.setZero();
        for (int s = 0; s < m; s++) yb(s, labels[rows[s]]) = 1.0f;
        auto a = act[L].topRows(m).array();
        delta[L - 1].topRows(m) = ((a - yb.array()) * a * (1.0f - a)).matrix();  // BP1
        for (int l = L - 1; l >= 1; l--) {                                          // BP2
            auto al = act[l].topRows(m).array();
            delta[l - 1].topRows(m) = ((delta[l].topRows(m) * wt[l].transpose()).array() * al * (1.0f - al)).matrix();
        }
        for (int l = 0; l < L; l++) {  // BP3, BP4, w -= (lr/m) * sum(grad)
            auto d = delta[l].topRows(m);
            b[l] -= step * d.colwise().sum();
            if (l == 0) {
                // (step * x)^T d: a scalar times a sparse matrix would be a new sparse matrix
                // (an allocation per mini-batch), so the step goes into a copy of x's values.
                for (Eigen::Index k = 0; k < x.nonZeros(); k++) x_step[k] = step * x.valuePtr()[k];
                SparseBatch xs(x.rows(), x.cols(), x.nonZeros(), x.outerIndexPtr(), x.innerIndexPtr(), x_step.data());
                wt[0].noalias() -= xs.transpose() * d;
            } else {
                wt[l].noalias() -= step * (act[l].topRows(m).transpose() * d);
            }
        }
    }
};

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
            for (int l = 0; l < n_sizes - 1; l++) {
                net->wt.push_back(Mat::Zero(sizes[l], sizes[l + 1]));
                net->b.push_back(RowVec::Zero(sizes[l + 1]));
                net->delta.push_back(Mat::Zero(max_batch, sizes[l + 1]));
            }
            net->act.push_back(Mat());  // the input lives in x_* as a sparse matrix
            for (int l = 1; l < n_sizes; l++) net->act.push_back(Mat::Zero(max_batch, sizes[l]));
            net->y = Mat::Zero(max_batch, sizes[n_sizes - 1]);
            net->x_rows.assign(size_t(max_batch) + 1, 0);
            net->x_cols.assign(size_t(max_batch) * sizes[0], 0);
            net->x_vals.assign(size_t(max_batch) * sizes[0], 0.0f);
            net->x_step.assign(size_t(max_batch) * sizes[0], 0.0f);
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
        net->wt[l] = w.transpose();
        net->b[l] = b;
    }
    return 0;
}

int ecufl_net_get_params(const ecufl_net *net, float *const *arrays) {
    for (int l = 0; l < net->layers(); l++) {
        const int n_in = net->sizes[l], n_out = net->sizes[l + 1];
        Eigen::Map<Mat>(arrays[2 * l], n_out, n_in) = net->wt[l].transpose();
        Eigen::Map<RowVec>(arrays[2 * l + 1], n_out) = net->b[l];
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

static int check_labels(ecufl_net *net, const uint8_t *labels, int n) {
    const int n_out = net->sizes.back();
    for (int k = 0; k < n; k++)
        if (labels[k] >= n_out) return net->fail("label %d at index %d is not below %d", labels[k], k, n_out);
    return 0;
}

int ecufl_net_train(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n_images,
                    const int32_t *order, int n, double lr, int batch_size) {
    if (!(lr > 0 && std::isfinite(lr))) return net->fail("lr must be a positive finite number, got %g", lr);
    if (batch_size < 1 || batch_size > net->max_batch)
        return net->fail("batch_size %d is outside 1..%d (the net's max_batch)", batch_size, net->max_batch);
    if (n < 0 || n_images < 0) return net->fail("negative sample count");
    for (int k = 0; k < n; k++)
        if (order[k] < 0 || order[k] >= n_images)
            return net->fail("order[%d] = %d is outside 0..%d", k, order[k], n_images - 1);
    if (check_labels(net, labels, n_images)) return -1;
    for (int k = 0; k < n; k += batch_size) {
        const int m = n - k < batch_size ? n - k : batch_size;
        const float step = float(lr / m);
        SparseBatch x = net->input(images, order + k, 0, m);
        net->forward(x, m);
        net->backward_update(x, labels, order + k, m, step);
    }
    return 0;
}

int ecufl_net_evaluate(ecufl_net *net, const uint8_t *images, const uint8_t *labels, int n,
                       double *loss, int *correct) {
    if (n < 0) return net->fail("negative sample count");
    if (check_labels(net, labels, n)) return -1;
    const int L = net->layers(), n_out = net->sizes.back();
    double sum = 0.0;
    int hits = 0;
    for (int k = 0; k < n; k += net->max_batch) {
        const int m = n - k < net->max_batch ? n - k : net->max_batch;
        net->forward(net->input(images, nullptr, k, m), m);
        for (int s = 0; s < m; s++) {
            auto a = net->act[L].row(s);
            Eigen::Index best;
            a.maxCoeff(&best);  // first largest, as np.argmax
            for (int j = 0; j < n_out; j++) {
                const float d = a(j) - (j == labels[k + s] ? 1.0f : 0.0f);
                sum += double(d * d);
            }
            hits += int(best) == labels[k + s];
        }
    }
    *loss = n ? 0.5 * sum / n : 0.0;
    *correct = hits;
    return 0;
}

long ecufl_net_weight_bytes(const ecufl_net *net) {
    long total = 0;
    for (int l = 0; l < net->layers(); l++) total += long(net->sizes[l + 1]) * (net->sizes[l] + 1) * long(sizeof(float));
    return total;
}

const char *ecufl_net_describe(void) {
#if defined(EIGEN_VECTORIZE_AVX2) && defined(EIGEN_VECTORIZE_FMA)
    const char *simd = "avx2";
#elif defined(EIGEN_VECTORIZE_NEON)
    const char *simd = "neon";
#elif defined(EIGEN_VECTORIZE_SSE2)
    const char *simd = "sse2";
#else
    const char *simd = "none";
#endif
    static char text[512];
    if (!text[0])
        std::snprintf(text, sizeof text,
                      "{\"kernel\": \"eigen\", \"path\": \"%s\", \"eigen\": \"%d.%d.%d\", \"compiler\": \"%s\", \"flags\": \"%s\"}",
                      simd, EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, ECUFL_COMPILER, ECUFL_FLAGS);
    return text;
}

}  // extern "C"
