/*
 * The delta-rule chunk forward (train_gla.cu, delta_chunk_forward) against a CPU reference, in the
 * style of llm.c's dev/cuda: random q, k (L2-normalised), v, β, g at T = 512 for several chunk
 * lengths, DeltaNet (no gate) and Gated DeltaNet; prints the error of o and of the kept chunk states,
 * then times the forward and the backward at a training shape.
 *     nvcc -arch=sm_90 -O3 dev/cuda/delta_chunk.cu -o delta_chunk && ./delta_chunk
 */
// the kernels under test are train_gla.cu's own
#define TESTING
#include "../../train_gla.cu"
#include "common.cuh"

// CPU reference, the recurrent form in plain loops (LAYERS.md §6.2): o (B,T,H,V) and the state
// entering each chunk, states (B,H,NC,K,V). g may be NULL.
static void delta_forward_cpu(float* o, float* states, const float* q, const float* k, const float* v,
                              const float* beta, const float* g, int B, int T, int H, int K, int V, int C,
                              float scale) {
    int NC = (T + C - 1) / C;
    float* S = (float*)malloc_check((size_t)K * V * sizeof(float));
    float* u = (float*)malloc_check(V * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            memset(S, 0, (size_t)K * V * sizeof(float));
            for (int t = 0; t < T; t++) {
                if (t % C == 0)
                    memcpy(states + (((size_t)b * H + h) * NC + t / C) * K * V, S, (size_t)K * V * sizeof(float));
                size_t r = ((size_t)b * T + t) * H + h;
                const float *qt = q + r * K, *kt = k + r * K, *vt = v + r * V;
                float alpha = g ? expf(g[r]) : 1.0f;
                for (int j = 0; j < V; j++) {
                    float sk = 0.0f;
                    for (int i = 0; i < K; i++) sk += S[i * V + j] * kt[i];
                    u[j] = vt[j] - alpha * sk;   // the prediction error of the decayed state
                }
                for (int i = 0; i < K; i++)
                    for (int j = 0; j < V; j++) S[i * V + j] = alpha * S[i * V + j] + beta[r] * kt[i] * u[j];
                for (int j = 0; j < V; j++) {
                    float oj = 0.0f;
                    for (int i = 0; i < K; i++) oj += S[i * V + j] * qt[i];
                    o[r * V + j] = scale * oj;
                }
            }
        }
    free(S);
    free(u);
}

static void l2norm_rows(float* x, size_t rows, int K) {
    for (size_t r = 0; r < rows; r++) {
        float s = 0.0f;
        for (int i = 0; i < K; i++) s += x[r * K + i] * x[r * K + i];
        for (int i = 0; i < K; i++) x[r * K + i] /= sqrtf(s);
    }
}

struct Inputs { float *q, *k, *v, *beta, *g, *dout; };   // device (B,T,H,·); g NULL for DeltaNet

static Inputs random_inputs(int B, int T, int H, int K, int V, int gated, float** host) {
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, nr = (size_t)B * T * H;
    host[0] = host_random(nk, -1.0f, 1.0f);
    host[1] = host_random(nk, -1.0f, 1.0f);
    host[2] = host_random(nv, -1.0f, 1.0f);
    host[3] = host_random(nr, 0.05f, 0.95f);
    host[4] = gated ? host_random(nr, -0.5f, 0.0f) : NULL;
    l2norm_rows(host[0], nr, K);
    l2norm_rows(host[1], nr, K);
    float* dout = host_random(nv, -1.0f, 1.0f);
    Inputs in = {to_device(host[0], nk), to_device(host[1], nk), to_device(host[2], nv), to_device(host[3], nr),
                 gated ? to_device(host[4], nr) : NULL, to_device(dout, nv)};
    free(dout);
    return in;
}

static void free_inputs(Inputs in, float** host) {
    cuda_check(cudaFree(in.q)); cuda_check(cudaFree(in.k)); cuda_check(cudaFree(in.v));
    cuda_check(cudaFree(in.beta)); cuda_check(cudaFree(in.g)); cuda_check(cudaFree(in.dout));
    for (int i = 0; i < 5; i++) free(host[i]);
}

