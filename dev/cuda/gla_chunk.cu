/*
 * The GLA chunk forward (train_gla.cu, gla_chunk_forward) against a CPU reference, in the style of
 * llm.c's dev/cuda: random q, k, v and log-gates a at T = 512, d = 256 for several chunk lengths (a
 * partial last chunk included), GLA's head shape and a single wide head (HGRN2-like); prints the error
 * of o and of the kept chunk states and checks that a second run gives the same bits, then times the
 * forward and the backward at training shapes (T = 2048, d = 512).
 *     nvcc -arch=sm_90 -O3 dev/cuda/gla_chunk.cu -o gla_chunk -lcublas && ./gla_chunk
 */
// the kernels under test are train_gla.cu's own
#define TESTING
#include "../../train_gla.cu"
#include "common.cuh"

// CPU reference, the recurrent form in plain loops (LAYERS.md §2.2), in double:
//     S_t = diag(e^{a_t}) S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ (scale q_t)
// o (B,T,H,V) and the state entering each chunk, states (B,H,NC,K,V)
static void gla_forward_cpu(float* o, float* states, const float* q, const float* k, const float* v, const float* a,
                            int B, int T, int H, int K, int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    double* S = (double*)malloc_check((size_t)K * V * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            memset(S, 0, (size_t)K * V * sizeof(double));
            for (int t = 0; t < T; t++) {
                if (t % C == 0) {
                    float* dst = states + (((size_t)b * H + h) * NC + t / C) * K * V;
                    for (size_t e = 0; e < (size_t)K * V; e++) dst[e] = (float)S[e];
                }
                size_t rk = (((size_t)b * T + t) * H + h) * K, rv = (((size_t)b * T + t) * H + h) * V;
                for (int i = 0; i < K; i++) {
                    double decay = exp((double)a[rk + i]);
                    for (int j = 0; j < V; j++) S[i * V + j] = decay * S[i * V + j] + (double)k[rk + i] * v[rv + j];
                }
                for (int j = 0; j < V; j++) {
                    double oj = 0.0;
                    for (int i = 0; i < K; i++) oj += S[i * V + j] * q[rk + i];
                    o[rv + j] = (float)(scale * oj);
                }
            }
        }
    free(S);
}

// log-gates a = log σ(x), x uniform in [−2, 4]: decays from e^{−2.1} to e^{−0.02} per step
static float* host_log_gates(size_t n) {
    float* a = host_random(n, -2.0f, 4.0f);
    for (size_t i = 0; i < n; i++) a[i] = fminf(a[i], 0.0f) - log1pf(expf(-fabsf(a[i])));
    return a;
}

