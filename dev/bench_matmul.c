/*
 * bench_matmul.c -- correctness + speed test for the matmul of train_gla.c
 *
 * Build & run (from the repo root; binary goes to /tmp):
 *   gcc -O3 -march=native -fopenmp dev/bench_matmul.c -o /tmp/bench_matmul -lm && OMP_NUM_THREADS=2 /tmp/bench_matmul
 * With OpenBLAS side by side (apt-get install libopenblas0-openmp libopenblas-openmp-dev; compiles
 * against that flavour's own cblas.h and links its library explicitly):
 *   gcc -O3 -march=native -fopenmp -Werror=implicit-function-declaration -DWITH_CBLAS -I/usr/include/x86_64-linux-gnu/openblas-openmp dev/bench_matmul.c -o /tmp/bench_matmul -lm /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp && OMP_NUM_THREADS=2 /tmp/bench_matmul
 *   (Debian's OpenBLAS 0.3.21 does not recognise this CPU model and falls back
 *    to its "Prescott" kernels; add OPENBLAS_CORETYPE=CooperLake to get AVX-512.)
 * Without OpenMP:
 *   gcc -O3 -march=native dev/bench_matmul.c -o /tmp/bench_matmul -lm
 *
 * Usage: bench_matmul [N] [min_seconds_per_measurement]   (N defaults to 4096)
 *        bench_matmul check     -- correctness only
 * Env:   SKIPCHECK=1 skips the (slow) N=4096/37 correctness sweep before timing;
 *        BENCH_CPUTIME=1 times with process CPU time (use with OMP_NUM_THREADS=1
 *        on a shared/noisy machine).
 * Exits non-zero if any relative RMS error exceeds 1e-5 or if results differ
 * between thread counts.
 */
/* dladdr (which libopenblas is loaded), clock_gettime, and model.h's ftello: a narrower
 * _POSIX_C_SOURCE would hide the last one */
#define _GNU_SOURCE
#ifdef WITH_CBLAS
#include <dlfcn.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#define TESTING
#include "../train_gla.c"   /* matmul_forward / matmul_backward */
#ifdef WITH_CBLAS
/* OpenBLAS's cblas.h: it declares openblas_get_config() and friends, used below. The generic
 * cblas.h (reference BLAS, libblas-dev) does not; called undeclared, their char* results were
 * truncated to int and the program crashed. Stop here instead when the wrong header is found. */
#include <cblas.h>
#ifndef OPENBLAS_VERSION
#error "this cblas.h is not OpenBLAS's: add -I/usr/include/x86_64-linux-gnu/openblas-openmp (apt-get install libopenblas-openmp-dev)"
#endif
#endif

/* wall clock by default; BENCH_CPUTIME=1 uses process CPU time instead, which
 * is robust to other processes on a busy machine but only meaningful with
 * OMP_NUM_THREADS=1. */
