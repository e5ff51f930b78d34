/*
 * selftest.cu — checks the CPU emulation itself (cuda_emu.h, cublas_emu.h, emulate.py): that it computes
 * what a GPU computes, and that it catches the bugs it claims to catch (each "caught" case is a
 * deliberately broken kernel or call). Run: dev/cuda/emu/run.sh dev/cuda/emu/selftest.cu
 * Emulator-only: the deliberate faults would poison a real GPU context.
 */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <vector>

#ifndef CUDA_EMULATED
#error "selftest.cu checks the CPU emulation: build it with dev/cuda/emu/run.sh"
#endif

static int passed = 0, failed = 0;
static void expect(bool ok, const char* what) {
    printf("%s  %s\n", ok ? "ok  " : "FAIL", what);
    fflush(stdout);
    if (ok) passed++; else failed++;
}
// the sticky fault of a deliberately broken kernel, cleared (only the emulator can do this)
static void clear_fault() {
    std::lock_guard<std::mutex> lk(emu::errors().mu);
    emu::errors().sticky = emu::errors().last = cudaSuccess;
}

// -- barriers and shared memory: a block reversal through shared memory, static and dynamic
__global__ void reverse_static(float* out, const float* in) {
    __shared__ float buf[256];
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}
__global__ void reverse_dynamic(float* out, const float* in) {
    extern __shared__ float dyn[];
    int t = threadIdx.x;
    dyn[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = dyn[blockDim.x - 1 - t];
}
// the same without the barrier: a race, which one of the fiber orders exposes
__global__ void reverse_racy(float* out, const float* in) {
    __shared__ float buf[256];
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * blockDim.x + t];
    out[blockIdx.x * blockDim.x + t] = buf[blockDim.x - 1 - t];
}
// reads shared memory no thread wrote: NaN
__global__ void read_unwritten(float* out) {
    __shared__ float buf[64];
    if (threadIdx.x < 32) buf[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x];
}

// -- warps
template <typename T> __global__ void shuffles(T* out) {
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    T x = (T)(threadIdx.x + 1);
    T s = x;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    out[threadIdx.x * 4 + 0] = s;                                      // warp sum
    out[threadIdx.x * 4 + 1] = __shfl_down_sync(0xffffffffu, x, 3);    // lane + 3, or own
    out[threadIdx.x * 4 + 2] = __shfl_up_sync(0xffffffffu, x, 5);      // lane − 5, or own
    out[threadIdx.x * 4 + 3] = __shfl_sync(0xffffffffu, x, (lane * 7) % 32);
    (void)w;
}
// half the warp exits, the rest shuffles with the full mask: undefined on a GPU
__global__ void shuffle_after_exit(float* out) {
    if (threadIdx.x % 32 >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
// half of each warp at __syncthreads, the other half at a full-mask __syncwarp: neither barrier can
// complete, a hang on a GPU. (Threads that EXIT before a __syncthreads count as arrived, as on
// current GPUs, with a warning; EMU_STRICT=1 makes that an error too.)
__global__ void divergent_barrier(float* out) {
    if (threadIdx.x % 32 < 16) __syncthreads();
    else __syncwarp();
    out[threadIdx.x] = 1.0f;
}
__global__ void fill(float* out, int n, float v) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = v;
}
__global__ void __launch_bounds__(64) bounded(float* out) { out[threadIdx.x] = 1.0f; }

static bool all_equal(const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); i++)
        if (a[i] != b[i]) return false;
    return true;
}

static void gemm_ref(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
                     int ldb, float beta, float* C, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta ? A[p + i * lda] : A[i + p * lda]) * (tb ? B[j + p * ldb] : B[p + j * ldb]);
            C[i + j * ldc] = (float)(alpha * s + (beta != 0 ? beta * C[i + j * ldc] : 0.0));
        }
}

