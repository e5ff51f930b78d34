/*
 * train_gla.cu — the same trainer as train_gla.c, on an NVIDIA GPU, mirroring it function by function.
 *
 * Every section, in the same order, under the same function names as train_gla.c: each __global__
 * kernel sits right before its launcher, and the launcher has the CPU function's name and arguments
 * (all tensor arguments are device pointers). fp32 everywhere, matmuls through cuBLAS, no float
 * atomics: the same run twice gives the same bits, and checkpoints are the CPU program's files.
 */
#include "model.h"
#include <stddef.h>
#include <time.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>

// ----------------------------------------------------------------------------
// CUDA plumbing: checked calls, the cuBLAS handle, grow-only device scratch

static void cuda_check_at(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) fail("CUDA error at %s:%d (%s): %s", file, line, what, cudaGetErrorString(err));
}
#define cuda_check(call) cuda_check_at((call), #call, __FILE__, __LINE__)

static void cublas_check_at(cublasStatus_t status, const char* what, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error %d at %s:%d (%s)", (int)status, file, line, what);
}
#define cublas_check(call) cublas_check_at((call), #call, __FILE__, __LINE__)

static inline int ceil_div(size_t a, int b) { return (int)((a + b - 1) / b); }

static cublasHandle_t cublas_handle;

// Launchers that need temporaries take them from numbered grow-only buffers (freed at exit), so a
// training step allocates nothing. Each launcher uses its own slots (see SCRATCH_*), so no two live
// temporaries share one.
enum { SCRATCH_GLA0, SCRATCH_GLA1, SCRATCH_GLA2, SCRATCH_HGRN, SCRATCH_DELTA0, SCRATCH_DELTA1, SCRATCH_DELTA2,
       SCRATCH_ATTN, SCRATCH_MISC0, SCRATCH_MISC1, NUM_SCRATCH };
static float* scratch_mem[NUM_SCRATCH];
static size_t scratch_cap[NUM_SCRATCH];
static float* device_scratch(int slot, size_t floats) {
    if (floats > scratch_cap[slot]) {
        if (scratch_mem[slot]) cuda_check(cudaFree(scratch_mem[slot]));
        cuda_check(cudaMalloc((void**)&scratch_mem[slot], floats * sizeof(float)));
        scratch_cap[slot] = floats;
    }
    return scratch_mem[slot];
}

// cudaMalloc'd and zeroed (the device twin of calloc_check)
static float* device_calloc(size_t floats) {
    if (floats == 0) return NULL;
    float* p;
    cuda_check(cudaMalloc((void**)&p, floats * sizeof(float)));
    cuda_check(cudaMemset(p, 0, floats * sizeof(float)));
    return p;
}

// The cuBLAS handle, created on first use. CUBLAS_DEFAULT_MATH keeps fp32 GEMMs in full fp32 (TF32
// would need CUBLAS_TF32_TENSOR_OP_MATH); cuBLAS gives the same bits on every run on the same GPU.
static cublasHandle_t cublas(void) {
    if (!cublas_handle) {
        cublas_check(cublasCreate(&cublas_handle));
        cublas_check(cublasSetMathMode(cublas_handle, CUBLAS_DEFAULT_MATH));
    }
    return cublas_handle;
}

// ----------------------------------------------------------------------------
// fixed-order reductions: no float atomics anywhere, so every sum is added in the same order on
// every run and the program is deterministic

// The sum over the warp, in every lane. The butterfly's partners add the same two numbers (a + b
// and b + a are the same float), so all lanes hold the same bits.
template <typename T> __device__ inline T warp_sum(T x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}
__device__ inline float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// The sum (max) over the block, in every thread: warp sums, then the sum of the warp sums in warp
// order. blockDim.x a multiple of 32; every thread of the block must call it.
template <typename T> __device__ T block_sum(T x) {
    __shared__ T partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_sum(x);
    __syncthreads();   // a previous call may still be reading partial
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    return warp_sum(lane < warps ? partial[lane] : (T)0);
}
__device__ float block_max(float x) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    return warp_max(lane < warps ? partial[lane] : -INFINITY);
}

// Column sums, the GPU's replacement for the CPU's serial `for n: dw[c] += ...` loops:
//     out (C) += Σ_n in (N,C)
// summed in blocks of `rows` consecutive rows (one thread per column and block), then over the
// blocks in order. `rows` depends on N only, so the result does too.
static int column_rows(int N) {
    int rows = 64;
    while (ceil_div(N, rows) > 65535) rows *= 2;   // gridDim.y ≤ 65535
    return rows;
}
// partial (R,C): the sum of rows [r·rows, (r+1)·rows) of in (N,C)
__global__ void column_partial_kernel(float* partial, const float* in, int N, int C, int rows) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int n0 = blockIdx.y * rows, n1 = min(N, n0 + rows);
    float s = 0.0f;
    for (int n = n0; n < n1; n++) s += in[(size_t)n * C + c];
    partial[(size_t)blockIdx.y * C + c] = s;
}
// out (C) += Σ_r partial (R,C), r ascending
__global__ void column_finish_kernel(float* out, const float* partial, int R, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int r = 0; r < R; r++) s += partial[(size_t)r * C + c];
    out[c] += s;
}
// out (C) += Σ_n in (N,C). Uses SCRATCH_MISC1.
static void column_sum(float* out, const float* in, int N, int C) {
    int rows = column_rows(N), R = ceil_div(N, rows);
    float* partial = device_scratch(SCRATCH_MISC1, (size_t)R * C);
    column_partial_kernel<<<dim3(ceil_div(C, 256), R), 256>>>(partial, in, N, C, rows);
    cuda_check(cudaGetLastError());
    column_finish_kernel<<<ceil_div(C, 256), 256>>>(out, partial, R, C);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// matmul: every projection of the model, (N,C) x (OC,C)^T, through cuBLAS.
// cuBLAS is column-major: a row-major (R,C) matrix is the column-major (C,R) matrix, its transpose.
// So out = inp Wᵀ (row-major) is outᵀ = W inpᵀ (column-major), and likewise for the gradients.

// out (N,OC) += bias (OC) on every row
__global__ void add_bias_kernel(float* out, const float* bias, int N, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)N * OC) out[i] += bias[i % OC];
}

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC)
// bias may be NULL.  out is overwritten.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    // column-major: outᵀ (OC,N) = weight (OC,C) · inpᵀ (C,N), weight being the transpose of the (C,OC) matrix
    cublas_check(cublasSgemm(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C, inp, C, &zero, out, OC));
    if (bias) {
        add_bias_kernel<<<ceil_div((size_t)N * OC, 256), 256>>>(out, bias, N, OC);
        cuda_check(cudaGetLastError());
    }
}

// Backward of matmul_forward.  ACCUMULATES into the gradients (+=):
//   dinp    (N,C)  += dout (N,OC) @ weight (OC,C)
//   dweight (OC,C) += dout (N,OC)^T @ inp (N,C)
//   dbias   (OC)   += sum over n of dout (n,:)       (column_sum: fixed order)
// Any of dinp, dweight, dbias may be NULL to skip that gradient.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
    const float one = 1.0f;
    // column-major: dinpᵀ (C,N) += weightᵀ (C,OC) · doutᵀ (OC,N)
    if (dinp)
        cublas_check(cublasSgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C, dout, OC, &one, dinp, C));
    // column-major: dweightᵀ (C,OC) += inpᵀ (C,N) · dout (N,OC)
    if (dweight)
        cublas_check(cublasSgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout, OC, &one, dweight, C));
    if (dbias) column_sum(dbias, dout, N, OC);
}

// ----------------------------------------------------------------------------
// small layers

// out (N,C) = wte[inp] ; inp (N) token ids, wte (V,C)
__global__ void encoder_forward_kernel(float* out, const int* inp, const float* wte, int N, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    size_t n = i / C;
    int c = (int)(i % C);
    out[i] = wte[(size_t)inp[n] * C + c];
}
void encoder_forward(float* out, const int* inp, const float* wte, int N, int C) {
    encoder_forward_kernel<<<ceil_div((size_t)N * C, 256), 256>>>(out, inp, wte, N, C);
    cuda_check(cudaGetLastError());
}

// One block per distinct token u: dwte[tokens[u]] += the dout rows of its positions order[starts[u] ..
// starts[u+1]), in increasing position order (the CPU's serial order, without atomics).
__global__ void encoder_backward_kernel(float* dwte, const float* dout, const int* order, const int* starts,
                                        const int* tokens, int C) {
    int u = blockIdx.x, p0 = starts[u], p1 = starts[u + 1];
    float* dw = dwte + (size_t)tokens[u] * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = dw[c];
        for (int p = p0; p < p1; p++) acc += dout[(size_t)order[p] * C + c];
        dw[c] = acc;
    }
}
// dwte (V,C) += scatter of dout (N,C) by inp (N). Two rows may share a token, so the positions are
// first grouped by token on the host (a stable counting sort of the N ids, copied back for it), then
// each token's rows are added by one block in position order. Uses SCRATCH_MISC0.
void encoder_backward(float* dwte, const float* dout, const int* inp, int N, int C) {
    int* ids = (int*)malloc_check((size_t)N * sizeof(int));
    cuda_check(cudaMemcpy(ids, inp, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost));
    int max_id = 0;
    for (int n = 0; n < N; n++) max_id = ids[n] > max_id ? ids[n] : max_id;
    // packed for one upload: order (N) | starts (U+1) | tokens (U), U ≤ N distinct tokens
    int* pack = (int*)malloc_check((3 * (size_t)N + 1) * sizeof(int));
    int* first = (int*)calloc_check((size_t)max_id + 2, sizeof(int));   // counts, then first slots
    for (int n = 0; n < N; n++) first[ids[n] + 1]++;
    int U = 0;
    for (int v = 0; v <= max_id; v++) U += first[v + 1] > 0;
    int *order = pack, *starts = pack + N, *tokens = pack + N + U + 1;
    for (int v = 0, u = 0; v <= max_id; v++) {
        if (first[v + 1] > 0) { starts[u] = first[v]; tokens[u] = v; u++; }
        first[v + 1] += first[v];
    }
    starts[U] = N;
    for (int n = 0; n < N; n++) order[first[ids[n]]++] = n;
    size_t words = (size_t)N + 2 * (size_t)U + 1;
    int* dev = (int*)device_scratch(SCRATCH_MISC0, words);
    cuda_check(cudaMemcpy(dev, pack, words * sizeof(int), cudaMemcpyHostToDevice));
    encoder_backward_kernel<<<U, 256>>>(dwte, dout, dev, dev + N, dev + N + U + 1, C);
    cuda_check(cudaGetLastError());
    free(ids);
    free(pack);
    free(first);
}

// RMSNorm: out = x * r * w, r = 1/sqrt(mean(x^2) + eps).  out, inp (N,C); rstd (N); weight (C). One warp per row.
__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                                       float eps) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float* x = inp + (size_t)n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);
    float* o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32) o[c] = x[c] * r * weight[c];
    if (lane == 0) rstd[n] = r;
}
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
    rmsnorm_forward_kernel<<<ceil_div(N, 8), 256>>>(out, rstd, inp, weight, N, C, eps);
    cuda_check(cudaGetLastError());
}
// dinp (N,C) += r (dyw - x̂ mean(x̂ ⊙ dyw)) for one row per warp; term (N,C) = dout ⊙ x̂, the rows the
// weight gradient sums
__global__ void rmsnorm_backward_kernel(float* dinp, float* term, const float* dout, const float* inp,
                                        const float* weight, const float* rstd, int N, int C) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float* x = inp + (size_t)n * C;
    const float* dy = dout + (size_t)n * C;
    float r = rstd[n], dot = 0.0f;
    for (int c = lane; c < C; c += 32) dot += dy[c] * weight[c] * x[c] * r;
    dot = warp_sum(dot) / C;
    float* dx = dinp + (size_t)n * C;
    float* t = term + (size_t)n * C;
    for (int c = lane; c < C; c += 32) {
        dx[c] += r * (dy[c] * weight[c] - x[c] * r * dot);
        t[c] = dy[c] * x[c] * r;
    }
}
// dinp (N,C) += r (dyw - x̂ mean(x̂ ⊙ dyw)), dyw = dout ⊙ w, x̂ = x r;  dweight (C) += Σ_n dout ⊙ x̂
// (column_sum over the rows' terms in SCRATCH_MISC0)
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C) {
    float* term = device_scratch(SCRATCH_MISC0, (size_t)N * C);
    rmsnorm_backward_kernel<<<ceil_div(N, 8), 256>>>(dinp, term, dout, inp, weight, rstd, N, C);
    cuda_check(cudaGetLastError());
    column_sum(dweight, term, N, C);
}

// e^x as the CPU computes it (Cody–Waite reduction x = n ln2 + r, Cephes' degree-6 polynomial for e^r,
// 2^n from the exponent bits; within 2 ulp of expf). Inputs are clamped to [−87, 88].
__host__ __device__ static inline float exp_fast(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
}

__host__ __device__ static inline float sigmoidf(float x) { return 1.0f / (1.0f + exp_fast(-x)); }
__host__ __device__ static inline float siluf(float x) { return x * sigmoidf(x); }
// d silu(x) / dx = σ(x) (1 + x (1 − σ(x)))
__host__ __device__ static inline float silu_grad(float x) { float s = sigmoidf(x); return s * (1.0f + x * (1.0f - s)); }

// SwiGLU: out = silu(gate) ⊙ up.  out, gate, up (N,I)
__global__ void swiglu_forward_kernel(float* out, const float* gate, const float* up, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = siluf(gate[i]) * up[i];
}
void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
    swiglu_forward_kernel<<<ceil_div(n, 256), 256>>>(out, gate, up, n);
    cuda_check(cudaGetLastError());
}
// dgate, dup (N,I) = (overwritten) from dout (N,I)
__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                       size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dgate[i] = dout[i] * up[i] * silu_grad(gate[i]);
    dup[i] = dout[i] * siluf(gate[i]);
}
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n) {
    swiglu_backward_kernel<<<ceil_div(n, 256), 256>>>(dgate, dup, dout, gate, up, n);
    cuda_check(cudaGetLastError());
}

// RoPE, non-interleaved ("rotate half"): for i < D/2, angle φ = p θ_i, θ_i = base^(−2i/D),
// (x_i, x_{i+D/2}) -> (x_i cos φ − x_{i+D/2} sin φ, x_{i+D/2} cos φ + x_i sin φ).
// x (B,T,NH,D) rotated in place; position of row (b,t) is pos0 + t. sign = +1 forward, −1 backward.
// One thread per (b, t, i): the angle in double as on the CPU, then every head.
__global__ void rope_rotate_kernel(float* x, int B, int T, int NH, int D, int pos0, float theta, int sign) {
    int half = D / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * half) return;
    int i = (int)(idx % half);
    size_t bt = idx / half;   // b * T + t
    int t = (int)(bt % T);
    double phi = (pos0 + t) * pow((double)theta, -2.0 * i / D);
    float c = (float)cos(phi), s = sign * (float)sin(phi);
    for (int h = 0; h < NH; h++) {
        float* v = x + (bt * NH + h) * D;
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
    }
}
void rope_rotate(float* x, int B, int T, int NH, int D, int pos0, float theta, int sign) {
    rope_rotate_kernel<<<ceil_div((size_t)B * T * (D / 2), 256), 256>>>(x, B, T, NH, D, pos0, theta, sign);
    cuda_check(cudaGetLastError());
}
void rope_forward(float* x, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(x, B, T, NH, D, pos0, theta, +1); }
void rope_backward(float* dx, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(dx, B, T, NH, D, pos0, theta, -1); }

// log σ(x) = min(x, 0) − log1p(e^{−|x|}) (stable for any x); its derivative is 1 − σ(x) = σ(−x)
__host__ __device__ static inline float logsigmoidf(float x) { return fminf(x, 0.0f) - log1pf(exp_fast(-fabsf(x))); }

// ----------------------------------------------------------------------------
// GLA, the recurrent form (LAYERS.md §2.2) and the chunkwise-parallel form (§2.4):
// gla_recurrent_step / _forward / _backward, gla_gate_grad, gla_chunk_forward / _backward
// ----------------------------------------------------------------------------
// GLA, the recurrent form (LAYERS.md §2.2): the clearest statement of the layer, used for generation
// and as the ground truth for the chunkwise form. Per head, with S ∈ R^{K×V}:
//     S_t = diag(exp(a_t)) S_{t−1} + k_t v_tᵀ,      o_t = S_tᵀ (scale · q_t)
// Column j of S_t needs only column j of S_{t−1}, and o_tj sums over that column alone, so one GPU
// thread owns one value column and walks its K rows in the CPU's order (the same sums, same order).

// Steps column j of one head's state, whose rows lie `stride` floats apart, and returns
// o_j = Σ_i S_ij scale q_i.  q, k, a (K) of this head and step; vj = v_j
__device__ inline float gla_column_step(float* Sj, size_t stride, const float* q, const float* k, const float* a,
                                        float vj, int K, float scale) {
    float out = 0.0f;
    for (int i = 0; i < K; i++) {
        float s = expf(a[i]) * Sj[i * stride] + k[i] * vj;
        Sj[i * stride] = s;
        out += s * (scale * q[i]);
    }
    return out;
}

// one thread per (h, j)
__global__ void gla_recurrent_step_kernel(float* o, float* S, const float* q, const float* k, const float* v,
                                          const float* a, int H, int K, int V, float scale) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // = h V + j, the index into o and v (H,V)
    if (idx >= H * V) return;
    int h = idx / V, j = idx % V;
    o[idx] = gla_column_step(S + (size_t)h * K * V + j, V, q + h * K, k + h * K, a + h * K, v[idx], K, scale);
}

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k, a (H,K); v (H,V)
void gla_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* a,
                        int H, int K, int V, float scale) {
    gla_recurrent_step_kernel<<<ceil_div((size_t)H * V, 256), 256>>>(o, S, q, k, v, a, H, K, V, scale);
    cuda_check(cudaGetLastError());
}

// one thread per (b, h, j); its state column lives in Scols (B,H,K,V) at (b,h,:,j)
__global__ void gla_recurrent_forward_kernel(float* o, float* Scols, const float* q, const float* k, const float* v,
                                             const float* a, int B, int T, int H, int K, int V, float scale) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) V + j
    if (idx >= (size_t)B * H * V) return;
    int j = idx % V;
    size_t bh = idx / V;
    int h = bh % H, b = bh / H;
    float* Sj = Scols + bh * K * V + j;
    for (int i = 0; i < K; i++) Sj[(size_t)i * V] = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t rk = (((size_t)b * T + t) * H + h) * K, rv = (((size_t)b * T + t) * H + h) * V;
        o[rv + j] = gla_column_step(Sj, V, q + rk, k + rk, a + rk, v[rv + j], K, scale);
    }
}

// o (B,T,H,V) from q, k, a (B,T,H,K), v (B,T,H,V), zero initial state
void gla_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* a,
                           int B, int T, int H, int K, int V, float scale) {
    float* Scols = device_scratch(SCRATCH_GLA0, (size_t)B * H * K * V);
    gla_recurrent_forward_kernel<<<ceil_div((size_t)B * H * V, 128), 128>>>(o, Scols, q, k, v, a, B, T, H, K, V,
                                                                             scale);
    cuda_check(cudaGetLastError());
}

// The backward splits by what each output sums over. D = dL/dS_t evolves column by column without S:
//     D += scale q_t do_tᵀ;  dv_t = Dᵀ k_t;  D = diag(e^{a_t}) D
// so dv is a column sweep like the forward. dq, dk, da sum along a row i of S and D:
//     dq_ti = scale Σ_j S_t,ij do_tj;  dk_ti = Σ_j D_ij v_tj;  da_ti = e^{a_ti} Σ_j S_{t−1},ij D_ij
// and need S_t in reverse time order. Instead of keeping all T states (the CPU's way, too large here),
// a forward sweep keeps one state every L ≈ √T steps, and the reverse sweep replays each segment of L
// steps from its checkpoint: O((T/L + L) K V) memory per head for one extra forward sweep.

// Row i of one head's state through steps t0 .. t0+n−1: seg[l] = S_{t0+l} for l = 0..n, seg[0] = start.
// A row's V columns are K floats apart and consecutive states KV floats apart (layout (.., V, K), so
// that the threads i of one head touch neighbouring floats). kh, ah at (b, 0, h, i) with time stride sk;
// vh at (b, 0, h, 0) with time stride sv.
__device__ void gla_row_replay(float* seg, const float* start, const float* kh, const float* vh, const float* ah,
                               size_t sk, size_t sv, int t0, int n, int K, int V) {
    size_t KV = (size_t)K * V;
    for (int j = 0; j < V; j++) seg[(size_t)j * K] = start[(size_t)j * K];
    for (int l = 0; l < n; l++) {
        size_t t = t0 + l;
        float decay = expf(ah[t * sk]), kt = kh[t * sk];
        const float* prev = seg + l * KV;
        float* next = seg + (l + 1) * KV;
        for (int j = 0; j < V; j++) next[(size_t)j * K] = decay * prev[(size_t)j * K] + kt * vh[t * sv + j];
    }
}

// one thread per (b, h, i). Its slice of rows (B,H,NS+L+2,V,K): NS checkpoints (ck[s] = S_{sL}), the
// L+1 states of the segment being replayed, and row i of D.
__global__ void gla_recurrent_backward_rows_kernel(float* dq, float* dk, float* da, float* rows, const float* dout,
                                                   const float* q, const float* k, const float* v, const float* a,
                                                   int B, int T, int H, int K, int V, float scale, int L) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) K + i
    if (idx >= (size_t)B * H * K) return;
    int i = idx % K;
    size_t bh = idx / K;
    int h = bh % H, b = bh / H;
    int NS = (T + L - 1) / L;
    size_t KV = (size_t)K * V, sk = (size_t)H * K, sv = (size_t)H * V;
    float* ck = rows + bh * (NS + L + 2) * KV + i;   // ck[s KV + j K] = S_{sL}[i][j]
    float* seg = ck + NS * KV;                       // seg[l KV + j K] = S_{t0+l}[i][j]
    float* D = seg + (size_t)(L + 1) * KV;           // D[j K] = D[i][j]
    size_t hk = (size_t)b * T * sk + (size_t)h * K + i, hv = (size_t)b * T * sv + (size_t)h * V;
    const float *kh = k + hk, *ah = a + hk, *vh = v + hv;
    // forward sweep: the checkpoints
    for (int j = 0; j < V; j++) ck[(size_t)j * K] = 0.0f;
    for (int s = 0; s + 1 < NS; s++) {
        gla_row_replay(seg, ck + s * KV, kh, vh, ah, sk, sv, s * L, L, K, V);
        for (int j = 0; j < V; j++) ck[(s + 1) * KV + (size_t)j * K] = seg[L * KV + (size_t)j * K];
    }
    // reverse sweep, segment by segment
    for (int j = 0; j < V; j++) D[(size_t)j * K] = 0.0f;
    for (int s = NS - 1; s >= 0; s--) {
        int t0 = s * L, n = T - t0 < L ? T - t0 : L;
        gla_row_replay(seg, ck + s * KV, kh, vh, ah, sk, sv, t0, n, K, V);
        for (int l = n - 1; l >= 0; l--) {
            size_t t = t0 + l, rk = hk + t * sk, rv = hv + t * sv;
            const float *St = seg + (l + 1) * KV, *Sprev = seg + l * KV;
            float qi = scale * q[rk], decay = expf(a[rk]), sdo = 0.0f, dkv = 0.0f, dsum = 0.0f;
            for (int j = 0; j < V; j++) {
                float doj = dout[rv + j], d = D[(size_t)j * K] + qi * doj;
                sdo += St[(size_t)j * K] * doj;
                dkv += d * v[rv + j];
                dsum += Sprev[(size_t)j * K] * d;
                D[(size_t)j * K] = decay * d;
            }
            dq[rk] = scale * sdo;
            dk[rk] = dkv;
            da[rk] = decay * dsum;
        }
    }
}

// one thread per (b, h, j); column j of D lives in Dcols (B,H,K,V) at (b,h,:,j)
__global__ void gla_recurrent_backward_dv_kernel(float* dv, float* Dcols, const float* dout, const float* q,
                                                 const float* k, const float* a, int B, int T, int H, int K, int V,
                                                 float scale) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b H + h) V + j
    if (idx >= (size_t)B * H * V) return;
    int j = idx % V;
    size_t bh = idx / V;
    int h = bh % H, b = bh / H;
    float* Dj = Dcols + bh * K * V + j;
    for (int i = 0; i < K; i++) Dj[(size_t)i * V] = 0.0f;
    for (int t = T - 1; t >= 0; t--) {
        size_t rk = (((size_t)b * T + t) * H + h) * K, rv = (((size_t)b * T + t) * H + h) * V;
        float doj = dout[rv + j], dvj = 0.0f;
        for (int i = 0; i < K; i++) {
            float d = Dj[(size_t)i * V] + scale * q[rk + i] * doj;
            dvj += d * k[rk + i];
            Dj[(size_t)i * V] = expf(a[rk + i]) * d;
        }
        dv[rv + j] = dvj;
    }
}

