/* hdrnn_plain.c: the plain path, the readable truth. One sample at a time, weights in the book's
 * (n_out, n_in) layout, loops written as the equations read (kernels/README.md, "arithmetic"),
 * in the reference's order of operations. No intrinsics, no blocking. */
#include <math.h>
#include <string.h>

#include "hdrnn.h"

const char hdrnn_path_name[] = "plain";
const int hdrnn_path_transposed = 0;
const int hdrnn_path_vector_width = 1;

static float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

void hdrnn_forward(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int first, int m) {
    int n0 = net->sizes[0];
    for (int s = 0; s < m; s++) {
        size_t row = (size_t)(rows ? rows[s] : first + s);
        float *x = net->act[0] + (size_t)s * n0;
        if (data->images) { /* pixels p enter as p / 255 */
            const uint8_t *pixels = data->images + row * n0;
            for (int i = 0; i < n0; i++) x[i] = (float)pixels[i] / 255.0f;
        } else { /* float inputs as they are */
            memcpy(x, data->inputs + row * n0, (size_t)n0 * sizeof *x);
        }
        for (int l = 0; l < net->n_layers; l++) {
            int n_in = net->sizes[l], n_out = net->sizes[l + 1];
            const float *a_in = net->act[l] + (size_t)s * n_in;
            float *a_out = net->act[l + 1] + (size_t)s * n_out;
            for (int j = 0; j < n_out; j++) {
                const float *w_row = net->w[l] + (size_t)j * n_in;
                float z = 0.0f;
                for (int i = 0; i < n_in; i++) z += w_row[i] * a_in[i];
                z += net->b[l][j];
                a_out[j] = sigmoid(z);
            }
        }
    }
}

void hdrnn_backward_update(ecufl_net *net, const hdrnn_data *data, const int32_t *rows, int m, float step) {
    int L = net->n_layers;
    for (int l = 0; l < L; l++) {
        memset(net->gw[l], 0, (size_t)net->sizes[l + 1] * net->sizes[l] * sizeof(float));
        memset(net->gb[l], 0, (size_t)net->sizes[l + 1] * sizeof(float));
    }
    for (int s = 0; s < m; s++) {
        /* BP1: delta_L = (a - y) * a * (1 - a) (quadratic cost, sigmoid' = a (1 - a)) */
        int n_out = net->sizes[L];
        const float *a = net->act[L] + (size_t)s * n_out;
        float *delta = net->delta[L - 1] + (size_t)s * n_out;
        const float *target = data->targets ? data->targets + (size_t)rows[s] * n_out : NULL;
        for (int j = 0; j < n_out; j++) {
            float y = target ? target[j] : j == data->labels[rows[s]] ? 1.0f : 0.0f;
            delta[j] = (a[j] - y) * a[j] * (1.0f - a[j]);
        }
        for (int l = L - 1; l >= 0; l--) {
            int n_in = net->sizes[l];
            n_out = net->sizes[l + 1];
            const float *a_in = net->act[l] + (size_t)s * n_in;
            delta = net->delta[l] + (size_t)s * n_out;
            for (int j = 0; j < n_out; j++) {
                net->gb[l][j] += delta[j];                      /* BP3 */
                float *g_row = net->gw[l] + (size_t)j * n_in;
                for (int i = 0; i < n_in; i++) g_row[i] += delta[j] * a_in[i]; /* BP4 */
            }
            if (l > 0) { /* BP2: delta_{l-1} = (w_l^T delta_l) * a (1 - a) */
                float *delta_in = net->delta[l - 1] + (size_t)s * n_in;
                for (int i = 0; i < n_in; i++) {
                    float t = 0.0f;
                    for (int j = 0; j < n_out; j++) t += delta[j] * net->w[l][(size_t)j * n_in + i];
                    delta_in[i] = t * a_in[i] * (1.0f - a_in[i]);
                }
            }
        }
    }
    for (int l = 0; l < L; l++) { /* w -= (lr/m) * sum(grad) */
        size_t count = (size_t)net->sizes[l + 1] * net->sizes[l];
        for (size_t k = 0; k < count; k++) net->w[l][k] -= step * net->gw[l][k];
        for (int j = 0; j < net->sizes[l + 1]; j++) net->b[l][j] -= step * net->gb[l][j];
    }
}
