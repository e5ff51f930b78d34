/*
 * cublas_emu.h — the cuBLAS subset the trainer uses, on the CPU, for the CUDA emulation (cuda_emu.h).
 * Correctness only: plain loops (OpenMP over columns where compiled with -fopenmp).
 *
 * cublasSgemm / cublasSgemmStridedBatched with cuBLAS's semantics: column-major matrices,
 *     C = alpha op(A) op(B) + beta C,   op(A) m×k, op(B) k×n, C m×n (leading dimensions lda, ldb, ldc)
 * alpha and beta read from host memory (CUBLAS_POINTER_MODE_HOST, the default); C is not read when
 * beta == 0 (so NaN there does not leak in, as in cuBLAS). Each entry is summed in DOUBLE over k in
 * order and rounded once to float: close to exact, so a difference from the CPU twin is the CPU's (or
 * a real bug), never this emulation's. Under CUBLAS_TF32_TENSOR_OP_MATH the operands are first rounded
 * to TF32 (10 mantissa bits, round to nearest even), as tensor cores do.
 * Checks as cuBLAS's (CUBLAS_STATUS_INVALID_VALUE for negative sizes, leading dimensions too small, a
 * NULL handle), and beyond cuBLAS: every matrix's extent (with its batch strides) must lie inside one
 * device allocation (cudaMalloc'd), else CUBLAS_STATUS_EXECUTION_FAILED and a message: catches wrong
 * leading dimensions, strides or sizes that a GPU would silently read past.
 */
#pragma once
#include "cuda_emu.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
} cublasMath_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;

struct emu_cublas { cublasMath_t math; cudaStream_t stream; cublasPointerMode_t pointer_mode; };
typedef emu_cublas* cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = new emu_cublas{CUBLAS_DEFAULT_MATH, nullptr, CUBLAS_POINTER_MODE_HOST};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t* m) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    *m = h->math;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t* s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t m) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;   // not emulated
    h->pointer_mode = m;
    return CUBLAS_STATUS_SUCCESS;
}

namespace emu {

inline float tf32_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {   // finite: round to nearest even at mantissa bit 13
        u += 0x0fffu + ((u >> 13) & 1u);
        u &= 0xffffe000u;
    }
    memcpy(&x, &u, 4);
    return x;
}

// the extent one matrix of `batch` occupies: rows × cols at leading dimension ld, batches `stride` apart
inline bool gemm_range_ok(const char* fn, const char* which, const float* p, int rows, int cols, int ld,
                          long long stride, int batch) {
    if (rows == 0 || cols == 0 || batch == 0) return true;
    size_t last = (size_t)(rows - 1) + (size_t)(cols - 1) * ld + (size_t)(batch - 1) * (size_t)stride;
    if (stride < 0) {
        fprintf(stderr, "cuda_emu: %s: negative stride of %s not emulated\n", fn, which);
        return false;
    }
    if (is_device(p, (last + 1) * sizeof(float))) return true;
    fprintf(stderr, "cuda_emu: %s: %s = %p, %d x %d at ld %d%s (%lld floats apart, %d of them): the last element "
            "(offset %zu floats) is outside the device allocation holding it%s\n", fn, which, (const void*)p, rows,
            cols, ld, batch > 1 ? ", batches" : "", stride, batch, last, is_device(p, 4) ? "" : " (or it is no device pointer)");
    return false;
}

inline cublasStatus_t sgemm(const char* fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const float* alpha, const float* A, int lda, long long sA, const float* B,
                            int ldb, long long sB, const float* beta, float* C, int ldc, long long sC, int batch) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (sticky() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (ta == CUBLAS_OP_C) ta = CUBLAS_OP_T;   // real matrices
    if (tb == CUBLAS_OP_C) tb = CUBLAS_OP_T;
    int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
        ldc < std::max(1, m) || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T)) {
        fprintf(stderr, "cuda_emu: %s: invalid arguments (m %d n %d k %d lda %d ldb %d ldc %d batch %d)\n", fn, m, n,
                k, lda, ldb, ldc, batch);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *alpha, be = *beta;
    bool use_ab = k > 0 && al != 0.0f;
    if ((use_ab && (!gemm_range_ok(fn, "A", A, a_rows, a_cols, lda, sA, batch) ||
                    !gemm_range_ok(fn, "B", B, b_rows, b_cols, ldb, sB, batch))) ||
        !gemm_range_ok(fn, "C", C, m, n, ldc, sC, batch))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    bool tf32 = h->math == CUBLAS_TF32_TENSOR_OP_MATH;
    for (int bi = 0; bi < batch; bi++) {
        const float* Ab = A + (size_t)bi * sA;
        const float* Bb = B + (size_t)bi * sB;
        float* Cb = C + (size_t)bi * sC;
        // op(A) packed by rows (m × k), op(B) packed by columns (n × k): then each entry is one
        // contiguous dot product
        std::vector<float> Ap, Bp;
        if (use_ab) {
            Ap.resize((size_t)m * k);
            Bp.resize((size_t)n * k);
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++) {
                    float v = ta == CUBLAS_OP_N ? Ab[i + (size_t)p * lda] : Ab[p + (size_t)i * lda];
                    Ap[(size_t)i * k + p] = tf32 ? tf32_round(v) : v;
                }
            for (int j = 0; j < n; j++)
                for (int p = 0; p < k; p++) {
                    float v = tb == CUBLAS_OP_N ? Bb[p + (size_t)j * ldb] : Bb[j + (size_t)p * ldb];
                    Bp[(size_t)j * k + p] = tf32 ? tf32_round(v) : v;
                }
        }
#pragma omp parallel for schedule(static) if ((size_t)m * n * k > 100000)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                if (use_ab) {
                    const float* a = &Ap[(size_t)i * k];
                    const float* b = &Bp[(size_t)j * k];
                    for (int p = 0; p < k; p++) acc += (double)a[p] * b[p];
                }
                float* c = &Cb[i + (size_t)j * ldc];
                double r = (double)al * acc;
                if (be != 0.0f) r += (double)be * *c;   // C is not read when beta == 0
                *c = (float)r;
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace emu

inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
    return emu::sgemm("cublasSgemm", h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                                int n, int k, const float* alpha, const float* A, int lda,
                                                long long sA, const float* B, int ldb, long long sB,
                                                const float* beta, float* C, int ldc, long long sC, int batch) {
    return emu::sgemm("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc,
                      sC, batch);
}