// Exact backward of gla_recurrent_forward (LAYERS.md §2.5), the readable ground truth for the
// chunkwise backward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten; dout (B,T,H,V); q, k, a (B,T,H,K);
// v (B,T,H,V)
void gla_recurrent_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* q,
                            const float* k, const float* v, const float* a, int B, int T, int H, int K, int V,
                            float scale) {
    int L = (int)ceil(sqrt((double)T)), NS = ceil_div(T, L);
    float* rows = device_scratch(SCRATCH_GLA0, (size_t)B * H * (NS + L + 2) * K * V);
    float* Dcols = device_scratch(SCRATCH_GLA1, (size_t)B * H * K * V);
    gla_recurrent_backward_rows_kernel<<<ceil_div((size_t)B * H * K, 128), 128>>>(dq, dk, da, rows, dout, q, k, v,
                                                                                  a, B, T, H, K, V, scale, L);
    cuda_check(cudaGetLastError());
    gla_recurrent_backward_dv_kernel<<<ceil_div((size_t)B * H * V, 128), 128>>>(dv, Dcols, dout, q, k, a, B, T, H,
                                                                                K, V, scale);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// GLA, the chunkwise-parallel form (LAYERS.md §2.4), used for training. Time is cut into chunks of
// C steps. Inside a chunk, G = chunk-local inclusive cumsum of a (≤ 0 and decreasing), G_L its last
// row, S = the state entering the chunk:
//     o_i    = scale [ (q_i ⊙ e^{G_i})ᵀ S + Σ_{j≤i} P_ij v_j ],   P_ij = Σ_c q_ic k_jc e^{G_ic − G_jc}
//     S_next = diag(e^{G_L}) S + Σ_j (k_j ⊙ e^{G_L − G_j}) v_jᵀ
// Every exponent is a difference G_later − G_earlier ≤ 0, so nothing overflows whatever the decay.
//
// On the GPU every chunk does its own work in parallel (its P, its own contribution to the next
// state, its outputs), and only the K×V state recurrence runs chunk after chunk, elementwise. The
// per-chunk products are tiled: a block of 256 threads computes a 64×64 output tile, each thread a
// 4×4 register block, reducing over slices of 16 staged in shared memory. Every output is summed by
// one thread in a fixed order, so results are deterministic.

// Gate gradient from dq and dk alone (LAYERS.md §2.5.3; what fla's kernels use), valid for a zero
// initial state and an unused final state:
//     da_t = Σ_{s≥t} (q_s ⊙ dq_s − k_s ⊙ dk_s)       (a reverse cumulative sum over time)
// Why: a_t enters exactly the terms q_i k_j e^{A_i − A_j} (j ≤ i) with j < t ≤ i. The suffix sum of
// q ⊙ dq collects all terms with i ≥ t, that of k ⊙ dk all with j ≥ t; their difference is the
// terms with i ≥ t > j. (The subtraction loses relative precision where the decay is very strong
// and da is tiny next to the terms; fla accepts the same.)
// On the GPU the suffix sum runs in two passes over segments of GLA_GATE_SEG rows, so that B·HK columns
// times T/GLA_GATE_SEG segments run in parallel: segment sums first, then each segment sweeps its rows
// from the sum of all later segments.
#define GLA_GATE_SEG 64

// one thread per (b, segment, column): seg_sum (B,NS,HK) = Σ over the segment's rows of q dq − k dk
__global__ void gla_gate_segment_sum_kernel(float* seg_sum, const float* q, const float* k, const float* dq,
                                            const float* dk, int B, int T, int HK) {
    int NS = (T + GLA_GATE_SEG - 1) / GLA_GATE_SEG;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NS + s) HK + c
    if (idx >= (size_t)B * NS * HK) return;
    int c = idx % HK;
    size_t bs = idx / HK;
    int s = bs % NS, b = bs / NS;
    int t0 = s * GLA_GATE_SEG, t1 = T < t0 + GLA_GATE_SEG ? T : t0 + GLA_GATE_SEG;
    float acc = 0.0f;
    for (int t = t1 - 1; t >= t0; t--) {
        size_t r = ((size_t)b * T + t) * HK + c;
        acc += q[r] * dq[r] - k[r] * dk[r];
    }
    seg_sum[idx] = acc;
}

// one thread per (b, segment, column): da over the segment's rows, last to first
__global__ void gla_gate_sweep_kernel(float* da, const float* seg_sum, const float* q, const float* k,
                                      const float* dq, const float* dk, int B, int T, int HK) {
    int NS = (T + GLA_GATE_SEG - 1) / GLA_GATE_SEG;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NS + s) HK + c
    if (idx >= (size_t)B * NS * HK) return;
    int c = idx % HK;
    size_t bs = idx / HK;
    int s = bs % NS, b = bs / NS;
    int t0 = s * GLA_GATE_SEG, t1 = T < t0 + GLA_GATE_SEG ? T : t0 + GLA_GATE_SEG;
    float acc = 0.0f;
    for (int later = NS - 1; later > s; later--) acc += seg_sum[((size_t)b * NS + later) * HK + c];
    for (int t = t1 - 1; t >= t0; t--) {
        size_t r = ((size_t)b * T + t) * HK + c;
        acc += q[r] * dq[r] - k[r] * dk[r];
        da[r] = acc;
    }
}

// da (B,T,H*K) overwritten; q, k, dq, dk (B,T,H*K). Scratch: the segment sums (B,NS,HK) in slot GLA0,
// which gla_chunk_backward calls this with after its last use of G there.
void gla_gate_grad(float* da, const float* q, const float* k, const float* dq, const float* dk, int B, int T, int HK) {
    size_t n = (size_t)B * ceil_div(T, GLA_GATE_SEG) * HK;
    float* seg_sum = device_scratch(SCRATCH_GLA0, n);
    gla_gate_segment_sum_kernel<<<ceil_div(n, 256), 256>>>(seg_sum, q, k, dq, dk, B, T, HK);
    cuda_check(cudaGetLastError());
    gla_gate_sweep_kernel<<<ceil_div(n, 256), 256>>>(da, seg_sum, q, k, dq, dk, B, T, HK);
    cuda_check(cudaGetLastError());
}

// G (B,T,HK) = a's inclusive cumsum within each chunk; one thread per (b, chunk, column)
__global__ void gla_chunk_cumsum_kernel(float* G, const float* a, int B, int T, int HK, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) HK + c
    if (idx >= (size_t)B * NC * HK) return;
    int c = idx % HK;
    size_t bc = idx / HK;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    size_t r0 = ((size_t)b * T + t0) * HK + c;
    float g = 0.0f;
    for (int r = 0; r < n; r++) {
        g += a[r0 + (size_t)r * HK];
        G[r0 + (size_t)r * HK] = g;
    }
}

#define GLA_TILE 64      // output tile edge of the chunk products
#define GLA_SLICE 16     // reduction slice staged in shared memory per step
#define GLA_THREADS 256  // 16 × 16 threads; thread (ty, tx) owns outputs (ty + 16u, tx + 16w), u, w < 4
typedef float GlaSlice[GLA_SLICE][GLA_TILE + 1];   // [x][m]; the +1 spreads a column over the banks

// Fills a staged slice: dst[x][m] = value(m, x) for m < GLA_TILE, x < GLA_SLICE (value checks bounds).
// Consecutive threads take consecutive x when the source is contiguous along x (x_fastest), else
// consecutive m, so that global reads coalesce either way.
template <typename F>
__device__ inline void gla_stage_slice(GlaSlice dst, bool x_fastest, F value) {
    for (int e = threadIdx.x; e < GLA_SLICE * GLA_TILE; e += GLA_THREADS) {
        int x = x_fastest ? e % GLA_SLICE : e / GLA_TILE;
        int m = x_fastest ? e / GLA_SLICE : e % GLA_TILE;
        dst[x][m] = value(m, x);
    }
}

// acc[u][w] += Σ_x As[x][ty + 16u] Bs[x][tx + 16w]: one slice of a tile's plain matrix product
__device__ inline void gla_tile_product(float acc[4][4], const GlaSlice As, const GlaSlice Bs, int ty, int tx) {
    for (int x = 0; x < GLA_SLICE; x++) {
        float ar[4], br[4];
        for (int u = 0; u < 4; u++) { ar[u] = As[x][ty + 16 * u]; br[u] = Bs[x][tx + 16 * u]; }
        for (int u = 0; u < 4; u++)
            for (int w = 0; w < 4; w++) acc[u][w] += ar[u] * br[w];
    }
}

// acc[u][w] += Σ_x A(ty + 16u, x) B(tx + 16w, x) over x in [x_begin, x_end), a slice at a time: the
// loop of every tiled GLA kernel. a(m, x), b(m, x): row m of the tile's A and B at reduction index x
// (0 outside the matrices); a_x_fastest, b_x_fastest: the staging order (gla_stage_slice) that reads
// each along its contiguous axis. Every thread of the block calls it.
template <typename FA, typename FB>
__device__ inline void gla_tile_accumulate(float acc[4][4], GlaSlice As, GlaSlice Bs, int x_begin, int x_end, int ty,
                                           int tx, bool a_x_fastest, FA a, bool b_x_fastest, FB b) {
    for (int x0 = x_begin; x0 < x_end; x0 += GLA_SLICE) {
        gla_stage_slice(As, a_x_fastest, [&](int m, int x) { return a(m, x0 + x); });
        gla_stage_slice(Bs, b_x_fastest, [&](int m, int x) { return b(m, x0 + x); });
        __syncthreads();
        gla_tile_product(acc, As, Bs, ty, tx);
        __syncthreads();
    }
}

// The (b, h, chunk) of a block whose blockIdx.x = (b H + h) NC + ch, with the chunk's first row t0, its
// length n, and the offsets of its first row in (B,T,H,K) and (B,T,H,V) tensors.
struct GlaChunk {
    int b, h, ch, t0, n;
    size_t bhc, base_k, base_v;
};
__device__ inline GlaChunk gla_chunk_index(int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    GlaChunk c;
    c.bhc = blockIdx.x;
    c.ch = c.bhc % NC;
    c.h = (c.bhc / NC) % H;
    c.b = c.bhc / NC / H;
    c.t0 = c.ch * C;
    c.n = T - c.t0 < C ? T - c.t0 : C;
    c.base_k = (((size_t)c.b * T + c.t0) * H + c.h) * K;
    c.base_v = (((size_t)c.b * T + c.t0) * H + c.h) * V;
    return c;
}

// G_L of chunk ch at column i of head h: G at the chunk's last row, min(T, (ch+1) C) − 1
__device__ inline float gla_chunk_last_G(const float* G, int b, int h, int i, int ch, int T, int H, int K, int C) {
    int t_last = (ch + 1) * C < T ? (ch + 1) * C - 1 : T - 1;
    return G[(((size_t)b * T + t_last) * H + h) * K + i];
}

// P (B,H,NC,C,C), row-major per chunk: P_ij = scale Σ_c q_ic k_jc e^{G_ic − G_jc} for j ≤ i < n, 0
// elsewhere. Grid (B·H·NC, i tiles, j tiles).
__global__ void gla_chunk_scores_kernel(float* P, const float* q, const float* k, const float* G,
                                        int T, int H, int K, int C, float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, 1, C);
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sk = (size_t)H * K;
    float* Pc = P + ci.bhc * C * C;
    const float *qc = q + ci.base_k, *kc = k + ci.base_k, *Gc = G + ci.base_k;
    float acc[4][4] = {};
    if (j0 <= i0) {   // tiles wholly above the diagonal stay 0 (a block-uniform test)
        __shared__ GlaSlice Qs, Ks, Gq, Gk;
        for (int c0 = 0; c0 < K; c0 += GLA_SLICE) {
            auto row = [&](const float* src, int r, int c) { return r < n && c < K ? src[r * sk + c] : 0.0f; };
            gla_stage_slice(Qs, true, [&](int m, int x) { return row(qc, i0 + m, c0 + x); });
            gla_stage_slice(Gq, true, [&](int m, int x) { return row(Gc, i0 + m, c0 + x); });
            gla_stage_slice(Ks, true, [&](int m, int x) { return row(kc, j0 + m, c0 + x); });
            gla_stage_slice(Gk, true, [&](int m, int x) { return row(Gc, j0 + m, c0 + x); });
            __syncthreads();
            // only the pairs j ≤ i < n, whose exponents are ≤ 0 (a zero-filled row's G is not a cumsum)
            for (int x = 0; x < GLA_SLICE; x++)
                for (int u = 0; u < 4; u++) {
                    int i = i0 + ty + 16 * u;
                    float qi = Qs[x][ty + 16 * u], gi = Gq[x][ty + 16 * u];
                    for (int w = 0; w < 4; w++)
                        if (j0 + tx + 16 * w <= i && i < n)
                            acc[u][w] += qi * Ks[x][tx + 16 * w] * expf(gi - Gk[x][tx + 16 * w]);
                }
            __syncthreads();
        }
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < C && j < C) Pc[(size_t)i * C + j] = j <= i && i < n ? scale * acc[u][w] : 0.0f;
        }
}

// Per chunk, the (K,V) sum Σ_r (x_r ⊙ w_r) y_rᵀ over its rows, written to the state slot of the chunk
// it feeds:
//   forward  (x = k, y = v):  w_r = e^{G_L − G_r},  into slot ch+1   (the chunk's own part of S_next)
//   backward (x = q, y = do): w_r = scale e^{G_r},  into slot ch−1   (its own part of dS of chunk ch−1)
// The chunk whose slot falls outside [0, NC) feeds nothing and returns.
// out (B,H,NC,K,V); x, G (B,T,H,K); y (B,T,H,V). Grid (B·H·NC, K tiles, V tiles).
__global__ void gla_chunk_state_sum_kernel(float* out, const float* x, const float* y, const float* G,
                                           int T, int H, int K, int V, int C, float scale, int backward) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int NC = (T + C - 1) / C, slot = backward ? ci.ch - 1 : ci.ch + 1;
    if (slot < 0 || slot >= NC) return;
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *xc = x + ci.base_k, *Gc = G + ci.base_k, *yc = y + ci.base_v, *GL = Gc + (n - 1) * sk;
    __shared__ GlaSlice Xs, Ys;
    float acc[4][4] = {};
    gla_tile_accumulate(acc, Xs, Ys, 0, n, ty, tx,
        false, [&](int m, int r) {
            int i = i0 + m;
            if (i >= K || r >= n) return 0.0f;
            float g = Gc[r * sk + i];
            return backward ? scale * xc[r * sk + i] * expf(g) : xc[r * sk + i] * expf(GL[i] - g);
        },
        false, [&](int m, int r) {
            int j = j0 + m;
            return j < V && r < n ? yc[r * sv + j] : 0.0f;
        });
    float* dst = out + (ci.bhc - ci.ch + slot) * K * V;   // (b, h, slot)
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < K && j < V) dst[(size_t)i * V + j] = acc[u][w];
        }
}

// The state recurrence across chunks, in place: slot c+1 holds chunk c's own sum on entry and
//     S_{c+1} = diag(e^{G_L(c)}) S_c + (that sum),   S_0 = 0
// on exit. states (B,H,NC,K,V); G (B,T,H,K). One thread per (b, h, i, j).
__global__ void gla_chunk_state_scan_kernel(float* states, const float* G, int B, int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = ((b H + h) K + i) V + j
    if (idx >= (size_t)B * H * K * V) return;
    size_t KV = (size_t)K * V, bh = idx / KV;
    int i = (idx / V) % K, h = bh % H, b = bh / H;
    float* s = states + bh * NC * KV + idx % KV;   // s[c KV] = S_c[i][j]
    float S = 0.0f;
    s[0] = 0.0f;
    for (int c = 0; c + 1 < NC; c++) {
        S = expf(gla_chunk_last_G(G, b, h, i, c, T, H, K, C)) * S + s[(c + 1) * KV];
        s[(c + 1) * KV] = S;
    }
}

// o (B,T,H,V) = scale (q ⊙ e^G)ᵀ S + P v per chunk. Grid (B·H·NC, row tiles, V tiles).
__global__ void gla_chunk_output_kernel(float* o, const float* states, const float* P, const float* q,
                                        const float* v, const float* G, int T, int H, int K, int V, int C,
                                        float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *qc = q + ci.base_k, *Gc = G + ci.base_k, *vc = v + ci.base_v;
    const float *S = states + ci.bhc * K * V, *Pc = P + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs;
    float acc[4][4] = {};
    // o_r = (scale q_r ⊙ e^{G_r})ᵀ S
    gla_tile_accumulate(acc, As, Bs, 0, K, ty, tx,
        true, [&](int m, int c) {
            int r = r0 + m;
            return r < n && c < K ? scale * qc[r * sk + c] * expf(Gc[r * sk + c]) : 0.0f;
        },
        false, [&](int m, int c) {
            int j = j0 + m;
            return j < V && c < K ? S[(size_t)c * V + j] : 0.0f;
        });
    // o_r += Σ_{p≤r} P_rp v_p  (P is 0 above the diagonal: p stops at the tile's last row)
    int p_end = n < r0 + GLA_TILE ? n : r0 + GLA_TILE;
    gla_tile_accumulate(acc, As, Bs, 0, p_end, ty, tx,
        true, [&](int m, int p) {
            int r = r0 + m;
            return r < n && p < n ? Pc[(size_t)r * C + p] : 0.0f;
        },
        false, [&](int m, int p) {
            int j = j0 + m;
            return j < V && p < n ? vc[p * sv + j] : 0.0f;
        });
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (r < n && j < V) o[ci.base_v + r * sv + j] = acc[u][w];
        }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each of the NC = ceil(T/C) chunks (kept for
// the backward); q, k, a (B,T,H,K); v (B,T,H,V). Scratch: G (B,T,H,K), P (B,H,NC,C,C).
void gla_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* a,
                       int B, int T, int H, int K, int V, int C, float scale) {
    int NC = ceil_div(T, C);
    size_t nG = (size_t)B * T * H * K, nbhc = (size_t)B * H * NC;
    float* G = device_scratch(SCRATCH_GLA0, nG);
    float* P = device_scratch(SCRATCH_GLA1, nbhc * C * C);
    gla_chunk_cumsum_kernel<<<ceil_div((size_t)B * NC * H * K, 256), 256>>>(G, a, B, T, H * K, C);
    cuda_check(cudaGetLastError());
    dim3 chunk_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(C, GLA_TILE));
    dim3 state_tiles((unsigned)nbhc, ceil_div(K, GLA_TILE), ceil_div(V, GLA_TILE));
    dim3 out_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(V, GLA_TILE));
    gla_chunk_scores_kernel<<<chunk_tiles, GLA_THREADS>>>(P, q, k, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_state_sum_kernel<<<state_tiles, GLA_THREADS>>>(states, k, v, G, T, H, K, V, C, scale, 0);
    cuda_check(cudaGetLastError());
    gla_chunk_state_scan_kernel<<<ceil_div((size_t)B * H * K * V, 256), 256>>>(states, G, B, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_output_kernel<<<out_tiles, GLA_THREADS>>>(o, states, P, q, v, G, T, H, K, V, C, scale);
    cuda_check(cudaGetLastError());
}

// dP (B,H,NC,C,C): dP_ij = scale do_i·v_j for j ≤ i < n, 0 elsewhere. Grid (B·H·NC, i tiles, j tiles).
__global__ void gla_chunk_dscores_kernel(float* dP, const float* dout, const float* v, int T, int H, int V, int C,
                                         float scale) {
    GlaChunk ci = gla_chunk_index(T, H, 1, V, C);
    int i0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    size_t sv = (size_t)H * V;
    const float *doc = dout + ci.base_v, *vc = v + ci.base_v;
    float* dPc = dP + ci.bhc * C * C;
    float acc[4][4] = {};
    if (j0 <= i0) {   // tiles wholly above the diagonal stay 0 (a block-uniform test)
        __shared__ GlaSlice As, Bs;
        gla_tile_accumulate(acc, As, Bs, 0, V, ty, tx,
            true, [&](int m, int c) {
                int i = i0 + m;
                return i < n && c < V ? doc[i * sv + c] : 0.0f;
            },
            true, [&](int m, int c) {
                int j = j0 + m;
                return j < n && c < V ? vc[j * sv + c] : 0.0f;
            });
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int i = i0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (i < C && j < C) dPc[(size_t)i * C + j] = j <= i && i < n ? scale * acc[u][w] : 0.0f;
        }
}

// The gradient recurrence across chunks, backwards and in place: slot c−1 holds chunk c's own sum on
// entry, and with dS_c = dL/d(state leaving chunk c)
//     dS_{c−1} = diag(e^{G_L(c)}) dS_c + (that sum),   dS_{NC−1} = 0
// on exit. dS (B,H,NC,K,V); G (B,T,H,K). One thread per (b, h, i, j).
__global__ void gla_chunk_dstate_scan_kernel(float* dS, const float* G, int B, int T, int H, int K, int V, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = ((b H + h) K + i) V + j
    if (idx >= (size_t)B * H * K * V) return;
    size_t KV = (size_t)K * V, bh = idx / KV;
    int i = (idx / V) % K, h = bh % H, b = bh / H;
    float* s = dS + bh * NC * KV + idx % KV;   // s[c KV] = dS_c[i][j]
    float D = 0.0f;
    s[(NC - 1) * KV] = 0.0f;
    for (int c = NC - 1; c >= 1; c--) {
        D = expf(gla_chunk_last_G(G, b, h, i, c, T, H, K, C)) * D + s[(c - 1) * KV];
        s[(c - 1) * KV] = D;
    }
}

// dq_r = scale e^{G_r} ⊙ (S do_r) + Σ_{p≤r} dP_rp (k_p ⊙ e^{G_r − G_p}).
// dq (B,T,H,K). Grid (B·H·NC, row tiles, K tiles). (The launch bound caps registers at 128, so that
// two blocks share an SM.)
__global__ void __launch_bounds__(GLA_THREADS, 2) gla_chunk_dq_kernel(float* dq, const float* states, const float* dP, const float* dout,
                                    const float* k, const float* G, int T, int H, int K, int V, int C, float scale) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, c0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *kc = k + ci.base_k, *Gc = G + ci.base_k, *doc = dout + ci.base_v;
    const float *S = states + ci.bhc * K * V, *dPc = dP + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs, Gs;
    float acc[4][4] = {}, Gr[4][4];
    // S do_r
    gla_tile_accumulate(acc, As, Bs, 0, V, ty, tx,
        true, [&](int m, int j) {
            int r = r0 + m;
            return r < n && j < V ? doc[r * sv + j] : 0.0f;
        },
        true, [&](int m, int j) {
            int c = c0 + m;
            return c < K && j < V ? S[(size_t)c * V + j] : 0.0f;
        });
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            Gr[u][w] = r < n && c < K ? Gc[r * sk + c] : 0.0f;
            acc[u][w] *= scale * expf(Gr[u][w]);
        }
    // the intra-chunk pairs p ≤ r < n (exponents ≤ 0)
    int p_end = n < r0 + GLA_TILE ? n : r0 + GLA_TILE;
    for (int p0 = 0; p0 < p_end; p0 += GLA_SLICE) {
        gla_stage_slice(As, true, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? dPc[(size_t)r * C + p] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? kc[p * sk + c] : 0.0f;
        });
        gla_stage_slice(Gs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? Gc[p * sk + c] : 0.0f;
        });
        __syncthreads();
        for (int x = 0; x < GLA_SLICE; x++)
            for (int u = 0; u < 4; u++)
                for (int w = 0; w < 4; w++)
                    if (p0 + x <= r0 + ty + 16 * u && r0 + ty + 16 * u < n)
                        acc[u][w] += As[x][ty + 16 * u] * Bs[x][tx + 16 * w] * expf(Gr[u][w] - Gs[x][tx + 16 * w]);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            if (r < n && c < K) dq[ci.base_k + r * sk + c] = acc[u][w];
        }
}

// dk_r = e^{G_L − G_r} ⊙ (dS v_r) + Σ_{p≥r} dP_pr (q_p ⊙ e^{G_p − G_r}), dS = the gradient of the state
// leaving the chunk. dk (B,T,H,K). Grid (B·H·NC, row tiles, K tiles); launch bound as dq's.
__global__ void __launch_bounds__(GLA_THREADS, 2) gla_chunk_dk_kernel(float* dk, const float* dS, const float* dP, const float* v, const float* q,
                                    const float* G, int T, int H, int K, int V, int C) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, c0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *qc = q + ci.base_k, *Gc = G + ci.base_k, *vc = v + ci.base_v;
    const float *dSc = dS + ci.bhc * K * V, *dPc = dP + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs, Gs;
    float acc[4][4] = {}, Gr[4][4];
    // dS v_r
    gla_tile_accumulate(acc, As, Bs, 0, V, ty, tx,
        true, [&](int m, int j) {
            int r = r0 + m;
            return r < n && j < V ? vc[r * sv + j] : 0.0f;
        },
        true, [&](int m, int j) {
            int c = c0 + m;
            return c < K && j < V ? dSc[(size_t)c * V + j] : 0.0f;
        });
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            bool valid = r < n && c < K;
            Gr[u][w] = valid ? Gc[r * sk + c] : 0.0f;
            acc[u][w] *= valid ? expf(Gc[(n - 1) * sk + c] - Gr[u][w]) : 0.0f;
        }
    // the intra-chunk pairs r ≤ p < n (exponents ≤ 0)
    for (int p0 = r0; p0 < n; p0 += GLA_SLICE) {
        gla_stage_slice(As, false, [&](int m, int x) {
            int r = r0 + m, p = p0 + x;
            return r < n && p < n ? dPc[(size_t)p * C + r] : 0.0f;
        });
        gla_stage_slice(Bs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? qc[p * sk + c] : 0.0f;
        });
        gla_stage_slice(Gs, false, [&](int m, int x) {
            int c = c0 + m, p = p0 + x;
            return c < K && p < n ? Gc[p * sk + c] : 0.0f;
        });
        __syncthreads();
        for (int x = 0; x < GLA_SLICE; x++)
            for (int u = 0; u < 4; u++)
                for (int w = 0; w < 4; w++)
                    if (r0 + ty + 16 * u <= p0 + x && p0 + x < n)
                        acc[u][w] += As[x][ty + 16 * u] * Bs[x][tx + 16 * w] * expf(Gs[x][tx + 16 * w] - Gr[u][w]);
        __syncthreads();
    }
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, c = c0 + tx + 16 * w;
            if (r < n && c < K) dk[ci.base_k + r * sk + c] = acc[u][w];
        }
}