int main() {
    const int n = 4 * 256;
    std::vector<float> h(n), expect_rev(n), got(n);
    for (int i = 0; i < n; i++) h[i] = (float)i;
    for (int b = 0; b < 4; b++)
        for (int t = 0; t < 256; t++) expect_rev[b * 256 + t] = h[b * 256 + 255 - t];
    float *in, *out;
    cudaMalloc(&in, n * sizeof(float));
    cudaMalloc(&out, n * sizeof(float));
    cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);

    cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
    expect(std::isnan(got[0]) && std::isnan(got[n - 1]), "cudaMalloc'd memory reads as NaN");

    reverse_static<<<4, 256>>>(out, in);
    cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
    expect(cudaGetLastError() == cudaSuccess && all_equal(got, expect_rev), "static __shared__ + __syncthreads");
    reverse_dynamic<<<4, 256, 256 * sizeof(float)>>>(out, in);
    cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
    expect(cudaGetLastError() == cudaSuccess && all_equal(got, expect_rev), "extern __shared__ (dynamic)");
    reverse_racy<<<4, 256>>>(out, in);
    cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
    bool nan_seen = false;
    for (float x : got) nan_seen |= std::isnan(x);
    expect(!all_equal(got, expect_rev) && nan_seen,
           "caught: a missing __syncthreads (threads read NaN-filled shared memory not yet written)");
    read_unwritten<<<1, 64>>>(out);
    cudaMemcpy(got.data(), out, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    expect(got[0] == 1.0f && std::isnan(got[40]), "caught: a read of shared memory never written (NaN)");

    {   // shuffles, float and double, 2 warps
        float* fo;
        double* dout;
        cudaMalloc(&fo, 64 * 4 * sizeof(float));
        cudaMalloc(&dout, 64 * 4 * sizeof(double));
        shuffles<float><<<1, 64>>>(fo);
        shuffles<double><<<1, 64>>>(dout);
        std::vector<float> f(256);
        std::vector<double> d(256);
        cudaMemcpy(f.data(), fo, f.size() * 4, cudaMemcpyDeviceToHost);
        cudaMemcpy(d.data(), dout, d.size() * 8, cudaMemcpyDeviceToHost);
        bool ok = cudaGetLastError() == cudaSuccess;
        for (int t = 0; t < 64; t++) {
            int lane = t % 32, base = t / 32 * 32;
            double sum = 0;
            for (int l = 0; l < 32; l++) sum += base + l + 1;
            double down = lane + 3 < 32 ? t + 3 + 1 : t + 1, up = lane >= 5 ? t - 5 + 1 : t + 1;
            double idx = base + (lane * 7) % 32 + 1;
            ok &= f[t * 4] == sum && f[t * 4 + 1] == down && f[t * 4 + 2] == up && f[t * 4 + 3] == idx;
            ok &= d[t * 4] == sum && d[t * 4 + 1] == down && d[t * 4 + 2] == up && d[t * 4 + 3] == idx;
        }
        expect(ok, "__shfl_xor_sync / _down / _up / __shfl_sync on float and double");
        cudaFree(fo);
        cudaFree(dout);
    }

    shuffle_after_exit<<<1, 32>>>(out);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "caught: a full-mask shuffle after half the warp exited");
    clear_fault();
    divergent_barrier<<<1, 64>>>(out);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "caught: __syncthreads in divergent code (deadlock)");
    clear_fault();
    std::vector<float> host_buf(16);
    fill<<<1, 16>>>(host_buf.data(), 16, 1.0f);
    expect(cudaDeviceSynchronize() == cudaErrorIllegalAddress, "caught: a host pointer passed to a kernel");
    clear_fault();
    fill<<<0, 256>>>(out, 0, 1.0f);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration && cudaGetLastError() == cudaSuccess,
           "caught: a launch of 0 blocks (cudaErrorInvalidConfiguration, not sticky)");
    fill<<<1, 2048>>>(out, 16, 1.0f);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "caught: 2048 threads per block");
    fill<<<dim3(1, 70000), 32>>>(out, 16, 1.0f);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "caught: grid.y = 70000");
    reverse_dynamic<<<1, 256, 64 * 1024>>>(out, in);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "caught: 64 KiB dynamic smem without cudaFuncSetAttribute");
    cudaFuncSetAttribute(reverse_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    reverse_dynamic<<<4, 256, 64 * 1024>>>(out, in);
    cudaMemcpy(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost);
    expect(cudaGetLastError() == cudaSuccess && all_equal(got, expect_rev), "64 KiB dynamic smem after cudaFuncSetAttribute");
    bounded<<<1, 128>>>(out);
    expect(cudaGetLastError() == cudaErrorLaunchOutOfResources, "caught: 128 threads for __launch_bounds__(64)");
    expect(cudaMemcpy(out, h.data(), (n + 1) * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue &&
           cudaGetLastError() == cudaErrorInvalidValue, "caught: cudaMemcpy past the end of a device allocation");
    expect(cudaMemcpy(got.data(), h.data(), 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
           "caught: cudaMemcpyDeviceToHost from host memory");
    cudaGetLastError();
    expect(cudaMemset(out, 0, (n + 1) * sizeof(float)) == cudaErrorInvalidValue, "caught: cudaMemset past the end");
    cudaGetLastError();

    {   // cuBLAS: every transpose combination, padded leading dimensions, beta 0 over NaN, batches
        cublasHandle_t hb;
        cublasCreate(&hb);
        int m = 5, nn = 7, k = 3, lda = 9, ldb = 8, ldc = 6, batch = 3;
        long long sA = lda * 9, sB = ldb * 9, sC = ldc * nn + 2;
        size_t na = sA * batch, nb = sB * batch, nc = sC * batch;
        std::vector<float> A(na), B(nb), C(nc), R(nc);
        for (auto& x : A) x = (float)(rand() % 17 - 8) / 4;
        for (auto& x : B) x = (float)(rand() % 13 - 6) / 4;
        float *dA, *dB, *dC;
        cudaMalloc(&dA, na * 4);
        cudaMalloc(&dB, nb * 4);
        cudaMalloc(&dC, nc * 4);
        cudaMemcpy(dA, A.data(), na * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(dB, B.data(), nb * 4, cudaMemcpyHostToDevice);
        bool ok = true;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (float beta : {0.0f, 0.5f}) {
                    for (size_t i = 0; i < nc; i++) C[i] = beta == 0 ? NAN : (float)(i % 5);
                    cudaMemcpy(dC, C.data(), nc * 4, cudaMemcpyHostToDevice);
                    R = C;
                    float alpha = 1.5f;
                    cublasStatus_t st = cublasSgemmStridedBatched(hb, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                                  m, nn, k, &alpha, dA, lda, sA, dB, ldb, sB, &beta, dC, ldc, sC, batch);
                    for (int b = 0; b < batch; b++)
                        gemm_ref(ta, tb, m, nn, k, alpha, A.data() + b * sA, lda, B.data() + b * sB, ldb, beta,
                                 R.data() + b * sC, ldc);
                    cudaMemcpy(C.data(), dC, nc * 4, cudaMemcpyDeviceToHost);
                    ok &= st == CUBLAS_STATUS_SUCCESS;
                    for (int b = 0; b < batch; b++)
                        for (int j = 0; j < nn; j++)
                            for (int i = 0; i < m; i++) ok &= C[b * sC + i + j * ldc] == R[b * sC + i + j * ldc];
                }
        expect(ok, "cublasSgemmStridedBatched: N/T x N/T, padded ld, beta = 0 over NaN, 3 batches");
        float one = 1, zero = 0;
        expect(cublasSgemm(hb, CUBLAS_OP_N, CUBLAS_OP_N, m, nn, k, &one, dA, 2, dB, ldb, &zero, dC, ldc) ==
               CUBLAS_STATUS_INVALID_VALUE, "caught: lda < m (CUBLAS_STATUS_INVALID_VALUE)");
        expect(cublasSgemm(hb, CUBLAS_OP_N, CUBLAS_OP_N, 9, 100, k, &one, dA, 9, dB, ldb, &zero, dC, 9) ==
               CUBLAS_STATUS_EXECUTION_FAILED, "caught: a GEMM whose C runs past its allocation");
        cublasDestroy(hb);
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dC);
    }
    expect(cudaFree(in) == cudaSuccess && cudaFree(in) == cudaErrorInvalidValue, "caught: a double cudaFree");
    cudaGetLastError();
    cudaFree(out);
    emu_print_stats(stdout);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
