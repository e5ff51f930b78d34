/*
 * matmul.h -- portable, cache-blocked, OpenMP-parallel float32 matmul
 * (forward + backward of a torch-style Linear layer) for a CPU trainer.
 *
 * Plain C99 + OpenMP pragmas, no intrinsics: the micro-kernel is written so
 * that gcc and clang auto-vectorise it (tile sizes are chosen per ISA below).
 * Builds without -fopenmp too (serial; pragmas are ignored).
 *
 * Everything funnels into one GEMM driver, mm_gemm():
 *
 *     C (M,Nc) (+)= A (M,K) @ B (K,Nc)           C row-major, ldc = row stride
 *
 * with A and B addressed through (row stride, column stride) pairs, so the
 * three products of a Linear layer are just different stride choices:
 *
 *     forward   out      = inp    @ W^T   A=inp   (N,C)   B=W^T (C,OC)   K=C
 *     backward  dinp    += dout   @ W     A=dout  (N,OC)  B=W   (OC,C)   K=OC
 *     backward  dweight += dout^T @ inp   A=dout^T(OC,N)  B=inp (N,C)    K=N
 *
 * Blocking.  The micro-kernel computes an MR x NR tile of C in registers
 * (6 x 64 floats = 24 zmm accumulators on AVX-512): for each k it loads
 * NR/SIMD vectors of B, broadcasts MR values of A and does MR*NR/SIMD FMAs.
 * Around it, per thread:
 *
 *   jc : the thread's columns of C, in chunks of <= MM_NC
 *   pc : K in blocks of <= MM_KC
 *        -> B(pc block, jc chunk) is packed into strips of NR columns, each
 *           k-major (strip[k*NR + j]) and zero-padded on the right; the
 *           packed chunk (kc x nc floats, <= 512 KiB) stays in L2 while all
 *           of the thread's row panels sweep over it.  When B has contiguous
 *           rows and will be reused by only a few row panels (dweight with
 *           small OC), it is read in place instead (packing would cost as
 *           much as the arithmetic).
 *   p  : the thread's row panels of MR rows
 *        -> the A panel (MR x kc) is read in place, whether A is row-major
 *           (forward, dinp) or column-major (dweight: A = dout^T); only a
 *           ragged last panel is copied (zero-padded).  The panel stays in
 *           L1 while the kernel runs over all strips of the chunk.
 *   j  : strips of the chunk -> micro-kernel into a small tile buffer, then
 *        mm_store() writes/accumulates the valid part into C (+ bias).
 *
 * Column remainders: full NR-wide strips use the "wide" kernel; the columns
 * left over at the right edge use a "narrow" kernel one SIMD vector wide
 * (MM_NR2), so e.g. OC=16 wastes nothing.  Row remainders are zero-padded.
 * Any M, Nc, K >= 1 work.
 *
 * Threading.  One parallel region per GEMM with NO barriers inside: the
 * output is split into a tr x tc grid of (row panels x column slots), one
 * block per thread, and every thread packs the data it needs itself.  This
 * keeps small GEMMs cheap and degrades gracefully when cores are shared.
 *
 * Determinism.  Each element of C is summed in a fixed order (k ascending
 * within a K block, K blocks ascending, block size a function of K only);
 * which kernel handles a column depends only on Nc.  So results are
 * bitwise identical for any OMP_NUM_THREADS and for builds without OpenMP.
 *
 * Scratch memory.  Each thread needs MM_KC*MM_NC + MM_MR*MM_KC floats
 * (~0.5 MiB).  It is malloc'ed on the first call (re-allocated only if the
 * thread count grows) and freed at exit: nothing is allocated per call.
 * Consequently these functions are not re-entrant: do not call them from
 * several threads at the same time.
 */