// dv_r = dSᵀ (k_r ⊙ e^{G_L − G_r}) + Σ_{p≥r} P_pr do_p. dv (B,T,H,V). Grid (B·H·NC, row tiles, V tiles).
__global__ void gla_chunk_dv_kernel(float* dv, const float* dS, const float* P, const float* dout, const float* k,
                                    const float* G, int T, int H, int K, int V, int C) {
    GlaChunk ci = gla_chunk_index(T, H, K, V, C);
    int r0 = blockIdx.y * GLA_TILE, j0 = blockIdx.z * GLA_TILE, ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    int n = ci.n;
    if (r0 >= n) return;   // rows past a partial last chunk
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    const float *kc = k + ci.base_k, *Gc = G + ci.base_k, *doc = dout + ci.base_v, *GL = Gc + (n - 1) * sk;
    const float *dSc = dS + ci.bhc * K * V, *Pc = P + ci.bhc * C * C;
    __shared__ GlaSlice As, Bs;
    float acc[4][4] = {};
    // dSᵀ (k_r ⊙ e^{G_L − G_r})
    gla_tile_accumulate(acc, As, Bs, 0, K, ty, tx,
        true, [&](int m, int c) {
            int r = r0 + m;
            return r < n && c < K ? kc[r * sk + c] * expf(GL[c] - Gc[r * sk + c]) : 0.0f;
        },
        false, [&](int m, int c) {
            int j = j0 + m;
            return j < V && c < K ? dSc[(size_t)c * V + j] : 0.0f;
        });
    // Σ_{p≥r} P_pr do_p (P_pr is 0 for p < r)
    gla_tile_accumulate(acc, As, Bs, r0, n, ty, tx,
        false, [&](int m, int p) {
            int r = r0 + m;
            return r < n && p < n ? Pc[(size_t)p * C + r] : 0.0f;
        },
        false, [&](int m, int p) {
            int j = j0 + m;
            return j < V && p < n ? doc[p * sv + j] : 0.0f;
        });
    for (int u = 0; u < 4; u++)
        for (int w = 0; w < 4; w++) {
            int r = r0 + ty + 16 * u, j = j0 + tx + 16 * w;
            if (r < n && j < V) dv[ci.base_v + r * sv + j] = acc[u][w];
        }
}

// Backward of gla_chunk_forward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten; dout (B,T,H,V).
// With dS = dL/dS_next of a chunk and dP_ij = scale do_i·v_j (j ≤ i):
//     dq_i = scale e^{G_i} ⊙ (S do_i) + Σ_{j≤i} dP_ij (k_j ⊙ e^{G_i−G_j})
//     dk_j = e^{G_L−G_j} ⊙ (dS v_j) + Σ_{i≥j} dP_ij (q_i ⊙ e^{G_i−G_j})
//     dv_j = Σ_{i≥j} P_ij do_i + dSᵀ (k_j ⊙ e^{G_L−G_j})
//     dS  ← diag(e^{G_L}) dS + Σ_i (scale q_i ⊙ e^{G_i}) do_iᵀ     (into the chunk before)
// and the gate gradient comes from dq, dk through the reverse-cumsum identity (gla_gate_grad).
// The dS of every chunk is found first (each chunk's own sum in parallel, then the recurrence
// backwards over chunks), and then every chunk's gradients in parallel.
// Scratch: G (B,T,H,K), P and dP (B,H,NC,C,C), dS (B,H,NC,K,V).
void gla_chunk_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* states,
                        const float* q, const float* k, const float* v, const float* a, int B, int T, int H, int K,
                        int V, int C, float scale) {
    int NC = ceil_div(T, C);
    size_t nbhc = (size_t)B * H * NC;
    float* G = device_scratch(SCRATCH_GLA0, (size_t)B * T * H * K);
    float* P = device_scratch(SCRATCH_GLA1, 2 * nbhc * C * C);
    float* dP = P + nbhc * C * C;
    float* dS = device_scratch(SCRATCH_GLA2, nbhc * K * V);
    gla_chunk_cumsum_kernel<<<ceil_div((size_t)B * NC * H * K, 256), 256>>>(G, a, B, T, H * K, C);
    cuda_check(cudaGetLastError());
    dim3 chunk_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(C, GLA_TILE));
    dim3 state_tiles((unsigned)nbhc, ceil_div(K, GLA_TILE), ceil_div(V, GLA_TILE));
    dim3 k_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(K, GLA_TILE));
    dim3 v_tiles((unsigned)nbhc, ceil_div(C, GLA_TILE), ceil_div(V, GLA_TILE));
    gla_chunk_scores_kernel<<<chunk_tiles, GLA_THREADS>>>(P, q, k, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_dscores_kernel<<<chunk_tiles, GLA_THREADS>>>(dP, dout, v, T, H, V, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_state_sum_kernel<<<state_tiles, GLA_THREADS>>>(dS, q, dout, G, T, H, K, V, C, scale, 1);
    cuda_check(cudaGetLastError());
    gla_chunk_dstate_scan_kernel<<<ceil_div((size_t)B * H * K * V, 256), 256>>>(dS, G, B, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_dq_kernel<<<k_tiles, GLA_THREADS>>>(dq, states, dP, dout, k, G, T, H, K, V, C, scale);
    cuda_check(cudaGetLastError());
    gla_chunk_dk_kernel<<<k_tiles, GLA_THREADS>>>(dk, dS, dP, v, q, G, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_chunk_dv_kernel<<<v_tiles, GLA_THREADS>>>(dv, dS, P, dout, k, G, T, H, K, V, C);
    cuda_check(cudaGetLastError());
    gla_gate_grad(da, q, k, dq, dk, B, T, H * K);
}

// Gated output norm (fla's FusedRMSNormGated, LAYERS.md §1.2): per head of width V,
//     out = RMSNorm_V(x) · w ⊙ silu(g),  one weight w (V) shared by all heads.
// out, x, g (N,H,V); rstd (N,H). One warp per row of V.
__global__ void gated_rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* g, const float* w,
                                             int R, int V, float eps) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const float *xr = x + (size_t)r * V, *gr = g + (size_t)r * V;
    float ss = 0.0f;
    for (int j = lane; j < V; j += 32) ss += xr[j] * xr[j];
    float s = 1.0f / sqrtf(warp_sum(ss) / V + eps);
    for (int j = lane; j < V; j += 32) out[(size_t)r * V + j] = xr[j] * s * w[j] * siluf(gr[j]);
    if (lane == 0) rstd[r] = s;
}
void gated_rmsnorm_forward(float* out, float* rstd, const float* x, const float* g, const float* w, int N, int H,
                           int V, float eps) {
    int R = N * H;
    gated_rmsnorm_forward_kernel<<<ceil_div(R, 8), 256>>>(out, rstd, x, g, w, R, V, eps);
    cuda_check(cudaGetLastError());
}
// one row of V per warp: dx, dg, and term (R,V) = dout ⊙ silu(g) ⊙ x̂, the rows dw sums
__global__ void gated_rmsnorm_backward_kernel(float* dx, float* dg, float* term, const float* dout, const float* x,
                                              const float* g, const float* w, const float* rstd, int R, int V) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    size_t base = (size_t)r * V;
    const float *xr = x + base, *gr = g + base, *dy = dout + base;
    float s = rstd[r], dot = 0.0f;
    for (int j = lane; j < V; j += 32) {
        float xhat = xr[j] * s;
        dg[base + j] = dy[j] * xhat * w[j] * silu_grad(gr[j]);
        dot += dy[j] * siluf(gr[j]) * w[j] * xhat;
    }
    dot = warp_sum(dot) / V;
    for (int j = lane; j < V; j += 32) {
        dx[base + j] = s * (dy[j] * siluf(gr[j]) * w[j] - xr[j] * s * dot);
        term[base + j] = dy[j] * siluf(gr[j]) * xr[j] * s;
    }
}
// dx, dg (N,H,V) overwritten; dw (V) +=. With n̂ = x r w: dg = dy ⊙ n̂ ⊙ silu'(g); then RMSNorm
// backward with upstream dy ⊙ silu(g). Uses SCRATCH_MISC0 for the dw terms.
void gated_rmsnorm_backward(float* dx, float* dg, float* dw, const float* dout, const float* x, const float* g,
                            const float* w, const float* rstd, int N, int H, int V) {
    int R = N * H;
    float* term = device_scratch(SCRATCH_MISC0, (size_t)R * V);
    gated_rmsnorm_backward_kernel<<<ceil_div(R, 8), 256>>>(dx, dg, term, dout, x, g, w, rstd, R, V);
    cuda_check(cudaGetLastError());
    column_sum(dw, term, R, V);
}

// ----------------------------------------------------------------------------
// ShortConvolution (LAYERS.md §1.3), used by DeltaNet and Gated DeltaNet on q, k and v: a depthwise
// causal convolution over time with kernel W (no bias), then silu. For channel c at time t:
//     y[t,c] = silu(z[t,c]),   z[t,c] = Σ_{i<W} w[c,i] x[t−W+1+i, c],   x[τ] = 0 for τ < 0
// so w[c,W−1] multiplies the current token (PyTorch's cross-correlation orientation).

// the first tap i whose input x[t−W+1+i] exists (the earlier ones read the zero padding)
__host__ __device__ static inline int conv_first_tap(int t, int W) { return t >= W - 1 ? 0 : W - 1 - t; }

// z[t,c] of the row n = b T + t, from x (B,T,C), w (C,W)
__device__ inline float conv_z(const float* x, const float* w, size_t n, int t, int c, int C, int W) {
    float z = 0.0f;
    for (int i = conv_first_tap(t, W); i < W; i++) z += w[c * W + i] * x[(n - W + 1 + i) * C + c];
    return z;
}

// out (B,T,C) from x (B,T,C), w (C,W); one thread per (b, t, c)
__global__ void shortconv_forward_kernel(float* out, const float* x, const float* w, int B, int T, int C, int W) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    size_t n = idx / C;
    int c = (int)(idx % C), t = (int)(n % T);
    out[idx] = siluf(conv_z(x, w, n, t, c, C, W));
}
void shortconv_forward(float* out, const float* x, const float* w, int B, int T, int C, int W) {
    shortconv_forward_kernel<<<ceil_div((size_t)B * T * C, 256), 256>>>(out, x, w, B, T, C, W);
    cuda_check(cudaGetLastError());
}
// dout (B,T,C) *= silu'(z), z recomputed from x
__global__ void shortconv_dz_kernel(float* dout, const float* x, const float* w, int B, int T, int C, int W) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    size_t n = idx / C;
    int c = (int)(idx % C), t = (int)(n % T);
    dout[idx] *= silu_grad(conv_z(x, w, n, t, c, C, W));
}
// dx[τ,c] = Σ_i w[c,i] dz[τ+W−1−i, c] (terms past T−1 dropped); one thread per (b, τ, c)
__global__ void shortconv_dx_kernel(float* dx, const float* dz, const float* w, int B, int T, int C, int W) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    size_t n = idx / C;
    int c = (int)(idx % C), t = (int)(n % T);
    float d = 0.0f;
    for (int i = 0; i < W; i++) {
        int later = t + W - 1 - i;
        if (later >= T) continue;
        d += w[c * W + i] * dz[(n + W - 1 - i) * C + c];
    }
    dx[idx] = d;
}
#define CONV_MAX_W 16   // the --conv-size limit
// partial (R, C·W): row block r's sums Σ_n dz[n,c] x[n−W+1+i, c] over its `rows` rows (column_sum's scheme)
__global__ void shortconv_dw_partial_kernel(float* partial, const float* dz, const float* x, int N, int T, int C,
                                            int W, int rows) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc[CONV_MAX_W];
    for (int i = 0; i < W; i++) acc[i] = 0.0f;
    int n0 = blockIdx.y * rows, n1 = min(N, n0 + rows);
    for (int n = n0; n < n1; n++) {
        float d = dz[(size_t)n * C + c];
        for (int i = conv_first_tap(n % T, W); i < W; i++) acc[i] += d * x[((size_t)n - W + 1 + i) * C + c];
    }
    for (int i = 0; i < W; i++) partial[(size_t)blockIdx.y * C * W + (size_t)c * W + i] = acc[i];
}
// dx (B,T,C) overwritten, dw (C,W) +=. dout (B,T,C) = dL/dy is overwritten with dz = dout ⊙ silu'(z)
// (z recomputed from x), then
//     dx[τ,c] = Σ_i w[c,i] dz[τ+W−1−i, c]  (terms past T−1 dropped),   dw[c,i] = Σ_t dz[t,c] x[t−W+1+i, c]
// dw in fixed order: sums over blocks of rows, then over the blocks (SCRATCH_MISC1).
void shortconv_backward(float* dx, float* dw, float* dout, const float* x, const float* w, int B, int T, int C, int W) {
    if (W > CONV_MAX_W) fail("shortconv_backward: kernel size %d exceeds %d", W, CONV_MAX_W);
    int N = B * T, blocks = ceil_div((size_t)N * C, 256);
    shortconv_dz_kernel<<<blocks, 256>>>(dout, x, w, B, T, C, W);
    cuda_check(cudaGetLastError());
    shortconv_dx_kernel<<<blocks, 256>>>(dx, dout, w, B, T, C, W);
    cuda_check(cudaGetLastError());
    int rows = column_rows(N), R = ceil_div(N, rows);
    float* partial = device_scratch(SCRATCH_MISC1, (size_t)R * C * W);
    shortconv_dw_partial_kernel<<<dim3(ceil_div(C, 128), R), 128>>>(partial, dout, x, N, T, C, W, rows);
    cuda_check(cudaGetLastError());
    column_finish_kernel<<<ceil_div((size_t)C * W, 256), 256>>>(dw, partial, R, C * W);
    cuda_check(cudaGetLastError());
}
// One time step for generation: out (C) = silu(Σ_{i<W−1} w[c,i] cache[i,c] + w[c,W−1] x[c]). The cache
// (W−1, C) holds the previous W−1 inputs, oldest first; each thread then shifts its own column by one
// row to end with x.
__global__ void shortconv_step_kernel(float* out, float* cache, const float* x, const float* w, int C, int W) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float z = w[c * W + W - 1] * x[c];
    for (int i = 0; i < W - 1; i++) z += w[c * W + i] * cache[(size_t)i * C + c];
    out[c] = siluf(z);
    if (W > 1) {
        for (int i = 0; i < W - 2; i++) cache[(size_t)i * C + c] = cache[(size_t)(i + 1) * C + c];
        cache[(size_t)(W - 2) * C + c] = x[c];
    }
}
void shortconv_step(float* out, float* cache, const float* x, const float* w, int C, int W) {
    shortconv_step_kernel<<<ceil_div(C, 256), 256>>>(out, cache, x, w, C, W);
    cuda_check(cudaGetLastError());
}

// L2 norm inside the delta-rule layers (LAYERS.md §1.4), per row of D (one head):
//     y = x r,  r = 1/√(Σ x² + 1e-6)      (eps inside the square root, unlike F.normalize)
// out, x (R,D) (out may be x); rinv (R) = r. One warp per row (each lane reads its elements, then writes them).
__global__ void l2norm_forward_kernel(float* out, float* rinv, const float* x, size_t R, int D) {
    size_t n = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= R) return;
    const float* xr = x + n * D;
    float ss = 0.0f;
    for (int i = lane; i < D; i += 32) ss += xr[i] * xr[i];
    float r = 1.0f / sqrtf(warp_sum(ss) + 1e-6f);
    for (int i = lane; i < D; i += 32) out[n * D + i] = xr[i] * r;
    if (lane == 0) rinv[n] = r;
}
void l2norm_forward(float* out, float* rinv, const float* x, size_t R, int D) {
    l2norm_forward_kernel<<<ceil_div(R, 8), 256>>>(out, rinv, x, R, D);
    cuda_check(cudaGetLastError());
}
// dx (R,D) = r (dy − (dy·y) y) from dout = dy (R,D), y = the normalised rows (dx may be dout)
__global__ void l2norm_backward_kernel(float* dx, const float* dout, const float* y, const float* rinv, size_t R, int D) {
    size_t n = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= R) return;
    const float *dy = dout + n * D, *yr = y + n * D;
    float dot = 0.0f;
    for (int i = lane; i < D; i += 32) dot += dy[i] * yr[i];
    dot = warp_sum(dot);
    for (int i = lane; i < D; i += 32) dx[n * D + i] = rinv[n] * (dy[i] - dot * yr[i]);
}
void l2norm_backward(float* dx, const float* dout, const float* y, const float* rinv, size_t R, int D) {
    l2norm_backward_kernel<<<ceil_div(R, 8), 256>>>(dx, dout, y, rinv, R, D);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// HGRN / HGRN2 forget gates and the model-level lower bounds (LAYERS.md §3, §3b)
//
// One parameter P (L,d) per model; s = softmax of P over the layer axis, per channel, and
//     lb_l = Σ_{j=1..l} s_j = cumsum(s)_l − s_0     (lb_0 = 0; zero init gives lb_l = l/L)
// Layer l > 0 of type hgrn/hgrn2 bounds its forget gate from below by lb_l (layer 0 has no bound):
//     a = log(lb + (1 − lb) σ(f))          (a = logσ(f) without a bound)

// lb, s (L,D) from P (L,D); one thread per channel, the CPU's loops over l
__global__ void lower_bounds_forward_kernel(float* lb, float* s, const float* P, int L, int D) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float maxv = -INFINITY, sum = 0.0f, acc = 0.0f;
    for (int l = 0; l < L; l++) maxv = fmaxf(maxv, P[l * D + c]);
    for (int l = 0; l < L; l++) { s[l * D + c] = expf(P[l * D + c] - maxv); sum += s[l * D + c]; }
    for (int l = 0; l < L; l++) s[l * D + c] /= sum;
    lb[c] = 0.0f;
    for (int l = 1; l < L; l++) { acc += s[l * D + c]; lb[l * D + c] = acc; }
}
void lower_bounds_forward(float* lb, float* s, const float* P, int L, int D) {
    lower_bounds_forward_kernel<<<ceil_div(D, 256), 256>>>(lb, s, P, L, D);
    cuda_check(cudaGetLastError());
}
// dP (L,D) += the gradient from dlb (L,D): s_0 cancels out of every lb_l, so ds_0 = 0 and
// ds_j = Σ_{l≥j} dlb_l (j ≥ 1); then through the softmax, dP_j = s_j (ds_j − Σ_i s_i ds_i).
__global__ void lower_bounds_backward_kernel(float* dP, const float* dlb, const float* s, int L, int D) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float suffix = 0.0f, dot = 0.0f;
    for (int l = L - 1; l >= 1; l--) { suffix += dlb[l * D + c]; dot += s[l * D + c] * suffix; }
    suffix = 0.0f;
    for (int l = L - 1; l >= 0; l--) {
        float ds = 0.0f;
        if (l >= 1) { suffix += dlb[l * D + c]; ds = suffix; }
        dP[l * D + c] += s[l * D + c] * (ds - dot);
    }
}
void lower_bounds_backward(float* dP, const float* dlb, const float* s, int L, int D) {
    lower_bounds_backward_kernel<<<ceil_div(D, 256), 256>>>(dP, dlb, s, L, D);
    cuda_check(cudaGetLastError());
}

// a (N,D) from the forget logits f (N,D) and the bound lb (D) or NULL. With x = (1 − lb) σ(−f), the
// fraction forgotten per step, a = log(1 − x) is taken as log1p(−x) while x ≤ 1/2, so gates close to
// 1 (a → 0) keep their relative precision, which the input gates 1 − e^a rely on.
__global__ void forget_gate_forward_kernel(float* a, const float* f, const float* lb, int N, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * D) return;
    if (!lb) { a[i] = logsigmoidf(f[i]); return; }
    int c = (int)(i % D);
    float x = (1.0f - lb[c]) * sigmoidf(-f[i]);
    a[i] = x <= 0.5f ? log1pf(-x) : logf(lb[c] + (1.0f - lb[c]) * sigmoidf(f[i]));
}
void forget_gate_forward(float* a, const float* f, const float* lb, int N, int D) {
    forget_gate_forward_kernel<<<ceil_div((size_t)N * D, 256), 256>>>(a, f, lb, N, D);
    cuda_check(cudaGetLastError());
}
// df = da ∂a/∂f per element (df may be da: each thread reads its element before writing it); with a
// bound, term (N,D) = da ∂a/∂lb, the rows dlb sums
__global__ void forget_gate_backward_kernel(float* df, float* term, const float* da, const float* f, const float* lb,
                                            int N, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * D) return;
    float sp = sigmoidf(f[i]), sn = sigmoidf(-f[i]), g = da[i];
    if (!lb) { df[i] = g * sn; return; }
    int c = (int)(i % D);
    term[i] = g * sn / (lb[c] + (1.0f - lb[c]) * sp);
    df[i] = g * (1.0f - lb[c]) * sp * sn / (lb[c] + (1.0f - lb[c]) * sp);
}
// With m = e^a = lb + (1 − lb) σ(f):  ∂a/∂f = (1 − lb) σ(f) σ(−f) / m  (σ(−f) without a bound),
// ∂a/∂lb = σ(−f) / m.  df (N,D) = da ∂a/∂f (overwritten; may be da); dlb (D) += Σ_n da ∂a/∂lb
// when lb is given (column_sum over the terms in SCRATCH_MISC0).
void forget_gate_backward(float* df, float* dlb, const float* da, const float* f, const float* lb, int N, int D) {
    float* term = lb ? device_scratch(SCRATCH_MISC0, (size_t)N * D) : NULL;
    forget_gate_backward_kernel<<<ceil_div((size_t)N * D, 256), 256>>>(df, term, da, f, lb, N, D);
    cuda_check(cudaGetLastError());
    if (lb) column_sum(dlb, term, N, D);
}

// ----------------------------------------------------------------------------
// HGRN core (LAYERS.md §3b), an elementwise gated recurrence h_t = e^{a_t} ⊙ h_{t−1} + x_t:
// hgrn_recurrent_step / _forward / _backward, hgrn_chunk_forward / _backward
// ----------------------------------------------------------------------------
// HGRN core (LAYERS.md §3b): an elementwise gated recurrence with a vector state h ∈ R^D,
//     h_t = e^{a_t} ⊙ h_{t−1} + x_t,   h_0 = 0          (a ≤ 0 the log-forget gate, x the gated input)
// Every channel is independent, so on the GPU one thread owns one channel (of one batch row, and in
// the chunked forms of one chunk) and walks time in the CPU's order.

// one thread per channel c
__global__ void hgrn_recurrent_step_kernel(float* o, float* h, const float* x, const float* a, int D) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < D) o[c] = h[c] = expf(a[c]) * h[c] + x[c];
}

// One time step for generation: h (D) updated in place, o (D) = h
void hgrn_recurrent_step(float* o, float* h, const float* x, const float* a, int D) {
    hgrn_recurrent_step_kernel<<<ceil_div(D, 256), 256>>>(o, h, x, a, D);
    cuda_check(cudaGetLastError());
}

// one thread per (b, c)
__global__ void hgrn_recurrent_forward_kernel(float* h, const float* x, const float* a, int B, int T, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float state = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t r = (b * T + t) * D + c;
        state = expf(a[r]) * state + x[r];
        h[r] = state;
    }
}

// h (B,T,D) from x, a (B,T,D)
void hgrn_recurrent_forward(float* h, const float* x, const float* a, int B, int T, int D) {
    hgrn_recurrent_forward_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(h, x, a, B, T, D);
    cuda_check(cudaGetLastError());
}

// one thread per (b, c)
__global__ void hgrn_recurrent_backward_kernel(float* dx, float* da, const float* dout, const float* h,
                                               const float* a, int B, int T, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float g = 0.0f;
    for (int t = T - 1; t >= 0; t--) {
        size_t r = (b * T + t) * D + c;
        float dh = dout[r] + g, decay = expf(a[r]);
        dx[r] = dh;
        da[r] = t > 0 ? dh * decay * h[r - D] : 0.0f;
        g = decay * dh;
    }
}

// Exact backward of hgrn_recurrent_forward. dx, da (B,T,D) overwritten; dout (B,T,D) = dL/dh from
// the outputs. Reverse sweep carrying g = e^{a_{t+1}} ⊙ dh_{t+1}, what reaches h_t through step t+1:
//     dh_t = dout_t + g;   dx_t = dh_t;   da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1};   g = e^{a_t} ⊙ dh_t
void hgrn_recurrent_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D) {
    hgrn_recurrent_backward_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(dx, da, dout, h, a, B, T, D);
    cuda_check(cudaGetLastError());
}

// HGRN, chunked scan (training): the same recurrence, parallel over time as well as over the batch.
// Time is cut into NC chunks of C steps; G_t = chunk-local inclusive cumsum of a (≤ 0), G_L its value
// at the chunk's last row:
//   1. every chunk scans itself from a zero state, h̃_t = e^{a_t} h̃_{t−1} + x_t   (chunks in parallel)
//   2. the states entering the chunks, one vector each, are carried from chunk to chunk:
//      h_in(c+1) = e^{G_L(c)} h_in(c) + h̃_L(c)                                   (sequential, O(NC D))
//   3. every chunk adds its decayed entering state, h_t = h̃_t + e^{G_t} h_in(c)  (chunks in parallel)
// Only sums within one chunk are exponentiated, so nothing overflows. (The recurrence is O(T D)
// either way: chunking buys parallelism over time, which matters when B is small.)
// Passes 1 and 3 run a thread per (b, chunk, c), pass 2 a thread per (b, c).

// pass 1: h̃ into h, G_L (B,NC,D)
__global__ void hgrn_chunk_local_scan_kernel(float* h, float* GL, const float* x, const float* a, int B, int T, int D,
                                             int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float G = 0.0f;
    for (int i = 0; i < n; i++) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        h[r] = (i ? expf(a[r]) * h[r - D] : 0.0f) + x[r];
        G += a[r];
    }
    GL[idx] = G;
}

// pass 2: h_in (B,NC,D)
__global__ void hgrn_chunk_carry_kernel(float* h_in, const float* GL, const float* h, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float hin = 0.0f;
    h_in[b * NC * D + c] = 0.0f;
    for (int ch = 1; ch < NC; ch++) {
        size_t prev = (b * NC + ch - 1) * D + c;
        const float last = h[(b * T + (size_t)ch * C - 1) * D + c];   // h̃_L of the previous chunk
        hin = expf(GL[prev]) * hin + last;
        h_in[prev + D] = hin;
    }
}

// pass 3: h += e^{G_t} h_in for every chunk but the first
__global__ void hgrn_chunk_add_kernel(float* h, const float* h_in, const float* a, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    if (ch == 0) return;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float hin = h_in[idx], G = 0.0f;
    for (int i = 0; i < n; i++) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        G += a[r];
        h[r] += expf(G) * hin;
    }
}