static clockid_t bench_clock = CLOCK_MONOTONIC;
static double now_s(void) {
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {               /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float* rand_buf(size_t n) {
    float* p = (float*)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* error of x against a double reference: relative RMS and max|err|/rms(ref) */
static double error_vs_reference(const char* what, const float* x, const double* ref, size_t n, double* max_rel) {
    double se = 0, sr = 0, me = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)x[i] - ref[i];
        se += e * e; sr += ref[i] * ref[i];
        if (fabs(e) > me) me = fabs(e);
    }
    double rms_ref = sqrt(sr / n);
    double rel_rms = sqrt(se / (sr > 0 ? sr : 1));
    *max_rel = me / (rms_ref > 0 ? rms_ref : 1);
    (void)what;
    return rel_rms;
}

/* returns 1 on failure */
static int test_shape(int N, int C, int OC) {
    float* inp = rand_buf((size_t)N * C);
    float* w = rand_buf((size_t)OC * C);
    float* b = rand_buf(OC);
    float* dout = rand_buf((size_t)N * OC);
    float* out = rand_buf((size_t)N * OC);        /* garbage: must be overwritten */
    float* dinp0 = rand_buf((size_t)N * C);        /* prior gradient contents: must be accumulated into */
    float* dw0 = rand_buf((size_t)OC * C);
    float* db0 = rand_buf(OC);
    float* dinp = malloc((size_t)N * C * sizeof(float));
    float* dw = malloc((size_t)OC * C * sizeof(float));
    float* db = malloc(OC * sizeof(float));
    memcpy(dinp, dinp0, (size_t)N * C * sizeof(float));
    memcpy(dw, dw0, (size_t)OC * C * sizeof(float));
    memcpy(db, db0, OC * sizeof(float));

    double* rout = malloc((size_t)N * OC * sizeof(double));
    double* rdinp = malloc((size_t)N * C * sizeof(double));
    double* rdw = malloc((size_t)OC * C * sizeof(double));
    double* rdb = malloc(OC * sizeof(double));

    /* naive double-precision reference */
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int c = 0; c < C; c++) s += (double)inp[(size_t)n * C + c] * w[(size_t)o * C + c];
            rout[(size_t)n * OC + o] = s;
        }
        for (int c = 0; c < C; c++) rdinp[(size_t)n * C + c] = dinp0[(size_t)n * C + c];
        for (int o = 0; o < OC; o++) {
            double d = dout[(size_t)n * OC + o];
            for (int c = 0; c < C; c++) rdinp[(size_t)n * C + c] += d * w[(size_t)o * C + c];
        }
    }
    #pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        double sb = db0[o];
        for (int c = 0; c < C; c++) rdw[(size_t)o * C + c] = dw0[(size_t)o * C + c];
        for (int n = 0; n < N; n++) {
            double d = dout[(size_t)n * OC + o];
            sb += d;
            for (int c = 0; c < C; c++) rdw[(size_t)o * C + c] += d * inp[(size_t)n * C + c];
        }
        rdb[o] = sb;
    }

    matmul_forward(out, inp, w, b, N, C, OC);
    matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC);

    double m1, m2, m3, m4;
    double e1 = error_vs_reference("out", out, rout, (size_t)N * OC, &m1);
    double e2 = error_vs_reference("dinp", dinp, rdinp, (size_t)N * C, &m2);
    double e3 = error_vs_reference("dweight", dw, rdw, (size_t)OC * C, &m3);
    double e4 = error_vs_reference("dbias", db, rdb, OC, &m4);
    int fail = e1 > 1e-5 || e2 > 1e-5 || e3 > 1e-5 || e4 > 1e-5;

    /* bias == NULL; NULL gradients; bitwise determinism across thread counts */
    float* out2 = rand_buf((size_t)N * OC);
    float* dinp2 = malloc((size_t)N * C * sizeof(float));
    float* dw2 = malloc((size_t)OC * C * sizeof(float));
    float* db2 = malloc(OC * sizeof(float));
    memcpy(dinp2, dinp0, (size_t)N * C * sizeof(float));
    memcpy(dw2, dw0, (size_t)OC * C * sizeof(float));
    memcpy(db2, db0, OC * sizeof(float));
    matmul_forward(out2, inp, w, NULL, N, C, OC);
    double nb = 0;
    for (size_t i = 0; i < (size_t)N * OC; i++) {
        double e = fabs((double)out2[i] + b[i % OC] - rout[i]);
        if (e > nb) nb = e;
    }
    int nb_fail = nb > 1e-3 * (1 + sqrt((double)C));
    int det_fail = 0;
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(saved == 1 ? 3 : 1);
#endif
    matmul_forward(out2, inp, w, b, N, C, OC);
    matmul_backward(dinp2, NULL, NULL, dout, inp, w, N, C, OC);
    matmul_backward(NULL, dw2, NULL, dout, inp, w, N, C, OC);
    matmul_backward(NULL, NULL, db2, dout, inp, w, N, C, OC);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
    det_fail |= memcmp(out2, out, (size_t)N * OC * sizeof(float)) != 0;
    det_fail |= memcmp(dinp2, dinp, (size_t)N * C * sizeof(float)) != 0;
    det_fail |= memcmp(dw2, dw, (size_t)OC * C * sizeof(float)) != 0;
    det_fail |= memcmp(db2, db, OC * sizeof(float)) != 0;

    printf("N=%5d C=%5d OC=%5d | rel-RMS fwd %.1e dinp %.1e dw %.1e db %.1e | max|err|/rms fwd %.1e dinp %.1e dw %.1e db %.1e | %s%s%s\n",
           N, C, OC, e1, e2, e3, e4, m1, m2, m3, m4,
           fail ? "FAIL" : "ok", nb_fail ? " NOBIAS-FAIL" : "", det_fail ? " NONDETERMINISTIC" : "");

    free(inp); free(w); free(b); free(dout); free(out); free(dinp0); free(dw0); free(db0);
    free(dinp); free(dw); free(db); free(rout); free(rdinp); free(rdw); free(rdb);
    free(out2); free(dinp2); free(dw2); free(db2);
    return fail || nb_fail || det_fail;
}

/* time fn repeatedly for at least min_s seconds, return best time per call */
#define TIME_IT(best, min_s, stmt) do {                                  \
        stmt; /* warm-up */                                              \
        double t_total = 0; best = 1e30;                                 \
        while (t_total < (min_s)) {                                      \
            double t0 = now_s(); stmt; double dt = now_s() - t0;         \
            t_total += dt; if (dt < best) best = dt;                     \
        }                                                                \
    } while (0)

static const int SHAPES[][2] = {   /* (C, OC) */
    {128, 64}, {128, 128}, {128, 256}, {128, 512}, {512, 128},
    {256, 256}, {256, 1024}, {1024, 256}, {128, 16}, {16, 64},
};
#define NSHAPES ((int)(sizeof(SHAPES) / sizeof(SHAPES[0])))