#ifndef MATMUL_H
#define MATMUL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------ */
/* Tuning.  MR x NR is the register tile of the wide kernel:                */
/*   MR*NR/SIMD accumulators + NR/SIMD B vectors + 1 broadcast <= #vregs.   */
/* MM_NR2 (narrow kernel width, for the ragged right edge) = SIMD width.    */
/* All of these can be overridden with -D.                                  */
#ifndef MM_MR
#if defined(__AVX512F__)            /* 32 x 512-bit regs: 24 acc + 4 B      */
#define MM_MR 6
#define MM_NR 64
#define MM_NR2 16
#elif defined(__AVX__)              /* 16 x 256-bit regs: 12 acc + 2 B      */
#define MM_MR 6
#define MM_NR 16
#define MM_NR2 8
#elif defined(__aarch64__) || defined(__ARM_NEON)  /* 32 x 128-bit regs     */
#define MM_MR 6
#define MM_NR 16
#define MM_NR2 4
#else                               /* SSE2 / generic: 16 x 128-bit regs    */
#define MM_MR 4
#define MM_NR 8
#define MM_NR2 4
#endif
#endif
#ifndef MM_NR2
#define MM_NR2 MM_NR
#endif
#ifndef MM_KC
#define MM_KC 256                   /* K block                              */
#endif
#ifndef MM_NC
#define MM_NC 512                   /* max columns of B packed at a time    */
#endif
#ifndef MM_DIRECT_B_PANELS
#define MM_DIRECT_B_PANELS 8        /* see direct_b in mm_gemm()            */
#endif
#define MM_NCS ((MM_NC + MM_NR - 1) / MM_NR)   /* NR-strips per chunk        */

/* Loop hints for the vectorised j loop (over NR columns) of the kernel:
 *  - gcc: "unroll 4" stops gcc from fully unrolling the scalar j loop before
 *    the vectoriser sees it (it then vectorises the k loop instead, badly);
 *    the vector loop (<= 4 iterations) is still unrolled afterwards.
 *  - clang on AVX-512 prefers 256-bit vectors; ask for 512-bit ones. */
#define MM_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#if defined(__AVX512F__)
#define MM_JLOOP MM_PRAGMA_(clang loop vectorize_width(16) interleave_count(1))
#define MM_KERNEL_ATTR __attribute__((always_inline, min_vector_width(512)))
#else
#define MM_JLOOP
#define MM_KERNEL_ATTR __attribute__((always_inline))
#endif
#elif defined(__GNUC__) && __GNUC__ >= 8
#define MM_JLOOP MM_PRAGMA_(GCC unroll 4)
#define MM_KERNEL_ATTR __attribute__((always_inline))
#else
#define MM_JLOOP
#define MM_KERNEL_ATTR
#endif

#if defined(__GNUC__)
#define MM_NOINLINE __attribute__((noinline))
#else
#define MM_NOINLINE
#endif

#define MM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MM_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* ------------------------------------------------------------------------ */
/* Micro-kernel                                                             */

/* tile (MR,NR) = A (MR,kc) @ Bstrip (kc,NR), with A(i,k) at a[i*rsa + k*csa]
 * and B(k,j) at b[k*ldb + j] (ldb = NR for a packed strip).  acc[][] has
 * only compile-time indices, so it lives entirely in vector registers: the
 * j loop becomes NR/SIMD vector FMAs and the i loop is unrolled.  Always inlined into the
 * wrappers below, which fix rsa or csa to 1 (A row- or column-major). */
static inline MM_KERNEL_ATTR
void mm_kernel_wide(int kc, const float* restrict a, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* restrict b, ptrdiff_t ldb, float* restrict tile) {
    float acc[MM_MR][MM_NR];
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR; j++) acc[i][j] = 0.0f;
    }
    for (int k = 0; k < kc; k++) {
        const float* bk = b + k * ldb;
        for (int i = 0; i < MM_MR; i++) {
            const float aik = a[i * rsa + k * csa];
            MM_JLOOP
            for (int j = 0; j < MM_NR; j++) acc[i][j] += aik * bk[j];
        }
    }
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR; j++) tile[i * MM_NR + j] = acc[i][j];
    }
}

/* Same with a strip of MM_NR2 columns (one SIMD vector): for the ragged
 * right edge of C, and for narrow outputs such as OC=16.  With only MR
 * accumulators the FMA latency would be exposed, so even and odd k are
 * summed into two separate accumulator sets (fixed order: deterministic). */
