/*
 * train_gla.cu — the same trainer as train_gla.c, on an NVIDIA GPU, mirroring it function by function.
 *
 * Every section, in the same order, under the same function names as train_gla.c: each __global__
 * kernel sits right before its launcher, and the launcher has the CPU function's name and arguments
 * (all tensor arguments are device pointers). fp32 everywhere, matmuls through cuBLAS, no float
 * atomics: the same run twice gives the same bits, and checkpoints are the CPU program's files.
 */
// model.h's snprintf-into-a-fixed-buffer names are bounded by design (the CPU Makefile passes
// -Wno-format-truncation too); gcc's -O3 guess that they may truncate is not an error here
#pragma GCC diagnostic ignored "-Wformat-truncation"
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
// TEMPORARY: host code identical to train_gla.c's, used by both programs, on its way into model.h
// (where it then lives once). Each function's place in train_gla.c is marked below by a one-line
// comment. Delete this block when model.h has them.

typedef struct {
    float lr, min_lr_frac, weight_decay, beta1, beta2, eps, grad_clip;
    int warmup_steps, total_steps;
} TrainHyper;

// linear warmup over `warmup` steps, then cosine decay from lr to lr*min_lr_frac at total_steps
float learning_rate(const TrainHyper* h, int step) {
    if (step < h->warmup_steps) return h->lr * (step + 1) / h->warmup_steps;
    float min_lr = h->lr * h->min_lr_frac;
    if (step >= h->total_steps) return min_lr;
    double progress = (double)(step - h->warmup_steps) / (h->total_steps - h->warmup_steps);
    return (float)(min_lr + 0.5 * (h->lr - min_lr) * (1.0 + cos(3.14159265358979323846 * progress)));
}