// h (B,T,D) from x, a (B,T,D). Scratch: G_L and h_in (B,NC,D)
void hgrn_chunk_forward(float* h, const float* x, const float* a, int B, int T, int D, int C) {
    int NC = ceil_div(T, C);
    size_t n = (size_t)B * NC * D;
    float* GL = device_scratch(SCRATCH_HGRN, 2 * n);
    float* h_in = GL + n;
    hgrn_chunk_local_scan_kernel<<<ceil_div(n, 256), 256>>>(h, GL, x, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_carry_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(h_in, GL, h, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_add_kernel<<<ceil_div(n, 256), 256>>>(h, h_in, a, B, T, D, C);
    cuda_check(cudaGetLastError());
}

// Backward of hgrn_chunk_forward: the reverse sweep dh_t = dout_t + e^{a_{t+1}} dh_{t+1}, chunked the
// same way. With R_t = Σ_{s=t+1..L} a_s (the decay from t to the chunk's last row L, ≤ 0):
//   1. every chunk sweeps itself from zero, d̃_t = dout_t + e^{a_{t+1}} d̃_{t+1}   (chunks in parallel)
//   2. the gradient entering chunk c from the right, g(c) = e^{a_F(c+1)} dh_F(c+1) at the first row F
//      of the next chunk, is carried from the last chunk to the first: dh_F(c) = d̃_F(c) + e^{R_F(c)} g(c)
//   3. dh_t = d̃_t + e^{R_t} g(c);  dx_t = dh_t;  da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1}   (chunks in parallel)
// Passes 1 and 3 run a thread per (b, chunk, c), pass 2 a thread per (b, c).

// pass 1: d̃ into dx, R_F (B,NC,D)
__global__ void hgrn_chunk_local_grad_kernel(float* dx, float* RF, const float* dout, const float* a, int B, int T,
                                             int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float R = 0.0f;
    for (int i = n - 1; i >= 0; i--) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        dx[r] = dout[r] + (i < n - 1 ? expf(a[r + D]) * dx[r + D] : 0.0f);
        if (i > 0) R += a[r];
    }
    RF[idx] = R;
}

// pass 2: g_in (B,NC,D)
__global__ void hgrn_chunk_grad_carry_kernel(float* g_in, const float* RF, const float* dx, const float* a, int B,
                                             int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = b D + c
    if (idx >= (size_t)B * D) return;
    size_t b = idx / D, c = idx % D;
    float g = 0.0f;
    g_in[(b * NC + NC - 1) * D + c] = 0.0f;
    for (int ch = NC - 2; ch >= 0; ch--) {
        // dh at the first row of chunk ch+1, then through its decay into chunk ch
        size_t next = (b * NC + ch + 1) * D + c, r = (b * T + (size_t)(ch + 1) * C) * D + c;
        g = expf(a[r]) * (dx[r] + expf(RF[next]) * g);
        g_in[next - D] = g;
    }
}

// pass 3: dx += e^{R_t} g, and da
__global__ void hgrn_chunk_grad_finish_kernel(float* dx, float* da, const float* g_in, const float* h, const float* a,
                                              int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = (b NC + ch) D + c
    if (idx >= (size_t)B * NC * D) return;
    size_t bc = idx / D, c = idx % D;
    int ch = bc % NC, b = bc / NC;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float g = g_in[idx], R = 0.0f;
    for (int i = n - 1; i >= 0; i--) {
        size_t r = ((size_t)b * T + t0 + i) * D + c;
        float decay = expf(a[r]);
        dx[r] += expf(R) * g;
        da[r] = t0 + i > 0 ? dx[r] * decay * h[r - D] : 0.0f;
        R += a[r];
    }
}

// dx, da (B,T,D) overwritten; dout (B,T,D); h, a (B,T,D) from the forward pass. Scratch: R_F and
// g_in (B,NC,D)
void hgrn_chunk_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D, int C) {
    int NC = ceil_div(T, C);
    size_t n = (size_t)B * NC * D;
    float* RF = device_scratch(SCRATCH_HGRN, 2 * n);
    float* g_in = RF + n;
    hgrn_chunk_local_grad_kernel<<<ceil_div(n, 256), 256>>>(dx, RF, dout, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_grad_carry_kernel<<<ceil_div((size_t)B * D, 256), 256>>>(g_in, RF, dx, a, B, T, D, C);
    cuda_check(cudaGetLastError());
    hgrn_chunk_grad_finish_kernel<<<ceil_div(n, 256), 256>>>(dx, da, g_in, h, a, B, T, D, C);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// The delta rule (DeltaNet, LAYERS.md §5) and the gated delta rule (Gated DeltaNet, §6):
// delta_recurrent_step / _forward / _backward, delta_chunk_forward / _backward
// ----------------------------------------------------------------------------
// The delta rule (DeltaNet, LAYERS.md §5) and the gated delta rule (Gated DeltaNet, §6), recurrent
// form. Per head, S ∈ R^{K×V}; q, k are L2-normalised, β ∈ (0,1), g ≤ 0 (no decay for DeltaNet):
//     S'_{t−1} = e^{g_t} S_{t−1}             decay first
//     u_t = v_t − S'_{t−1}ᵀ k_t              the prediction error of the decayed state
//     S_t = S'_{t−1} + β_t k_t u_tᵀ          = e^{g_t} (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ
//     o_t = S_tᵀ (scale q_t)
//
// On the GPU every update of S is independent per value column j (kᵀS is a sum over K within the
// column), so a block owns DELTA_VT columns of one head's state and loops over time. Each column
// belongs to DELTA_KSPLIT consecutive lanes of one warp; lane ks holds rows ks, ks + DELTA_KSPLIT, …
// so a sum over K is a few shuffles, and a lane's rows of S (and of dL/dS) are touched by it alone:
// they live in "lane-private" arrays, entry m (row ks + DELTA_KSPLIT m) at [m · DELTA_THREADS], which
// needs no synchronisation. Sums over V (dq, dk, dβ, dg in the backward) are summed per block in a
// fixed order, then over the blocks' value tiles by a second kernel: no atomics, the same bits each run.
#define DELTA_KSPLIT 8                                  // lanes per value column (a power of two ≤ 32)
#define DELTA_VT 16                                     // value columns per block
#define DELTA_THREADS (DELTA_KSPLIT * DELTA_VT)         // 128
#define DELTA_WARPS (DELTA_THREADS / 32)

// Sum over the lanes of one value column (a sum over K); every lane of the column gets it.
__device__ float delta_column_sum(float x) {
    for (int o = DELTA_KSPLIT / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the value columns of one warp, lane ks of each; every lane gets it.
__device__ float delta_warp_column_sum(float x) {
    for (int o = DELTA_KSPLIT; o < 32; o *= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sᵀx for this lane's value column: S lane-private (K rows), x (K); every lane of the column gets it.
__device__ float delta_column_dot(const float* S, const float* x, int K) {
    float s = 0.0f;
    for (int m = 0, r = threadIdx.x % DELTA_KSPLIT; r < K; m++, r += DELTA_KSPLIT) s += S[m * DELTA_THREADS] * x[r];
    return delta_column_sum(s);
}

// One head, one step, this lane's value column: S_new = α S_old + β k u with u = v − α S_oldᵀ k,
// returned to every lane of the column. S_new, S_old lane-private (K rows; may be the same); k (K);
// v, the column's entry of v. α = e^{g}.
__device__ float delta_head_update(float* S_new, const float* S_old, const float* k, float v, float beta,
                                   float alpha, int K) {
    float u = v - alpha * delta_column_dot(S_old, k, K);
    for (int m = 0, r = threadIdx.x % DELTA_KSPLIT; r < K; m++, r += DELTA_KSPLIT)
        S_new[m * DELTA_THREADS] = alpha * S_old[m * DELTA_THREADS] + beta * k[r] * u;
    return u;
}

// Floats of one lane-private K-row array for the whole block
__host__ __device__ static size_t delta_lane_floats(int K) {
    return (size_t)((K + DELTA_KSPLIT - 1) / DELTA_KSPLIT) * DELTA_THREADS;
}

// A kernel may use more than the default 48 KiB of dynamic shared memory only when allowed to
// (H100 / H200: up to 227 KiB per block).
static void delta_allow_smem(const void* kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// grid (V/DELTA_VT, H), block DELTA_THREADS, dynamic smem: the block's columns of S, lane-private
__global__ void delta_recurrent_step_kernel(float* o, float* S, const float* q, const float* k, const float* v,
                                            const float* beta, const float* g, int K, int V, float scale) {
    extern __shared__ float smem[];
    float* Sl = smem + threadIdx.x;
    int h = blockIdx.y, ks = threadIdx.x % DELTA_KSPLIT, j = blockIdx.x * DELTA_VT + threadIdx.x / DELTA_KSPLIT;
    bool active = j < V;   // the last tile may be partial; its idle columns stay zero
    float* Sh = S + (size_t)h * K * V + j;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) Sl[m * DELTA_THREADS] = active ? Sh[(size_t)r * V] : 0.0f;
    delta_head_update(Sl, Sl, k + h * K, active ? v[h * V + j] : 0.0f, beta[h], g ? expf(g[h]) : 1.0f, K);
    float oj = scale * delta_column_dot(Sl, q + h * K, K);
    if (!active) return;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) Sh[(size_t)r * V] = Sl[m * DELTA_THREADS];
    if (ks == 0) o[h * V + j] = oj;
}

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k (H,K); v (H,V); beta (H);
// g (H) log-decays, or NULL for none (DeltaNet)
void delta_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int H, int K, int V, float scale) {
    delta_recurrent_step_kernel<<<dim3(ceil_div(V, DELTA_VT), H), DELTA_THREADS, delta_lane_floats(K) * sizeof(float)>>>(
        o, S, q, k, v, beta, g, K, V, scale);
    cuda_check(cudaGetLastError());
}

// grid (V/DELTA_VT, H, B), block DELTA_THREADS, dynamic smem: the block's columns of S, lane-private
__global__ void delta_recurrent_forward_kernel(float* o, const float* q, const float* k, const float* v,
                                               const float* beta, const float* g, int T, int H, int K, int V,
                                               float scale) {
    extern __shared__ float smem[];
    float* S = smem + threadIdx.x;
    int h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT;
    int j = blockIdx.x * DELTA_VT + threadIdx.x / DELTA_KSPLIT;
    bool active = j < V;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] = 0.0f;
    for (int t = 0; t < T; t++) {
        size_t row = ((size_t)b * T + t) * H + h;
        delta_head_update(S, S, k + row * K, active ? v[row * V + j] : 0.0f, beta[row], g ? expf(g[row]) : 1.0f, K);
        float oj = scale * delta_column_dot(S, q + row * K, K);
        if (active && ks == 0) o[row * V + j] = oj;
    }
}

// o (B,T,H,V) from q, k (B,T,H,K), v (B,T,H,V), beta, g (B,T,H) (g may be NULL), zero initial state
void delta_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* beta,
                             const float* g, int B, int T, int H, int K, int V, float scale) {
    delta_recurrent_forward_kernel<<<dim3(ceil_div(V, DELTA_VT), H, B), DELTA_THREADS,
                                     delta_lane_floats(K) * sizeof(float)>>>(o, q, k, v, beta, g, T, H, K, V, scale);
    cuda_check(cudaGetLastError());
}

// One reverse step of the exact backward (LAYERS.md §5.5, §6.4) on this lane's value column. D
// (lane-private) holds dL/dS_t on entry and dL/dS_{t−1} on exit; S_prev = S_{t−1} (before its decay),
// S_t the state after the step (lane-private); u, dout the column's entries of u_t, do_t; alpha = e^{g_t}:
//     D += scale q doᵀ;   dq = scale S_t do
//     r = Dᵀ k;   dβ = u·r;   du = β r;   dv = du
//     dk = β D u − S' du;   D −= k duᵀ  (now dL/dS');   dg = Σ S' ⊙ D;   D = alpha D
// (S' = alpha S_prev). Returns du. dq, dk (K), dβ and dg are sums over all value columns: this
// warp's share goes to red = { dq (DELTA_WARPS,K), dk (DELTA_WARPS,K), dβ (DELTA_WARPS), dg (DELTA_WARPS) }.
__device__ float delta_backward_step(float* D, float* red, float dout, const float* q, const float* k, float u,
                                     const float* S_prev, const float* S_t, float beta, float alpha, int K,
                                     float scale) {
    int ks = threadIdx.x % DELTA_KSPLIT, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int MR = (K + DELTA_KSPLIT - 1) / DELTA_KSPLIT;   // the same count for every lane, so the shuffles below line up
    float *red_dq = red, *red_dk = red + DELTA_WARPS * K, *red_db = red + 2 * DELTA_WARPS * K;
    float* red_dg = red_db + DELTA_WARPS;
    float rk = 0.0f;
    for (int m = 0; m < MR; m++) {
        int r = ks + m * DELTA_KSPLIT;
        float sdo = 0.0f;
        if (r < K) {
            float* Dr = D + m * DELTA_THREADS;
            *Dr += scale * q[r] * dout;
            rk += *Dr * k[r];
            sdo = scale * S_t[m * DELTA_THREADS] * dout;
        }
        sdo = delta_warp_column_sum(sdo);
        if (lane < DELTA_KSPLIT && r < K) red_dq[warp * K + r] = sdo;   // the warp's first column writes
    }
    float rj = delta_column_sum(rk), du = beta * rj;
    float dbeta = delta_warp_column_sum(u * rj), gate = 0.0f;
    for (int m = 0; m < MR; m++) {
        int r = ks + m * DELTA_KSPLIT;
        float dk = 0.0f;
        if (r < K) {
            float* Dr = D + m * DELTA_THREADS;
            float sp = S_prev[m * DELTA_THREADS];
            dk = beta * *Dr * u - alpha * sp * du;
            *Dr -= k[r] * du;
            gate += sp * *Dr;
            *Dr *= alpha;
        }
        dk = delta_warp_column_sum(dk);
        if (lane < DELTA_KSPLIT && r < K) red_dk[warp * K + r] = dk;
    }
    gate = delta_warp_column_sum(delta_column_sum(gate));
    if (lane == 0) {
        red_db[warp] = dbeta;
        red_dg[warp] = alpha * gate;
    }
    return du;
}

// The reverse sweep shared by both backwards. grid (V/DELTA_VT, H, B), block DELTA_THREADS; dynamic
// smem: D lane-private, then two red buffers (delta_backward_step) used by alternate steps: while
// threads still sum step t's buffer, the warps fill the other with step t − 1, and reach step t's
// buffer again only past the next __syncthreads, so one per step suffices. Per chunk (from the last), the chunk's states S_0..S_n and u are
// recomputed from its entering state (states (B,H,NC,K,V), or zero when states is NULL) into this
// block's part of work: S_i lane-private at [i · lanefloats], u_i at [(C+1) · lanefloats + i · DELTA_THREADS].
// dv (B,T,H,V) is written whole; the sums over columns go per value tile to part_dq, part_dk
// (tiles,B,T,H,K) and part_db, part_dg (tiles,B,T,H).
__global__ void delta_backward_kernel(float* dv, float* part_dq, float* part_dk, float* part_db, float* part_dg,
                                      float* work, const float* dout, const float* states, const float* q,
                                      const float* k, const float* v, const float* beta, const float* g, int B,
                                      int T, int H, int K, int V, int C, float scale) {
    extern __shared__ float smem[];
    int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT;
    int j = tile * DELTA_VT + threadIdx.x / DELTA_KSPLIT, NC = (T + C - 1) / C;
    bool active = j < V;   // idle columns of a partial tile keep S = D = 0 and add nothing
    size_t lanefloats = delta_lane_floats(K), red_floats = DELTA_WARPS * (2 * (size_t)K + 2);
    size_t block = ((size_t)b * H + h) * gridDim.x + tile, nk = (size_t)B * T * H * K, nr = (size_t)B * T * H;
    float* D = smem + threadIdx.x;
    float* red = smem + lanefloats;
    float* S = work + block * ((C + 1) * lanefloats + (size_t)C * DELTA_THREADS) + threadIdx.x;
    float* u = S + (C + 1) * lanefloats;
    part_dq += tile * nk;
    part_dk += tile * nk;
    part_db += tile * nr;
    part_dg += tile * nr;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) D[m * DELTA_THREADS] = 0.0f;
    for (int ch = NC - 1; ch >= 0; ch--) {
        int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
        const float* S0 = states ? states + (((size_t)b * H + h) * NC + ch) * K * V + j : NULL;
        for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT)
            S[m * DELTA_THREADS] = (S0 && active) ? S0[(size_t)r * V] : 0.0f;
        for (int i = 0; i < n; i++) {
            size_t row = ((size_t)b * T + t0 + i) * H + h;
            u[i * DELTA_THREADS] = delta_head_update(S + (i + 1) * lanefloats, S + i * lanefloats, k + row * K,
                                                     active ? v[row * V + j] : 0.0f, beta[row],
                                                     g ? expf(g[row]) : 1.0f, K);
        }
        for (int i = n - 1; i >= 0; i--) {
            int t = t0 + i;
            size_t row = ((size_t)b * T + t) * H + h;
            float* buf = red + (t & 1) * red_floats;
            float alpha = g ? expf(g[row]) : 1.0f;
            float du = delta_backward_step(D, buf, active ? dout[row * V + j] : 0.0f, q + row * K, k + row * K,
                                           u[i * DELTA_THREADS], S + i * lanefloats, S + (i + 1) * lanefloats,
                                           beta[row], alpha, K, scale);
            if (active && ks == 0) dv[row * V + j] = du;
            __syncthreads();
            // the block's sums over its columns, warps in order
            const float *red_dq = buf, *red_dk = buf + DELTA_WARPS * K, *red_db = buf + 2 * DELTA_WARPS * K;
            const float* red_dg = red_db + DELTA_WARPS;
            for (int r = threadIdx.x; r < K; r += DELTA_THREADS) {
                float sq = 0.0f, sk = 0.0f;
                for (int w = 0; w < DELTA_WARPS; w++) {
                    sq += red_dq[w * K + r];
                    sk += red_dk[w * K + r];
                }
                part_dq[row * K + r] = sq;
                part_dk[row * K + r] = sk;
            }
            if (threadIdx.x == 0) {
                float sb = 0.0f, sg = 0.0f;
                for (int w = 0; w < DELTA_WARPS; w++) {
                    sb += red_db[w];
                    sg += red_dg[w];
                }
                part_db[row] = sb;
                if (g) part_dg[row] = sg;
            }
        }
    }
}

// out (n) = Σ_tile part (tiles, n), the value tiles in order
__global__ void delta_sum_tiles_kernel(float* out, const float* part, int tiles, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = 0.0f;
    for (int tile = 0; tile < tiles; tile++) s += part[tile * n + i];
    out[i] = s;
}

// Both backwards: C-step chunks, each entered with its state from states (B,H,NC,K,V), or one chunk
// of C = T steps from the zero state when states is NULL. Shapes as delta_chunk_backward.
static void delta_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                           const float* states, const float* q, const float* k, const float* v, const float* beta,
                           const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int tiles = ceil_div(V, DELTA_VT);
    size_t nk = (size_t)B * T * H * K, nr = (size_t)B * T * H, lanefloats = delta_lane_floats(K);
    size_t per_block = (C + 1) * lanefloats + (size_t)C * DELTA_THREADS;
    float* work = device_scratch(SCRATCH_DELTA0, per_block * B * H * tiles);
    float* part = device_scratch(SCRATCH_DELTA1, tiles * (2 * nk + 2 * nr));
    float *part_dq = part, *part_dk = part + tiles * nk, *part_db = part + 2 * tiles * nk;
    float* part_dg = part_db + tiles * nr;
    size_t smem = (lanefloats + 2 * DELTA_WARPS * (2 * (size_t)K + 2)) * sizeof(float);
    delta_allow_smem((const void*)delta_backward_kernel, smem);
    delta_backward_kernel<<<dim3(tiles, H, B), DELTA_THREADS, smem>>>(dv, part_dq, part_dk, part_db, part_dg, work,
                                                                     dout, states, q, k, v, beta, g, B, T, H, K, V,
                                                                     C, scale);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nk, 256), 256>>>(dq, part_dq, tiles, nk);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nk, 256), 256>>>(dk, part_dk, tiles, nk);
    cuda_check(cudaGetLastError());
    delta_sum_tiles_kernel<<<ceil_div(nr, 256), 256>>>(dbeta, part_db, tiles, nr);
    cuda_check(cudaGetLastError());
    if (g) {
        delta_sum_tiles_kernel<<<ceil_div(nr, 256), 256>>>(dg, part_dg, tiles, nr);
        cuda_check(cudaGetLastError());
    }
}

// Exact backward of delta_recurrent_forward, the readable ground truth for the chunkwise backward:
// a forward sweep keeps every state, then delta_backward_step runs from t = T−1 down to 0 (one
// chunk of T steps from the zero state).
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_recurrent_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                              const float* q, const float* k, const float* v, const float* beta, const float* g,
                              int B, int T, int H, int K, int V, float scale) {
    delta_backward(dq, dk, dv, dbeta, dg, dout, NULL, q, k, v, beta, g, B, T, H, K, V, T, scale);
}

// The delta rule, chunkwise-parallel (training; LAYERS.md §6.3, the WY / UT form). For a chunk of
// n ≤ C rows entered with state S, G = chunk-local inclusive cumsum of g (0 for DeltaNet),
// Γ_ij = e^{G_i − G_j} for j ≤ i (a difference ≤ 0, never a factored e^{G_i} e^{−G_j}):
//     M      = strictly_lower( diag(β) (K Kᵀ ⊙ Γ) )
//     V_new  = (I + M)^{−1} diag(β) (V − diag(e^G) K S)      the UT transform, by forward substitution
//     O      = scale [ diag(e^G) Q S + ((Q Kᵀ) ⊙ Γ ⊙ lower_incl) V_new ]
//     S_next = e^{G_n} S + (diag(e^{G_n − G}) K)ᵀ V_new
// Row i of V_new is β_i u_i, the recurrence's scaled prediction error. On the GPU three kernels:
// the cumulative gates, then M and P = scale (Q Kᵀ) ⊙ Γ for every chunk at once (they do not depend
// on S), then the sweep over chunks that carries S, a block per value tile as in the recurrent form.

// G (B,H,T) = chunk-local inclusive cumsum of g (B,T,H), zero when g is NULL. One thread per chunk.
__global__ void delta_chunk_gates_kernel(float* G, const float* g, int B, int T, int H, int C) {
    int NC = (T + C - 1) / C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // ((b·H + h)·NC + ch)
    if (idx >= (size_t)B * H * NC) return;
    int ch = idx % NC, h = idx / NC % H, b = idx / NC / H, t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    float acc = 0.0f;
    for (int i = 0; i < n; i++) {
        acc += g ? g[((size_t)b * T + t0 + i) * H + h] : 0.0f;
        G[((size_t)b * H + h) * T + t0 + i] = acc;
    }
}

// Per chunk, M_il = β_i (k_i·k_l) Γ_il for l < i and P_il = scale (q_i·k_l) Γ_il for l ≤ i, into
// M, P (B,H,NC,C,C); entries above those diagonals are not written (never read). grid (tiles², NC,
// B·H) over 32×32 tiles of the C×C matrix, block 256: thread (tx, ty) computes rows ty + 8a, column tx
// of its tile, the K dimension staged through shared memory 32 at a time.
__global__ void delta_chunk_tril_kernel(float* M, float* P, const float* q, const float* k, const float* beta,
                                        const float* G, int T, int H, int K, int C, float scale) {
    __shared__ float qi_s[32][33], ki_s[32][33], kl_s[32][33];   // +1: column reads hit distinct banks
    int tiles = (C + 31) / 32, ti = blockIdx.x / tiles, tl = blockIdx.x % tiles;
    int ch = blockIdx.y, bh = blockIdx.z, b = bh / H, h = bh % H, NC = gridDim.y;
    int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
    if (tl > ti || ti * 32 >= n) return;   // the whole block: above the diagonal, or past a partial chunk
    int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    float kk[4] = {0.0f, 0.0f, 0.0f, 0.0f}, qk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c0 = 0; c0 < K; c0 += 32) {
        int c = c0 + tx;
        for (int a = 0; a < 4; a++) {
            int y = ty + 8 * a, ri = ti * 32 + y, rl = tl * 32 + y;
            size_t oi = (((size_t)b * T + t0 + ri) * H + h) * K + c, ol = (((size_t)b * T + t0 + rl) * H + h) * K + c;
            qi_s[y][tx] = ri < n && c < K ? q[oi] : 0.0f;
            ki_s[y][tx] = ri < n && c < K ? k[oi] : 0.0f;
            kl_s[y][tx] = rl < n && c < K ? k[ol] : 0.0f;
        }
        __syncthreads();
        for (int cc = 0; cc < 32; cc++) {
            float kl = kl_s[tx][cc];
            for (int a = 0; a < 4; a++) {
                kk[a] += ki_s[ty + 8 * a][cc] * kl;
                qk[a] += qi_s[ty + 8 * a][cc] * kl;
            }
        }
        __syncthreads();
    }
    const float* Gh = G + (size_t)bh * T + t0;
    int l = tl * 32 + tx;
    for (int a = 0; a < 4; a++) {
        int i = ti * 32 + ty + 8 * a;
        if (i >= n || l > i) continue;
        float gamma = expf(Gh[i] - Gh[l]);
        size_t idx = (((size_t)bh * NC + ch) * C + i) * C + l;
        P[idx] = scale * qk[a] * gamma;
        if (l < i) M[idx] = beta[((size_t)b * T + t0 + i) * H + h] * kk[a] * gamma;
    }
}