static inline MM_KERNEL_ATTR
void mm_kernel_narrow(int kc, const float* restrict a, ptrdiff_t rsa, ptrdiff_t csa,
                      const float* restrict b, ptrdiff_t ldb, float* restrict tile) {
    float acc0[MM_MR][MM_NR2], acc1[MM_MR][MM_NR2];
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR2; j++) { acc0[i][j] = 0.0f; acc1[i][j] = 0.0f; }
    }
    int k = 0;
    for (; k + 1 < kc; k += 2) {
        const float* b0 = b + k * ldb;
        const float* b1 = b0 + ldb;
        for (int i = 0; i < MM_MR; i++) {
            const float a0 = a[i * rsa + k * csa], a1 = a[i * rsa + (k + 1) * csa];
            MM_JLOOP
            for (int j = 0; j < MM_NR2; j++) {
                acc0[i][j] += a0 * b0[j];
                acc1[i][j] += a1 * b1[j];
            }
        }
    }
    if (k < kc) {                                   /* odd kc: last k */
        const float* b0 = b + k * ldb;
        for (int i = 0; i < MM_MR; i++) {
            const float a0 = a[i * rsa + k * csa];
            MM_JLOOP
            for (int j = 0; j < MM_NR2; j++) acc0[i][j] += a0 * b0[j];
        }
    }
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR2; j++) tile[i * MM_NR2 + j] = acc0[i][j] + acc1[i][j];
    }
}

/* The four instantiations: wide/narrow strip x A row-major/column-major.
 * (Kept out of line so each is register-allocated on its own.) */
static MM_NOINLINE void mm_kernel_wide_rowA(int kc, const float* a, ptrdiff_t lda,
                                            const float* b, ptrdiff_t ldb, float* t)
{ mm_kernel_wide(kc, a, lda, 1, b, ldb, t); }
static MM_NOINLINE void mm_kernel_wide_colA(int kc, const float* a, ptrdiff_t lda,
                                            const float* b, ptrdiff_t ldb, float* t)
{ mm_kernel_wide(kc, a, 1, lda, b, ldb, t); }
static MM_NOINLINE void mm_kernel_narrow_rowA(int kc, const float* a, ptrdiff_t lda,
                                              const float* b, ptrdiff_t ldb, float* t)
{ mm_kernel_narrow(kc, a, lda, 1, b, ldb, t); }
static MM_NOINLINE void mm_kernel_narrow_colA(int kc, const float* a, ptrdiff_t lda,
                                              const float* b, ptrdiff_t ldb, float* t)
{ mm_kernel_narrow(kc, a, 1, lda, b, ldb, t); }

/* Write the valid (mr,nr) corner of a tile (row stride tstride) into C.
 * accumulate: C += tile, else C = tile + bias[j] (bias may be NULL). */