// The index of the largest of x[0..n) (the first, on ties).
static int argmax(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// Samples from softmax(logits / temperature) (V); temperature 0 = argmax.
int sample_token(const float* logits, int V, float temperature, uint64_t* rng) {
    int best = argmax(logits, V);
    if (temperature <= 0.0f) return best;
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((logits[i] - logits[best]) / temperature);
    double r = random_f32(rng) * sum, acc = 0.0;
    for (int i = 0; i < V; i++) {
        acc += exp((logits[i] - logits[best]) / temperature);
        if (acc > r) return i;
    }
    return best;
}

typedef struct {
    int step;
    int shard;
    size_t pos;
    uint64_t rng;
    int B, T;
} TrainState;

// Checkpoint of step s = the state before training step s: model_<s>.bin, state_<s>.bin, then the
// marker DONE_<s>, written last, that says both files are complete. Resume looks for markers only.
static void ckpt_path(char* out, size_t cap, const char* dir, const char* kind, int step) {
    snprintf(out, cap, "%s/%s_%08d%s", dir, kind, step, strcmp(kind, "DONE") ? ".bin" : "");
}

// The step of a DONE marker's path ".../DONE_<digits>", or -1 for anything else (the marker's own
// DONE_<step>.tmp, left behind by a run killed while writing it, is not a marker).
static int marker_step(const char* path) {
    const char* digits = strrchr(path, '_') + 1;
    if (!*digits || strspn(digits, "0123456789") != strlen(digits)) return -1;
    return atoi(digits);
}

// The steps of the complete checkpoints in dir (those with a DONE marker), ascending, malloc'd into
// *steps; returns their count.
static int checkpoint_steps(const char* dir, int** steps) {
    glob_t g;
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/DONE_*", dir);
    int n = 0;
    if (glob(pattern, 0, NULL, &g) == 0) { // sorted, and %08d sorts by number
        *steps = (int*)malloc_check(g.gl_pathc * sizeof(int));
        for (size_t i = 0; i < g.gl_pathc; i++)
            if (marker_step(g.gl_pathv[i]) >= 0) (*steps)[n++] = marker_step(g.gl_pathv[i]);
        globfree(&g);
    } else {
        *steps = NULL;
    }
    return n;
}

// highest step with a DONE marker in dir, or −1
int latest_checkpoint(const char* dir) {
    int* steps;
    int n = checkpoint_steps(dir, &steps);
    int best = n > 0 ? steps[n - 1] : -1;
    free(steps);
    return best;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct { float loss; double bits_per_byte, accuracy; long scored; } EvalResult;

// (end of the temporary block)

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
#include "parts/gla.cuh"

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
#include "parts/hgrn.cuh"

// ----------------------------------------------------------------------------
// The delta rule (DeltaNet, LAYERS.md §5) and the gated delta rule (Gated DeltaNet, §6):
// delta_recurrent_step / _forward / _backward, delta_chunk_forward / _backward
#include "parts/delta.cuh"

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
// sizes of the matrix-state mixers: H heads, each with a state S ∈ R^{K×V}
//     gla: gla_heads, K = gla_dk/H, V = gla_dv/H     hgrn2: hgrn2_heads, K = V = d/H
//     retnet: retnet_heads, K = d/H, V = 2d/H         deltanet: deltanet_heads, K = V = d/H
//     gated_deltanet: gdn_heads, K = gdn_head_dim, V = K · gdn_expand_v
// (hgrn's state is a vector of hgrn_dim; attention keeps a KV cache)
static void mixer_dims(const Config* c, int mixer, int* H, int* K, int* V) {
    int d = c->d_model;
    switch (mixer) {
    case MIXER_GLA: *H = c->gla_heads; *K = c->gla_dk / *H; *V = c->gla_dv / *H; break;
    case MIXER_HGRN2: *H = c->hgrn2_heads; *K = *V = d / *H; break;
    case MIXER_RETNET: *H = c->retnet_heads; *K = d / *H; *V = 2 * d / *H; break;
    case MIXER_DELTANET: *H = c->deltanet_heads; *K = *V = d / *H; break;
    case MIXER_GATED_DELTANET: *H = c->gdn_heads; *K = c->gdn_head_dim; *V = *K * c->gdn_expand_v; break;
    default: fail("mixer_dims: mixer id %d has no matrix state", mixer);
    }
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

// out (N,d) = W_o · RMSNorm_d(o) for N rows
void hgrn2_output_forward(float* out, LayerActs* A, float* const* W, const Config* c, int N) {
    rmsnorm_forward(A->o_gated, A->o_rstd, A->o, W[W_HGRN2_G_NORM], N, c->d_model, c->norm_eps);
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

static int attn_head_dim(const Config* c) { return c->d_model / c->attn_heads; }

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

// fla's init (LAYERS.md §9.5): every Linear and short-conv weight, the embedding and the LM head
// N(0, 0.02); norm weights 1; GLA's gate bias and HGRN's lower bounds 0; GDN's
//     A_log = log A, A ~ U(0, 16]       (per-head decay rates; 0 excluded, log 0 = −inf)
//     dt_bias = dt + log(−expm1(−dt))   (softplus⁻¹(dt), dt = exp(U(log 1e-3, log 0.1)) clamped ≥ 1e-4)
// Drawn on the host with the CPU program's generator and order, then copied: both programs start
// from the same bits.
void model_init_weights(Model* m, uint64_t seed) {
    uint64_t rng = seed ? seed : 1;
    float* params = (float*)malloc_check(m->num_params * sizeof(float));
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        float* w = params + p->offset;
        int slot = p->layer >= 0 ? p->slot : -1;
        int is_norm = (p->layer < 0 && p->slot == G_NORM) || slot == W_ATTN_NORM || slot == W_MLP_NORM ||
                      slot == W_GLA_G_NORM || slot == W_HGRN_G_NORM || slot == W_HGRN2_G_NORM ||
                      slot == W_RET_G_NORM || slot == W_DELTA_O_NORM;
        int is_zero = (p->layer < 0 && p->slot == G_LOWER_BOUNDS) || slot == W_GLA_GK_BIAS;
        for (size_t j = 0; j < p->numel; j++) {
            if (slot == W_DELTA_A_LOG) {
                w[j] = logf(16.0f * (1.0f - random_f32(&rng)));
            } else if (slot == W_DELTA_DT_BIAS) {
                float dt = expf(logf(1e-3f) + random_f32(&rng) * (logf(0.1f) - logf(1e-3f)));
                dt = fmaxf(dt, 1e-4f);
                w[j] = dt + logf(-expm1f(-dt));
            } else {
                w[j] = is_norm ? 1.0f : is_zero ? 0.0f : 0.02f * random_normal(&rng);
            }
        }
    }
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

// TrainHyper, learning_rate: host code shared with train_gla.c (the temporary block at the top, for model.h)

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

// floats of a linear layer's recurrent state (0 for attention, whose cache grows with the text)
static size_t mixer_state_floats(const Config* c, int mixer) {
    if (mixer == MIXER_ATTN) return 0;
    if (mixer == MIXER_HGRN) return c->hgrn_dim;
    int H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    return (size_t)H * K * V;
}

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

// argmax, sample_token: host code shared with train_gla.c (the temporary block at the top, for model.h)

// ----------------------------------------------------------------------------
// optimizer-state file: header [0] magic [1] version [2] step [3] shard [4,5] data position (lo, hi)
// [6,7] sampler RNG (lo, hi) [8,9] parameter count (lo, hi) [10] B [11] T [12,13] fingerprint of
// the model's config (lo, hi; 0 in files written before it existed); then AdamW m and v.
// The same files as the CPU program's: either program resumes the other's run.

// TrainState: host code shared with train_gla.c (the temporary block at the top, for model.h)

// FNV-1a of the model's checkpoint header: two configs with the same parameter count (the same
// mixers in another order, say) still differ here. Never 0.
static uint64_t config_fingerprint(const Model* m) {
    int32_t h[256];
    config_to_header(&m->config, m->num_params, h);
    uint64_t fp = hash_bytes((const unsigned char*)h, sizeof(h));
    return fp ? fp : 1;
}

// a host copy of n device floats (malloc'd)
static float* host_copy(const float* dev, size_t n) {
    float* host = (float*)malloc_check(n * sizeof(float));
    cuda_check(cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
}

void state_write(const char* path, const Model* m, const TrainState* s) {
    char tmp[PATH_CAP];
    int32_t h[256] = {STATE_MAGIC, STATE_VERSION, s->step, s->shard};
    uint64_t fp = config_fingerprint(m);
    h[4] = (int32_t)(s->pos & 0xffffffff); h[5] = (int32_t)(s->pos >> 32);
    h[6] = (int32_t)(s->rng & 0xffffffff); h[7] = (int32_t)(s->rng >> 32);
    h[8] = (int32_t)(m->num_params & 0xffffffff); h[9] = (int32_t)((uint64_t)m->num_params >> 32);
    h[10] = s->B; h[11] = s->T;
    h[12] = (int32_t)(fp & 0xffffffff); h[13] = (int32_t)(fp >> 32);
    float* adam_m = host_copy(m->adam_m, m->num_params);
    float* adam_v = host_copy(m->adam_v, m->num_params);
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(adam_m, sizeof(float), m->num_params, f, tmp);
    fwrite_check(adam_v, sizeof(float), m->num_params, f, tmp);
    atomic_commit(f, tmp, path);
    free(adam_m);
    free(adam_v);
}

// Reads an optimizer-state file into m's AdamW moments and *s, checking it against the model m:
// parameter count, config fingerprint, file length, finite moments.
void state_read(const char* path, Model* m, TrainState* s) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[256];
    read_header(h, f, path, STATE_MAGIC, STATE_VERSION, "optimizer-state file");
    s->step = h[2];
    s->shard = h[3];
    s->pos = (size_t)(uint32_t)h[4] | ((size_t)(uint32_t)h[5] << 32);
    s->rng = (uint64_t)(uint32_t)h[6] | ((uint64_t)(uint32_t)h[7] << 32);
    size_t n = (size_t)(uint32_t)h[8] | ((size_t)(uint32_t)h[9] << 32);
    s->B = h[10];
    s->T = h[11];
    uint64_t fp = (uint64_t)(uint32_t)h[12] | ((uint64_t)(uint32_t)h[13] << 32), want_fp = config_fingerprint(m);
    if (n != m->num_params) fail("'%s' holds optimizer state for %zu parameters, the model has %zu", path, n, m->num_params);
    if (fp != 0 && fp != want_fp)
        fail("'%s' was written for another model config (fingerprint %016llx, this model's is %016llx): it does "
             "not belong to this checkpoint", path, (unsigned long long)fp, (unsigned long long)want_fp);
    if (s->step < 0) fail("'%s': negative step %d", path, s->step);
    int64_t want = HEADER_BYTES + 8 * (int64_t)n, have = file_size(f);
    if (have != want) fail("'%s' is %lld bytes, expected %lld (truncated or corrupt)", path, (long long)have, (long long)want);
    float* adam_m = (float*)malloc_check(n * sizeof(float));
    float* adam_v = (float*)malloc_check(n * sizeof(float));
    fread_check(adam_m, sizeof(float), n, f, path);
    fread_check(adam_v, sizeof(float), n, f, path);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(adam_m[i]) || !isfinite(adam_v[i]) || adam_v[i] < 0.0f)
            fail("'%s': optimizer moment %zu is invalid (corrupt file)", path, i);
    cuda_check(cudaMemcpy(m->adam_m, adam_m, n * sizeof(float), cudaMemcpyHostToDevice));
    cuda_check(cudaMemcpy(m->adam_v, adam_v, n * sizeof(float), cudaMemcpyHostToDevice));
    free(adam_m);
    free(adam_v);
}

// ckpt_path, marker_step, checkpoint_steps: host code shared with train_gla.c (the temporary block
// at the top, for model.h)

void save_checkpoint(const char* dir, const Model* m, const TrainState* s, int keep) {
    char path[PATH_CAP];
    float* params = host_copy(m->params, m->num_params);
    for (size_t i = 0; i < m->num_params; i++)
        if (!isfinite(params[i])) fail("refusing to save a checkpoint with non-finite parameters (step %d)", s->step);
    ckpt_path(path, sizeof(path), dir, "model", s->step);
    checkpoint_write(path, &m->config, params, m->num_params);
    free(params);
    ckpt_path(path, sizeof(path), dir, "state", s->step);
    state_write(path, m, s);
    ckpt_path(path, sizeof(path), dir, "DONE", s->step);
    char tmp[PATH_CAP];
    FILE* f = atomic_open(path, tmp);
    atomic_commit(f, tmp, path);
    // drop checkpoints older than the `keep` most recent (marker first, so none is left half-deleted
    // with its marker)
    int* steps;
    int n = checkpoint_steps(dir, &steps);
    const char* kinds[] = {"DONE", "model", "state"};
    for (int i = 0; keep > 0 && i + keep < n; i++)
        for (int k = 0; k < 3; k++) {
            ckpt_path(path, sizeof(path), dir, kinds[k], steps[i]);
            remove(path);
        }
    free(steps);
}

// latest_checkpoint: host code shared with train_gla.c (the temporary block at the top, for model.h)

// ----------------------------------------------------------------------------
// main: the training program

// now_seconds: host code shared with train_gla.c (the temporary block at the top, for model.h)

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
// (EvalResult: host code shared with train_gla.c, the temporary block at the top, for model.h)
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

// Prints the prompt and `n_tokens` sampled continuation tokens (stops early at EOT).
void generate(Model* m, const Tokenizer* tok, const char* prompt, int n_tokens, float temperature, uint64_t* rng) {
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
    for (int i = 0; i < n_tokens; i++, pos++) {
        int next = sample_token(s.logits_host, m->config.vocab_size, temperature, rng);
        if (next == tok->eot_id) break;
        tokenizer_print(tok, next, stdout);
        decode_step(m, &s, next, pos);
    }
    printf("\n---\n");
    fflush(stdout);
    decode_free(&s, &m->config);
    free(ids);
}

// Floating-point operations of one training step per token (forward + backward = 3× forward), for the
// MFU estimate: 6 per weight of every matmul (the LM head included, the embedding lookup not), the
// attention GEMMs as computed (all T keys: 2 GEMMs of 2 T d per token forward), and the chunkwise
// linear mixers' core (per head: the intra-chunk scores and their use, 2 C (K + V), and the state's
// read and update, 4 K V). Short convs, norms and gates are left out: an estimate, as llm.c's.
static double flops_per_token(const Model* m, int T) {
    const Config* c = &m->config;
    double matmul_weights = (double)m->num_params;
    if (!c->tie_embeddings) matmul_weights -= (double)c->vocab_size * c->d_model;   // the lookup table
    double flops = 6.0 * matmul_weights;
    for (int l = 0; l < c->n_layer; l++) {
        int mix = c->pattern[l];
        if (mix == MIXER_ATTN) {
            flops += 3.0 * 4.0 * T * c->d_model;
        } else if (mix != MIXER_HGRN) {
            int H, K, V;
            mixer_dims(c, mix, &H, &K, &V);
            flops += 3.0 * H * (2.0 * m->chunk_size * (K + V) + 4.0 * K * V);
        }
    }
    return flops;
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

#ifndef TESTING
int main(int argc, char** argv) {
    // model
    int d_model = 128, n_layer = 4, gla_heads = 2, attn_heads = 4, attn_kv_heads = 0, mlp_hidden = 0, tie = 1;
    const char* pattern = "gla:3";
    float expand_k = 0.5f, expand_v = 1.0f;
    // the other linear families, fla's defaults scaled to d = 128: HGRN width d (expand ratio 1);
    // HGRN2 head dim 128 (1 head); RetNet 4 heads (K = 32, V = 64); DeltaNet 2 heads (K = V = 64);
    // GDN H·K = 0.75 d (3 heads of 32), V = 2K; short convs of 4; HGRN lower bounds on
    int hgrn2_heads = 1, retnet_heads = 4, deltanet_heads = 2, gdn_heads = 3, gdn_head_dim = 32, gdn_expand_v = 2,
        conv_size = 4, lower_bound = 1;
    // data and training
    const char *train_glob = "data/tinyshakespeare/tiny_shakespeare_train.bin",
               *val_glob = "data/tinyshakespeare/tiny_shakespeare_val.bin",
               *tok_path = "data/tokenizer_bytes.bin", *out_dir = "out", *prompt = "\n";
    int B = 32, T = 128, steps = 900, warmup = 50, val_every = 100, val_batches = 20, sample_every = 300,
        gen_tokens = 256, ckpt_every = 500, keep = 2, resume = 0, seed = 1337, chunk = 16, stop_at = 0;
    float lr = 3e-3f, min_lr_frac = 0.1f, wd = 0.1f, clip = 1.0f, max_time = 0.0f, temperature = 0.8f;
    Flag flags[] = {
        {"train", 'i', FLAG_STRING, &train_glob, 0, 0, "training shards (glob)"},
        {"val", 'j', FLAG_STRING, &val_glob, 0, 0, "validation shards (glob)"},
        {"tokenizer", 'z', FLAG_STRING, &tok_path, 0, 0, "tokenizer file"},
        {"out", 'o', FLAG_STRING, &out_dir, 0, 0, "directory for checkpoints"},
        {"resume", 'r', FLAG_INT, &resume, 0, 1, "1: continue from the latest checkpoint in --out"},
        {"d-model", 'd', FLAG_INT, &d_model, 8, 16384, "model width d"},
        {"layers", 'L', FLAG_INT, &n_layer, 1, MAX_LAYERS, "number of layers"},
        {"pattern", 'p', FLAG_STRING, &pattern, 0, 0, "mixers: list 'gla,gla,gla,attn', 'gla:3' (3:1), 'gla:pure', 'attn'"},
        {"gla-heads", 0, FLAG_INT, &gla_heads, 1, 1024, "GLA heads"},
        {"expand-k", 0, FLAG_FLOAT, &expand_k, 0.0625, 4, "GLA key dim = d * expand-k"},
        {"expand-v", 0, FLAG_FLOAT, &expand_v, 0.0625, 4, "GLA value dim = d * expand-v"},
        {"hgrn2-heads", 0, FLAG_INT, &hgrn2_heads, 1, 1024, "HGRN2 heads (key and value head dim d/heads)"},
        {"retnet-heads", 0, FLAG_INT, &retnet_heads, 1, 1024, "RetNet heads (K = d/heads, V = 2d/heads)"},
        {"deltanet-heads", 0, FLAG_INT, &deltanet_heads, 1, 1024, "DeltaNet heads (K = V = d/heads)"},
        {"gdn-heads", 0, FLAG_INT, &gdn_heads, 1, 1024, "Gated DeltaNet heads"},
        {"gdn-head-dim", 0, FLAG_INT, &gdn_head_dim, 1, 4096, "Gated DeltaNet key head dim K"},
        {"gdn-expand-v", 0, FLAG_INT, &gdn_expand_v, 1, 16, "Gated DeltaNet value head dim = K * this"},
        {"conv-size", 0, FLAG_INT, &conv_size, 1, 16, "short-convolution kernel of DeltaNet / GDN"},
        {"lower-bound", 0, FLAG_INT, &lower_bound, 0, 1, "1: HGRN / HGRN2 forget gates get learned lower bounds"},
        {"attn-heads", 0, FLAG_INT, &attn_heads, 1, 1024, "attention heads (head dim d/heads)"},
        {"kv-heads", 0, FLAG_INT, &attn_kv_heads, 0, 1024, "attention key/value heads for GQA (0: = attn-heads)"},
        {"mlp-hidden", 0, FLAG_INT, &mlp_hidden, 0, 65536, "SwiGLU width (0: fla's rule, 8d/3 rounded up to 256)"},
        {"tie", 0, FLAG_INT, &tie, 0, 1, "1: LM head tied to the embedding"},
        {"chunk", 0, FLAG_INT, &chunk, 1, 1024, "chunk length of the linear mixers in training"},
        {"batch", 'b', FLAG_INT, &B, 1, 4096, "batch size B"},
        {"seq-len", 'T', FLAG_INT, &T, 2, 65536, "sequence length T"},
        {"steps", 'n', FLAG_INT, &steps, 0, 100000000, "training steps (the cosine schedule's length)"},
        {"stop-at", 0, FLAG_INT, &stop_at, 0, 100000000, "stop at this step, keeping the schedule of --steps (0: at --steps)"},
        {"max-time", 'x', FLAG_FLOAT, &max_time, 0, 1e9, "stop after this many seconds of training (0: no limit)"},
        {"lr", 'l', FLAG_FLOAT, &lr, 0, 10, "peak learning rate"},
        {"warmup", 'u', FLAG_INT, &warmup, 0, 100000000, "linear warmup steps"},
        {"min-lr-frac", 'q', FLAG_FLOAT, &min_lr_frac, 0, 1, "final learning rate as a fraction of the peak"},
        {"weight-decay", 'c', FLAG_FLOAT, &wd, 0, 10, "AdamW decoupled weight decay (Linear weights, embedding, LM head)"},
        {"grad-clip", 'g', FLAG_FLOAT, &clip, 0, 1e9, "clip the global gradient norm to this (0: off)"},
        {"val-every", 'v', FLAG_INT, &val_every, 0, 100000000, "validation loss every N steps (0: only at the end)"},
        {"val-batches", 'm', FLAG_INT, &val_batches, 1, 100000, "validation batches"},
        {"sample-every", 's', FLAG_INT, &sample_every, 0, 100000000, "print a sample every N steps (0: only at the end)"},
        {"gen-tokens", 'G', FLAG_INT, &gen_tokens, 0, 1000000, "tokens per sample"},
        {"prompt", 0, FLAG_STRING, &prompt, 0, 0, "text the samples start from"},
        {"temperature", 0, FLAG_FLOAT, &temperature, 0, 100, "sampling temperature (0: greedy)"},
        {"ckpt-every", 'k', FLAG_INT, &ckpt_every, 0, 100000000, "checkpoint every N steps (0: only at the end)"},
        {"keep", 0, FLAG_INT, &keep, 0, 1000000, "checkpoints to keep (0: all)"},
        {"seed", 0, FLAG_INT, &seed, 0, 2147483647, "random seed (init and sampling)"},
    };
    parse_flags(argc, argv, flags, sizeof(flags) / sizeof(flags[0]),
                "Trains a GLA / softmax-attention hybrid language model on an NVIDIA GPU.");
    if (warmup > steps && steps > 0) usage_error(argv[0], "--warmup %d exceeds --steps %d", warmup, steps);

    Tokenizer tok;
    tokenizer_load(&tok, tok_path);
    int device = 0;
    cudaDeviceProp prop;
    cuda_check(cudaSetDevice(device));
    cuda_check(cudaGetDeviceProperties(&prop, device));

    Config cfg = {0};
    TrainState ts = {0};
    int start = resume ? latest_checkpoint(out_dir) : -1;
    if (resume && start < 0) fail("--resume 1: no complete checkpoint (DONE_* marker) in '%s'", out_dir);
    char path[PATH_CAP];
    if (start >= 0) {
        ckpt_path(path, sizeof(path), out_dir, "model", start);
        checkpoint_read_config(path, &cfg);
    } else {
        cfg.vocab_size = tok.vocab_size;
        cfg.d_model = d_model;
        cfg.n_layer = n_layer;
        cfg.mlp_hidden = mlp_hidden ? mlp_hidden : default_mlp_hidden(d_model);
        cfg.tie_embeddings = tie;
        cfg.gla_heads = gla_heads;
        cfg.gla_dk = (int)(d_model * expand_k);
        cfg.gla_dv = (int)(d_model * expand_v);
        cfg.gla_gate_rank = 16;
        cfg.gla_gate_normalizer = 16;
        cfg.attn_heads = attn_heads;
        cfg.attn_kv_heads = attn_kv_heads ? attn_kv_heads : attn_heads;
        cfg.rope_theta = 10000.0f;
        cfg.norm_eps = 1e-6f;
        cfg.hgrn_dim = d_model;
        cfg.hgrn2_heads = hgrn2_heads;
        cfg.retnet_heads = retnet_heads;
        cfg.deltanet_heads = deltanet_heads;
        cfg.gdn_heads = gdn_heads;
        cfg.gdn_head_dim = gdn_head_dim;
        cfg.gdn_expand_v = gdn_expand_v;
        cfg.conv_size = conv_size;
        cfg.use_lower_bound = lower_bound;
        const char* bad = parse_pattern(pattern, n_layer, cfg.pattern);
        if (bad) usage_error(argv[0], "--pattern '%s': %s", pattern, bad);
        bad = validate_config(&cfg);
        if (bad) usage_error(argv[0], "bad model flags: %s", bad);
    }
    if (cfg.vocab_size != tok.vocab_size)
        fail("the model's vocabulary (%d) differs from the tokenizer's '%s' (%d)", cfg.vocab_size, tok_path, tok.vocab_size);

    Model model;
    model_build(&model, &cfg);
    model.chunk_size = chunk;
    // parameters, gradients, two AdamW moments (allocated by model_build) and the activations, refused
    // before those are allocated
    double MiB = 1.0 / 1048576.0;
    size_t act_floats = model_count_acts(&model, B, T);
    double need = (model.num_params * 16.0 + act_floats * 4.0) * MiB;
    size_t gpu_free, gpu_total;
    cuda_check(cudaMemGetInfo(&gpu_free, &gpu_total));
    if (act_floats * 4.0 > 0.9 * gpu_free)
        fail("this run needs about %.0f MiB but the GPU has %.0f MiB free: reduce -b, -T or the model", need,
             (gpu_free + model.num_params * 16.0) * MiB);
    DataLoader train, val;
    loader_init(&train, train_glob, B, T, cfg.vocab_size);
    loader_init(&val, val_glob, B, T, cfg.vocab_size);
    ts.rng = (uint64_t)seed * 0x9E3779B97F4A7C15ull + 1;
    if (start >= 0) {
        float* params = (float*)malloc_check(model.num_params * sizeof(float));
        checkpoint_read_params(path, &cfg, params, model.num_params);
        cuda_check(cudaMemcpy(model.params, params, model.num_params * sizeof(float), cudaMemcpyHostToDevice));
        free(params);
        ckpt_path(path, sizeof(path), out_dir, "state", start);
        state_read(path, &model, &ts);
        if (ts.step != start) fail("'%s' is for step %d, its model file for step %d", path, ts.step, start);
        if (ts.B != B || ts.T != T) fail("'%s' was trained with -b %d -T %d; resume with the same (got -b %d -T %d)", path, ts.B, ts.T, B, T);
        loader_seek(&train, ts.shard, ts.pos);
        printf("resumed from step %d of '%s'\n", start, out_dir);
    } else {
        model_init_weights(&model, (uint64_t)seed);
        ts.B = B;
        ts.T = T;
    }
    mkdir_p(out_dir);

    char pat[1024];
    format_pattern(&cfg, pat, sizeof(pat));
    printf("model: d=%d L=%d pattern=%s vocab=%d mlp=%d tie=%d gla(H=%d Dk=%d Dv=%d) attn(H=%d Hkv=%d)\n",
           cfg.d_model, cfg.n_layer, pat, cfg.vocab_size, cfg.mlp_hidden, cfg.tie_embeddings, cfg.gla_heads,
           cfg.gla_dk, cfg.gla_dv, cfg.attn_heads, cfg.attn_kv_heads);
    int others = 0;
    for (int mix = 0; mix < NUM_MIXER_IDS; mix++) { // the other linear families in the pattern
        if (mix == MIXER_ATTN || mix == MIXER_GLA || !uses_mixer(&cfg, mix)) continue;
        int H, K, V;
        if (mix == MIXER_HGRN) {
            printf("%shgrn(D=%d)", others++ ? " " : "       ", cfg.hgrn_dim);
        } else {
            mixer_dims(&cfg, mix, &H, &K, &V);
            printf("%s%s(H=%d K=%d V=%d)", others++ ? " " : "       ", MIXER_NAMES[mix], H, K, V);
        }
    }
    if (others) printf("%s\n", has_lower_bounds(&cfg) ? " lower bounds on" : "");
    printf("parameters: %zu (%.2f M)\n", model.num_params, model.num_params * 1e-6);
    size_t state_floats = 0, kv_floats = 0; // what generation keeps per sequence (DecodeState)
    for (int l = 0; l < cfg.n_layer; l++) {
        state_floats += mixer_state_floats(&cfg, cfg.pattern[l]);
        if (cfg.pattern[l] == MIXER_ATTN) kv_floats += 2 * (size_t)cfg.attn_kv_heads * attn_head_dim(&cfg);
    }
    printf("state: %zu floats of recurrent state + a KV cache of %zu floats per token\n", state_floats, kv_floats);
    printf("memory: params %.1f MiB, grads %.1f MiB, AdamW %.1f MiB, activations %.1f MiB (B=%d T=%d), total %.1f MiB\n",
           model.num_params * 4 * MiB, model.num_params * 4 * MiB, model.num_params * 8 * MiB, act_floats * 4 * MiB, B,
           T, need);
    model_alloc_acts(&model, B, T);
    cuda_check(cudaMemGetInfo(&gpu_free, &gpu_total));
    double step_flops = flops_per_token(&model, T) * B * T, peak = peak_flops(device);
    printf("device: %s, %d SMs, %.0f MiB in use of %.0f MiB, peak fp32 %.1f TFLOP/s (for MFU)\n", prop.name,
           prop.multiProcessorCount, (gpu_total - gpu_free) * MiB, gpu_total * MiB, peak * 1e-12);
    printf("data: %zu shard(s) train, val %zu shard(s); %d steps of %d tokens\n", train.files.gl_pathc,
           val.files.gl_pathc, steps, B * T);
    TrainHyper hyper = {lr, min_lr_frac, wd, 0.9f, 0.95f, 1e-8f, clip, warmup, steps};

    double t_start = now_seconds();
    int first_step = ts.step, step = ts.step;
    for (;; step++) {
        int last = step >= steps || (stop_at > 0 && step >= stop_at) || (max_time > 0 && now_seconds() - t_start > max_time);
        if ((val_every && step % val_every == 0) || last) {
            EvalResult e = evaluate(&model, &val, val_batches, &tok);
            if (val.has_targets) // a task scoring some positions (MQAR): recall, not bits per byte
                printf("step %5d | val loss %.4f nats/token | recall %.4f (%ld scored)\n", step, e.loss, e.accuracy, e.scored);
            else
                printf("step %5d | val loss %.4f nats/token | %.4f bits/byte\n", step, e.loss, e.bits_per_byte);
        }
        if ((sample_every && step % sample_every == 0 && step > 0) || last) {
            uint64_t srng = ts.rng ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
            generate(&model, &tok, prompt, gen_tokens, temperature, &srng);
        }
        if ((ckpt_every && step % ckpt_every == 0 && step > first_step) || last) {
            ts.step = step;
            ts.shard = train.shard;
            ts.pos = train.pos;
            save_checkpoint(out_dir, &model, &ts, keep);
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
                 "the last good checkpoint in '%s' is kept", step, model.loss, norm, where ? where : "(none: the loss)", out_dir);
        }
        float scale = (clip > 0.0f && norm > clip) ? clip / norm : 1.0f;
        float step_lr = learning_rate(&hyper, step);
        adamw_update(&model, &hyper, step_lr, step + 1, scale);
        cuda_check(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | MFU %.1f%%\n", step + 1, steps,
               model.loss, step_lr, norm, dt * 1e3, B * T / dt, 100.0 * step_flops / dt / peak);
        fflush(stdout);
    }
    printf("trained steps %d..%d in %.1f s\n", first_step, step, now_seconds() - t_start);
    loader_free(&train);
    loader_free(&val);
    tokenizer_free(&tok);
    model_free(&model);
    if (cublas_handle) cublas_check(cublasDestroy(cublas_handle));
    for (int i = 0; i < NUM_SCRATCH; i++) cuda_check(cudaFree(scratch_mem[i]));
    return 0;
}
#endif // TESTING