int main(int argc, char** argv) {
    int check_only = argc > 1 && strcmp(argv[1], "check") == 0;
    int N = (argc > 1 && !check_only) ? atoi(argv[1]) : 4096;
    double min_s = argc > 2 ? atof(argv[2]) : 0.3;
    int nth = 1;
    if (getenv("BENCH_CPUTIME") && atoi(getenv("BENCH_CPUTIME"))) bench_clock = CLOCK_PROCESS_CPUTIME_ID;
#ifdef _OPENMP
    nth = omp_get_max_threads();
#endif
    printf("matmul: MR=%d NR=%d NR2=%d KC=%d NC=%d, threads=%d\n", MM_MR, MM_NR, MM_NR2, MM_KC, MM_NC, nth);
#ifdef WITH_CBLAS
    Dl_info dli;
    const char* blas_path = dladdr((void*)cblas_sgemm, &dli) && dli.dli_fname ? dli.dli_fname : "?";
    printf("OpenBLAS: %s\n  loaded from %s\n  core %s | parallel=%d (0 seq, 1 pthreads, 2 OpenMP) | threads=%d\n",
           openblas_get_config(), blas_path, openblas_get_corename(), openblas_get_parallel(),
           openblas_get_num_threads());
#endif

    /* ---------------- correctness ---------------- */
    int fails = 0;
    printf("\n== correctness vs naive double reference (gradients pre-filled with random values, so += is tested) ==\n");
    int check_N[] = {4096, 37};
    for (int t = 0; t < 2 && !getenv("SKIPCHECK"); t++)
        for (int s = 0; s < NSHAPES; s++) fails += test_shape(check_N[t], SHAPES[s][0], SHAPES[s][1]);
    static const int ODD[][3] = {
        {37, 13, 29}, {1, 1, 1}, {1, 7, 3}, {5, 1, 9}, {7, 9, 1}, {2049, 65, 63},
        {100, 300, 70}, {257, 1100, 130}, {3, 1030, 1500}, {1000, 17, 2000}, {5000, 3, 5},
    };
    for (int s = 0; s < (int)(sizeof(ODD) / sizeof(ODD[0])); s++)
        fails += test_shape(ODD[s][0], ODD[s][1], ODD[s][2]);
    printf("correctness: %s (%d failing shapes)\n", fails ? "FAILED" : "all passed", fails);
    if (check_only) return fails ? 1 : 0;

    /* ---------------- speed ---------------- */
    printf("\n== speed, N=%d, GFLOP/s (2*N*C*OC / best time) ==\n", N);
#ifdef WITH_CBLAS
    printf("%5s %5s | %8s %8s %8s | %8s %8s %8s | %s\n", "C", "OC", "fwd", "dinp", "dweight",
           "blas-fwd", "blas-dx", "blas-dw", "ours/blas (fwd,dinp,dw)");
#else
    printf("%5s %5s | %8s %8s %8s\n", "C", "OC", "fwd", "dinp", "dweight");
#endif
    double worst = 1e30;
    for (int s = 0; s < NSHAPES; s++) {
        int C = SHAPES[s][0], OC = SHAPES[s][1];
        float* inp = rand_buf((size_t)N * C);
        float* w = rand_buf((size_t)OC * C);
        float* b = rand_buf(OC);
        float* dout = rand_buf((size_t)N * OC);
        float* out = rand_buf((size_t)N * OC);
        float* dinp = calloc((size_t)N * C, sizeof(float));
        float* dw = calloc((size_t)OC * C, sizeof(float));
        double flops = 2.0 * N * C * OC, t_f, t_x, t_w;
        TIME_IT(t_f, min_s, matmul_forward(out, inp, w, b, N, C, OC));
        TIME_IT(t_x, min_s, matmul_backward(dinp, NULL, NULL, dout, inp, w, N, C, OC));
        TIME_IT(t_w, min_s, matmul_backward(NULL, dw, NULL, dout, inp, w, N, C, OC));
        printf("%5d %5d | %8.1f %8.1f %8.1f", C, OC, flops / t_f * 1e-9, flops / t_x * 1e-9, flops / t_w * 1e-9);
#ifdef WITH_CBLAS
        double b_f, b_x, b_w;
        TIME_IT(b_f, min_s, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C,
                                        1.0f, inp, C, w, C, 0.0f, out, OC));
        TIME_IT(b_x, min_s, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC,
                                        1.0f, dout, OC, w, C, 1.0f, dinp, C));
        TIME_IT(b_w, min_s, cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N,
                                        1.0f, dout, OC, inp, C, 1.0f, dw, C));
        printf(" | %8.1f %8.1f %8.1f | %.2f %.2f %.2f", flops / b_f * 1e-9, flops / b_x * 1e-9, flops / b_w * 1e-9,
               b_f / t_f, b_x / t_x, b_w / t_w);
        if (b_f / t_f < worst) worst = b_f / t_f;
        if (b_x / t_x < worst) worst = b_x / t_x;
        if (b_w / t_w < worst) worst = b_w / t_w;
#endif
        printf("\n");
        fflush(stdout);
        free(inp); free(w); free(b); free(dout); free(out); free(dinp); free(dw);
    }
#ifdef WITH_CBLAS
    printf("lowest ours/OpenBLAS ratio: %.2f\n", worst);
#else
    (void)worst;
#endif
    return fails ? 1 : 0;
}