static void mm_store(float* restrict c, ptrdiff_t ldc, const float* restrict tile,
                     int tstride, int mr, int nr, int accumulate,
                     const float* restrict bias) {
    for (int i = 0; i < mr; i++) {
        const float* t = tile + i * tstride;
        float* ci = c + i * ldc;
        if (accumulate) for (int j = 0; j < nr; j++) ci[j] += t[j];
        else if (bias)  for (int j = 0; j < nr; j++) ci[j] = t[j] + bias[j];
        else            for (int j = 0; j < nr; j++) ci[j] = t[j];
    }
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                  */

/* Copy a (kc x nr) block of B (B(k,j) at b[k*rsb + j*csb]) into a k-major
 * strip of width w (dst[k*w + j]), zero-filling columns nr..w-1. */
static void mm_pack_b(float* restrict dst, int w, const float* restrict b,
                      ptrdiff_t rsb, ptrdiff_t csb, int kc, int nr) {
    if (csb == 1) {                      /* rows of B contiguous: copy rows */
        for (int k = 0; k < kc; k++) {
            const float* src = b + k * rsb;
            float* d = dst + (ptrdiff_t)k * w;
            for (int j = 0; j < nr; j++) d[j] = src[j];
            for (int j = nr; j < w; j++) d[j] = 0.0f;
        }
    } else {                             /* columns contiguous: transpose   */
        for (int j = 0; j < nr; j++) {
            const float* src = b + j * csb;
            for (int k = 0; k < kc; k++) dst[(ptrdiff_t)k * w + j] = src[k * rsb];
        }
        for (int k = 0; k < kc; k++)
            for (int j = nr; j < w; j++) dst[(ptrdiff_t)k * w + j] = 0.0f;
    }
}

/* Pack B rows [0,kc) x columns [0,nc) into consecutive strips: full NR-wide
 * strips, then NR2-wide strips for the remainder.  A strip starting at
 * column j0 sits at dst + j0*kc. */
static void mm_pack_b_chunk(float* restrict dst, const float* restrict b,
                            ptrdiff_t rsb, ptrdiff_t csb, int kc, int nc) {
    int j0 = 0;
    for (; j0 + MM_NR <= nc; j0 += MM_NR)
        mm_pack_b(dst + (ptrdiff_t)j0 * kc, MM_NR, b + j0 * csb, rsb, csb, kc, MM_NR);
    for (; j0 < nc; j0 += MM_NR2)
        mm_pack_b(dst + (ptrdiff_t)j0 * kc, MM_NR2, b + j0 * csb, rsb, csb, kc,
                  MM_MIN(MM_NR2, nc - j0));
}

/* Copy an (mr x kc) A panel (A(i,k) at a[i*rsa + k*csa]) into dst, zero-
 * padding rows mr..MR-1.  Row-major A keeps its layout (dst[i*kc + k]);
 * otherwise the panel is stored k-major (dst[k*MR + i]).  Returns the
 * leading dimension to pass to the kernel. */
static ptrdiff_t mm_pack_a(float* restrict dst, const float* restrict a,
                           ptrdiff_t rsa, ptrdiff_t csa, int mr, int kc) {
    if (csa == 1) {
        for (int i = 0; i < MM_MR; i++)
            for (int k = 0; k < kc; k++)
                dst[i * kc + k] = i < mr ? a[i * rsa + k] : 0.0f;
        return kc;
    }
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < MM_MR; i++)
            dst[k * MM_MR + i] = i < mr ? a[i * rsa + k * csa] : 0.0f;
    return MM_MR;
}

/* ------------------------------------------------------------------------ */
/* Scratch memory: one block per thread, allocated on first use.            */

static float* mm_scratch_mem = NULL;
static size_t mm_scratch_size = 0;         /* in floats */

static void mm_scratch_release(void) {
    free(mm_scratch_mem);
    mm_scratch_mem = NULL;
    mm_scratch_size = 0;
}

#define MM_THREAD_SCRATCH (MM_KC * MM_NCS * MM_NR + MM_MR * MM_KC + 32)

static float* mm_scratch(int nthreads) {
    size_t need = (size_t)nthreads * MM_THREAD_SCRATCH + 16;
    if (need > mm_scratch_size) {
        if (mm_scratch_mem == NULL) atexit(mm_scratch_release);
        free(mm_scratch_mem);
        mm_scratch_mem = (float*)malloc(need * sizeof(float));
        if (mm_scratch_mem == NULL) {
            fprintf(stderr, "matmul.h: out of memory\n");
            exit(EXIT_FAILURE);
        }
        mm_scratch_size = need;
    }
    /* 64-byte align; each thread's block is a multiple of 16 floats apart */
    return (float*)(((uintptr_t)mm_scratch_mem + 63) & ~(uintptr_t)63);
}

/* ------------------------------------------------------------------------ */
/* GEMM driver                                                              */

/* Split the output's (row panels x column slots) grid over tr x tc = nth
 * threads.  Estimated cost per thread (per unit of K): its tile area, plus
 * packing its B columns, plus streaming its A rows once per column chunk
 * (splitting columns makes every thread read all of A).  Only affects who
 * computes what, never the result. */
static void mm_thread_grid(int nth, int npanels, int nslots, int a_rowmajor,
                           int* tr, int* tc) {
    /* column-major A (dweight) is read with a large stride: expensive */
    const double a_cost = a_rowmajor ? 1.0 : 16.0;
    double best = -1;
    *tr = nth; *tc = 1;
    for (int c = 1; c <= nth; c++) {
        if (nth % c) continue;
        const int r = nth / c;
        const double rows = (double)MM_CEIL_DIV(npanels, r) * MM_MR;
        const double cols = (double)MM_CEIL_DIV(nslots, c) * MM_NR;
        const double chunks = (double)MM_CEIL_DIV(MM_CEIL_DIV(nslots, c), MM_NCS);
        const double cost = rows * cols + 8.0 * cols + a_cost * rows * chunks;
        if (best < 0 || cost < best) { best = cost; *tr = r; *tc = c; }
    }
}