int main(void) {
    srand(1337);
    // correctness at T = 512, several C (a partial last chunk included), both mixers
    int B = 2, T = 512, H = 4, K = 64, V = 64, chunks[] = {1, 16, 48, 64, 100, 128};
    float scale = 1.0f / sqrtf((float)K);
    for (int gated = 0; gated <= 1; gated++) {
        float* host[5];
        Inputs in = random_inputs(B, T, H, K, V, gated, host);
        size_t nv = (size_t)B * T * H * V;
        float *o, *states, *o_ref = (float*)malloc_check(nv * sizeof(float));
        cuda_check(cudaMalloc((void**)&o, nv * sizeof(float)));
        for (int c = 0; c < (int)(sizeof(chunks) / sizeof(chunks[0])); c++) {
            int C = chunks[c], NC = ceil_div(T, C);
            size_t ns = (size_t)B * H * NC * K * V;
            float* states_ref = (float*)malloc_check(ns * sizeof(float));
            cuda_check(cudaMalloc((void**)&states, ns * sizeof(float)));
            delta_forward_cpu(o_ref, states_ref, host[0], host[1], host[2], host[3], host[4], B, T, H, K, V, C, scale);
            delta_chunk_forward(o, states, in.q, in.k, in.v, in.beta, in.g, B, T, H, K, V, C, scale);
            cuda_check(cudaDeviceSynchronize());
            printf("%s B=%d T=%d H=%d K=%d V=%d C=%d\n", gated ? "gated deltanet" : "deltanet", B, T, H, K, V, C);
            report("o", o, o_ref, nv);
            report("states", states, states_ref, ns);
            cuda_check(cudaFree(states));
            free(states_ref);
        }
        cuda_check(cudaFree(o));
        free(o_ref);
        free_inputs(in, host);
    }

    // timing at a training shape: d = 512, 8 heads (DeltaNet), T = 2048
    B = 8, T = 2048, H = 8, K = 64, V = 64;
    scale = 1.0f / sqrtf((float)K);
    for (int gated = 0; gated <= 1; gated++) {
        float* host[5];
        Inputs in = random_inputs(B, T, H, K, V, gated, host);
        size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, nr = (size_t)B * T * H;
        float *o, *states, *dq, *dk, *dv, *dbeta, *dg;
        cuda_check(cudaMalloc((void**)&o, nv * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dq, nk * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dk, nk * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dv, nv * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dbeta, nr * sizeof(float)));
        cuda_check(cudaMalloc((void**)&dg, nr * sizeof(float)));
        int timed[] = {32, 64, 128};
        for (int c = 0; c < 3; c++) {
            int C = timed[c], NC = ceil_div(T, C), reps = 10;
            cuda_check(cudaMalloc((void**)&states, (size_t)B * H * NC * K * V * sizeof(float)));
            cudaEvent_t start, stop;
            cuda_check(cudaEventCreate(&start));
            cuda_check(cudaEventCreate(&stop));
            float ms_fwd, ms_bwd;
            delta_chunk_forward(o, states, in.q, in.k, in.v, in.beta, in.g, B, T, H, K, V, C, scale);   // warm-up
            cuda_check(cudaEventRecord(start));
            for (int r = 0; r < reps; r++)
                delta_chunk_forward(o, states, in.q, in.k, in.v, in.beta, in.g, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(stop));
            cuda_check(cudaEventSynchronize(stop));
            cuda_check(cudaEventElapsedTime(&ms_fwd, start, stop));
            delta_chunk_backward(dq, dk, dv, dbeta, gated ? dg : NULL, in.dout, states, in.q, in.k, in.v, in.beta,
                                 in.g, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(start));
            for (int r = 0; r < reps; r++)
                delta_chunk_backward(dq, dk, dv, dbeta, gated ? dg : NULL, in.dout, states, in.q, in.k, in.v,
                                     in.beta, in.g, B, T, H, K, V, C, scale);
            cuda_check(cudaEventRecord(stop));
            cuda_check(cudaEventSynchronize(stop));
            cuda_check(cudaEventElapsedTime(&ms_bwd, start, stop));
            printf("%s B=%d T=%d H=%d K=%d V=%d C=%d: forward %.3f ms, backward %.3f ms\n",
                   gated ? "gated deltanet" : "deltanet", B, T, H, K, V, C, ms_fwd / reps, ms_bwd / reps);
            cuda_check(cudaEventDestroy(start));
            cuda_check(cudaEventDestroy(stop));
            cuda_check(cudaFree(states));
        }
        cuda_check(cudaFree(o)); cuda_check(cudaFree(dq)); cuda_check(cudaFree(dk)); cuda_check(cudaFree(dv));
        cuda_check(cudaFree(dbeta)); cuda_check(cudaFree(dg));
        free_inputs(in, host);
    }
    return 0;
}