// 1 when two device buffers hold the same bits
static int same_bits(const float* x_dev, const float* y_dev, size_t n) {
    float* x = (float*)malloc_check(n * sizeof(float));
    float* y = (float*)malloc_check(n * sizeof(float));
    cuda_check(cudaMemcpy(x, x_dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(y, y_dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    int same = memcmp(x, y, n * sizeof(float)) == 0;
    free(x);
    free(y);
    return same;
}

struct Inputs { float *q, *k, *v, *a, *dout; };   // device (B,T,H,·)

static Inputs random_inputs(int B, int T, int H, int K, int V, float** host) {
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
    host[0] = host_random(nk, -1.0f, 1.0f);
    host[1] = host_random(nk, -1.0f, 1.0f);
    host[2] = host_random(nv, -1.0f, 1.0f);
    host[3] = host_log_gates(nk);
    float* dout = host_random(nv, -1.0f, 1.0f);
    Inputs in = {to_device(host[0], nk), to_device(host[1], nk), to_device(host[2], nv), to_device(host[3], nk),
                 to_device(dout, nv)};
    free(dout);
    return in;
}

static void free_inputs(Inputs in, float** host) {
    cuda_check(cudaFree(in.q)); cuda_check(cudaFree(in.k)); cuda_check(cudaFree(in.v));
    cuda_check(cudaFree(in.a)); cuda_check(cudaFree(in.dout));
    for (int i = 0; i < 4; i++) free(host[i]);
}

int main(void) {
    srand(1337);
    int failures = 0;
    // correctness at T = 512, d = 256: GLA's heads (H 4, K = d/2H, V = d/H), then one head K = V = d
    int shapes[2][3] = {{4, 32, 64}, {1, 256, 256}}, chunks[] = {1, 16, 48, 64, 100, 128, 512};
    for (int s = 0; s < 2; s++) {
        int B = 2, T = 512, H = shapes[s][0], K = shapes[s][1], V = shapes[s][2];
        float scale = 1.0f / sqrtf((float)K);
        float* host[4];
        Inputs in = random_inputs(B, T, H, K, V, host);
        size_t nv = (size_t)B * T * H * V;
        float *o, *o2, *states, *o_ref = (float*)malloc_check(nv * sizeof(float));
        cuda_check(cudaMalloc((void**)&o, nv * sizeof(float)));
        cuda_check(cudaMalloc((void**)&o2, nv * sizeof(float)));
        for (int c = 0; c < (int)(sizeof(chunks) / sizeof(chunks[0])); c++) {
            int C = chunks[c], NC = ceil_div(T, C);
            size_t ns = (size_t)B * H * NC * K * V;
            float* states_ref = (float*)malloc_check(ns * sizeof(float));
            cuda_check(cudaMalloc((void**)&states, ns * sizeof(float)));
            gla_forward_cpu(o_ref, states_ref, host[0], host[1], host[2], host[3], B, T, H, K, V, C, scale);
            gla_chunk_forward(o, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);
            gla_chunk_forward(o2, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);
            cuda_check(cudaDeviceSynchronize());
            printf("gla B=%d T=%d H=%d K=%d V=%d C=%d\n", B, T, H, K, V, C);
            failures += !report("o", o, o_ref, nv);
            failures += !report("states", states, states_ref, ns);
            int same = same_bits(o, o2, nv);
            failures += !same;
            printf("    second run %s\n", same ? "bit-identical" : "DIFFERS  <-- FAIL");
            cuda_check(cudaFree(states));
            free(states_ref);
        }
        cuda_check(cudaFree(o));
        cuda_check(cudaFree(o2));
        free(o_ref);
        free_inputs(in, host);
    }

    // timing at training shapes, T = 2048, d = 512: GLA (H 4, K 64, V 128), one head K = V = 512
    int timed_shapes[2][3] = {{4, 64, 128}, {1, 512, 512}}, timed[] = {32, 64, 128};
    for (int s = 0; s < 2; s++) {
        int B = 8, T = 2048, H = timed_shapes[s][0], K = timed_shapes[s][1], V = timed_shapes[s][2];
        float scale = 1.0f / sqrtf((float)K);
        float* host[4];
        Inputs in = random_inputs(B, T, H, K, V, host);
        size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
        float *o, *states, *dq, *dk, *dv, *da;
        cuda_check(cudaMalloc((void**)&o, nv * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dq, nk * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dk, nk * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dv, nv * sizeof(float)));
        cuda_check(cudaMalloc((void**)&da, nk * sizeof(float)));
        for (int c = 0; c < 3; c++) {
            int C = timed[c], NC = ceil_div(T, C), reps = 10;
            cuda_check(cudaMalloc((void**)&states, (size_t)B * H * NC * K * V * sizeof(float)));
            cudaEvent_t start, stop;
            cuda_check(cudaEventCreate(&start));
            cuda_check(cudaEventCreate(&stop));
            float ms_fwd, ms_bwd;
            gla_chunk_forward(o, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);   // warm-up
            cuda_check(cudaEventRecord(start));
            for (int r = 0; r < reps; r++) gla_chunk_forward(o, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(stop));
            cuda_check(cudaEventSynchronize(stop));
            cuda_check(cudaEventElapsedTime(&ms_fwd, start, stop));
            gla_chunk_backward(dq, dk, dv, da, in.dout, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(start));
            for (int r = 0; r < reps; r++)
                gla_chunk_backward(dq, dk, dv, da, in.dout, states, in.q, in.k, in.v, in.a, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(stop));
            cuda_check(cudaEventSynchronize(stop));
            cuda_check(cudaEventElapsedTime(&ms_bwd, start, stop));
            printf("gla B=%d T=%d H=%d K=%d V=%d C=%d: forward %.3f ms, backward %.3f ms\n", B, T, H, K, V, C,
                   ms_fwd / reps, ms_bwd / reps);
            cuda_check(cudaEventDestroy(start));
            cuda_check(cudaEventDestroy(stop));
            cuda_check(cudaFree(states));
        }
        cuda_check(cudaFree(o)); cuda_check(cudaFree(dq)); cuda_check(cudaFree(dk));
        cuda_check(cudaFree(dv)); cuda_check(cudaFree(da));
        free_inputs(in, host);
    }
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
