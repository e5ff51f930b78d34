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