// The sweep over chunks. grid (V/DELTA_VT, H, B), block DELTA_THREADS, no __syncthreads (each warp
// owns its columns). Dynamic smem: S lane-private, then V_new for the block's columns, column c's
// rows at [c · vstride + i] (vstride ≡ 8 mod 32: a warp's 4 columns × 8 lanes read 32 distinct banks).
// Row i of a chunk, per column, one pass: V_new_i = β_i (v_i − e^{G_i} Sᵀk_i) − Σ_{l<i} M_il V_new_l,
// then o_i = scale e^{G_i} Sᵀq_i + Σ_{l≤i} P_il V_new_l; the lanes of the column split the sums.
__global__ void delta_chunk_forward_kernel(float* o, float* states, const float* q, const float* k, const float* v,
                                           const float* beta, const float* G, const float* M, const float* P,
                                           int T, int H, int K, int V, int C, int vstride, float scale) {
    extern __shared__ float smem[];
    int h = blockIdx.y, b = blockIdx.z, ks = threadIdx.x % DELTA_KSPLIT, col = threadIdx.x / DELTA_KSPLIT;
    int j = blockIdx.x * DELTA_VT + col, NC = (T + C - 1) / C;
    bool active = j < V;   // idle columns of a partial tile keep S = V_new = 0
    size_t bh = (size_t)b * H + h;
    float* S = smem + threadIdx.x;
    float* vn = smem + delta_lane_floats(K) + col * vstride;
    for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] = 0.0f;
    for (int ch = 0; ch < NC; ch++) {
        int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
        float* St = states + (bh * NC + ch) * K * V + j;   // the state entering the chunk, kept for the backward
        if (active)
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) St[(size_t)r * V] = S[m * DELTA_THREADS];
        const float *Mc = M + (bh * NC + ch) * C * C, *Pc = P + (bh * NC + ch) * C * C, *Gc = G + bh * T + t0;
        for (int i = 0; i < n; i++) {
            size_t row = ((size_t)b * T + t0 + i) * H + h;
            float eg = expf(Gc[i]), bt = beta[row], kS = 0.0f, qS = 0.0f, ms = 0.0f, ps = 0.0f;
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) {
                kS += k[row * K + r] * S[m * DELTA_THREADS];
                qS += q[row * K + r] * S[m * DELTA_THREADS];
            }
            for (int l = ks; l < i; l += DELTA_KSPLIT) {
                ms += Mc[(size_t)i * C + l] * vn[l];
                ps += Pc[(size_t)i * C + l] * vn[l];
            }
            float vnew = bt * (active ? v[row * V + j] : 0.0f) - delta_column_sum(bt * eg * kS + ms);
            float oi = delta_column_sum(scale * eg * qS + ps) + Pc[(size_t)i * C + i] * vnew;
            if (ks == 0) {
                vn[i] = vnew;
                if (active) o[row * V + j] = oi;
            }
            __syncwarp();   // vn[i] visible to the column's other lanes
        }
        // S = e^{G_n} S + Σ_l (k_l e^{G_n − G_l}) V_new_lᵀ
        float decay = expf(Gc[n - 1]);
        for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] *= decay;
        for (int l = 0; l < n; l++) {
            const float* kl = k + (((size_t)b * T + t0 + l) * H + h) * K;
            float w = expf(Gc[n - 1] - Gc[l]) * vn[l];
            for (int m = 0, r = ks; r < K; m++, r += DELTA_KSPLIT) S[m * DELTA_THREADS] += kl[r] * w;
        }
        __syncwarp();   // every lane done reading vn before the next chunk overwrites it
    }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each chunk (kept for the backward);
// q, k (B,T,H,K); v (B,T,H,V); beta, g (B,T,H) (g may be NULL)
void delta_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* beta,
                         const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int NC = ceil_div(T, C), tiles = ceil_div(C, 32), vstride = tiles * 32 + 8;
    size_t bh = (size_t)B * H, cc = (size_t)NC * C * C;   // cc: one head's M or P
    float* G = device_scratch(SCRATCH_DELTA0, bh * T);
    float* M = device_scratch(SCRATCH_DELTA1, bh * cc);
    float* P = device_scratch(SCRATCH_DELTA2, bh * cc);
    delta_chunk_gates_kernel<<<ceil_div(bh * NC, 256), 256>>>(G, g, B, T, H, C);
    cuda_check(cudaGetLastError());
    delta_chunk_tril_kernel<<<dim3(tiles * tiles, NC, B * H), 256>>>(M, P, q, k, beta, G, T, H, K, C, scale);
    cuda_check(cudaGetLastError());
    size_t smem = (delta_lane_floats(K) + (size_t)DELTA_VT * vstride) * sizeof(float);
    delta_allow_smem((const void*)delta_chunk_forward_kernel, smem);
    delta_chunk_forward_kernel<<<dim3(ceil_div(V, DELTA_VT), H, B), DELTA_THREADS, smem>>>(
        o, states, q, k, v, beta, G, M, P, T, H, K, V, C, vstride, scale);
    cuda_check(cudaGetLastError());
}

// Backward of delta_chunk_forward: the exact recurrent backward (delta_backward_step), a chunk at a
// time from the last, carrying D = dL/dS across chunk boundaries. Each chunk's ≤ C per-step states are
// first recomputed from its stored entering state into scratch, then swept in reverse. Memory is
// (T/C + C)·K·V per head instead of T·K·V (LAYERS.md §6.4; inverting the recurrence instead would be
// unstable: it divides by e^g, and I − βkkᵀ is singular at β‖k‖² = 1). The work is O(T K V), the
// order of the forward pass.
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_chunk_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                          const float* states, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    delta_backward(dq, dk, dv, dbeta, dg, dout, states, q, k, v, beta, g, B, T, H, K, V, C, scale);
}

// ----------------------------------------------------------------------------
// activations: one struct per layer, sized for (B,T) at allocation; every pointer is device memory

// Widths per mixer are in model_alloc_acts; Dk, Dv = all heads' key / value dims, H heads.
typedef struct {
    float *ln1, *ln1_rstd;                  // (N,d), (N)   input of the mixer
    // what the mixer's core reads
    float *q, *k, *v;                       // (N,Dk) (N,Dk) (N,Dv). gla: projections; hgrn2: q after silu,
                                            // k = 1 − e^a; retnet: q, k after RoPE; delta rule: after the
                                            // conv and silu (q, k also L2-normalised); hgrn: v = the gated
                                            // input; attention: roped q (N,H*hd), k, v (N,Hkv*hd)
    float *a;                               // log-decays: gla, hgrn2, retnet (N,Dk); hgrn (N,D); gdn (N,H)
    float *z;                               // output-gate logits (gla, retnet, hgrn, gdn)
    float *states;                          // (B,H,NC,K,V) chunk-entry states of the matrix-state mixers
    float *o, *o_rstd, *o_gated;            // core output (hgrn: h), 1/rms of its norm, normed (and gated)
    // gla
    float *gk1, *gk;                        // (N,R) (N,Dk): low-rank gate, gate logits
    // hgrn, hgrn2
    float *f;                               // (N,D) forget-gate logits
    // pre-activation projections: hgrn2's q and hgrn's i (q_lin); the delta rule's q, k, v (the
    // short convs' inputs)
    float *q_lin, *k_lin, *v_lin;
    // delta rule
    float *q_rinv, *k_rinv;                 // (N,H) 1/√(Σx² + 1e-6) of the L2 norms
    float *beta;                            // (N,H) σ(W_b x)
    float *gate_lin;                        // (N,H) W_a x (gdn)
    // attention
    float *att;                             // (B,H,T,T) softmax probabilities (upper triangle 0)
    float *att_out;                         // (N,H*hd)
    float *mixer;                           // (N,d) mixer output
    float *res1;                            // (N,d) residual after the mixer
    float *ln2, *ln2_rstd;                  // (N,d), (N)
    float *mlp_gate, *mlp_up, *mlp_h;       // (N,I) each; h = silu(gate) ⊙ up
    float *mlp;                             // (N,d) MLP output
    float *res2;                            // (N,d) block output
} LayerActs;

// the weights: views into one flat device buffer, following param_table
typedef struct {
    float *embed, *norm, *lm_head;          // lm_head == embed when tied
    float *lower_bounds;                    // (L,d) hgrn/hgrn2 forget-gate lower bounds, or NULL
    float* layer[MAX_LAYERS][NUM_LAYER_SLOTS];
} Weights;

typedef struct {
    Config config;
    ParamSpec specs[MAX_PARAMS];
    int num_specs;
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v;   // (num_params) each, on the device
    Weights w, g;                              // views into params and grads
    int chunk_size;                            // chunk length of the linear mixers in training (C)
    // activations for a (B,T) batch
    int B, T;
    size_t act_floats;                         // memory accounting
    int *inputs, *targets;                     // (N) the batch's token ids, copied to the device by model_forward
    float *embed_out;                          // (N,d)
    float *lower_bound, *lower_softmax;        // (L,d) each: lb and softmax(P) of the lower bounds
    LayerActs acts[MAX_LAYERS];
    float *final_norm, *final_rstd;            // (N,d), (N)
    float *logits;                             // (N,V): logits, then probabilities, then dlogits
    // backward scratch, shared by all layers
    float *dresid, *dln;                       // (N,d) each
    float *dbuf[6];                            // (N, max width) each
    float *dlower_bound;                       // (L,d) dL/dlb, summed over the hgrn/hgrn2 layers
    float loss;                                // on the host
    int n_valid;                               // targets that count in the mean
    int counting_only;                         // model_alloc_acts only counts (model_count_acts)
} Model;

static void weights_point(Weights* w, const Model* m, float* base) {
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        float* ptr = base + p->offset;
        if (p->layer >= 0) w->layer[p->layer][p->slot] = ptr;
        else if (p->slot == G_EMBED) w->embed = ptr;
        else if (p->slot == G_NORM) w->norm = ptr;
        else if (p->slot == G_LOWER_BOUNDS) w->lower_bounds = ptr;
        else w->lm_head = ptr;
    }
    if (m->config.tie_embeddings) w->lm_head = w->embed;
}

// ----------------------------------------------------------------------------
// the GLA layer (LAYERS.md §2): projections, gates, chunkwise core, gated norm, output projection

static int gla_head_k(const Config* c) { return c->gla_dk / c->gla_heads; }
static int gla_head_v(const Config* c) { return c->gla_dv / c->gla_heads; }

// a (n) = logσ(gk) · inv
__global__ void gla_gate_kernel(float* a, const float* gk, size_t n, float inv) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] = logsigmoidf(gk[i]) * inv;
}
// q, k, v, z, and the log-gate a = logσ(W_gk2 W_gk1 x + b) / 16 for N rows of x = ln1 (N,d)
void gla_project_forward(LayerActs* A, float* const* W, const Config* c, int N) {
    int d = c->d_model, Dk = c->gla_dk, Dv = c->gla_dv, R = c->gla_gate_rank;
    matmul_forward(A->q, A->ln1, W[W_GLA_Q], NULL, N, d, Dk);
    matmul_forward(A->k, A->ln1, W[W_GLA_K], NULL, N, d, Dk);
    matmul_forward(A->v, A->ln1, W[W_GLA_V], NULL, N, d, Dv);
    matmul_forward(A->z, A->ln1, W[W_GLA_G], NULL, N, d, Dv);
    matmul_forward(A->gk1, A->ln1, W[W_GLA_GK1], NULL, N, d, R);
    matmul_forward(A->gk, A->gk1, W[W_GLA_GK2], W[W_GLA_GK_BIAS], N, R, Dk);
    float inv = 1.0f / c->gla_gate_normalizer;
    size_t n = (size_t)N * Dk;
    gla_gate_kernel<<<ceil_div(n, 256), 256>>>(A->a, A->gk, n, inv);
    cuda_check(cudaGetLastError());
}

// out (N,d) = W_o · gated_norm(o, z) for N rows
void gla_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    gated_rmsnorm_forward(A->o_gated, A->o_rstd, A->o, A->z, W[W_GLA_G_NORM], N, c->gla_heads, gla_head_v(c), c->norm_eps);
    matmul_forward(out, A->o_gated, W[W_GLA_O], NULL, N, c->gla_dv, c->d_model);
}

void gla_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    int N = B * T, H = c->gla_heads, K = gla_head_k(c), V = gla_head_v(c);
    gla_project_forward(A, m->w.layer[l], c, N);
    gla_chunk_forward(A->o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size, 1.0f / sqrtf((float)K));
    gla_output_forward(A->mixer, A, m->w.layer[l], c, N);
}

// the gate chain: a = logσ(gk) · inv  ->  dgk = da (1 − σ(gk)) · inv, written over da (n)
__global__ void gla_gate_backward_kernel(float* da, const float* gk, size_t n, float inv) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) da[i] *= inv * sigmoidf(-gk[i]);
}
// dout (N,d) = dL/d(mixer output); accumulates into the layer's weight grads and writes dln (N,d)
void gla_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, Dk = c->gla_dk, Dv = c->gla_dv, R = c->gla_gate_rank;
    int H = c->gla_heads, K = gla_head_k(c), V = gla_head_v(c);
    float *do_gated = m->dbuf[0], *d_o = m->dbuf[1], *dz = m->dbuf[2];
    float *dq = m->dbuf[3], *dk = m->dbuf[4], *dv = m->dbuf[5];
    // output projection and gated norm
    cuda_check(cudaMemset(do_gated, 0, (size_t)N * Dv * sizeof(float)));
    matmul_backward(do_gated, dW[W_GLA_O], NULL, dout, A->o_gated, W[W_GLA_O], N, Dv, d);
    gated_rmsnorm_backward(d_o, dz, dW[W_GLA_G_NORM], do_gated, A->o, A->z, W[W_GLA_G_NORM], A->o_rstd, N, H, V);
    // the recurrence; da reuses do_gated's buffer (no longer needed)
    float* da = do_gated;
    gla_chunk_backward(dq, dk, dv, da, d_o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size,
                       1.0f / sqrtf((float)K));
    // gate chain: a = logσ(gk)/16  ->  dgk = da (1 − σ(gk)) / 16, written over da
    float inv = 1.0f / c->gla_gate_normalizer;
    size_t n = (size_t)N * Dk;
    gla_gate_backward_kernel<<<ceil_div(n, 256), 256>>>(da, A->gk, n, inv);
    cuda_check(cudaGetLastError());
    float* dgk1 = d_o;  // (N,R), d_o no longer needed
    cuda_check(cudaMemset(dgk1, 0, (size_t)N * R * sizeof(float)));
    matmul_backward(dgk1, dW[W_GLA_GK2], dW[W_GLA_GK_BIAS], da, A->gk1, W[W_GLA_GK2], N, R, Dk);
    // the five d -> * projections all read ln1
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_GLA_GK1], NULL, dgk1, A->ln1, W[W_GLA_GK1], N, d, R);
    matmul_backward(dln, dW[W_GLA_Q], NULL, dq, A->ln1, W[W_GLA_Q], N, d, Dk);
    matmul_backward(dln, dW[W_GLA_K], NULL, dk, A->ln1, W[W_GLA_K], N, d, Dk);
    matmul_backward(dln, dW[W_GLA_V], NULL, dv, A->ln1, W[W_GLA_V], N, d, Dv);
    matmul_backward(dln, dW[W_GLA_G], NULL, dz, A->ln1, W[W_GLA_G], N, d, Dv);
}

// ----------------------------------------------------------------------------
// the HGRN layer (LAYERS.md §3b): i, f, g = W_i x, W_f x, W_g x (N,D); a = the bounded log-forget of f;
// gated input x̃ = silu(i) ⊙ (1 − e^a) (the input gate tied to the forget gate); h = the elementwise
// recurrence (chunked scan); y = W_o (RMSNorm_D(h) · w ⊙ silu(g)), one norm over the whole D-vector.

// The lower bound of layer l's forget gate (d), or NULL: layer 0, and models without lower bounds
static const float* layer_lower_bound(const Model* m, int l) {
    return (l > 0 && m->w.lower_bounds) ? m->lower_bound + (size_t)l * m->config.d_model : NULL;
}

// x̃ = silu(i) (1 − e^a), all (n)
__global__ void hgrn_input_kernel(float* v, const float* q_lin, const float* a, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = siluf(q_lin[i]) * -expm1f(a[i]);
}
// i (in q_lin), f, g (in z), a and the gated input x̃ (in v) for N rows of x = ln1 (N,d); lb (D) or NULL
void hgrn_project_forward(LayerActs* A, float* const* W, const Config* c, const float* lb, int N) {
    int d = c->d_model, D = c->hgrn_dim;
    matmul_forward(A->q_lin, A->ln1, W[W_HGRN_I], NULL, N, d, D);
    matmul_forward(A->f, A->ln1, W[W_HGRN_F], NULL, N, d, D);
    matmul_forward(A->z, A->ln1, W[W_HGRN_G], NULL, N, d, D);
    forget_gate_forward(A->a, A->f, lb, N, D);
    size_t n = (size_t)N * D;
    hgrn_input_kernel<<<ceil_div(n, 256), 256>>>(A->v, A->q_lin, A->a, n);
    cuda_check(cudaGetLastError());
}

// out (N,d) = W_o · gated_norm(h, g) for N rows
void hgrn_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    gated_rmsnorm_forward(A->o_gated, A->o_rstd, A->o, A->z, W[W_HGRN_G_NORM], N, 1, c->hgrn_dim, c->norm_eps);
    matmul_forward(out, A->o_gated, W[W_HGRN_O], NULL, N, c->hgrn_dim, c->d_model);
}

void hgrn_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    hgrn_project_forward(A, m->w.layer[l], c, layer_lower_bound(m, l), B * T);
    hgrn_chunk_forward(A->o, A->v, A->a, B, T, c->hgrn_dim, m->chunk_size);
    hgrn_output_forward(A->mixer, A, m->w.layer[l], c, B * T);
}

// x̃ = silu(i) (1 − e^a):  da −= dx̃ silu(i) e^a;  di = dx̃ (1 − e^a) silu'(i)  (written over dx̃)
__global__ void hgrn_input_backward_kernel(float* da, float* dx, const float* q_lin, const float* a, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    da[i] -= dx[i] * siluf(q_lin[i]) * exp_fast(a[i]);
    dx[i] *= -expm1f(a[i]) * silu_grad(q_lin[i]);
}
// dout (N,d) = dL/d(mixer output); accumulates into the layer's weight grads (and the lower-bound
// gradient) and writes dln (N,d)
void hgrn_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, D = c->hgrn_dim;
    const float* lb = layer_lower_bound(m, l);
    float *do_gated = m->dbuf[0], *dh = m->dbuf[1], *dg = m->dbuf[2], *dx = m->dbuf[3], *da = m->dbuf[4];
    cuda_check(cudaMemset(do_gated, 0, (size_t)N * D * sizeof(float)));
    matmul_backward(do_gated, dW[W_HGRN_O], NULL, dout, A->o_gated, W[W_HGRN_O], N, D, d);
    gated_rmsnorm_backward(dh, dg, dW[W_HGRN_G_NORM], do_gated, A->o, A->z, W[W_HGRN_G_NORM], A->o_rstd, N, 1, D);
    hgrn_chunk_backward(dx, da, dh, A->o, A->a, B, T, D, m->chunk_size);
    size_t n = (size_t)N * D;
    hgrn_input_backward_kernel<<<ceil_div(n, 256), 256>>>(da, dx, A->q_lin, A->a, n);
    cuda_check(cudaGetLastError());
    forget_gate_backward(da, lb ? m->dlower_bound + (size_t)l * d : NULL, da, A->f, lb, N, D);
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_HGRN_I], NULL, dx, A->ln1, W[W_HGRN_I], N, d, D);
    matmul_backward(dln, dW[W_HGRN_F], NULL, da, A->ln1, W[W_HGRN_F], N, d, D);
    matmul_backward(dln, dW[W_HGRN_G], NULL, dg, A->ln1, W[W_HGRN_G], N, d, D);
}

// ----------------------------------------------------------------------------
// the HGRN2 layer (LAYERS.md §3): GLA's recurrence and chunkwise kernels with
//     q = silu(W_q x),  a = bounded log-forget of W_f x,  k = 1 − e^a,  v = W_i x      (H heads,
// key/forget head dim E = d/H, value head dim d/H, scale E^{−1/2}); y = W_o RMSNorm_d(o), the norm
// over all of d (no output gate).

static int hgrn2_head_dim(const Config* c) { return c->d_model / c->hgrn2_heads; }

// q = silu(q_lin), k = 1 − e^a, all (n)
__global__ void hgrn2_qk_kernel(float* q, float* k, const float* q_lin, const float* a, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    q[i] = siluf(q_lin[i]);
    k[i] = -expm1f(a[i]);
}
// q_lin, q, f, a, k, v for N rows of x = ln1 (N,d); lb (d) or NULL
void hgrn2_project_forward(LayerActs* A, float* const* W, const Config* c, const float* lb, int N) {
    int d = c->d_model;
    matmul_forward(A->q_lin, A->ln1, W[W_HGRN2_Q], NULL, N, d, d);
    matmul_forward(A->f, A->ln1, W[W_HGRN2_F], NULL, N, d, d);
    matmul_forward(A->v, A->ln1, W[W_HGRN2_I], NULL, N, d, d);
    forget_gate_forward(A->a, A->f, lb, N, d);
    size_t n = (size_t)N * d;
    hgrn2_qk_kernel<<<ceil_div(n, 256), 256>>>(A->q, A->k, A->q_lin, A->a, n);
    cuda_check(cudaGetLastError());
}

// out (N,d) = W_o · RMSNorm_d(o) for N rows (eps 1e-5: HGRN2_NORM_EPS)
void hgrn2_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    rmsnorm_forward(A->o_gated, A->o_rstd, A->o, W[W_HGRN2_G_NORM], N, c->d_model, HGRN2_NORM_EPS);
    matmul_forward(out, A->o_gated, W[W_HGRN2_O], NULL, N, c->d_model, c->d_model);
}

void hgrn2_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    int E = hgrn2_head_dim(c);
    hgrn2_project_forward(A, m->w.layer[l], c, layer_lower_bound(m, l), B * T);
    gla_chunk_forward(A->o, A->states, A->q, A->k, A->v, A->a, B, T, c->hgrn2_heads, E, E, m->chunk_size,
                      1.0f / sqrtf((float)E));
    hgrn2_output_forward(A->mixer, A, m->w.layer[l], c, B * T);
}

// k = 1 − e^a adds −dk e^a to the gate's gradient; q = silu(q_lin): dq *= silu'(q_lin). All (n)
__global__ void hgrn2_qk_backward_kernel(float* da, float* dq, const float* dk, const float* a, const float* q_lin,
                                         size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    da[i] -= dk[i] * exp_fast(a[i]);
    dq[i] *= silu_grad(q_lin[i]);
}
void hgrn2_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, E = hgrn2_head_dim(c);
    const float* lb = layer_lower_bound(m, l);
    float *do_norm = m->dbuf[0], *d_o = m->dbuf[1], *da = m->dbuf[2];
    float *dq = m->dbuf[3], *dk = m->dbuf[4], *dv = m->dbuf[5];
    cuda_check(cudaMemset(do_norm, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(do_norm, dW[W_HGRN2_O], NULL, dout, A->o_gated, W[W_HGRN2_O], N, d, d);
    cuda_check(cudaMemset(d_o, 0, (size_t)N * d * sizeof(float)));
    rmsnorm_backward(d_o, dW[W_HGRN2_G_NORM], do_norm, A->o, W[W_HGRN2_G_NORM], A->o_rstd, N, d);
    gla_chunk_backward(dq, dk, dv, da, d_o, A->states, A->q, A->k, A->v, A->a, B, T, c->hgrn2_heads, E, E,
                       m->chunk_size, 1.0f / sqrtf((float)E));
    size_t n = (size_t)N * d;
    hgrn2_qk_backward_kernel<<<ceil_div(n, 256), 256>>>(da, dq, dk, A->a, A->q_lin, n);
    cuda_check(cudaGetLastError());
    forget_gate_backward(da, lb ? m->dlower_bound + (size_t)l * d : NULL, da, A->f, lb, N, d);
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_HGRN2_Q], NULL, dq, A->ln1, W[W_HGRN2_Q], N, d, d);
    matmul_backward(dln, dW[W_HGRN2_F], NULL, da, A->ln1, W[W_HGRN2_F], N, d, d);
    matmul_backward(dln, dW[W_HGRN2_I], NULL, dv, A->ln1, W[W_HGRN2_I], N, d, d);
}

// ----------------------------------------------------------------------------
// the RetNet layer (multi-scale retention, LAYERS.md §4): q, k = RoPE(W_q x), RoPE(W_k x) (H heads of
// K = d/H), v, z = W_v x, W_g x (V = 2d/H); per head the fixed decay γ_h = 1 − 2^{−5−h},
//     S_t = γ_h S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ (scale q_t)
// which is GLA with the constant log-gate log γ_h on every key channel: the GLA kernels run it (the
// gate gradient they also compute is not used). Output as GLA's: gated RMSNorm over V, then W_o.

static int retnet_head_k(const Config* c) { return c->d_model / c->retnet_heads; }
static int retnet_head_v(const Config* c) { return 2 * c->d_model / c->retnet_heads; }

// a (N,d) = log γ_h on every channel of head h (channels h K .. h K + K − 1)
__global__ void retnet_decay_kernel(float* a, int N, int d, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * d) return;
    int h = (int)(i % d) / K;
    a[i] = log1pf(-ldexpf(1.0f, -5 - h));
}
// q, k (roped at positions pos0..pos0+T−1), v, z and the log-gates a (N,d) for B·T rows of x = ln1
void retnet_project_forward(LayerActs* A, float* const* W, const Config* c, int B, int T, int pos0) {
    int N = B * T, d = c->d_model, H = c->retnet_heads, K = retnet_head_k(c);
    matmul_forward(A->q, A->ln1, W[W_RET_Q], NULL, N, d, d);
    matmul_forward(A->k, A->ln1, W[W_RET_K], NULL, N, d, d);
    matmul_forward(A->v, A->ln1, W[W_RET_V], NULL, N, d, 2 * d);
    matmul_forward(A->z, A->ln1, W[W_RET_G], NULL, N, d, 2 * d);
    rope_forward(A->q, B, T, H, K, pos0, c->rope_theta);
    rope_forward(A->k, B, T, H, K, pos0, c->rope_theta);
    retnet_decay_kernel<<<ceil_div((size_t)N * d, 256), 256>>>(A->a, N, d, K);
    cuda_check(cudaGetLastError());
}

// out (N,d) = W_o · gated_norm(o, z) for N rows
void retnet_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    gated_rmsnorm_forward(A->o_gated, A->o_rstd, A->o, A->z, W[W_RET_G_NORM], N, c->retnet_heads, retnet_head_v(c),
                          c->norm_eps);
    matmul_forward(out, A->o_gated, W[W_RET_O], NULL, N, 2 * c->d_model, c->d_model);
}

void retnet_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    int K = retnet_head_k(c);
    retnet_project_forward(A, m->w.layer[l], c, B, T, 0);
    gla_chunk_forward(A->o, A->states, A->q, A->k, A->v, A->a, B, T, c->retnet_heads, K, retnet_head_v(c),
                      m->chunk_size, 1.0f / sqrtf((float)K));
    retnet_output_forward(A->mixer, A, m->w.layer[l], c, B * T);
}