/* C (M,Nc) (+)= A (M,K) @ B (K,Nc).  A(i,k) at A[i*rsa + k*csa], B(k,j) at
 * B[k*rsb + j*csb], C(i,j) at C[i*ldc + j].  accumulate != 0: C += A@B;
 * otherwise C = A@B + bias (bias has Nc entries, or is NULL). */
static void mm_gemm(int M, int Nc, int K,
                    const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* B, ptrdiff_t rsb, ptrdiff_t csb,
                    float* C, ptrdiff_t ldc, int accumulate, const float* bias) {
    if (M <= 0 || Nc <= 0) return;
    if (K <= 0) {                       /* empty sum: C = bias (or 0), or no-op */
        if (!accumulate)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < Nc; j++) C[i * ldc + j] = bias ? bias[j] : 0.0f;
        return;
    }
    /* K blocks of equal size <= MM_KC (depends only on K: determinism) */
    const int nkb = MM_CEIL_DIV(K, MM_KC);
    const int kcb = MM_CEIL_DIV(K, nkb);
    const int a_rowmajor = (csa == 1);
    const int npanels = MM_CEIL_DIV(M, MM_MR);
    const int nslots = MM_CEIL_DIV(Nc, MM_NR);   /* NR-wide column slots */

    int nth = 1;
#ifdef _OPENMP
    nth = omp_get_max_threads();
    if ((long)npanels * nslots < nth) nth = npanels * nslots;   /* tiny GEMM */