void retnet_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, H = c->retnet_heads, K = retnet_head_k(c), V = retnet_head_v(c);
    float *do_gated = m->dbuf[0], *d_o = m->dbuf[1], *dz = m->dbuf[2];
    float *dq = m->dbuf[3], *dk = m->dbuf[4], *dv = m->dbuf[5];
    cuda_check(cudaMemset(do_gated, 0, (size_t)N * 2 * d * sizeof(float)));
    matmul_backward(do_gated, dW[W_RET_O], NULL, dout, A->o_gated, W[W_RET_O], N, 2 * d, d);
    gated_rmsnorm_backward(d_o, dz, dW[W_RET_G_NORM], do_gated, A->o, A->z, W[W_RET_G_NORM], A->o_rstd, N, H, V);
    // the fixed decay has no gradient: the kernel's gate gradient goes to do_gated's buffer, unused
    gla_chunk_backward(dq, dk, dv, do_gated, d_o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size,
                       1.0f / sqrtf((float)K));
    rope_backward(dq, B, T, H, K, 0, c->rope_theta);
    rope_backward(dk, B, T, H, K, 0, c->rope_theta);
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_RET_Q], NULL, dq, A->ln1, W[W_RET_Q], N, d, d);
    matmul_backward(dln, dW[W_RET_K], NULL, dk, A->ln1, W[W_RET_K], N, d, d);
    matmul_backward(dln, dW[W_RET_V], NULL, dv, A->ln1, W[W_RET_V], N, d, 2 * d);
    matmul_backward(dln, dW[W_RET_G], NULL, dz, A->ln1, W[W_RET_G], N, d, 2 * d);
}

// ----------------------------------------------------------------------------
// the DeltaNet and Gated DeltaNet layers (LAYERS.md §5, §6), one code path (gated = GDN):
//     q, k = L2norm_head(silu(conv(W_q x))), L2norm_head(silu(conv(W_k x)))     (H heads of K)
//     v = silu(conv(W_v x)) (V per head),  β = σ(W_b x) (one per head)
//     GDN: g = −e^{A_log} softplus(W_a x + dt_bias) (per head), output gate z = W_g x
//     o = the (gated) delta rule, scale K^{−1/2}
//     y = W_o (RMSNorm_V(o) · w [⊙ silu(z)]),  w (V) shared by the heads
// Sizes: DeltaNet K = V = d/H; GDN K = gdn_head_dim, V = K · gdn_expand_v.

// softplus(x) = log(1 + e^x), = x above 20 (fla's and torch's threshold); its derivative is σ(x)
__host__ __device__ static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// β = σ(β logits), in place (n)
__global__ void delta_beta_kernel(float* beta, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) beta[i] = sigmoidf(beta[i]);
}
// a (N,H) = −e^{A_log_h} softplus(gate_lin + dt_bias_h)
__global__ void gdn_decay_kernel(float* a, const float* gate_lin, const float* A_log, const float* dt_bias, int N, int H) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * H) return;
    int h = (int)(i % H);
    a[i] = -expf(A_log[h]) * softplusf(gate_lin[i] + dt_bias[h]);
}
// q_lin, k_lin, v_lin (the convs' inputs), β, and for GDN the gate logits gate_lin, the log-decays a
// and the output-gate logits z, for N rows of x = ln1 (N,d)
void delta_project_forward(LayerActs* A, float* const* W, const Config* c, int mixer, int N) {
    int d = c->d_model, H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    matmul_forward(A->q_lin, A->ln1, W[W_DELTA_Q], NULL, N, d, H * K);
    matmul_forward(A->k_lin, A->ln1, W[W_DELTA_K], NULL, N, d, H * K);
    matmul_forward(A->v_lin, A->ln1, W[W_DELTA_V], NULL, N, d, H * V);
    matmul_forward(A->beta, A->ln1, W[W_DELTA_B], NULL, N, d, H);
    size_t n = (size_t)N * H;
    delta_beta_kernel<<<ceil_div(n, 256), 256>>>(A->beta, n);
    cuda_check(cudaGetLastError());
    if (mixer != MIXER_GATED_DELTANET) return;
    matmul_forward(A->gate_lin, A->ln1, W[W_DELTA_A], NULL, N, d, H);
    gdn_decay_kernel<<<ceil_div(n, 256), 256>>>(A->a, A->gate_lin, W[W_DELTA_A_LOG], W[W_DELTA_DT_BIAS], N, H);
    cuda_check(cudaGetLastError());
    matmul_forward(A->z, A->ln1, W[W_DELTA_G], NULL, N, d, H * V);
}

// out (N,d) = W_o · norm(o) for N rows: RMSNorm per head (DeltaNet) or gated by silu(z) (GDN)
void delta_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int mixer, int N) {
    int H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    if (mixer == MIXER_GATED_DELTANET)
        gated_rmsnorm_forward(A->o_gated, A->o_rstd, A->o, A->z, W[W_DELTA_O_NORM], N, H, V, c->norm_eps);
    else
        rmsnorm_forward(A->o_gated, A->o_rstd, A->o, W[W_DELTA_O_NORM], N * H, V, c->norm_eps);
    matmul_forward(out, A->o_gated, W[W_DELTA_O], NULL, N, H * V, c->d_model);
}

void delta_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    int mixer = c->pattern[l], N = B * T, H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    delta_project_forward(A, W, c, mixer, N);
    shortconv_forward(A->q, A->q_lin, W[W_DELTA_Q_CONV], B, T, H * K, c->conv_size);
    shortconv_forward(A->k, A->k_lin, W[W_DELTA_K_CONV], B, T, H * K, c->conv_size);
    shortconv_forward(A->v, A->v_lin, W[W_DELTA_V_CONV], B, T, H * V, c->conv_size);
    l2norm_forward(A->q, A->q_rinv, A->q, (size_t)N * H, K);
    l2norm_forward(A->k, A->k_rinv, A->k, (size_t)N * H, K);
    delta_chunk_forward(A->o, A->states, A->q, A->k, A->v, A->beta, mixer == MIXER_GATED_DELTANET ? A->a : NULL,
                        B, T, H, K, V, m->chunk_size, 1.0f / sqrtf((float)K));
    delta_output_forward(A->mixer, A, W, c, mixer, N);
}

// β = σ(b): db = dβ β (1 − β), in place (n)
__global__ void delta_beta_backward_kernel(float* dbeta, const float* beta, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dbeta[i] *= beta[i] * (1.0f - beta[i]);
}
// GDN's gate chain per (n, h): term = dg a (the A_log gradient's rows), then dg becomes d(gate_lin) =
// dg · (−e^{A_log} σ(gate_lin + dt_bias)) in place (the dt_bias gradient's rows)
__global__ void gdn_gate_backward_kernel(float* dg, float* term, const float* a, const float* gate_lin,
                                         const float* A_log, const float* dt_bias, int N, int H) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * H) return;
    int h = (int)(i % H);
    term[i] = dg[i] * a[i];
    dg[i] *= -expf(A_log[h]) * sigmoidf(gate_lin[i] + dt_bias[h]);
}
void delta_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int mixer = c->pattern[l], gated = mixer == MIXER_GATED_DELTANET, N = B * T, d = c->d_model, H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    float *do_norm = m->dbuf[0], *d_o = m->dbuf[1], *dz = m->dbuf[2];
    float *dq = m->dbuf[3], *dk = m->dbuf[4], *dv = m->dbuf[5];
    // output projection and norm
    cuda_check(cudaMemset(do_norm, 0, (size_t)N * H * V * sizeof(float)));
    matmul_backward(do_norm, dW[W_DELTA_O], NULL, dout, A->o_gated, W[W_DELTA_O], N, H * V, d);
    if (gated) {
        gated_rmsnorm_backward(d_o, dz, dW[W_DELTA_O_NORM], do_norm, A->o, A->z, W[W_DELTA_O_NORM], A->o_rstd, N, H, V);
    } else {
        cuda_check(cudaMemset(d_o, 0, (size_t)N * H * V * sizeof(float)));
        rmsnorm_backward(d_o, dW[W_DELTA_O_NORM], do_norm, A->o, W[W_DELTA_O_NORM], A->o_rstd, N * H, V);
    }
    // the recurrence; dβ and dg (N,H) each reuse do_norm's buffer (no longer needed)
    float *dbeta = do_norm, *dg = do_norm + (size_t)N * H;
    delta_chunk_backward(dq, dk, dv, dbeta, gated ? dg : NULL, d_o, A->states, A->q, A->k, A->v, A->beta,
                         gated ? A->a : NULL, B, T, H, K, V, m->chunk_size, 1.0f / sqrtf((float)K));
    l2norm_backward(dq, dq, A->q, A->q_rinv, (size_t)N * H, K);
    l2norm_backward(dk, dk, A->k, A->k_rinv, (size_t)N * H, K);
    // each short conv then its projection; d_o's buffer takes each conv's input gradient in turn
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    shortconv_backward(d_o, dW[W_DELTA_Q_CONV], dq, A->q_lin, W[W_DELTA_Q_CONV], B, T, H * K, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_Q], NULL, d_o, A->ln1, W[W_DELTA_Q], N, d, H * K);
    shortconv_backward(d_o, dW[W_DELTA_K_CONV], dk, A->k_lin, W[W_DELTA_K_CONV], B, T, H * K, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_K], NULL, d_o, A->ln1, W[W_DELTA_K], N, d, H * K);
    shortconv_backward(d_o, dW[W_DELTA_V_CONV], dv, A->v_lin, W[W_DELTA_V_CONV], B, T, H * V, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_V], NULL, d_o, A->ln1, W[W_DELTA_V], N, d, H * V);
    // β = σ(b): db = dβ β (1 − β), in place
    size_t n = (size_t)N * H;
    delta_beta_backward_kernel<<<ceil_div(n, 256), 256>>>(dbeta, A->beta, n);
    cuda_check(cudaGetLastError());
    matmul_backward(dln, dW[W_DELTA_B], NULL, dbeta, A->ln1, W[W_DELTA_B], N, d, H);
    if (!gated) return;
    // g = −e^{A_log} softplus(x), x = gate_lin + dt_bias:  ∂g/∂A_log = g;  ∂g/∂x = −e^{A_log} σ(x).
    // dg becomes d(gate_lin) in place; dt_bias collects the same sums (column sums: fixed order).
    float* term = device_scratch(SCRATCH_MISC0, n);
    gdn_gate_backward_kernel<<<ceil_div(n, 256), 256>>>(dg, term, A->a, A->gate_lin, W[W_DELTA_A_LOG],
                                                        W[W_DELTA_DT_BIAS], N, H);
    cuda_check(cudaGetLastError());
    column_sum(dW[W_DELTA_A_LOG], term, N, H);
    column_sum(dW[W_DELTA_DT_BIAS], dg, N, H);
    matmul_backward(dln, dW[W_DELTA_A], NULL, dg, A->ln1, W[W_DELTA_A], N, d, H);
    matmul_backward(dln, dW[W_DELTA_G], NULL, dz, A->ln1, W[W_DELTA_G], N, d, H * V);
}

// ----------------------------------------------------------------------------
// causal softmax attention with RoPE and GQA (LAYERS.md §8)
//
// The heads are first gathered into (B,NH,T,D) blocks. Query heads h = g·group .. g·group + group − 1
// share kv head g, so for each (b, g) their queries are one (group·T, D) matrix, and every product
// is one cuBLAS batched GEMM over the B·Hkv pairs (b, g):
//     scores (group·T, T) = scale Q Kᵀ,   out (group·T, D) = P V,   P = att's rows of those heads.
// The scores are computed for all T keys (the GEMM is cheaper than skipping the masked half); the
// softmax then zeroes the upper triangle, so P V may run over all keys too.

// dst (B,NH,T,D) = src (B,T,NH,D): the CPU gathers the same rows one head at a time (gather_head)
__global__ void gather_heads_kernel(float* dst, const float* src, int B, int T, int NH, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * D) return;
    int i = (int)(idx % D);
    size_t r = idx / D;
    int t = (int)(r % T);
    r /= T;
    int h = (int)(r % NH), b = (int)(r / NH);
    dst[idx] = src[(((size_t)b * T + t) * NH + h) * D + i];
}
static void gather_heads(float* dst, const float* src, int B, int T, int NH, int D) {
    gather_heads_kernel<<<ceil_div((size_t)B * NH * T * D, 256), 256>>>(dst, src, B, T, NH, D);
    cuda_check(cudaGetLastError());
}
// dst (B,T,NH,D) = src (B,NH,T,D), or += when accumulate
__global__ void scatter_heads_kernel(float* dst, const float* src, int B, int T, int NH, int D, int accumulate) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * NH * D) return;
    int i = (int)(idx % D);
    size_t r = idx / D;
    int h = (int)(r % NH);
    r /= NH;
    int t = (int)(r % T), b = (int)(r / T);
    float x = src[(((size_t)b * NH + h) * T + t) * D + i];
    dst[idx] = accumulate ? dst[idx] + x : x;
}
static void scatter_heads(float* dst, const float* src, int B, int T, int NH, int D, int accumulate) {
    scatter_heads_kernel<<<ceil_div((size_t)B * T * NH * D, 256), 256>>>(dst, src, B, T, NH, D, accumulate);
    cuda_check(cudaGetLastError());
}

// Causal softmax of the score rows of att (rows, T), in place, one warp per row; row r is query
// position t = r mod T, which sees keys s ≤ t. The rest of the row is set to 0.
__global__ void causal_softmax_kernel(float* att, size_t rows, int T) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = (int)(r % T);
    float* p = att + r * T;
    float maxv = -INFINITY, sum = 0.0f;
    for (int s = lane; s <= t; s += 32) maxv = fmaxf(maxv, p[s]);
    maxv = warp_max(maxv);
    for (int s = lane; s <= t; s += 32) { p[s] = exp_fast(p[s] - maxv); sum += p[s]; }
    float inv = 1.0f / warp_sum(sum);
    for (int s = lane; s <= t; s += 32) p[s] *= inv;
    for (int s = t + 1 + lane; s < T; s += 32) p[s] = 0.0f;
}
// Softmax backward of one row per warp, in place over dp: dS = scale P ⊙ (dP − rowsum(P ⊙ dP)) for
// s ≤ t, 0 above.
__global__ void causal_softmax_backward_kernel(float* dp, const float* att, size_t rows, int T, float scale) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = (int)(r % T);
    const float* p = att + r * T;
    float* d = dp + r * T;
    float rowsum = 0.0f;
    for (int s = lane; s <= t; s += 32) rowsum += p[s] * d[s];
    rowsum = warp_sum(rowsum);
    for (int s = lane; s <= t; s += 32) d[s] = p[s] * (d[s] - rowsum) * scale;
    for (int s = t + 1 + lane; s < T; s += 32) d[s] = 0.0f;
}

// out (B,T,H,D); att (B,H,T,T) probabilities (upper triangle 0); q (B,T,H,D);
// k, v (B,T,Hkv,D). Query head h reads kv head h / (H/Hkv). Uses SCRATCH_ATTN.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int B, int T,
                       int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D), one = 1.0f, zero = 0.0f;
    int group = H / Hkv;
    size_t nq = (size_t)B * T * H * D, nkv = (size_t)B * T * Hkv * D;
    float* qh = device_scratch(SCRATCH_ATTN, 2 * nq + 2 * nkv);   // (B,H,T,D)
    float *kh = qh + nq, *vh = kh + nkv, *oh = vh + nkv;           // (B,Hkv,T,D) (B,Hkv,T,D) (B,H,T,D)
    gather_heads(qh, q, B, T, H, D);
    gather_heads(kh, k, B, T, Hkv, D);
    gather_heads(vh, v, B, T, Hkv, D);
    long long sq = (long long)group * T * D, skv = (long long)T * D, satt = (long long)group * T * T;
    // column-major: scoresᵀ (T, group·T) = scale K (T,D) · Qᵀ (D, group·T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, T, group * T, D, &scale, kh, D, skv,
                                           qh, D, sq, &zero, att, T, satt, B * Hkv));
    size_t rows = (size_t)B * H * T;
    causal_softmax_kernel<<<ceil_div(rows, 8), 256>>>(att, rows, T);
    cuda_check(cudaGetLastError());
    // column-major: outᵀ (D, group·T) = Vᵀ (D,T) · Pᵀ (T, group·T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, D, group * T, T, &one, vh, D, skv,
                                           att, T, satt, &zero, oh, D, sq, B * Hkv));
    scatter_heads(out, oh, B, T, H, D, 0);
}

// dq (B,T,H,D), dk, dv (B,T,Hkv,D) +=. With P the probabilities: dV = Pᵀ dO; dP = dO Vᵀ;
// dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = scale dS K; dK = scale dSᵀ Q. The GEMMs over a kv group's
// stacked query rows sum the group's heads into their shared dk, dv. Uses SCRATCH_ATTN.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att, const float* q,
                        const float* k, const float* v, int B, int T, int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D), one = 1.0f, zero = 0.0f;
    int group = H / Hkv;
    size_t nq = (size_t)B * T * H * D, nkv = (size_t)B * T * Hkv * D, natt = (size_t)B * H * T * T;
    float* qh = device_scratch(SCRATCH_ATTN, 3 * nq + 4 * nkv + natt);
    float *doh = qh + nq, *dqh = doh + nq;                          // (B,H,T,D) each
    float *kh = dqh + nq, *vh = kh + nkv, *dkh = vh + nkv, *dvh = dkh + nkv;   // (B,Hkv,T,D) each
    float* dp = dvh + nkv;                                          // (B,H,T,T)
    gather_heads(qh, q, B, T, H, D);
    gather_heads(doh, dout, B, T, H, D);
    gather_heads(kh, k, B, T, Hkv, D);
    gather_heads(vh, v, B, T, Hkv, D);
    long long sq = (long long)group * T * D, skv = (long long)T * D, satt = (long long)group * T * T;
    int batches = B * Hkv;
    // column-major: dVᵀ (D,T) = dOᵀ (D, group·T) · P (group·T, T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, D, T, group * T, &one, doh, D, sq,
                                           att, T, satt, &zero, dvh, D, skv, batches));
    // column-major: dPᵀ (T, group·T) = V (T,D) · dOᵀ (D, group·T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, T, group * T, D, &one, vh, D, skv,
                                           doh, D, sq, &zero, dp, T, satt, batches));
    size_t rows = (size_t)B * H * T;
    causal_softmax_backward_kernel<<<ceil_div(rows, 8), 256>>>(dp, att, rows, T, scale);
    cuda_check(cudaGetLastError());
    // column-major: dQᵀ (D, group·T) = Kᵀ (D,T) · dSᵀ (T, group·T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, D, group * T, T, &one, kh, D, skv,
                                           dp, T, satt, &zero, dqh, D, sq, batches));
    // column-major: dKᵀ (D,T) = Qᵀ (D, group·T) · dS (group·T, T)
    cublas_check(cublasSgemmStridedBatched(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, D, T, group * T, &one, qh, D, sq,
                                           dp, T, satt, &zero, dkh, D, skv, batches));
    scatter_heads(dq, dqh, B, T, H, D, 1);
    scatter_heads(dk, dkh, B, T, Hkv, D, 1);
    scatter_heads(dv, dvh, B, T, Hkv, D, 1);
}

void attn_layer_forward(Model* m, int l, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    int N = B * T, d = c->d_model, H = c->attn_heads, Hkv = c->attn_kv_heads, D = attn_head_dim(c);
    matmul_forward(A->q, A->ln1, W[W_ATT_Q], NULL, N, d, H * D);
    matmul_forward(A->k, A->ln1, W[W_ATT_K], NULL, N, d, Hkv * D);
    matmul_forward(A->v, A->ln1, W[W_ATT_V], NULL, N, d, Hkv * D);
    rope_forward(A->q, B, T, H, D, 0, c->rope_theta);
    rope_forward(A->k, B, T, Hkv, D, 0, c->rope_theta);
    attention_forward(A->att_out, A->att, A->q, A->k, A->v, B, T, H, Hkv, D);
    matmul_forward(A->mixer, A->att_out, W[W_ATT_O], NULL, N, H * D, d);
}

void attn_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, H = c->attn_heads, Hkv = c->attn_kv_heads, D = attn_head_dim(c);
    float *datt_out = m->dbuf[0], *dq = m->dbuf[1], *dk = m->dbuf[2], *dv = m->dbuf[3];
    cuda_check(cudaMemset(datt_out, 0, (size_t)N * H * D * sizeof(float)));
    matmul_backward(datt_out, dW[W_ATT_O], NULL, dout, A->att_out, W[W_ATT_O], N, H * D, d);
    cuda_check(cudaMemset(dq, 0, (size_t)N * H * D * sizeof(float)));
    cuda_check(cudaMemset(dk, 0, (size_t)N * Hkv * D * sizeof(float)));
    cuda_check(cudaMemset(dv, 0, (size_t)N * Hkv * D * sizeof(float)));
    attention_backward(dq, dk, dv, datt_out, A->att, A->q, A->k, A->v, B, T, H, Hkv, D);
    rope_backward(dq, B, T, H, D, 0, c->rope_theta);
    rope_backward(dk, B, T, Hkv, D, 0, c->rope_theta);
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_ATT_Q], NULL, dq, A->ln1, W[W_ATT_Q], N, d, H * D);
    matmul_backward(dln, dW[W_ATT_K], NULL, dk, A->ln1, W[W_ATT_K], N, d, Hkv * D);
    matmul_backward(dln, dW[W_ATT_V], NULL, dv, A->ln1, W[W_ATT_V], N, d, Hkv * D);
}

// ----------------------------------------------------------------------------
// the SwiGLU MLP: out (N,d) = W_down (silu(W_gate x) ⊙ W_up x), x = ln2 (N,d)

void mlp_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    int d = c->d_model, I = c->mlp_hidden;
    matmul_forward(A->mlp_gate, A->ln2, W[W_MLP_GATE], NULL, N, d, I);
    matmul_forward(A->mlp_up, A->ln2, W[W_MLP_UP], NULL, N, d, I);
    swiglu_forward(A->mlp_h, A->mlp_gate, A->mlp_up, (size_t)N * I);
    matmul_forward(out, A->mlp_h, W[W_MLP_DOWN], NULL, N, I, d);
}

void mlp_backward(Model* m, int l, const float* dout, float* dln, int N) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int d = c->d_model, I = c->mlp_hidden;
    float *dh = m->dbuf[0], *dgate = m->dbuf[1], *dup = m->dbuf[2];
    cuda_check(cudaMemset(dh, 0, (size_t)N * I * sizeof(float)));
    matmul_backward(dh, dW[W_MLP_DOWN], NULL, dout, A->mlp_h, W[W_MLP_DOWN], N, I, d);
    swiglu_backward(dgate, dup, dh, A->mlp_gate, A->mlp_up, (size_t)N * I);
    cuda_check(cudaMemset(dln, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dln, dW[W_MLP_GATE], NULL, dgate, A->ln2, W[W_MLP_GATE], N, d, I);
    matmul_backward(dln, dW[W_MLP_UP], NULL, dup, A->ln2, W[W_MLP_UP], N, d, I);
}

// ----------------------------------------------------------------------------
// cross-entropy with an ignore index (targets < 0 do not count; IGNORE_INDEX = −100 as in fla)

// One block per row: logits -> probabilities in place; row_loss[n] = −log p[target] (0 when ignored)
__global__ void crossentropy_forward_kernel(float* logits, double* row_loss, const int* targets, int V) {
    int n = blockIdx.x;
    float* row = logits + (size_t)n * V;
    float maxv = -INFINITY, sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) maxv = fmaxf(maxv, row[i]);
    maxv = block_max(maxv);
    for (int i = threadIdx.x; i < V; i += blockDim.x) { row[i] = exp_fast(row[i] - maxv); sum += row[i]; }
    sum = block_sum(sum);
    for (int i = threadIdx.x; i < V; i += blockDim.x) row[i] /= sum;
    __syncthreads();   // row[target] was written by another thread
    if (threadIdx.x == 0) row_loss[n] = targets[n] >= 0 ? -log((double)row[targets[n]]) : 0.0;
}
// One block: total = Σ_n row_loss[n] (fixed order), count = the scored rows
__global__ void crossentropy_total_kernel(double* total, int* count, const double* row_loss, const int* targets, int N) {
    double s = 0.0;
    int k = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) { s += row_loss[n]; k += targets[n] >= 0; }
    s = block_sum(s);
    k = block_sum(k);
    if (threadIdx.x == 0) { *total = s; *count = k; }
}
// logits (N,V) are turned into probabilities in place; returns the mean loss over counted rows,
// *n_valid = their number. targets (N) on the device. Uses SCRATCH_MISC0.
float crossentropy_forward(float* logits, const int* targets, int N, int V, int* n_valid) {
    double* row_loss = (double*)device_scratch(SCRATCH_MISC0, 2 * (size_t)N + 4);   // N doubles, then the result
    double* total = row_loss + N;
    int* count = (int*)(total + 1);
    crossentropy_forward_kernel<<<N, 512>>>(logits, row_loss, targets, V);
    cuda_check(cudaGetLastError());
    crossentropy_total_kernel<<<1, 1024>>>(total, count, row_loss, targets, N);
    cuda_check(cudaGetLastError());
    double host_total;
    int host_count;
    cuda_check(cudaMemcpy(&host_total, total, sizeof(double), cudaMemcpyDeviceToHost));
    cuda_check(cudaMemcpy(&host_count, count, sizeof(int), cudaMemcpyDeviceToHost));
    *n_valid = host_count;
    return host_count ? (float)(host_total / host_count) : 0.0f;
}
// probs (N,V) -> dlogits in place: (p − onehot(target)) / n_valid; rows with ignored targets get 0
__global__ void crossentropy_backward_kernel(float* probs, const int* targets, int V, float inv) {
    int n = blockIdx.x, target = targets[n];
    float* row = probs + (size_t)n * V;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        if (target < 0) { row[i] = 0.0f; continue; }
        float p = row[i] * inv;
        row[i] = i == target ? p - inv : p;
    }
}
void crossentropy_backward(float* probs, const int* targets, int N, int V, int n_valid) {
    float inv = n_valid ? 1.0f / n_valid : 0.0f;
    crossentropy_backward_kernel<<<N, 512>>>(probs, targets, V, inv);
    cuda_check(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// the model

void model_build(Model* m, const Config* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->num_specs = param_table(c, m->specs, &m->num_params);
    m->params = device_calloc(m->num_params);
    m->grads = device_calloc(m->num_params);
    m->adam_m = device_calloc(m->num_params);
    m->adam_v = device_calloc(m->num_params);
    weights_point(&m->w, m, m->params);
    weights_point(&m->g, m, m->grads);
    m->chunk_size = 64;
}

// fla's init (model.h: init_params), drawn on the host with the CPU program's generator and order,
// then copied: both programs start from the same bits.
void model_init_weights(Model* m, uint64_t seed) {
    float* params = (float*)malloc_check(m->num_params * sizeof(float));
    init_params(m->specs, m->num_specs, params, seed);
    cuda_check(cudaMemcpy(m->params, params, m->num_params * sizeof(float), cudaMemcpyHostToDevice));
    free(params);
}

// the widest per-row tensor of a layer's mixer (its backward scratch rows)
static int mixer_width(const Config* c, int mixer) {
    if (mixer == MIXER_ATTN) return c->d_model;  // H·hd = d; the kv width is at most that
    if (mixer == MIXER_HGRN) return c->hgrn_dim;
    int H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    int w = H * (K > V ? K : V);
    return 2 * H > w ? 2 * H : w;  // the delta rule's backward keeps dβ and dg (N,H) in one row
}

// the widest per-row scratch any backward needs
static int max_width(const Config* c) {
    int w = c->d_model;
    if (c->mlp_hidden > w) w = c->mlp_hidden;
    for (int l = 0; l < c->n_layer; l++)
        if (mixer_width(c, c->pattern[l]) > w) w = mixer_width(c, c->pattern[l]);
    return w;
}

static float* act_alloc(Model* m, size_t n) {
    m->act_floats += n;
    return m->counting_only ? NULL : device_calloc(n);
}

// Allocates the activations for batches of (B,T) on the device (the same tensors, of the same sizes,
// as the CPU program); a later call with the same (B,T) is free.
void model_alloc_acts(Model* m, int B, int T) {
    if (m->B == B && m->T == T) return;
    if (m->B) fail("model activations were sized for B=%d T=%d, asked for B=%d T=%d", m->B, m->T, B, T);
    const Config* c = &m->config;
    size_t N = (size_t)B * T, d = c->d_model, I = c->mlp_hidden;
    m->B = B;
    m->T = T;
    if (!m->counting_only) {
        cuda_check(cudaMalloc((void**)&m->inputs, N * sizeof(int)));
        cuda_check(cudaMalloc((void**)&m->targets, N * sizeof(int)));
    }
    m->embed_out = act_alloc(m, N * d);
    if (has_lower_bounds(c)) {
        m->lower_bound = act_alloc(m, (size_t)c->n_layer * d);
        m->lower_softmax = act_alloc(m, (size_t)c->n_layer * d);
        m->dlower_bound = act_alloc(m, (size_t)c->n_layer * d);
    }
    size_t NC = (T + m->chunk_size - 1) / m->chunk_size;
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs* A = &m->acts[l];
        int mix = c->pattern[l];
        A->ln1 = act_alloc(m, N * d);
        A->ln1_rstd = act_alloc(m, N);
        if (mix == MIXER_ATTN) {
            size_t H = c->attn_heads, D = attn_head_dim(c), kv = c->attn_kv_heads * D;
            A->q = act_alloc(m, N * H * D);
            A->k = act_alloc(m, N * kv);
            A->v = act_alloc(m, N * kv);
            A->att = act_alloc(m, (size_t)B * H * T * T);
            A->att_out = act_alloc(m, N * H * D);
        } else if (mix == MIXER_HGRN) {
            size_t D = c->hgrn_dim;
            A->q_lin = act_alloc(m, N * D);
            A->f = act_alloc(m, N * D);
            A->z = act_alloc(m, N * D);
            A->a = act_alloc(m, N * D);
            A->v = act_alloc(m, N * D);
            A->o = act_alloc(m, N * D);
            A->o_rstd = act_alloc(m, N);
            A->o_gated = act_alloc(m, N * D);
        } else {
            int Hi, Ki, Vi;
            mixer_dims(c, mix, &Hi, &Ki, &Vi);
            size_t H = Hi, Dk = (size_t)Hi * Ki, Dv = (size_t)Hi * Vi;
            A->q = act_alloc(m, N * Dk);
            A->k = act_alloc(m, N * Dk);
            A->v = act_alloc(m, N * Dv);
            A->states = act_alloc(m, (size_t)B * NC * H * Ki * Vi);
            A->o = act_alloc(m, N * Dv);
            A->o_gated = act_alloc(m, N * Dv);
            A->o_rstd = act_alloc(m, mix == MIXER_HGRN2 ? N : N * H);  // hgrn2 norms all of d at once
            if (mix == MIXER_GLA) {
                A->z = act_alloc(m, N * Dv);
                A->gk1 = act_alloc(m, N * c->gla_gate_rank);
                A->gk = act_alloc(m, N * Dk);
                A->a = act_alloc(m, N * Dk);
            } else if (mix == MIXER_HGRN2) {
                A->q_lin = act_alloc(m, N * Dk);
                A->f = act_alloc(m, N * Dk);
                A->a = act_alloc(m, N * Dk);
            } else if (mix == MIXER_RETNET) {
                A->z = act_alloc(m, N * Dv);
                A->a = act_alloc(m, N * Dk);
            } else { // deltanet, gated_deltanet
                A->q_lin = act_alloc(m, N * Dk);
                A->k_lin = act_alloc(m, N * Dk);
                A->v_lin = act_alloc(m, N * Dv);
                A->q_rinv = act_alloc(m, N * H);
                A->k_rinv = act_alloc(m, N * H);
                A->beta = act_alloc(m, N * H);
                if (mix == MIXER_GATED_DELTANET) {
                    A->gate_lin = act_alloc(m, N * H);
                    A->a = act_alloc(m, N * H);
                    A->z = act_alloc(m, N * Dv);
                }
            }
        }
        A->mixer = act_alloc(m, N * d);
        A->res1 = act_alloc(m, N * d);
        A->ln2 = act_alloc(m, N * d);
        A->ln2_rstd = act_alloc(m, N);
        A->mlp_gate = act_alloc(m, N * I);
        A->mlp_up = act_alloc(m, N * I);
        A->mlp_h = act_alloc(m, N * I);
        A->mlp = act_alloc(m, N * d);
        A->res2 = act_alloc(m, N * d);
    }
    m->final_norm = act_alloc(m, N * d);
    m->final_rstd = act_alloc(m, N);
    m->logits = act_alloc(m, N * c->vocab_size);
    m->dresid = act_alloc(m, N * d);
    m->dln = act_alloc(m, N * d);
    for (int i = 0; i < 6; i++) m->dbuf[i] = act_alloc(m, N * max_width(c));
}

// Floats model_alloc_acts would allocate for (B,T), allocating nothing: memory is known up front.
size_t model_count_acts(const Model* m, int B, int T) {
    Model* probe = (Model*)malloc_check(sizeof(Model));
    *probe = *m;
    probe->B = 0;
    probe->act_floats = 0;
    probe->counting_only = 1;
    model_alloc_acts(probe, B, T);
    size_t n = probe->act_floats;
    free(probe);
    return n;
}

// every mixer's layer, by mixer id (deltanet and gated_deltanet share one code path); in id order
typedef void (*LayerForwardFn)(Model* m, int l, int B, int T);
typedef void (*LayerBackwardFn)(Model* m, int l, const float* dout, float* dln, int B, int T);
static_assert(MIXER_ATTN == 0 && MIXER_HGRN == 1 && MIXER_RETNET == 2 && MIXER_GLA == 3 && MIXER_HGRN2 == 4 &&
              MIXER_DELTANET == 5 && MIXER_GATED_DELTANET == 6 && NUM_MIXER_IDS == 7, "the tables below are in id order");
static const LayerForwardFn MIXER_FORWARD[NUM_MIXER_IDS] = {
    attn_layer_forward, hgrn_layer_forward, retnet_layer_forward, gla_layer_forward, hgrn2_layer_forward,
    delta_layer_forward, delta_layer_forward};
static const LayerBackwardFn MIXER_BACKWARD[NUM_MIXER_IDS] = {
    attn_layer_backward, hgrn_layer_backward, retnet_layer_backward, gla_layer_backward, hgrn2_layer_backward,
    delta_layer_backward, delta_layer_backward};

// the residual stream: out (n) = x + y (out may be x)
__global__ void residual_forward_kernel(float* out, const float* x, const float* y, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] + y[i];
}
static void residual_forward(float* out, const float* x, const float* y, size_t n) {
    residual_forward_kernel<<<ceil_div(n, 256), 256>>>(out, x, y, n);
    cuda_check(cudaGetLastError());
}

// inputs, targets (B,T) host arrays, copied to the device; targets may be NULL (then only logits are
// computed). Sets m->loss.
void model_forward(Model* m, const int* inputs, const int* targets, int B, int T) {
    const Config* c = &m->config;
    int N = B * T, d = c->d_model, V = c->vocab_size;
    for (int i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= V) fail("input token %d at position %d is outside the vocabulary (%d)", inputs[i], i, V);
    model_alloc_acts(m, B, T);
    cuda_check(cudaMemcpy(m->inputs, inputs, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward(m->embed_out, m->inputs, m->w.embed, N, d);
    if (m->w.lower_bounds) lower_bounds_forward(m->lower_bound, m->lower_softmax, m->w.lower_bounds, c->n_layer, d);
    const float* x = m->embed_out;
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, x, W[W_ATTN_NORM], N, d, c->norm_eps);
        MIXER_FORWARD[c->pattern[l]](m, l, B, T);
        residual_forward(A->res1, x, A->mixer, (size_t)N * d);
        rmsnorm_forward(A->ln2, A->ln2_rstd, A->res1, W[W_MLP_NORM], N, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, N);
        residual_forward(A->res2, A->res1, A->mlp, (size_t)N * d);
        x = A->res2;
    }
    rmsnorm_forward(m->final_norm, m->final_rstd, x, m->w.norm, N, d, c->norm_eps);
    matmul_forward(m->logits, m->final_norm, m->w.lm_head, NULL, N, d, V);
    if (targets) {
        for (int i = 0; i < N; i++)
            if (targets[i] >= V || (targets[i] < 0 && targets[i] != IGNORE_INDEX))
                fail("target %d at position %d is outside the vocabulary (%d)", targets[i], i, V);
        cuda_check(cudaMemcpy(m->targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
        m->loss = crossentropy_forward(m->logits, m->targets, N, V, &m->n_valid);
    }
}

// Gradients of the mean loss into m->grads (overwritten). Needs model_forward with targets first:
// inputs, targets are the host arrays it was given, whose device copies (m->inputs, m->targets) it
// left behind and this uses.
void model_backward(Model* m, const int* inputs, const int* targets) {
    (void)inputs;
    (void)targets;
    const Config* c = &m->config;
    int B = m->B, T = m->T, N = B * T, d = c->d_model, V = c->vocab_size;
    cuda_check(cudaMemset(m->grads, 0, m->num_params * sizeof(float)));
    crossentropy_backward(m->logits, m->targets, N, V, m->n_valid);
    const float* x_last = c->n_layer ? m->acts[c->n_layer - 1].res2 : m->embed_out;
    float* dfinal = m->dln;
    cuda_check(cudaMemset(dfinal, 0, (size_t)N * d * sizeof(float)));
    matmul_backward(dfinal, m->g.lm_head, NULL, m->logits, m->final_norm, m->w.lm_head, N, d, V);
    cuda_check(cudaMemset(m->dresid, 0, (size_t)N * d * sizeof(float)));
    rmsnorm_backward(m->dresid, m->g.norm, dfinal, x_last, m->w.norm, m->final_rstd, N, d);
    if (m->w.lower_bounds) cuda_check(cudaMemset(m->dlower_bound, 0, (size_t)c->n_layer * d * sizeof(float)));
    // dresid is dL/d(residual stream); each branch reads it and then adds its norm's backward into it
    for (int l = c->n_layer - 1; l >= 0; l--) {
        LayerActs* A = &m->acts[l];
        float* const* W = m->w.layer[l];
        float* const* dW = m->g.layer[l];
        const float* x = l ? m->acts[l - 1].res2 : m->embed_out;
        mlp_backward(m, l, m->dresid, m->dln, N);
        rmsnorm_backward(m->dresid, dW[W_MLP_NORM], m->dln, A->res1, W[W_MLP_NORM], A->ln2_rstd, N, d);
        MIXER_BACKWARD[c->pattern[l]](m, l, m->dresid, m->dln, B, T);
        rmsnorm_backward(m->dresid, dW[W_ATTN_NORM], m->dln, x, W[W_ATTN_NORM], A->ln1_rstd, N, d);
    }
    if (m->w.lower_bounds)
        lower_bounds_backward(m->g.lower_bounds, m->dlower_bound, m->lower_softmax, c->n_layer, d);
    encoder_backward(m->g.embed, m->dresid, m->inputs, N, d);
}

void model_free(Model* m) {
    cuda_check(cudaFree(m->params)); cuda_check(cudaFree(m->grads));
    cuda_check(cudaFree(m->adam_m)); cuda_check(cudaFree(m->adam_v));
    if (!m->B) return;
    cuda_check(cudaFree(m->inputs)); cuda_check(cudaFree(m->targets));
    cuda_check(cudaFree(m->embed_out));
    cuda_check(cudaFree(m->lower_bound)); cuda_check(cudaFree(m->lower_softmax)); cuda_check(cudaFree(m->dlower_bound));
    for (int l = 0; l < m->config.n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* bufs[] = {A->ln1, A->ln1_rstd, A->q, A->k, A->v, A->a, A->z, A->states, A->o, A->o_rstd, A->o_gated,
                         A->gk1, A->gk, A->f, A->q_lin, A->k_lin, A->v_lin, A->q_rinv, A->k_rinv, A->beta,
                         A->gate_lin, A->att, A->att_out, A->mixer, A->res1, A->ln2, A->ln2_rstd, A->mlp_gate,
                         A->mlp_up, A->mlp_h, A->mlp, A->res2};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cuda_check(cudaFree(bufs[i]));
    }
    cuda_check(cudaFree(m->final_norm)); cuda_check(cudaFree(m->final_rstd)); cuda_check(cudaFree(m->logits));
    cuda_check(cudaFree(m->dresid)); cuda_check(cudaFree(m->dln));
    for (int i = 0; i < 6; i++) cuda_check(cudaFree(m->dbuf[i]));
}

// ----------------------------------------------------------------------------
// optimisation: global gradient norm, clipping, learning-rate schedule, AdamW

#define NORM_BLOCKS 512   // fixed, so the sum's order does not depend on the GPU
// partial[block] = Σ (double) g² over the block's grid-stride share
__global__ void grad_norm_partial_kernel(double* partial, const float* g, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)g[i] * g[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
// one block: *total = Σ partial (NORM_BLOCKS)
__global__ void grad_norm_total_kernel(double* total, const double* partial) {
    double s = 0.0;
    for (int i = threadIdx.x; i < NORM_BLOCKS; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *total = s;
}
// ‖grads‖₂, summed in double in a fixed order. Uses SCRATCH_MISC0.
float grad_norm(const Model* m) {
    double* partial = (double*)device_scratch(SCRATCH_MISC0, 2 * (NORM_BLOCKS + 1));
    grad_norm_partial_kernel<<<NORM_BLOCKS, 256>>>(partial, m->grads, m->num_params);
    cuda_check(cudaGetLastError());
    grad_norm_total_kernel<<<1, 256>>>(partial + NORM_BLOCKS, partial);
    cuda_check(cudaGetLastError());
    double ss;
    cuda_check(cudaMemcpy(&ss, partial + NORM_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost));
    return (float)sqrt(ss);
}

// name of the first parameter whose gradient is not finite, or NULL (the failure path: a host copy)
const char* first_nonfinite_grad(const Model* m) {
    float* grads = (float*)malloc_check(m->num_params * sizeof(float));
    cuda_check(cudaMemcpy(grads, m->grads, m->num_params * sizeof(float), cudaMemcpyDeviceToHost));
    const char* name = NULL;
    for (int i = 0; i < m->num_specs && !name; i++)
        for (size_t j = 0; j < m->specs[i].numel; j++)
            if (!isfinite(grads[m->specs[i].offset + j])) { name = m->specs[i].name; break; }
    free(grads);
    return name;
}

// one parameter tensor's AdamW step, the CPU's formula in the CPU's order
__global__ void adamw_kernel(float* w, const float* g, float* mm, float* vv, size_t n, float lr, float beta1,
                             float beta2, float bc1, float bc2, float eps, float wd, float grad_scale) {
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float grad = g[j] * grad_scale;
    mm[j] = beta1 * mm[j] + (1.0f - beta1) * grad;
    vv[j] = beta2 * vv[j] + (1.0f - beta2) * grad * grad;
    float mhat = mm[j] / bc1, vhat = vv[j] / bc2;
    w[j] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[j]);
}
// One AdamW step t (1-based) at learning rate lr, after scaling the gradients by grad_scale
// (global-norm clipping). Weight decay is decoupled and applies to the Linear weights, embedding and
// LM head only (ParamSpec.decay: not to norms, biases, short convs, A_log, dt_bias, lower bounds).
void adamw_update(Model* m, const TrainHyper* h, float lr, int t, float grad_scale) {
    float bc1 = 1.0f - powf(h->beta1, t), bc2 = 1.0f - powf(h->beta2, t);
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        float wd = p->decay ? h->weight_decay : 0.0f;
        size_t o = p->offset;
        adamw_kernel<<<ceil_div(p->numel, 256), 256>>>(m->params + o, m->grads + o, m->adam_m + o, m->adam_v + o,
                                                       p->numel, lr, h->beta1, h->beta2, bc1, bc2, h->eps, wd,
                                                       grad_scale);
        cuda_check(cudaGetLastError());
    }
}

// ----------------------------------------------------------------------------
// generation: O(1) recurrent state per linear layer (plus the short convs' last W_c − 1 inputs for
// the delta-rule layers), a KV cache per attention layer. Each step runs the very same layer
// functions as training on one row (N = 1), with the recurrent step of each linear mixer in place of
// its chunkwise core. Everything lives on the device but the logits' host copy for sampling.

typedef struct {
    int max_T;
    float* state[MAX_LAYERS];          // linear mixers: (H,K,V) matrix states; hgrn (D)
    float* conv_cache[MAX_LAYERS];     // delta rule: the q, k, v convs' previous inputs, (W_c−1, Dk),
                                       // (W_c−1, Dk), (W_c−1, Dv) one after the other
    float* k_cache[MAX_LAYERS];        // (max_T, Hkv*D), roped keys
    float* v_cache[MAX_LAYERS];        // (max_T, Hkv*D)
    float *lower_bound, *lower_softmax;// (L,d) hgrn/hgrn2 lower bounds, when the model has them
    LayerActs acts;                    // one row
    float *x, *att_row, *logits;       // (d), (H*max_T), (V)
    float* logits_host;                // (V) host copy of logits, for sampling
} DecodeState;


void decode_init(DecodeState* s, const Config* c, int max_T) {
    memset(s, 0, sizeof(*s));
    s->max_T = max_T;
    size_t d = c->d_model, I = c->mlp_hidden, wmax = max_width(c);
    for (int l = 0; l < c->n_layer; l++) {
        int mix = c->pattern[l];
        if (mix == MIXER_ATTN) {
            size_t kv = (size_t)c->attn_kv_heads * attn_head_dim(c);
            s->k_cache[l] = device_calloc((size_t)max_T * kv);
            s->v_cache[l] = device_calloc((size_t)max_T * kv);
            continue;
        }
        s->state[l] = device_calloc(mixer_state_floats(c, mix));
        if (mix == MIXER_DELTANET || mix == MIXER_GATED_DELTANET) {
            int H, K, V;
            mixer_dims(c, mix, &H, &K, &V);
            s->conv_cache[l] = device_calloc((size_t)(c->conv_size - 1) * H * (2 * K + V));
        }
    }
    if (has_lower_bounds(c)) {
        s->lower_bound = device_calloc((size_t)c->n_layer * d);
        s->lower_softmax = device_calloc((size_t)c->n_layer * d);
    }
    LayerActs* A = &s->acts;
    float** bufs[] = {&A->ln1, &A->q, &A->k, &A->v, &A->a, &A->z, &A->o, &A->o_rstd, &A->o_gated, &A->gk,
                      &A->f, &A->q_lin, &A->k_lin, &A->v_lin, &A->q_rinv, &A->k_rinv, &A->beta, &A->gate_lin,
                      &A->att_out, &A->mixer, &A->ln2, &A->mlp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) *bufs[i] = device_calloc(wmax);
    A->gk1 = device_calloc(c->gla_gate_rank);
    A->ln1_rstd = device_calloc(1);
    A->ln2_rstd = device_calloc(1);
    A->mlp_gate = device_calloc(I);
    A->mlp_up = device_calloc(I);
    A->mlp_h = device_calloc(I);
    s->x = device_calloc(d);
    s->att_row = device_calloc((size_t)c->attn_heads * max_T);
    s->logits = device_calloc(c->vocab_size);
    s->logits_host = (float*)calloc_check(c->vocab_size, sizeof(float));
}

void decode_free(DecodeState* s, const Config* c) {
    for (int l = 0; l < c->n_layer; l++) {
        cuda_check(cudaFree(s->state[l])); cuda_check(cudaFree(s->conv_cache[l]));
        cuda_check(cudaFree(s->k_cache[l])); cuda_check(cudaFree(s->v_cache[l]));
    }
    cuda_check(cudaFree(s->lower_bound)); cuda_check(cudaFree(s->lower_softmax));
    LayerActs* A = &s->acts;
    float* bufs[] = {A->ln1, A->q, A->k, A->v, A->a, A->z, A->o, A->o_rstd, A->o_gated, A->gk, A->f, A->q_lin,
                     A->k_lin, A->v_lin, A->q_rinv, A->k_rinv, A->beta, A->gate_lin, A->att_out, A->mixer, A->ln2,
                     A->mlp, A->gk1, A->ln1_rstd, A->ln2_rstd, A->mlp_gate, A->mlp_up, A->mlp_h};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cuda_check(cudaFree(bufs[i]));
    cuda_check(cudaFree(s->x)); cuda_check(cudaFree(s->att_row)); cuda_check(cudaFree(s->logits));
    free(s->logits_host);
}

// One block per head h: the scores of the query row over cache rows 0..pos (threads over positions),
// their softmax (block reductions), then the weighted sum of the values (threads over D, each summing
// positions in order). out (H,D); q (H,D); caches (max_T, Hkv, D); p (H, pos+1) scratch rows.
__global__ void attention_step_kernel(float* out, float* p, const float* q, const float* kc, const float* vc, int pos,
                                      int H, int Hkv, int D) {
    int h = blockIdx.x, g = h / (H / Hkv);
    float scale = 1.0f / sqrtf((float)D);
    float* ph = p + (size_t)h * (pos + 1);
    float maxv = -INFINITY, sum = 0.0f;
    for (int s = threadIdx.x; s <= pos; s += blockDim.x) {
        const float* ks = kc + ((size_t)s * Hkv + g) * D;
        float dot = 0.0f;
        for (int i = 0; i < D; i++) dot += q[h * D + i] * ks[i];
        ph[s] = dot * scale;
        maxv = fmaxf(maxv, ph[s]);
    }
    maxv = block_max(maxv);
    for (int s = threadIdx.x; s <= pos; s += blockDim.x) { ph[s] = exp_fast(ph[s] - maxv); sum += ph[s]; }
    sum = block_sum(sum);   // its __syncthreads also make every ph[s] visible to the whole block
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s <= pos; s++) acc += ph[s] / sum * vc[((size_t)s * Hkv + g) * D + i];
        out[h * D + i] = acc;
    }
}
// attention of one query row at position pos over the cache rows 0..pos.
// out (H,D); q (H,D); caches (max_T, Hkv, D); p scratch (H, pos+1): a row per head, the heads run in parallel
static void attention_step(float* out, float* p, const float* q, const float* kc, const float* vc, int pos, int H,
                           int Hkv, int D) {
    attention_step_kernel<<<H, 128>>>(out, p, q, kc, vc, pos, H, Hkv, D);
    cuda_check(cudaGetLastError());
}

// One token through layer l's mixer: ln1 (d) -> s->acts.mixer (d), updating the layer's state or cache.
static void decode_mixer(Model* m, DecodeState* s, int l, int pos) {
    const Config* c = &m->config;
    LayerActs* A = &s->acts;
    float* const* W = m->w.layer[l];
    int d = c->d_model, mix = c->pattern[l], H, K, V;
    const float* lb = (l > 0 && s->lower_bound) ? s->lower_bound + (size_t)l * d : NULL;
    switch (mix) {
    case MIXER_GLA:
        mixer_dims(c, mix, &H, &K, &V);
        gla_project_forward(A, W, c, 1);
        gla_recurrent_step(A->o, s->state[l], A->q, A->k, A->v, A->a, H, K, V, 1.0f / sqrtf((float)K));
        gla_output_forward(A->mixer, A, W, c, 1);
        break;
    case MIXER_HGRN:
        hgrn_project_forward(A, W, c, lb, 1);
        hgrn_recurrent_step(A->o, s->state[l], A->v, A->a, c->hgrn_dim);
        hgrn_output_forward(A->mixer, A, W, c, 1);
        break;
    case MIXER_HGRN2:
        mixer_dims(c, mix, &H, &K, &V);
        hgrn2_project_forward(A, W, c, lb, 1);
        gla_recurrent_step(A->o, s->state[l], A->q, A->k, A->v, A->a, H, K, V, 1.0f / sqrtf((float)K));
        hgrn2_output_forward(A->mixer, A, W, c, 1);
        break;
    case MIXER_RETNET:
        mixer_dims(c, mix, &H, &K, &V);
        retnet_project_forward(A, W, c, 1, 1, pos);
        gla_recurrent_step(A->o, s->state[l], A->q, A->k, A->v, A->a, H, K, V, 1.0f / sqrtf((float)K));
        retnet_output_forward(A->mixer, A, W, c, 1);
        break;
    case MIXER_DELTANET:
    case MIXER_GATED_DELTANET: {
        mixer_dims(c, mix, &H, &K, &V);
        int Wc = c->conv_size;
        float* q_cache = s->conv_cache[l];
        float* k_cache = q_cache + (size_t)(Wc - 1) * H * K;
        float* v_cache = k_cache + (size_t)(Wc - 1) * H * K;
        delta_project_forward(A, W, c, mix, 1);
        shortconv_step(A->q, q_cache, A->q_lin, W[W_DELTA_Q_CONV], H * K, Wc);
        shortconv_step(A->k, k_cache, A->k_lin, W[W_DELTA_K_CONV], H * K, Wc);
        shortconv_step(A->v, v_cache, A->v_lin, W[W_DELTA_V_CONV], H * V, Wc);
        l2norm_forward(A->q, A->q_rinv, A->q, H, K);
        l2norm_forward(A->k, A->k_rinv, A->k, H, K);
        delta_recurrent_step(A->o, s->state[l], A->q, A->k, A->v, A->beta, mix == MIXER_GATED_DELTANET ? A->a : NULL,
                             H, K, V, 1.0f / sqrtf((float)K));
        delta_output_forward(A->mixer, A, W, c, mix, 1);
        break;
    }
    default: { // MIXER_ATTN
        int Hkv = c->attn_kv_heads, D = attn_head_dim(c);
        H = c->attn_heads;
        float* kc = s->k_cache[l] + (size_t)pos * Hkv * D;
        float* vc = s->v_cache[l] + (size_t)pos * Hkv * D;
        matmul_forward(A->q, A->ln1, W[W_ATT_Q], NULL, 1, d, H * D);
        matmul_forward(kc, A->ln1, W[W_ATT_K], NULL, 1, d, Hkv * D);
        matmul_forward(vc, A->ln1, W[W_ATT_V], NULL, 1, d, Hkv * D);
        rope_forward(A->q, 1, 1, H, D, pos, c->rope_theta);
        rope_forward(kc, 1, 1, Hkv, D, pos, c->rope_theta);
        attention_step(A->att_out, s->att_row, A->q, s->k_cache[l], s->v_cache[l], pos, H, Hkv, D);
        matmul_forward(A->mixer, A->att_out, W[W_ATT_O], NULL, 1, H * D, d);
    }
    }
}