#endif
    float* scratch = mm_scratch(nth);

    #pragma omp parallel num_threads(nth) if (nth > 1)
    {
        int tid = 0, team = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        team = omp_get_num_threads();   /* may be < nth (e.g. nested call) */
#endif
        int tr, tc;
        mm_thread_grid(team, npanels, nslots, a_rowmajor, &tr, &tc);
        float* bpack = scratch + (size_t)tid * MM_THREAD_SCRATCH;   /* KC x NC  */
        float* apanel = bpack + MM_KC * MM_NCS * MM_NR;            /* MR x KC  */
        float tile[MM_MR * MM_NR];

        /* this thread's block of the output: panels [p0,p1), columns [c0,c1) */
        const int ti = tid / tc, tj = tid % tc;
        const int p0 = (int)((long)npanels * ti / tr), p1 = (int)((long)npanels * (ti + 1) / tr);
        const int c0 = (int)((long)nslots * tj / tc) * MM_NR;
        const int c1 = MM_MIN(Nc, (int)((long)nslots * (tj + 1) / tc) * MM_NR);
        /* B with contiguous rows and little reuse (few row panels per
         * thread, e.g. dweight with small OC) is read in place instead of
         * being packed: packing would cost about as much as using it. */
        const int direct_b = (csb == 1) && (p1 - p0) <= MM_DIRECT_B_PANELS;

        for (int jc = c0; jc < c1 && p0 < p1; jc += MM_NCS * MM_NR) {
            const int nc = MM_MIN(MM_NCS * MM_NR, c1 - jc);
            /* column layout of the chunk: wide strips, then narrow strips;
             * the last narrow strip may be ragged (columns [jr, nc)) */
            const int jw = nc / MM_NR * MM_NR;
            const int jr = jw + (nc - jw) / MM_NR2 * MM_NR2;
            for (int pc = 0; pc < K; pc += kcb) {
                const int kc = MM_MIN(kcb, K - pc);
                /* first K block overwrites C (adding bias), later ones add */
                const int acc_mode = accumulate || pc > 0;
                const float* bias_chunk = (acc_mode || !bias) ? NULL : bias + jc;
                const float* bblk = B + pc * rsb + jc * csb;
                if (!direct_b) {
                    mm_pack_b_chunk(bpack, bblk, rsb, csb, kc, nc);
                } else if (jr < nc) {    /* only the ragged strip needs padding */
                    mm_pack_b(bpack, MM_NR2, bblk + jr, rsb, 1, kc, nc - jr);
                }

                for (int p = p0; p < p1; p++) {
                    const int i0 = p * MM_MR, mr = MM_MIN(MM_MR, M - i0);
                    const float* a = A + i0 * rsa + pc * csa;
                    float* c = C + i0 * ldc + jc;
                    int rowA = a_rowmajor;
                    ptrdiff_t lda = a_rowmajor ? rsa : csa;
                    if (mr < MM_MR || (!a_rowmajor && rsa != 1)) {
                        /* ragged last panel (or odd strides): zero-padded copy */
                        lda = mm_pack_a(apanel, a, rsa, csa, mr, kc);
                        rowA = (csa == 1);
                        a = apanel;
                    }
                    for (int j = 0; j < jw; j += MM_NR) {            /* wide strips */
                        const float* bs = direct_b ? bblk + j : bpack + (ptrdiff_t)j * kc;
                        const ptrdiff_t ldb = direct_b ? rsb : MM_NR;
                        if (rowA) mm_kernel_wide_rowA(kc, a, lda, bs, ldb, tile);
                        else      mm_kernel_wide_colA(kc, a, lda, bs, ldb, tile);
                        mm_store(c + j, ldc, tile, MM_NR, mr, MM_NR, acc_mode,
                                 bias_chunk ? bias_chunk + j : NULL);
                    }
                    for (int j = jw; j < nc; j += MM_NR2) {          /* narrow strips */
                        const float* bs = bpack + (ptrdiff_t)j * kc;
                        ptrdiff_t ldb = MM_NR2;
                        if (direct_b) {
                            bs = j < jr ? bblk + j : bpack;
                            ldb = j < jr ? rsb : MM_NR2;
                        }
                        if (rowA) mm_kernel_narrow_rowA(kc, a, lda, bs, ldb, tile);
                        else      mm_kernel_narrow_colA(kc, a, lda, bs, ldb, tile);
                        mm_store(c + j, ldc, tile, MM_NR2, mr, MM_MIN(MM_NR2, nc - j), acc_mode,
                                 bias_chunk ? bias_chunk + j : NULL);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC)
// bias may be NULL.  out is overwritten.
void matmul_forward(float* out, const float* inp, const float* weight,
                    const float* bias, int N, int C, int OC) {
    /* A = inp: (n,c) at inp[n*C + c];  B = W^T: (c,o) at weight[o*C + c] */
    mm_gemm(N, OC, C, inp, C, 1, weight, 1, C, out, OC, 0, bias);
}

// Backward of matmul_forward.  ACCUMULATES into the gradients (+=):
//   dinp    (N,C)  += dout (N,OC) @ weight (OC,C)
//   dweight (OC,C) += dout (N,OC)^T @ inp (N,C)
//   dbias   (OC)   += sum over n of dout (n,:)
// Any of dinp, dweight, dbias may be NULL to skip that gradient.
void matmul_backward(float* dinp, float* dweight, float* dbias,
                     const float* dout, const float* inp, const float* weight,
                     int N, int C, int OC) {
    if (dinp) {
        /* A = dout: (n,o) at dout[n*OC + o];  B = W: (o,c) at weight[o*C + c] */
        mm_gemm(N, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1, NULL);
    }
    if (dweight) {
        /* A = dout^T: (o,n) at dout[n*OC + o];  B = inp: (n,c) at inp[n*C + c] */
        mm_gemm(OC, C, N, dout, 1, OC, inp, C, 1, dweight, C, 1, NULL);
    }
    if (dbias) {
        /* columns in chunks of 16 over threads; each chunk sums n in order,
         * so the result does not depend on the number of threads. */
        const int nchunks = MM_CEIL_DIV(OC, 16);
        #pragma omp parallel for schedule(static)
        for (int ch = 0; ch < nchunks; ch++) {
            const int o0 = ch * 16, w = MM_MIN(16, OC - o0);
            float sum[16] = {0};
            for (int n = 0; n < N; n++) {
                const float* d = dout + (size_t)n * OC + o0;
                for (int j = 0; j < w; j++) sum[j] += d[j];
            }
            for (int j = 0; j < w; j++) dbias[o0 + j] += sum[j];
        }
    }
}

#endif /* MATMUL_H */