// Feeds token at position pos (0-based, consecutive from 0); leaves the next-token logits in s->logits (V,
// device) and their copy in s->logits_host.
void decode_step(Model* m, DecodeState* s, int token, int pos) {
    const Config* c = &m->config;
    int d = c->d_model;
    if (pos >= s->max_T) fail("generation past the KV cache length %d", s->max_T);
    if (token < 0 || token >= c->vocab_size) fail("token %d outside the vocabulary (%d)", token, c->vocab_size);
    LayerActs* A = &s->acts;
    if (pos == 0 && s->lower_bound) // they depend on the weights only
        lower_bounds_forward(s->lower_bound, s->lower_softmax, m->w.lower_bounds, c->n_layer, d);
    cuda_check(cudaMemcpy(s->x, m->w.embed + (size_t)token * d, d * sizeof(float), cudaMemcpyDeviceToDevice));
    for (int l = 0; l < c->n_layer; l++) {
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, W[W_ATTN_NORM], 1, d, c->norm_eps);
        decode_mixer(m, s, l, pos);
        residual_forward(s->x, s->x, A->mixer, d);
        rmsnorm_forward(A->ln2, A->ln2_rstd, s->x, W[W_MLP_NORM], 1, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, 1);
        residual_forward(s->x, s->x, A->mlp, d);
    }
    rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, m->w.norm, 1, d, c->norm_eps);
    matmul_forward(s->logits, A->ln1, m->w.lm_head, NULL, 1, d, c->vocab_size);
    cuda_check(cudaMemcpy(s->logits_host, s->logits, c->vocab_size * sizeof(float), cudaMemcpyDeviceToHost));
}

// ----------------------------------------------------------------------------
// checkpoints: model_<s>.bin, state_<s>.bin, then the marker DONE_<s> (model.h: the files and the
// checkpoint directory's rules). The same files as the CPU program's, written from host copies:
// either program resumes the other's run.

// a host copy of n device floats (malloc'd)
static float* host_copy(const float* dev, size_t n) {
    float* host = (float*)malloc_check(n * sizeof(float));
    cuda_check(cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
}

// Saves the checkpoint of step s->step into dir and prunes this run's older ones (keep 0: none).
void save_checkpoint(const char* dir, const Model* m, const TrainState* s, int keep, uint64_t run_id) {
    char path[PATH_CAP];
    float* params = host_copy(m->params, m->num_params);
    const char* bad = params_check(params, m->num_params);
    if (bad) fail("refusing to save a checkpoint of step %d: %s", s->step, bad);
    ckpt_path(path, sizeof(path), dir, "model", s->step);
    checkpoint_write(path, &m->config, params, m->num_params);
    free(params);
    float* adam_m = host_copy(m->adam_m, m->num_params);
    float* adam_v = host_copy(m->adam_v, m->num_params);
    ckpt_path(path, sizeof(path), dir, "state", s->step);
    state_write(path, &m->config, adam_m, adam_v, m->num_params, s);
    free(adam_m);
    free(adam_v);
    marker_write(dir, s->step, run_id);
    ckpt_prune(dir, keep, run_id);
}

// Reads the parameters of the model file at path into m (built with the file's config).
void load_model_params(Model* m, const char* path) {
    float* host = (float*)malloc_check(m->num_params * sizeof(float));
    checkpoint_read_params(path, &m->config, host, m->num_params);
    cuda_check(cudaMemcpy(m->params, host, m->num_params * sizeof(float), cudaMemcpyHostToDevice));
    free(host);
}

// Reads the checkpoint of `step` in dir into m (built with the checkpoint's config) and *s.
void load_checkpoint(const char* dir, int step, Model* m, TrainState* s) {
    char path[PATH_CAP];
    size_t n = m->num_params;
    float* host = (float*)malloc_check(n * sizeof(float));
    ckpt_path(path, sizeof(path), dir, "model", step);
    checkpoint_read_params(path, &m->config, host, n);
    cuda_check(cudaMemcpy(m->params, host, n * sizeof(float), cudaMemcpyHostToDevice));
    float* adam_v = (float*)malloc_check(n * sizeof(float));
    ckpt_path(path, sizeof(path), dir, "state", step);
    state_read(path, &m->config, host, adam_v, n, s);
    cuda_check(cudaMemcpy(m->adam_m, host, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(m->adam_v, adam_v, n * sizeof(float), cudaMemcpyHostToDevice));
    free(host);
    free(adam_v);
    if (s->step != step) fail("'%s' is for step %d, its model file for step %d", path, s->step, step);
}

// ----------------------------------------------------------------------------
// main: the training program

// One block per row: hit[n] = 1 when the scored target is the row's argmax (the first maximum, as the
// CPU's argmax), 0 when not, −1 when the target is ignored. probs (N,V), targets (N).
__global__ void argmax_hits_kernel(int* hit, const float* probs, const int* targets, int V) {
    __shared__ float best_v[256];
    __shared__ int best_i[256];
    int n = blockIdx.x;
    if (targets[n] < 0) { if (threadIdx.x == 0) hit[n] = -1; return; }
    const float* row = probs + (size_t)n * V;
    float bv = -INFINITY;
    int bi = V;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (row[i] > bv || bi == V) { bv = row[i]; bi = i; }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            float ov = best_v[threadIdx.x + stride];
            int oi = best_i[threadIdx.x + stride];
            if (oi < V && (best_i[threadIdx.x] == V || ov > best_v[threadIdx.x] ||
                           (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x]))) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) hit[n] = best_i[0] == targets[n];
}
// How many scored targets (B*T,) are the argmax of their row of probs (B*T, V); *scored counts them.
// probs and targets on the device. Uses SCRATCH_MISC0.
long argmax_hits(const float* probs, const int* targets, int N, int V, long* scored) {
    int* hit = (int*)device_scratch(SCRATCH_MISC0, N);
    argmax_hits_kernel<<<N, 256>>>(hit, probs, targets, V);
    cuda_check(cudaGetLastError());
    int* host = (int*)malloc_check((size_t)N * sizeof(int));
    cuda_check(cudaMemcpy(host, hit, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost));
    long hits = 0, count = 0;
    for (int n = 0; n < N; n++) {
        if (host[n] < 0) continue;
        hits += host[n];
        count++;
    }
    free(host);
    *scored = count;
    return hits;
}

// Evaluates the first `batches` batches of the validation data: the mean loss over scored targets
// (nats per token), that loss in bits per byte of the text the targets encode (comparable across
// tokenizers), and the recall accuracy: the fraction of scored targets that are the model's argmax
// (what MQAR measures; reported where the data has target files).
EvalResult evaluate(Model* m, DataLoader* val, int batches, const Tokenizer* tok) {
    loader_seek(val, 0, 0);
    double total = 0.0, bytes = 0.0;
    long hits = 0, scored = 0, count = 0, n_valid = 0;
    int N = val->B * val->T;
    for (int i = 0; i < batches; i++) {
        loader_next_batch(val);
        model_forward(m, val->inputs, val->targets, val->B, val->T);
        total += (double)m->loss * m->n_valid;
        n_valid += m->n_valid;
        if (val->has_targets) { // recall is a task metric; skip the argmax pass over V for language modelling
            hits += argmax_hits(m->logits, m->targets, N, m->config.vocab_size, &count);
            scored += count;
        }
        bytes += tokens_byte_count(tok, val->targets, (size_t)N);
    }
    EvalResult r = {n_valid ? (float)(total / n_valid) : 0.0f, bytes > 0 ? total / bytes / log(2.0) : 0.0,
                    scored ? (double)hits / scored : 0.0, scored};
    return r;
}

// Prints the prompt and up to `n_tokens` sampled continuation tokens, each as soon as it is drawn
// (stops early at EOT; top_k 0: sample from all tokens). Returns how many were sampled.
int generate(Model* m, const Tokenizer* tok, const char* prompt, int n_tokens, float temperature, int top_k,
             uint64_t* rng) {
    int* ids = NULL;
    int plen = tokenizer_encode(tok, prompt, &ids);
    if (plen == 0) { // an empty prompt starts from EOT where there is one, else from byte/token 0
        free(ids);
        ids = (int*)malloc_check(sizeof(int));
        ids[0] = tok->eot_id >= 0 ? tok->eot_id : 0;
        plen = 1;
    }
    DecodeState s;
    decode_init(&s, &m->config, plen + n_tokens + 1);
    printf("---\n");
    int pos = 0;
    for (; pos < plen; pos++) {
        decode_step(m, &s, ids[pos], pos);
        if (ids[pos] != tok->eot_id) tokenizer_print(tok, ids[pos], stdout);
    }
    int sampled = 0;
    for (; sampled < n_tokens; sampled++, pos++) {
        int next = sample_token(s.logits_host, m->config.vocab_size, temperature, top_k, rng);
        if (next == tok->eot_id) break;
        tokenizer_print(tok, next, stdout);
        fflush(stdout);
        decode_step(m, &s, next, pos);
    }
    printf("\n---\n");
    decode_free(&s, &m->config);
    free(ids);
    return sampled;
}

// Seconds per generated token, timed over a few decode steps (what --max-time reserves for the
// final sample before one has been drawn).
double decode_seconds_per_token(Model* m) {
    DecodeState s;
    int n = 8;
    decode_init(&s, &m->config, n);
    double t0 = now_seconds();
    for (int pos = 0; pos < n; pos++) decode_step(m, &s, 0, pos);
    cuda_check(cudaDeviceSynchronize());
    double per_token = (now_seconds() - t0) / n;
    decode_free(&s, &m->config);
    return per_token;
}

// Peak fp32 FLOP/s of the device (non-tensor-core): SMs × fp32 lanes per SM × 2 (FMA) × clock.
// 128 lanes per SM from compute capability 8.6 on (and 8.9, 9.0, 10.x, 12.x), 64 before.
static double peak_flops(int device) {
    int sms = 0, khz = 0, major = 0, minor = 0;
    cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cuda_check(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
    cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    cuda_check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    int lanes = (major > 8 || (major == 8 && minor >= 6)) ? 128 : 64;
    return (double)sms * lanes * 2.0 * khz * 1e3;
}

// A host copy of the logits of the last forward pass, (N, V) for N = B*T rows (malloc'd).
float* logits_to_host(const Model* m, int N) {
    size_t n = (size_t)N * m->config.vocab_size;
    float* host = (float*)malloc_check(n * sizeof(float));
    cuda_check(cudaMemcpy(host, m->logits, n * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
}

// The commands that use a trained model without training it (model.h: ToolFlags): generate, eval,
// logits. The model is read from a checkpoint of either program.
int tool_main(int argc, char** argv) {
    ToolFlags tf;
    tool_flags_parse(&tf, argc, argv);
    Tokenizer tok;
    tokenizer_load(&tok, tf.tok_path);
    char path[PATH_CAP];
    int step;
    resolve_checkpoint(tf.ckpt, path, &step);
    Config cfg;
    checkpoint_read_config(path, &cfg);
    if (cfg.vocab_size != tok.vocab_size)
        fail("the model's vocabulary (%d) differs from the tokenizer's '%s' (%d): give its tokenizer with -z",
             cfg.vocab_size, tf.tok_path, tok.vocab_size);
    Model model;
    model_build(&model, &cfg);
    model.chunk_size = tf.chunk;
    load_model_params(&model, path);
    if (!strcmp(tf.command, "generate")) {
        // the training run's sampler stream at this step: `--seed` of that run reproduces its sample
        uint64_t rng = ((uint64_t)tf.seed * 0x9E3779B97F4A7C15ull + 1) ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
        char* prompt = read_prompt(tf.prompt);
        double t0 = now_seconds();
        int n = generate(&model, &tok, prompt, tf.gen_tokens, tf.temperature, tf.top_k, &rng);
        double dt = now_seconds() - t0;
        fprintf(stderr, "%d tokens in %.2f s (%.1f tokens/s, the prompt's included in the time) from '%s'\n", n, dt,
                n / dt, path);
        free(prompt);
    } else if (!strcmp(tf.command, "eval")) {
        DataLoader data;
        loader_init(&data, tf.data_glob, tf.B, tf.T, cfg.vocab_size, tokenizer_fingerprint(&tok));
        long total = loader_total_batches(&data), batches = tf.batches && tf.batches < total ? tf.batches : total;
        double t0 = now_seconds();
        EvalResult e = evaluate(&model, &data, (int)batches, &tok);
        double dt = now_seconds() - t0;
        printf("eval of '%s' on '%s': %ld batches of %dx%d (%ld tokens)%s in %.1f s\n", path, tf.data_glob, batches, tf.B,
               tf.T, batches * tf.B * tf.T, batches < total ? "" : ", all of the data", dt);
        printf("loss %.4f nats/token | perplexity %.3f", e.loss, exp(e.loss));
        if (data.has_targets) printf(" | recall %.4f (%ld scored)\n", e.accuracy, e.scored);
        else printf(" | %.4f bits/byte\n", e.bits_per_byte);
        loader_free(&data);
    } else {
        int* ids;
        int T = parse_ids(tf.ids, cfg.vocab_size, &ids);
        model_forward(&model, ids, NULL, 1, T);
        float* logits = logits_to_host(&model, T);
        char tmp[PATH_CAP];
        FILE* f = atomic_open(tf.out, tmp);
        fwrite_check(logits, sizeof(float), (size_t)T * cfg.vocab_size, f, tmp);
        atomic_commit(f, tmp, tf.out);
        printf("logits of %d tokens (%d x %d float32) -> %s\n", T, T, cfg.vocab_size, tf.out);
        free(logits);
        free(ids);
    }
    tokenizer_free(&tok);
    model_free(&model);
    return 0;
}

#ifndef TESTING
int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); // logs redirected to a file keep their order with stderr
    if (argc > 1 && (!strcmp(argv[1], "generate") || !strcmp(argv[1], "eval") || !strcmp(argv[1], "logits")))
        return tool_main(argc - 1, argv + 1);
    if (argc > 1 && (!strcmp(argv[1], "export") || !strcmp(argv[1], "import"))) return convert_main(argc - 1, argv + 1);
    double t_start = now_seconds();
    RunFlags rf;
    run_flags_parse(&rf, argc, argv, "Trains a GLA / softmax-attention hybrid language model on an NVIDIA GPU.");

    // everything that could fail at the end of the run is checked before step 0
    Tokenizer tok;
    tokenizer_load(&tok, rf.tok_path);
    int* prompt_ids = NULL; // the samples' prompt must encode (an MQAR tokenizer knows only its symbols)
    tokenizer_encode(&tok, rf.prompt, &prompt_ids);
    free(prompt_ids);
    int device = 0, n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0)
        fail("no CUDA GPU found: train_gla_cu needs one (./train_gla trains on the CPU)");
    cudaDeviceProp prop;
    cuda_check(cudaSetDevice(device));
    cuda_check(cudaGetDeviceProperties(&prop, device));
    int start = run_dir_open(&rf, argv[0]);
    Config cfg;
    char path[PATH_CAP];
    TrainState ts = {0};
    if (start >= 0) {
        ckpt_path(path, sizeof(path), rf.out_dir, "model", start);
        checkpoint_read_config(path, &cfg);
        resume_check_flags(&rf, &cfg, path, argv[0]);
        ckpt_path(path, sizeof(path), rf.out_dir, "state", start);
        state_read_batch(path, &ts);
        if ((run_flag(&rf, "batch")->set && rf.B != ts.B) || (run_flag(&rf, "seq-len")->set && rf.T != ts.T))
            fail("'%s' was trained with -b %d -T %d; resume with the same (got -b %d -T %d)", path, ts.B, ts.T, rf.B, rf.T);
        rf.B = ts.B;
        rf.T = ts.T;
    } else {
        config_from_flags(&rf, tok.vocab_size, &cfg, argv[0]);
    }
    if (cfg.vocab_size != tok.vocab_size)
        fail("the model's vocabulary (%d) differs from the tokenizer's '%s' (%d)", cfg.vocab_size, rf.tok_path, tok.vocab_size);
    int B = rf.B, T = rf.T;

    Model model;
    model_build(&model, &cfg);
    model.chunk_size = rf.chunk;
    // parameters, gradients, two AdamW moments (allocated by model_build) and the activations, refused
    // before the activations are allocated
    double MiB = 1.0 / 1048576.0;
    size_t act_floats = model_count_acts(&model, B, T);
    double need = (model.num_params * 16.0 + act_floats * 4.0) * MiB;
    size_t gpu_free, gpu_total;
    cuda_check(cudaMemGetInfo(&gpu_free, &gpu_total));
    if (act_floats * 4.0 > 0.9 * gpu_free)
        fail("this run needs about %.0f MiB but the GPU has %.0f MiB free: reduce -b, -T or the model", need,
             (gpu_free + model.num_params * 16.0) * MiB);
    uint32_t tok_fp = tokenizer_fingerprint(&tok);
    DataLoader train, val;
    loader_init(&train, rf.train_glob, B, T, cfg.vocab_size, tok_fp);
    loader_init(&val, rf.val_glob, B, T, cfg.vocab_size, tok_fp);
    check_disk_space(&rf, model.num_params);
    uint64_t run_id;
    RunLog log;
    if (start >= 0) {
        load_checkpoint(rf.out_dir, start, &model, &ts);
        loader_seek(&train, ts.shard, ts.pos);
        run_id = marker_run_id(rf.out_dir, start);
        printf("resumed from step %d of '%s'\n", start, rf.out_dir);
    } else {
        if (rf.overwrite) run_dir_start_over(rf.out_dir);
        model_init_weights(&model, (uint64_t)rf.seed);
        ts.rng = (uint64_t)rf.seed * 0x9E3779B97F4A7C15ull + 1;
        ts.B = B;
        ts.T = T;
        run_id = new_run_id();
    }
    run_log_open(&log, rf.out_dir, start >= 0);

    print_model_summary(&cfg, model.num_params);
    printf("memory: params %.1f MiB, grads %.1f MiB, AdamW %.1f MiB, activations %.1f MiB (B=%d T=%d), total %.1f MiB\n",
           model.num_params * 4 * MiB, model.num_params * 4 * MiB, model.num_params * 8 * MiB, act_floats * 4 * MiB, B,
           T, need);
    model_alloc_acts(&model, B, T);
    cuda_check(cudaMemGetInfo(&gpu_free, &gpu_total));
    double step_flops = flops_per_token(&model.config, T, model.chunk_size) * B * T, peak = peak_flops(device);
    printf("device: %s, %d SMs, %.0f MiB in use of %.0f MiB, peak fp32 %.1f TFLOP/s (for MFU)\n", prop.name,
           prop.multiProcessorCount, (gpu_total - gpu_free) * MiB, gpu_total * MiB, peak * 1e-12);
    printf("data: %zu shard(s) train, val %zu shard(s); %d steps of %d tokens, warmup %d\n", train.files.gl_pathc,
           val.files.gl_pathc, rf.steps, B * T, rf.warmup);
    printf("checkpoints: '%s' every %d steps%s, keeping %d%s\n", rf.out_dir, rf.ckpt_every,
           rf.ckpt_minutes > 0 ? " and after each quiet stretch of --ckpt-minutes" : "", rf.keep, rf.keep ? "" : " (all)");
    TrainHyper hyper = {rf.lr, rf.min_lr_frac, rf.wd, 0.9f, 0.95f, 1e-8f, rf.clip, rf.warmup, rf.steps};

    // --max-time bounds the whole run: a step is started only if it and the end work (the final
    // evaluation, sample and checkpoint, each timed when it last ran, estimated before) still fit
    double step_time = 0.0, eval_time = -1.0, sample_time = -1.0, save_time = -1.0, last_save = now_seconds();
    if (rf.max_time > 0) sample_time = decode_seconds_per_token(&model) * (strlen(rf.prompt) + rf.gen_tokens + 1);
    int first_step = ts.step, step = ts.step, stopped_early = 0;
    double t_train = now_seconds(), mean_step = 0.0; // mean_step: a moving average, for the ETA
    install_stop_handlers();
    for (;; step++) {
        if (stop_signal) {
            ts.step = step;
            ts.shard = train.shard;
            ts.pos = train.pos;
            save_checkpoint(rf.out_dir, &model, &ts, rf.keep, run_id);
            fprintf(stderr, "stopped by %s at step %d: checkpoint saved in '%s'; continue with: %s -r 1 --out %s\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step, rf.out_dir, argv[0], rf.out_dir);
            break;
        }
        double end_work = (eval_time >= 0 ? eval_time : rf.val_batches * step_time / 3.0) +
                          (sample_time >= 0 ? sample_time : 0.0) +
                          (save_time >= 0 ? save_time : 12.0 * model.num_params / 50e6);
        int out_of_time = rf.max_time > 0 && step < rf.steps && now_seconds() - t_start + step_time + end_work > rf.max_time;
        int last = step >= rf.steps || (rf.stop_at > 0 && step >= rf.stop_at) || out_of_time;
        stopped_early = out_of_time && !(rf.stop_at > 0 && step >= rf.stop_at);
        if ((rf.val_every && step % rf.val_every == 0) || last) {
            double t0 = now_seconds();
            EvalResult e = evaluate(&model, &val, rf.val_batches, &tok);
            eval_time = now_seconds() - t0;
            run_log_eval(&log, step, &e, val.has_targets);
            if (val.has_targets) // a task scoring some positions (MQAR): recall, not bits per byte
                printf("step %5d | val loss %.4f nats/token | recall %.4f (%ld scored)\n", step, e.loss, e.accuracy, e.scored);
            else
                printf("step %5d | val loss %.4f nats/token | %.4f bits/byte\n", step, e.loss, e.bits_per_byte);
        }
        if ((rf.sample_every && step % rf.sample_every == 0 && step > 0) || last) {
            double t0 = now_seconds();
            uint64_t srng = ts.rng ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
            generate(&model, &tok, rf.prompt, rf.gen_tokens, rf.temperature, 0, &srng);
            sample_time = now_seconds() - t0;
        }
        int minutes_up = rf.ckpt_minutes > 0 && now_seconds() - last_save > 60.0 * rf.ckpt_minutes;
        if ((rf.ckpt_every && step % rf.ckpt_every == 0 && step > first_step) || (minutes_up && step > first_step) || last) {
            double t0 = now_seconds();
            ts.step = step;
            ts.shard = train.shard;
            ts.pos = train.pos;
            save_checkpoint(rf.out_dir, &model, &ts, rf.keep, run_id);
            last_save = now_seconds();
            save_time = last_save - t0;
        }
        if (last) break;
        double t0 = now_seconds();
        loader_next_batch(&train);
        model_forward(&model, train.inputs, train.targets, B, T);
        model_backward(&model, train.inputs, train.targets);
        float norm = grad_norm(&model);
        if (!isfinite(model.loss) || !isfinite(norm)) {
            const char* where = first_nonfinite_grad(&model);
            fail("step %d: loss %g, grad norm %g; first non-finite gradient in '%s'. Stopped without saving; "
                 "the last good checkpoint in '%s' is kept", step, model.loss, norm, where ? where : "(none: the loss)", rf.out_dir);
        }
        float scale = (rf.clip > 0.0f && norm > rf.clip) ? rf.clip / norm : 1.0f;
        float step_lr = learning_rate(&hyper, step);
        adamw_update(&model, &hyper, step_lr, step + 1, scale);
        cuda_check(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        step_time = dt > step_time ? dt : 0.5 * (step_time + dt); // the slow steps count: a bound, not an average
        mean_step = mean_step > 0 ? 0.9 * mean_step + 0.1 * dt : dt;
        char eta[32];
        printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | MFU %.1f%% | ETA %s\n", step + 1,
               rf.steps, model.loss, step_lr, norm, dt * 1e3, B * T / dt, 100.0 * step_flops / dt / peak,
               format_duration(mean_step * (rf.steps - step - 1), eta));
        run_log_step(&log, step + 1, model.loss, step_lr, norm, B * T / dt, now_seconds() - t_start);
    }
    if (!stop_signal)
        printf("trained steps %d..%d in %.1f s (the whole run %.1f s)\n", first_step, step, now_seconds() - t_train,
               now_seconds() - t_start);
    if (stopped_early)
        printf("--max-time %g s: stopped early at step %d of the %d-step schedule; continue with: %s -r 1 --out %s\n",
               rf.max_time, step, rf.steps, argv[0], rf.out_dir);
    run_log_close(&log);
    loader_free(&train);
    loader_free(&val);
    tokenizer_free(&tok);
    model_free(&model);
    if (cublas_handle) cublas_check(cublasDestroy(cublas_handle));
    for (int i = 0; i < NUM_SCRATCH; i++) cuda_check(cudaFree(scratch_mem[i]));
    return stop_signal ? 128 + stop_signal : 0;
}
#endif // TESTING
