/*
 * train_gla.c — train a GLA / softmax-attention hybrid language model on the CPU, in one file.
 *
 * Model (fla's layout, LAYERS.md): token embedding -> L blocks -> RMSNorm -> LM head -> cross-entropy.
 *   block l:  h = h + Mixer_l(RMSNorm(h));  h = h + SwiGLU(RMSNorm(h))
 *   Mixer_l is `gla` (gated linear attention) or `attn` (causal softmax attention with RoPE).
 * Every layer has a _forward and, right after it, its _backward. Shapes are written (B,T,C) and
 * N = B*T. Gradients accumulate (+=) into buffers the caller zeroed, as in llm.c.
 *
 * Reading order: matmul, small layers (embedding, RMSNorm, SwiGLU, RoPE), GLA (recurrent form,
 * chunkwise form, gated output norm, the layer), attention, cross-entropy, the model, AdamW,
 * generation, checkpoints, main.
 */
#include "model.h"
#include <stddef.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// ----------------------------------------------------------------------------
// matmul: every projection of the model, (N,C) x (OC,C)^T
/*
 * matmul — portable, cache-blocked, OpenMP-parallel float32 matmul
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
        mm_scratch_mem = (float*)malloc_check(need * sizeof(float));
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

// ----------------------------------------------------------------------------
// small layers

// out (N,C) = wte[inp] ; inp (N) token ids, wte (V,C)
void encoder_forward(float* out, const int* inp, const float* wte, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, wte + (size_t)inp[n] * C, C * sizeof(float));
}
// dwte (V,C) += scatter of dout (N,C) by inp (N). Serial over n: two rows may share a token.
void encoder_backward(float* dwte, const float* dout, const int* inp, int N, int C) {
    for (int n = 0; n < N; n++) {
        float* dw = dwte + (size_t)inp[n] * C;
        const float* d = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) dw[c] += d[c];
    }
}

// RMSNorm: out = x * r * w, r = 1/sqrt(mean(x^2) + eps).  out, inp (N,C); rstd (N); weight (C)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        float* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * r * weight[c];
        rstd[n] = r;
    }
}
// dinp (N,C) += r (dyw - x̂ mean(x̂ ⊙ dyw)), dyw = dout ⊙ w, x̂ = x r;  dweight (C) += Σ_n dout ⊙ x̂
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        const float* dy = dout + (size_t)n * C;
        float r = rstd[n], dot = 0.0f;
        for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c] * r;
        dot /= C;
        float* dx = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) dx[c] += r * (dy[c] * weight[c] - x[c] * r * dot);
    }
    for (int n = 0; n < N; n++) { // serial: every row adds into the same weight gradient
        const float* x = inp + (size_t)n * C;
        const float* dy = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) dweight[c] += dy[c] * x[c] * rstd[n];
    }
}

// e^x in plain C that compilers vectorise (libm's expf is a call that stops loops from vectorising).
// Cody–Waite reduction x = n ln2 + r, |r| ≤ ln2/2, then Cephes' degree-6 polynomial for e^r and 2^n
// from the exponent bits: within 2 ulp of expf. Inputs are clamped to [−87, 88], so results stay
// normal floats: e^{−87} ≈ 1.6e−38 stands in for "underflows to 0", which is harmless everywhere it
// is used (decays, softmax weights).
static inline float exp_fast(float x) {
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

static inline float sigmoidf(float x) { return 1.0f / (1.0f + exp_fast(-x)); }
static inline float siluf(float x) { return x * sigmoidf(x); }
// d silu(x) / dx = σ(x) (1 + x (1 − σ(x)))
static inline float silu_grad(float x) { float s = sigmoidf(x); return s * (1.0f + x * (1.0f - s)); }

// SwiGLU: out = silu(gate) ⊙ up.  out, gate, up (N,I)
void swiglu_forward(float* out, const float* gate, const float* up, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = siluf(gate[i]) * up[i];
}
// dgate, dup (N,I) = (overwritten) from dout (N,I)
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        dgate[i] = dout[i] * up[i] * silu_grad(gate[i]);
        dup[i] = dout[i] * siluf(gate[i]);
    }
}

// RoPE, non-interleaved ("rotate half"): for i < D/2, angle φ = p θ_i, θ_i = base^(−2i/D),
// (x_i, x_{i+D/2}) -> (x_i cos φ − x_{i+D/2} sin φ, x_{i+D/2} cos φ + x_i sin φ).
// x (B,T,NH,D) rotated in place; position of row (b,t) is pos0 + t. sign = +1 forward, −1 backward
// (the backward of a rotation is the rotation by −φ).
void rope_rotate(float* x, int B, int T, int NH, int D, int pos0, float theta, int sign) {
    int half = D / 2;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < half; i++) {
                double phi = (pos0 + t) * pow(theta, -2.0 * i / D);
                float c = (float)cos(phi), s = sign * (float)sin(phi);
                for (int h = 0; h < NH; h++) {
                    float* v = x + (((size_t)b * T + t) * NH + h) * D;
                    float x1 = v[i], x2 = v[i + half];
                    v[i] = x1 * c - x2 * s;
                    v[i + half] = x2 * c + x1 * s;
                }
            }
}
void rope_forward(float* x, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(x, B, T, NH, D, pos0, theta, +1); }
void rope_backward(float* dx, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(dx, B, T, NH, D, pos0, theta, -1); }

// log σ(x) = min(x, 0) − log1p(e^{−|x|}) (stable for any x); its derivative is 1 − σ(x) = σ(−x)
static inline float logsigmoidf(float x) { return fminf(x, 0.0f) - log1pf(exp_fast(-fabsf(x))); }

// ----------------------------------------------------------------------------
// GLA, the recurrent form (LAYERS.md §2.2): the clearest statement of the layer, used for generation
// and as the ground truth for the chunkwise form. Per head, with S ∈ R^{K×V}:
//     S_t = diag(exp(a_t)) S_{t−1} + k_t v_tᵀ,      o_t = S_tᵀ (scale · q_t)

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k, a (H,K); v (H,V)
void gla_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* a,
                        int H, int K, int V, float scale) {
    for (int h = 0; h < H; h++) {
        float* Sh = S + (size_t)h * K * V;
        const float *qh = q + h * K, *kh = k + h * K, *ah = a + h * K, *vh = v + h * V;
        float* oh = o + h * V;
        for (int j = 0; j < V; j++) oh[j] = 0.0f;
        for (int i = 0; i < K; i++) {
            float decay = exp_fast(ah[i]), qi = scale * qh[i];
            float* row = Sh + (size_t)i * V;
            for (int j = 0; j < V; j++) {
                row[j] = decay * row[j] + kh[i] * vh[j];
                oh[j] += row[j] * qi;
            }
        }
    }
}

// o (B,T,H,V) from q, k, a (B,T,H,K), v (B,T,H,V), zero initial state
void gla_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* a,
                           int B, int T, int H, int K, int V, float scale) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float* S = (float*)calloc_check((size_t)H * K * V, sizeof(float));
        for (int t = 0; t < T; t++) {
            size_t rk = ((size_t)b * T + t) * H * K, rv = ((size_t)b * T + t) * H * V;
            gla_recurrent_step(o + rv, S, q + rk, k + rk, v + rv, a + rk, H, K, V, scale);
        }
        free(S);
    }
}

// Exact backward of gla_recurrent_forward (LAYERS.md §2.5), the readable ground truth for the
// chunkwise backward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten. A forward sweep keeps every
// state S_t; a reverse sweep carries D = dL/dS_t:
//     D += scale q_t do_tᵀ;  dq_t = scale S_t do_t;  dk_t = D v_t;  dv_t = Dᵀ k_t;
//     da_t = e^{a_t} ⊙ rowsum(S_{t−1} ⊙ D);  D = diag(e^{a_t}) D.
// Storing all T states is fine for a reference; the chunkwise form keeps one per chunk.
void gla_recurrent_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* q,
                            const float* k, const float* v, const float* a, int B, int T, int H, int K, int V,
                            float scale) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t KV = (size_t)K * V;
            float* S = (float*)calloc_check((T + 1) * KV, sizeof(float));   // S[t] = state after t steps
            for (int t = 0; t < T; t++) {
                size_t rk = ((size_t)b * T + t) * H * K + h * K, rv = ((size_t)b * T + t) * H * V + h * V;
                for (int i = 0; i < K; i++) {
                    float decay = exp_fast(a[rk + i]);
                    for (int j = 0; j < V; j++)
                        S[(t + 1) * KV + i * V + j] = decay * S[t * KV + i * V + j] + k[rk + i] * v[rv + j];
                }
            }
            float* D = (float*)calloc_check(KV, sizeof(float));
            for (int t = T - 1; t >= 0; t--) {
                size_t rk = ((size_t)b * T + t) * H * K + h * K, rv = ((size_t)b * T + t) * H * V + h * V;
                const float *St = S + (t + 1) * KV, *Sprev = S + t * KV;
                for (int j = 0; j < V; j++) dv[rv + j] = 0.0f;
                for (int i = 0; i < K; i++) {
                    float qi = scale * q[rk + i], sdo = 0.0f, dkv = 0.0f, dsum = 0.0f;
                    float decay = exp_fast(a[rk + i]);
                    for (int j = 0; j < V; j++) {
                        D[i * V + j] += qi * dout[rv + j];
                        sdo += St[i * V + j] * dout[rv + j];
                        dkv += D[i * V + j] * v[rv + j];
                        dv[rv + j] += D[i * V + j] * k[rk + i];
                        dsum += Sprev[i * V + j] * D[i * V + j];
                    }
                    dq[rk + i] = scale * sdo;
                    dk[rk + i] = dkv;
                    da[rk + i] = decay * dsum;
                    for (int j = 0; j < V; j++) D[i * V + j] *= decay;
                }
            }
            free(S);
            free(D);
        }
}

// ----------------------------------------------------------------------------
// GLA, the chunkwise-parallel form (LAYERS.md §2.4), used for training. Time is cut into chunks of
// C steps. Inside a chunk, G = chunk-local inclusive cumsum of a (≤ 0 and decreasing), G_L its last
// row, S = the state entering the chunk:
//     o_i    = scale [ (q_i ⊙ e^{G_i})ᵀ S + Σ_{j≤i} P_ij v_j ],   P_ij = Σ_c q_ic k_jc e^{G_ic − G_jc}
//     S_next = diag(e^{G_L}) S + Σ_j (k_j ⊙ e^{G_L − G_j}) v_jᵀ
// Every exponent is a difference G_later − G_earlier ≤ 0, so nothing overflows whatever the decay.

// Gate gradient from dq and dk alone (LAYERS.md §2.5.3; what fla's kernels use), valid for a zero
// initial state and an unused final state:
//     da_t = Σ_{s≥t} (q_s ⊙ dq_s − k_s ⊙ dk_s)       (a reverse cumulative sum over time)
// Why: a_t enters exactly the terms q_i k_j e^{A_i − A_j} (j ≤ i) with j < t ≤ i. The suffix sum of
// q ⊙ dq collects all terms with i ≥ t, that of k ⊙ dk all with j ≥ t; their difference is the
// terms with i ≥ t > j. (The subtraction loses relative precision where the decay is very strong
// and da is tiny next to the terms; fla accepts the same.)
// da (B,T,H*K) overwritten; q, k, dq, dk (B,T,H*K)
void gla_gate_grad(float* da, const float* q, const float* k, const float* dq, const float* dk, int B, int T, int HK) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float* acc = (float*)calloc_check(HK, sizeof(float));
        for (int t = T - 1; t >= 0; t--) {
            size_t r = ((size_t)b * T + t) * HK;
            for (int c = 0; c < HK; c++) {
                acc[c] += q[r + c] * dq[r + c] - k[r + c] * dk[r + c];
                da[r + c] = acc[c];
            }
        }
        free(acc);
    }
}

// Per-chunk working set of one (batch, head): the chunk's rows gathered contiguously, the
// chunk-local cumulative log-gates and the exponentials built from them.
typedef struct {
    float *q, *k, *v, *dout;   // (C,K) (C,K) (C,V) (C,V)
    float *G;                  // (C,K) inclusive cumsum of a within the chunk (≤ 0, decreasing)
    float *q_decay;            // (C,K) scale q_i ⊙ e^{G_i}            (reads the entering state)
    float *k_decay;            // (C,K) k_j ⊙ e^{G_L − G_j}            (writes the leaving state)
    float *P;                  // (n,n) P_ij = scale Σ_c q_ic k_jc e^{G_ic − G_jc} for j ≤ i
} ChunkScratch;

static void chunk_scratch_alloc(ChunkScratch* s, int C, int K, int V) {
    s->q = (float*)malloc_check((size_t)C * K * sizeof(float));
    s->k = (float*)malloc_check((size_t)C * K * sizeof(float));
    s->v = (float*)malloc_check((size_t)C * V * sizeof(float));
    s->dout = (float*)malloc_check((size_t)C * V * sizeof(float));
    s->G = (float*)malloc_check((size_t)C * K * sizeof(float));
    s->q_decay = (float*)malloc_check((size_t)C * K * sizeof(float));
    s->k_decay = (float*)malloc_check((size_t)C * K * sizeof(float));
    s->P = (float*)malloc_check((size_t)C * C * sizeof(float));
}
static void chunk_scratch_free(ChunkScratch* s) {
    free(s->q); free(s->k); free(s->v); free(s->dout); free(s->G); free(s->q_decay); free(s->k_decay);
    free(s->P);
}

// Gathers rows t0..t0+n of one head (rows `stride` floats apart) into dst (n, width).
static void gather_rows(float* dst, const float* src, int n, int width, size_t stride) {
    for (int i = 0; i < n; i++) memcpy(dst + (size_t)i * width, src + i * stride, width * sizeof(float));
}

// Loads one chunk (n rows) and computes G, q_decay, k_decay and the intra-chunk matrix P.
static void chunk_prepare(ChunkScratch* s, const float* q, const float* k, const float* v, const float* a, int n,
                          int K, int V, size_t sk, size_t sv, float scale) {
    gather_rows(s->q, q, n, K, sk);
    gather_rows(s->k, k, n, K, sk);
    gather_rows(s->v, v, n, V, sv);
    for (int c = 0; c < K; c++) s->G[c] = a[c];
    for (int i = 1; i < n; i++)
        for (int c = 0; c < K; c++) s->G[i * K + c] = s->G[(i - 1) * K + c] + a[i * sk + c];
    const float* GL = s->G + (size_t)(n - 1) * K;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < K; c++) {
            s->q_decay[i * K + c] = scale * s->q[i * K + c] * exp_fast(s->G[i * K + c]);
            s->k_decay[i * K + c] = s->k[i * K + c] * exp_fast(GL[c] - s->G[i * K + c]);
        }
    for (int i = 0; i < n; i++) {
        const float *Gi = s->G + (size_t)i * K, *qi = s->q + (size_t)i * K;
        for (int j = 0; j <= i; j++) {
            const float *Gj = s->G + (size_t)j * K, *kj = s->k + (size_t)j * K;
            float p = 0.0f;
            for (int c = 0; c < K; c++) p += qi[c] * kj[c] * exp_fast(Gi[c] - Gj[c]);
            s->P[i * n + j] = scale * p;
        }
    }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each of the NC = ceil(T/C) chunks (kept for
// the backward); q, k, a (B,T,H,K); v (B,T,H,V)
void gla_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* a,
                       int B, int T, int H, int K, int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    size_t sk = (size_t)H * K, sv = (size_t)H * V;   // time strides
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            ChunkScratch s;
            chunk_scratch_alloc(&s, C, K, V);
            float* S = (float*)calloc_check((size_t)K * V, sizeof(float));
            for (int ch = 0; ch < NC; ch++) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                size_t base_k = ((size_t)b * T + t0) * sk + h * K, base_v = ((size_t)b * T + t0) * sv + h * V;
                memcpy(states + (((size_t)b * H + h) * NC + ch) * K * V, S, (size_t)K * V * sizeof(float));
                chunk_prepare(&s, q + base_k, k + base_k, v + base_v, a + base_k, n, K, V, sk, sv, scale);
                // o_i = (scale q_i ⊙ e^{G_i})ᵀ S + Σ_{j≤i} P_ij v_j
                for (int i = 0; i < n; i++) {
                    float* oi = o + base_v + i * sv;
                    for (int j = 0; j < V; j++) oi[j] = 0.0f;
                    for (int c = 0; c < K; c++) {
                        float x = s.q_decay[i * K + c];
                        const float* Sc = S + (size_t)c * V;
                        for (int j = 0; j < V; j++) oi[j] += x * Sc[j];
                    }
                    for (int jr = 0; jr <= i; jr++) {
                        float p = s.P[i * n + jr];
                        const float* vj = s.v + (size_t)jr * V;
                        for (int j = 0; j < V; j++) oi[j] += p * vj[j];
                    }
                }
                // S = diag(e^{G_L}) S + Σ_j (k_j ⊙ e^{G_L − G_j}) v_jᵀ
                const float* GL = s.G + (size_t)(n - 1) * K;
                for (int c = 0; c < K; c++) {
                    float* Sc = S + (size_t)c * V;
                    float decay = exp_fast(GL[c]);
                    for (int j = 0; j < V; j++) Sc[j] *= decay;
                    for (int jr = 0; jr < n; jr++) {
                        float x = s.k_decay[jr * K + c];
                        const float* vj = s.v + (size_t)jr * V;
                        for (int j = 0; j < V; j++) Sc[j] += x * vj[j];
                    }
                }
            }
            chunk_scratch_free(&s);
            free(S);
        }
}

// Backward of gla_chunk_forward. dq, dk, da (B,T,H,K), dv (B,T,H,V) overwritten; dout (B,T,H,V).
// Chunks are visited last to first carrying dS = dL/dS_next. Within a chunk, with
// dP_ij = scale do_i·v_j (j ≤ i):
//     dq_i = scale e^{G_i} ⊙ (S do_i) + Σ_{j≤i} dP_ij (k_j ⊙ e^{G_i−G_j})
//     dk_j = e^{G_L−G_j} ⊙ (dS v_j) + Σ_{i≥j} dP_ij (q_i ⊙ e^{G_i−G_j})
//     dv_j = Σ_{i≥j} P_ij do_i + dSᵀ (k_j ⊙ e^{G_L−G_j})
//     dS  ← diag(e^{G_L}) dS + Σ_i (scale q_i ⊙ e^{G_i}) do_iᵀ
// and the gate gradient comes from dq, dk through the reverse-cumsum identity (gla_gate_grad).
void gla_chunk_backward(float* dq, float* dk, float* dv, float* da, const float* dout, const float* states,
                        const float* q, const float* k, const float* v, const float* a, int B, int T, int H, int K,
                        int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    size_t sk = (size_t)H * K, sv = (size_t)H * V;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            ChunkScratch s;
            chunk_scratch_alloc(&s, C, K, V);
            float* dS = (float*)calloc_check((size_t)K * V, sizeof(float));
            for (int ch = NC - 1; ch >= 0; ch--) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                size_t base_k = ((size_t)b * T + t0) * sk + h * K, base_v = ((size_t)b * T + t0) * sv + h * V;
                const float* S = states + (((size_t)b * H + h) * NC + ch) * K * V;
                chunk_prepare(&s, q + base_k, k + base_k, v + base_v, a + base_k, n, K, V, sk, sv, scale);
                gather_rows(s.dout, dout + base_v, n, V, sv);
                const float* GL = s.G + (size_t)(n - 1) * K;
                // terms through the entering state S and the leaving state's gradient dS
                for (int i = 0; i < n; i++) {
                    const float *doi = s.dout + (size_t)i * V, *vi = s.v + (size_t)i * V;
                    float *dqi = dq + base_k + i * sk, *dki = dk + base_k + i * sk, *dvi = dv + base_v + i * sv;
                    for (int c = 0; c < K; c++) {
                        const float *Sc = S + (size_t)c * V, *dSc = dS + (size_t)c * V;
                        float sdo = 0.0f, dsv = 0.0f;
                        for (int j = 0; j < V; j++) { sdo += Sc[j] * doi[j]; dsv += dSc[j] * vi[j]; }
                        dqi[c] = scale * exp_fast(s.G[i * K + c]) * sdo;
                        dki[c] = exp_fast(GL[c] - s.G[i * K + c]) * dsv;
                    }
                    for (int j = 0; j < V; j++) dvi[j] = 0.0f;
                    for (int c = 0; c < K; c++) {
                        float x = s.k_decay[i * K + c];
                        const float* dSc = dS + (size_t)c * V;
                        for (int j = 0; j < V; j++) dvi[j] += x * dSc[j];
                    }
                }
                // intra-chunk pairs j ≤ i: one vector of exponentials serves dq_i and dk_j
                for (int i = 0; i < n; i++) {
                    const float *Gi = s.G + (size_t)i * K, *qi = s.q + (size_t)i * K, *doi = s.dout + (size_t)i * V;
                    float* dqi = dq + base_k + i * sk;
                    for (int jr = 0; jr <= i; jr++) {
                        const float *Gj = s.G + (size_t)jr * K, *kj = s.k + (size_t)jr * K, *vj = s.v + (size_t)jr * V;
                        float* dkj = dk + base_k + jr * sk;
                        float dp = 0.0f;
                        for (int j = 0; j < V; j++) dp += doi[j] * vj[j];
                        dp *= scale;
                        for (int c = 0; c < K; c++) {
                            float w = exp_fast(Gi[c] - Gj[c]);
                            dqi[c] += dp * kj[c] * w;
                            dkj[c] += dp * qi[c] * w;
                        }
                        float p = s.P[i * n + jr];
                        float* dvj = dv + base_v + jr * sv;
                        for (int j = 0; j < V; j++) dvj[j] += p * doi[j];
                    }
                }
                // dS for the previous chunk
                for (int c = 0; c < K; c++) {
                    float* dSc = dS + (size_t)c * V;
                    float decay = exp_fast(GL[c]);
                    for (int j = 0; j < V; j++) dSc[j] *= decay;
                    for (int i = 0; i < n; i++) {
                        float x = s.q_decay[i * K + c];
                        const float* doi = s.dout + (size_t)i * V;
                        for (int j = 0; j < V; j++) dSc[j] += x * doi[j];
                    }
                }
            }
            chunk_scratch_free(&s);
            free(dS);
        }
    gla_gate_grad(da, q, k, dq, dk, B, T, H * K);
}

// Gated output norm (fla's FusedRMSNormGated, LAYERS.md §1.2): per head of width V,
//     out = RMSNorm_V(x) · w ⊙ silu(g),  one weight w (V) shared by all heads.
// out, x, g (N,H,V); rstd (N,H)
void gated_rmsnorm_forward(float* out, float* rstd, const float* x, const float* g, const float* w, int N, int H,
                           int V, float eps) {
    #pragma omp parallel for
    for (size_t r = 0; r < (size_t)N * H; r++) {
        const float *xr = x + r * V, *gr = g + r * V;
        float ss = 0.0f;
        for (int j = 0; j < V; j++) ss += xr[j] * xr[j];
        float s = 1.0f / sqrtf(ss / V + eps);
        for (int j = 0; j < V; j++) out[r * V + j] = xr[j] * s * w[j] * siluf(gr[j]);
        rstd[r] = s;
    }
}
// dx, dg (N,H,V) overwritten; dw (V) +=. With n̂ = x r w: dg = dy ⊙ n̂ ⊙ silu'(g); then RMSNorm
// backward with upstream dy ⊙ silu(g).
void gated_rmsnorm_backward(float* dx, float* dg, float* dw, const float* dout, const float* x, const float* g,
                            const float* w, const float* rstd, int N, int H, int V) {
    #pragma omp parallel for
    for (size_t r = 0; r < (size_t)N * H; r++) {
        const float *xr = x + r * V, *gr = g + r * V, *dy = dout + r * V;
        float s = rstd[r], dot = 0.0f;
        for (int j = 0; j < V; j++) {
            float xhat = xr[j] * s;
            dg[r * V + j] = dy[j] * xhat * w[j] * silu_grad(gr[j]);
            dot += dy[j] * siluf(gr[j]) * w[j] * xhat;
        }
        dot /= V;
        for (int j = 0; j < V; j++) dx[r * V + j] = s * (dy[j] * siluf(gr[j]) * w[j] - xr[j] * s * dot);
    }
    for (size_t r = 0; r < (size_t)N * H; r++)
        for (int j = 0; j < V; j++) dw[j] += dout[r * V + j] * siluf(g[r * V + j]) * x[r * V + j] * rstd[r];
}

// ----------------------------------------------------------------------------
// activations: one struct per layer, sized for (B,T) at allocation

typedef struct {
    float *ln1, *ln1_rstd;                  // (N,d), (N)   input of the mixer
    // gla
    float *q, *k, *v, *z;                   // (N,Dk) (N,Dk) (N,Dv) (N,Dv); z = output-gate logits
    float *gk1, *gk, *a;                    // (N,R) (N,Dk) (N,Dk): low-rank gate, gate logits, log-gate
    float *states;                          // (B,H,NC,K,V) chunk-entry states
    float *o, *o_rstd, *o_gated;            // (N,Dv) (N,H) (N,Dv)
    // attention (q, k, v above hold the roped q (N,H*hd), k, v (N,Hkv*hd))
    float *att;                             // (B,H,T,T) softmax probabilities
    float *att_out;                         // (N,H*hd)
    float *mixer;                           // (N,d) mixer output
    float *res1;                            // (N,d) residual after the mixer
    float *ln2, *ln2_rstd;                  // (N,d), (N)
    float *mlp_gate, *mlp_up, *mlp_h;       // (N,I) each; h = silu(gate) ⊙ up
    float *mlp;                             // (N,d) MLP output
    float *res2;                            // (N,d) block output
} LayerActs;

// the weights: views into one flat buffer, following param_table
typedef struct {
    float *embed, *norm, *lm_head;          // lm_head == embed when tied
    float* layer[MAX_LAYERS][NUM_LAYER_SLOTS];
} Weights;

typedef struct {
    Config config;
    ParamSpec specs[MAX_PARAMS];
    int num_specs;
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v;   // (num_params) each
    Weights w, g;                              // views into params and grads
    int chunk_size;                            // GLA chunk length for training (C)
    // activations for a (B,T) batch
    int B, T;
    size_t act_floats;                         // memory accounting
    float *embed_out;                          // (N,d)
    LayerActs acts[MAX_LAYERS];
    float *final_norm, *final_rstd;            // (N,d), (N)
    float *logits;                             // (N,V): logits, then probabilities, then dlogits
    // backward scratch, shared by all layers
    float *dresid, *dln;                       // (N,d) each
    float *dbuf[6];                            // (N, max width) each
    float loss;
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
        else w->lm_head = ptr;
    }
    if (m->config.tie_embeddings) w->lm_head = w->embed;
}

// ----------------------------------------------------------------------------
// the GLA layer (LAYERS.md §2): projections, gates, chunkwise core, gated norm, output projection

static int gla_head_k(const Config* c) { return c->gla_dk / c->gla_heads; }
static int gla_head_v(const Config* c) { return c->gla_dv / c->gla_heads; }

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
    for (size_t i = 0; i < (size_t)N * Dk; i++) A->a[i] = logsigmoidf(A->gk[i]) * inv;
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
    memset(do_gated, 0, (size_t)N * Dv * sizeof(float));
    matmul_backward(do_gated, dW[W_GLA_O], NULL, dout, A->o_gated, W[W_GLA_O], N, Dv, d);
    gated_rmsnorm_backward(d_o, dz, dW[W_GLA_G_NORM], do_gated, A->o, A->z, W[W_GLA_G_NORM], A->o_rstd, N, H, V);
    // the recurrence; da reuses do_gated's buffer (no longer needed)
    float* da = do_gated;
    gla_chunk_backward(dq, dk, dv, da, d_o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size,
                       1.0f / sqrtf((float)K));
    // gate chain: a = logσ(gk)/16  ->  dgk = da (1 − σ(gk)) / 16, written over da
    float inv = 1.0f / c->gla_gate_normalizer;
    for (size_t i = 0; i < (size_t)N * Dk; i++) da[i] *= inv * sigmoidf(-A->gk[i]);
    float* dgk1 = d_o;  // (N,R), d_o no longer needed
    memset(dgk1, 0, (size_t)N * R * sizeof(float));
    matmul_backward(dgk1, dW[W_GLA_GK2], dW[W_GLA_GK_BIAS], da, A->gk1, W[W_GLA_GK2], N, R, Dk);
    // the five d -> * projections all read ln1
    memset(dln, 0, (size_t)N * d * sizeof(float));
    matmul_backward(dln, dW[W_GLA_GK1], NULL, dgk1, A->ln1, W[W_GLA_GK1], N, d, R);
    matmul_backward(dln, dW[W_GLA_Q], NULL, dq, A->ln1, W[W_GLA_Q], N, d, Dk);
    matmul_backward(dln, dW[W_GLA_K], NULL, dk, A->ln1, W[W_GLA_K], N, d, Dk);
    matmul_backward(dln, dW[W_GLA_V], NULL, dv, A->ln1, W[W_GLA_V], N, d, Dv);
    matmul_backward(dln, dW[W_GLA_G], NULL, dz, A->ln1, W[W_GLA_G], N, d, Dv);
}

// ----------------------------------------------------------------------------
// causal softmax attention with RoPE and GQA (LAYERS.md §8)

// Copies kv head g of x (B,T,Hkv,D) for batch b into (T,D) rows, or transposed into (D,T) so that
// a query's scores over all keys are one vectorisable loop over key positions.
static void gather_head(float* dst, const float* x, int b, int g, int T, int Hkv, int D, int transpose) {
    for (int s = 0; s < T; s++) {
        const float* src = x + (((size_t)b * T + s) * Hkv + g) * D;
        for (int i = 0; i < D; i++) {
            if (transpose) dst[(size_t)i * T + s] = src[i];
            else dst[(size_t)s * D + i] = src[i];
        }
    }
}

// out (B,T,H,D); att (B,H,T,T) probabilities (upper triangle left unused); q (B,T,H,D);
// k, v (B,T,Hkv,D). Query head h reads kv head h / (H/Hkv).
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int B, int T,
                       int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int group = H / Hkv;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* kT = (float*)malloc_check((size_t)D * T * sizeof(float));   // (D,T)
            float* vh = (float*)malloc_check((size_t)T * D * sizeof(float));   // (T,D)
            gather_head(kT, k, b, h / group, T, Hkv, D, 1);
            gather_head(vh, v, b, h / group, T, Hkv, D, 0);
            for (int t = 0; t < T; t++) {
                const float* qt = q + (((size_t)b * T + t) * H + h) * D;
                float* p = att + (((size_t)b * H + h) * T + t) * T;
                for (int s = 0; s <= t; s++) p[s] = 0.0f;
                for (int i = 0; i < D; i++) {
                    float x = qt[i] * scale;
                    const float* kTi = kT + (size_t)i * T;
                    for (int s = 0; s <= t; s++) p[s] += x * kTi[s];
                }
                float maxv = -INFINITY, sum = 0.0f;
                for (int s = 0; s <= t; s++) maxv = fmaxf(maxv, p[s]);
                for (int s = 0; s <= t; s++) { p[s] = exp_fast(p[s] - maxv); sum += p[s]; }
                float inv = 1.0f / sum;
                float* ot = out + (((size_t)b * T + t) * H + h) * D;
                for (int i = 0; i < D; i++) ot[i] = 0.0f;
                for (int s = 0; s <= t; s++) {
                    p[s] *= inv;
                    const float* vs = vh + (size_t)s * D;
                    for (int i = 0; i < D; i++) ot[i] += p[s] * vs[i];
                }
            }
            free(kT);
            free(vh);
        }
}

// dq (B,T,H,D), dk, dv (B,T,Hkv,D) +=. With P the probabilities: dV = Pᵀ dO; dP = dO Vᵀ;
// dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = scale dS K; dK = scale dSᵀ Q. Parallel over (b, kv head) so
// the heads of one GQA group add into their shared dk, dv without races.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att, const float* q,
                        const float* k, const float* v, int B, int T, int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int group = H / Hkv;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++) {
            float* kh = (float*)malloc_check((size_t)T * D * sizeof(float));   // (T,D)
            float* vT = (float*)malloc_check((size_t)D * T * sizeof(float));   // (D,T)
            float* dkh = (float*)calloc_check((size_t)T * D, sizeof(float));   // (T,D)
            float* dvh = (float*)calloc_check((size_t)T * D, sizeof(float));   // (T,D)
            float* dp = (float*)malloc_check(T * sizeof(float));
            gather_head(kh, k, b, g, T, Hkv, D, 0);
            gather_head(vT, v, b, g, T, Hkv, D, 1);
            for (int h = g * group; h < (g + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const float* p = att + (((size_t)b * H + h) * T + t) * T;
                    const float* dot_ = dout + (((size_t)b * T + t) * H + h) * D;
                    const float* qt = q + (((size_t)b * T + t) * H + h) * D;
                    float* dqt = dq + (((size_t)b * T + t) * H + h) * D;
                    for (int s = 0; s <= t; s++) dp[s] = 0.0f;
                    for (int i = 0; i < D; i++) {
                        float x = dot_[i];
                        const float* vTi = vT + (size_t)i * T;
                        for (int s = 0; s <= t; s++) dp[s] += x * vTi[s];
                    }
                    float rowsum = 0.0f;
                    for (int s = 0; s <= t; s++) rowsum += p[s] * dp[s];
                    for (int s = 0; s <= t; s++) dp[s] = p[s] * (dp[s] - rowsum) * scale;   // dS
                    for (int s = 0; s <= t; s++) {
                        const float* ks = kh + (size_t)s * D;
                        float *dks = dkh + (size_t)s * D, *dvs = dvh + (size_t)s * D;
                        for (int i = 0; i < D; i++) {
                            dqt[i] += dp[s] * ks[i];
                            dks[i] += dp[s] * qt[i];
                            dvs[i] += p[s] * dot_[i];
                        }
                    }
                }
            for (int s = 0; s < T; s++)
                for (int i = 0; i < D; i++) {
                    size_t r = (((size_t)b * T + s) * Hkv + g) * D + i;
                    dk[r] += dkh[(size_t)s * D + i];
                    dv[r] += dvh[(size_t)s * D + i];
                }
            free(kh); free(vT); free(dkh); free(dvh); free(dp);
        }
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
    memset(datt_out, 0, (size_t)N * H * D * sizeof(float));
    matmul_backward(datt_out, dW[W_ATT_O], NULL, dout, A->att_out, W[W_ATT_O], N, H * D, d);
    memset(dq, 0, (size_t)N * H * D * sizeof(float));
    memset(dk, 0, (size_t)N * Hkv * D * sizeof(float));
    memset(dv, 0, (size_t)N * Hkv * D * sizeof(float));
    attention_backward(dq, dk, dv, datt_out, A->att, A->q, A->k, A->v, B, T, H, Hkv, D);
    rope_backward(dq, B, T, H, D, 0, c->rope_theta);
    rope_backward(dk, B, T, Hkv, D, 0, c->rope_theta);
    memset(dln, 0, (size_t)N * d * sizeof(float));
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
    memset(dh, 0, (size_t)N * I * sizeof(float));
    matmul_backward(dh, dW[W_MLP_DOWN], NULL, dout, A->mlp_h, W[W_MLP_DOWN], N, I, d);
    swiglu_backward(dgate, dup, dh, A->mlp_gate, A->mlp_up, (size_t)N * I);
    memset(dln, 0, (size_t)N * d * sizeof(float));
    matmul_backward(dln, dW[W_MLP_GATE], NULL, dgate, A->ln2, W[W_MLP_GATE], N, d, I);
    matmul_backward(dln, dW[W_MLP_UP], NULL, dup, A->ln2, W[W_MLP_UP], N, d, I);
}

// ----------------------------------------------------------------------------
// cross-entropy with an ignore index (targets < 0 do not count; fla uses −100)

#define IGNORE_INDEX (-100)

// logits (N,V) are turned into probabilities in place; returns the mean loss over counted rows,
// *n_valid = their number.
float crossentropy_forward(float* logits, const int* targets, int N, int V, int* n_valid) {
    double total = 0.0;
    int count = 0;
    #pragma omp parallel for reduction(+ : total, count)
    for (int n = 0; n < N; n++) {
        float* row = logits + (size_t)n * V;
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++) maxv = fmaxf(maxv, row[i]);
        float sum = 0.0f;
        for (int i = 0; i < V; i++) { row[i] = exp_fast(row[i] - maxv); sum += row[i]; }
        for (int i = 0; i < V; i++) row[i] /= sum;
        if (targets[n] >= 0) {
            total += -log((double)row[targets[n]]);
            count++;
        }
    }
    *n_valid = count;
    return count ? (float)(total / count) : 0.0f;
}
// probs (N,V) -> dlogits in place: (p − onehot(target)) / n_valid; rows with ignored targets get 0
void crossentropy_backward(float* probs, const int* targets, int N, int V, int n_valid) {
    float inv = n_valid ? 1.0f / n_valid : 0.0f;
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float* row = probs + (size_t)n * V;
        if (targets[n] < 0) { memset(row, 0, V * sizeof(float)); continue; }
        for (int i = 0; i < V; i++) row[i] *= inv;
        row[targets[n]] -= inv;
    }
}

// ----------------------------------------------------------------------------
// the model

void model_build(Model* m, const Config* c) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->num_specs = param_table(c, m->specs, &m->num_params);
    m->params = (float*)calloc_check(m->num_params, sizeof(float));
    m->grads = (float*)calloc_check(m->num_params, sizeof(float));
    m->adam_m = (float*)calloc_check(m->num_params, sizeof(float));
    m->adam_v = (float*)calloc_check(m->num_params, sizeof(float));
    weights_point(&m->w, m, m->params);
    weights_point(&m->g, m, m->grads);
    m->chunk_size = 64;
}

// fla's init (LAYERS.md §9.5): matrices N(0, 0.02), norm weights 1, biases 0
void model_init_weights(Model* m, uint64_t seed) {
    uint64_t rng = seed ? seed : 1;
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        float* w = m->params + p->offset;
        int is_norm = p->slot == G_NORM || (p->layer >= 0 && (p->slot == W_ATTN_NORM || p->slot == W_MLP_NORM ||
                                                               p->slot == W_GLA_G_NORM));
        for (size_t j = 0; j < p->numel; j++)
            w[j] = p->ndim == 2 ? 0.02f * random_normal(&rng) : (is_norm ? 1.0f : 0.0f);
    }
}

// the widest per-row scratch any backward needs
static int max_width(const Config* c) {
    int w = c->d_model;
    if (c->mlp_hidden > w) w = c->mlp_hidden;
    if (c->gla_dk > w) w = c->gla_dk;
    if (c->gla_dv > w) w = c->gla_dv;
    if (c->vocab_size > w) w = c->vocab_size;
    return w;
}

static float* act_alloc(Model* m, size_t n) {
    m->act_floats += n;
    return m->counting_only ? NULL : (float*)calloc_check(n, sizeof(float));
}

// Allocates the activations for batches of (B,T); a later call with the same (B,T) is free.
void model_alloc_acts(Model* m, int B, int T) {
    if (m->B == B && m->T == T) return;
    if (m->B) fail("model activations were sized for B=%d T=%d, asked for B=%d T=%d", m->B, m->T, B, T);
    const Config* c = &m->config;
    size_t N = (size_t)B * T, d = c->d_model, I = c->mlp_hidden;
    m->B = B;
    m->T = T;
    m->embed_out = act_alloc(m, N * d);
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs* A = &m->acts[l];
        A->ln1 = act_alloc(m, N * d);
        A->ln1_rstd = act_alloc(m, N);
        if (c->pattern[l] == MIXER_GLA) {
            size_t Dk = c->gla_dk, Dv = c->gla_dv, H = c->gla_heads;
            size_t NC = (T + m->chunk_size - 1) / m->chunk_size;
            A->q = act_alloc(m, N * Dk);
            A->k = act_alloc(m, N * Dk);
            A->v = act_alloc(m, N * Dv);
            A->z = act_alloc(m, N * Dv);
            A->gk1 = act_alloc(m, N * c->gla_gate_rank);
            A->gk = act_alloc(m, N * Dk);
            A->a = act_alloc(m, N * Dk);
            A->states = act_alloc(m, (size_t)B * NC * Dk * Dv / H);
            A->o = act_alloc(m, N * Dv);
            A->o_rstd = act_alloc(m, N * H);
            A->o_gated = act_alloc(m, N * Dv);
        } else {
            size_t H = c->attn_heads, D = attn_head_dim(c), kv = c->attn_kv_heads * D;
            A->q = act_alloc(m, N * H * D);
            A->k = act_alloc(m, N * kv);
            A->v = act_alloc(m, N * kv);
            A->att = act_alloc(m, (size_t)B * H * T * T);
            A->att_out = act_alloc(m, N * H * D);
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

// inputs, targets (B,T); targets may be NULL (then only logits are computed). Sets m->loss.
void model_forward(Model* m, const int* inputs, const int* targets, int B, int T) {
    const Config* c = &m->config;
    int N = B * T, d = c->d_model, V = c->vocab_size;
    for (int i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= V) fail("input token %d at position %d is outside the vocabulary (%d)", inputs[i], i, V);
    model_alloc_acts(m, B, T);
    encoder_forward(m->embed_out, inputs, m->w.embed, N, d);
    const float* x = m->embed_out;
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, x, W[W_ATTN_NORM], N, d, c->norm_eps);
        if (c->pattern[l] == MIXER_GLA) gla_layer_forward(m, l, B, T);
        else attn_layer_forward(m, l, B, T);
        for (size_t i = 0; i < (size_t)N * d; i++) A->res1[i] = x[i] + A->mixer[i];
        rmsnorm_forward(A->ln2, A->ln2_rstd, A->res1, W[W_MLP_NORM], N, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, N);
        for (size_t i = 0; i < (size_t)N * d; i++) A->res2[i] = A->res1[i] + A->mlp[i];
        x = A->res2;
    }
    rmsnorm_forward(m->final_norm, m->final_rstd, x, m->w.norm, N, d, c->norm_eps);
    matmul_forward(m->logits, m->final_norm, m->w.lm_head, NULL, N, d, V);
    if (targets) {
        for (int i = 0; i < N; i++)
            if (targets[i] >= V || (targets[i] < 0 && targets[i] != IGNORE_INDEX))
                fail("target %d at position %d is outside the vocabulary (%d)", targets[i], i, V);
        m->loss = crossentropy_forward(m->logits, targets, N, V, &m->n_valid);
    }
}

// Gradients of the mean loss into m->grads (overwritten). Needs model_forward with targets first.
void model_backward(Model* m, const int* inputs, const int* targets) {
    const Config* c = &m->config;
    int B = m->B, T = m->T, N = B * T, d = c->d_model, V = c->vocab_size;
    memset(m->grads, 0, m->num_params * sizeof(float));
    crossentropy_backward(m->logits, targets, N, V, m->n_valid);
    const float* x_last = c->n_layer ? m->acts[c->n_layer - 1].res2 : m->embed_out;
    float* dfinal = m->dln;
    memset(dfinal, 0, (size_t)N * d * sizeof(float));
    matmul_backward(dfinal, m->g.lm_head, NULL, m->logits, m->final_norm, m->w.lm_head, N, d, V);
    memset(m->dresid, 0, (size_t)N * d * sizeof(float));
    rmsnorm_backward(m->dresid, m->g.norm, dfinal, x_last, m->w.norm, m->final_rstd, N, d);
    // dresid is dL/d(residual stream); each branch reads it and then adds its norm's backward into it
    for (int l = c->n_layer - 1; l >= 0; l--) {
        LayerActs* A = &m->acts[l];
        float* const* W = m->w.layer[l];
        float* const* dW = m->g.layer[l];
        const float* x = l ? m->acts[l - 1].res2 : m->embed_out;
        mlp_backward(m, l, m->dresid, m->dln, N);
        rmsnorm_backward(m->dresid, dW[W_MLP_NORM], m->dln, A->res1, W[W_MLP_NORM], A->ln2_rstd, N, d);
        if (c->pattern[l] == MIXER_GLA) gla_layer_backward(m, l, m->dresid, m->dln, B, T);
        else attn_layer_backward(m, l, m->dresid, m->dln, B, T);
        rmsnorm_backward(m->dresid, dW[W_ATTN_NORM], m->dln, x, W[W_ATTN_NORM], A->ln1_rstd, N, d);
    }
    encoder_backward(m->g.embed, m->dresid, inputs, N, d);
}

void model_free(Model* m) {
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    if (!m->B) return;
    free(m->embed_out);
    for (int l = 0; l < m->config.n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* bufs[] = {A->ln1, A->ln1_rstd, A->q, A->k, A->v, A->z, A->gk1, A->gk, A->a, A->states, A->o,
                         A->o_rstd, A->o_gated, A->att, A->att_out, A->mixer, A->res1, A->ln2, A->ln2_rstd,
                         A->mlp_gate, A->mlp_up, A->mlp_h, A->mlp, A->res2};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    }
    free(m->final_norm); free(m->final_rstd); free(m->logits); free(m->dresid); free(m->dln);
    for (int i = 0; i < 6; i++) free(m->dbuf[i]);
}

// ----------------------------------------------------------------------------
// optimisation: global gradient norm, clipping, learning-rate schedule, AdamW

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

float grad_norm(const Model* m) {
    double ss = 0.0;
    #pragma omp parallel for reduction(+ : ss)
    for (size_t i = 0; i < m->num_params; i++) ss += (double)m->grads[i] * m->grads[i];
    return (float)sqrt(ss);
}

// name of the first parameter whose gradient is not finite, or NULL
const char* first_nonfinite_grad(const Model* m) {
    for (int i = 0; i < m->num_specs; i++)
        for (size_t j = 0; j < m->specs[i].numel; j++)
            if (!isfinite(m->grads[m->specs[i].offset + j])) return m->specs[i].name;
    return NULL;
}

// One AdamW step t (1-based) at learning rate lr, after scaling the gradients by grad_scale
// (global-norm clipping). Weight decay is decoupled and applies to matrices only.
void adamw_update(Model* m, const TrainHyper* h, float lr, int t, float grad_scale) {
    float bc1 = 1.0f - powf(h->beta1, t), bc2 = 1.0f - powf(h->beta2, t);
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        float wd = p->decay ? h->weight_decay : 0.0f;
        float *w = m->params + p->offset, *g = m->grads + p->offset;
        float *mm = m->adam_m + p->offset, *vv = m->adam_v + p->offset;
        #pragma omp parallel for
        for (size_t j = 0; j < p->numel; j++) {
            float grad = g[j] * grad_scale;
            mm[j] = h->beta1 * mm[j] + (1.0f - h->beta1) * grad;
            vv[j] = h->beta2 * vv[j] + (1.0f - h->beta2) * grad * grad;
            float mhat = mm[j] / bc1, vhat = vv[j] / bc2;
            w[j] -= lr * (mhat / (sqrtf(vhat) + h->eps) + wd * w[j]);
        }
    }
}

// ----------------------------------------------------------------------------
// generation: O(1) recurrent state for GLA layers, a KV cache for attention layers. Each step runs
// the very same layer functions as training on one row (N = 1), with the recurrent GLA step in
// place of the chunkwise core.

typedef struct {
    int max_T;
    float* gla_state[MAX_LAYERS];      // (H,K,V)
    float* k_cache[MAX_LAYERS];        // (max_T, Hkv*D), roped keys
    float* v_cache[MAX_LAYERS];        // (max_T, Hkv*D)
    LayerActs acts;                    // one row
    float *x, *att_row, *logits;       // (d), (H*max_T), (V)
} DecodeState;

void decode_init(DecodeState* s, const Config* c, int max_T) {
    memset(s, 0, sizeof(*s));
    s->max_T = max_T;
    size_t d = c->d_model, I = c->mlp_hidden, wmax = max_width(c);
    for (int l = 0; l < c->n_layer; l++) {
        if (c->pattern[l] == MIXER_GLA) {
            s->gla_state[l] = (float*)calloc_check((size_t)c->gla_dk * c->gla_dv / c->gla_heads, sizeof(float));
        } else {
            size_t kv = (size_t)c->attn_kv_heads * attn_head_dim(c);
            s->k_cache[l] = (float*)calloc_check((size_t)max_T * kv, sizeof(float));
            s->v_cache[l] = (float*)calloc_check((size_t)max_T * kv, sizeof(float));
        }
    }
    LayerActs* A = &s->acts;
    float** bufs[] = {&A->ln1, &A->q, &A->k, &A->v, &A->z, &A->gk, &A->a, &A->o, &A->o_gated, &A->att_out,
                      &A->mixer, &A->ln2, &A->mlp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) *bufs[i] = (float*)calloc_check(wmax, sizeof(float));
    A->gk1 = (float*)calloc_check(c->gla_gate_rank, sizeof(float));
    A->ln1_rstd = (float*)calloc_check(1, sizeof(float));
    A->ln2_rstd = (float*)calloc_check(1, sizeof(float));
    A->o_rstd = (float*)calloc_check(c->gla_heads, sizeof(float));
    A->mlp_gate = (float*)calloc_check(I, sizeof(float));
    A->mlp_up = (float*)calloc_check(I, sizeof(float));
    A->mlp_h = (float*)calloc_check(I, sizeof(float));
    s->x = (float*)calloc_check(d, sizeof(float));
    s->att_row = (float*)calloc_check((size_t)c->attn_heads * max_T, sizeof(float));
    s->logits = (float*)calloc_check(c->vocab_size, sizeof(float));
}

void decode_free(DecodeState* s, const Config* c) {
    for (int l = 0; l < c->n_layer; l++) { free(s->gla_state[l]); free(s->k_cache[l]); free(s->v_cache[l]); }
    LayerActs* A = &s->acts;
    float* bufs[] = {A->ln1, A->q, A->k, A->v, A->z, A->gk, A->a, A->o, A->o_gated, A->att_out, A->mixer, A->ln2,
                     A->mlp, A->gk1, A->ln1_rstd, A->ln2_rstd, A->o_rstd, A->mlp_gate, A->mlp_up, A->mlp_h};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    free(s->x); free(s->att_row); free(s->logits);
}

// attention of one query row at position pos over the cache rows 0..pos.
// out (H,D); q (H,D); caches (max_T, Hkv, D); p scratch (pos+1)
static void attention_step(float* out, float* p, const float* q, const float* kc, const float* vc, int pos, int H,
                           int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int group = H / Hkv;
    for (int h = 0; h < H; h++) {
        float maxv = -INFINITY, sum = 0.0f;
        for (int s = 0; s <= pos; s++) {
            const float* ks = kc + ((size_t)s * Hkv + h / group) * D;
            float dot = 0.0f;
            for (int i = 0; i < D; i++) dot += q[h * D + i] * ks[i];
            p[s] = dot * scale;
            maxv = fmaxf(maxv, p[s]);
        }
        for (int s = 0; s <= pos; s++) { p[s] = exp_fast(p[s] - maxv); sum += p[s]; }
        for (int i = 0; i < D; i++) out[h * D + i] = 0.0f;
        for (int s = 0; s <= pos; s++) {
            const float* vs = vc + ((size_t)s * Hkv + h / group) * D;
            for (int i = 0; i < D; i++) out[h * D + i] += p[s] / sum * vs[i];
        }
    }
}

// Feeds token at position pos (0-based, consecutive from 0); leaves the next-token logits in s->logits (V).
void decode_step(Model* m, DecodeState* s, int token, int pos) {
    const Config* c = &m->config;
    int d = c->d_model;
    if (pos >= s->max_T) fail("generation past the KV cache length %d", s->max_T);
    if (token < 0 || token >= c->vocab_size) fail("token %d outside the vocabulary (%d)", token, c->vocab_size);
    LayerActs* A = &s->acts;
    memcpy(s->x, m->w.embed + (size_t)token * d, d * sizeof(float));
    for (int l = 0; l < c->n_layer; l++) {
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, W[W_ATTN_NORM], 1, d, c->norm_eps);
        if (c->pattern[l] == MIXER_GLA) {
            int H = c->gla_heads, K = gla_head_k(c), V = gla_head_v(c);
            gla_project_forward(A, W, c, 1);
            gla_recurrent_step(A->o, s->gla_state[l], A->q, A->k, A->v, A->a, H, K, V, 1.0f / sqrtf((float)K));
            gla_output_forward(A->mixer, A, W, c, 1);
        } else {
            int H = c->attn_heads, Hkv = c->attn_kv_heads, D = attn_head_dim(c);
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
        for (int i = 0; i < d; i++) s->x[i] += A->mixer[i];
        rmsnorm_forward(A->ln2, A->ln2_rstd, s->x, W[W_MLP_NORM], 1, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, 1);
        for (int i = 0; i < d; i++) s->x[i] += A->mlp[i];
    }
    rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, m->w.norm, 1, d, c->norm_eps);
    matmul_forward(s->logits, A->ln1, m->w.lm_head, NULL, 1, d, c->vocab_size);
}

// Samples from softmax(logits / temperature) (V); temperature 0 = argmax.
int sample_token(const float* logits, int V, float temperature, uint64_t* rng) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
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

// ----------------------------------------------------------------------------
// optimizer-state file: header [0] magic [1] version [2] step [3] shard [4,5] data position (lo, hi)
// [6,7] sampler RNG (lo, hi) [8,9] parameter count (lo, hi) [10] B [11] T; then AdamW m and v.

typedef struct {
    int step;
    int shard;
    size_t pos;
    uint64_t rng;
    int B, T;
} TrainState;

void state_write(const char* path, const Model* m, const TrainState* s) {
    char tmp[PATH_CAP];
    int32_t h[256] = {STATE_MAGIC, STATE_VERSION, s->step, s->shard};
    h[4] = (int32_t)(s->pos & 0xffffffff); h[5] = (int32_t)(s->pos >> 32);
    h[6] = (int32_t)(s->rng & 0xffffffff); h[7] = (int32_t)(s->rng >> 32);
    h[8] = (int32_t)(m->num_params & 0xffffffff); h[9] = (int32_t)((uint64_t)m->num_params >> 32);
    h[10] = s->B; h[11] = s->T;
    FILE* f = atomic_open(path, tmp);
    fwrite_check(h, sizeof(int32_t), 256, f, tmp);
    fwrite_check(m->adam_m, sizeof(float), m->num_params, f, tmp);
    fwrite_check(m->adam_v, sizeof(float), m->num_params, f, tmp);
    atomic_commit(f, tmp, path);
}

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
    if (n != m->num_params) fail("'%s' holds optimizer state for %zu parameters, the model has %zu", path, n, m->num_params);
    if (s->step < 0) fail("'%s': negative step %d", path, s->step);
    int64_t want = 1024 + 8 * (int64_t)n, have = file_size(f);
    if (have != want) fail("'%s' is %lld bytes, expected %lld (truncated or corrupt)", path, (long long)have, (long long)want);
    fread_check(m->adam_m, sizeof(float), n, f, path);
    fread_check(m->adam_v, sizeof(float), n, f, path);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(m->adam_m[i]) || !isfinite(m->adam_v[i]) || m->adam_v[i] < 0.0f)
            fail("'%s': optimizer moment %zu is invalid (corrupt file)", path, i);
}

// Checkpoint of step s = the state before training step s: model_<s>.bin, state_<s>.bin, then the
// marker DONE_<s>, written last, that says both files are complete. Resume looks for markers only.
static void ckpt_path(char* out, size_t cap, const char* dir, const char* kind, int step) {
    snprintf(out, cap, "%s/%s_%08d%s", dir, kind, step, strcmp(kind, "DONE") ? ".bin" : "");
}

void save_checkpoint(const char* dir, const Model* m, const TrainState* s, int keep) {
    char path[PATH_CAP];
    for (size_t i = 0; i < m->num_params; i++)
        if (!isfinite(m->params[i])) fail("refusing to save a checkpoint with non-finite parameters (step %d)", s->step);
    ckpt_path(path, sizeof(path), dir, "model", s->step);
    checkpoint_write(path, &m->config, m->params, m->num_params);
    ckpt_path(path, sizeof(path), dir, "state", s->step);
    state_write(path, m, s);
    ckpt_path(path, sizeof(path), dir, "DONE", s->step);
    char tmp[PATH_CAP];
    FILE* f = atomic_open(path, tmp);
    atomic_commit(f, tmp, path);
    // drop checkpoints older than the `keep` most recent (marker first, so none is left half-deleted
    // with its marker)
    glob_t g;
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/DONE_*", dir);
    if (keep > 0 && glob(pattern, 0, NULL, &g) == 0) {
        for (int i = 0; i + keep < (int)g.gl_pathc; i++) {
            int old = atoi(strrchr(g.gl_pathv[i], '_') + 1);
            const char* kinds[] = {"DONE", "model", "state"};
            for (int k = 0; k < 3; k++) { ckpt_path(path, sizeof(path), dir, kinds[k], old); remove(path); }
        }
        globfree(&g);
    }
}

// highest step with a DONE marker in dir, or −1
int latest_checkpoint(const char* dir) {
    glob_t g;
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/DONE_*", dir);
    int best = -1;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            int s = atoi(strrchr(g.gl_pathv[i], '_') + 1);
            if (s > best) best = s;
        }
        globfree(&g);
    }
    return best;
}

// ----------------------------------------------------------------------------
// main: the training program

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Mean loss (nats per token) over the first `batches` batches of the validation data, and the same
// loss in bits per byte of the text those targets encode (comparable across tokenizers).
float evaluate(Model* m, DataLoader* val, int batches, const Tokenizer* tok, double* bits_per_byte) {
    loader_seek(val, 0, 0);
    double total = 0.0, bytes = 0.0;
    for (int i = 0; i < batches; i++) {
        loader_next_batch(val);
        model_forward(m, val->inputs, val->targets, val->B, val->T);
        total += (double)m->loss * m->n_valid;
        bytes += tokens_byte_count(tok, val->targets, (size_t)val->B * val->T);
    }
    size_t n = (size_t)batches * val->B * val->T;
    *bits_per_byte = bytes > 0 ? total / bytes / log(2.0) : 0.0;
    return (float)(total / n);
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
        int next = sample_token(s.logits, m->config.vocab_size, temperature, rng);
        if (next == tok->eot_id) break;
        tokenizer_print(tok, next, stdout);
        decode_step(m, &s, next, pos);
    }
    printf("\n---\n");
    fflush(stdout);
    decode_free(&s, &m->config);
    free(ids);
}

#ifndef TESTING
int main(int argc, char** argv) {
    // model
    int d_model = 128, n_layer = 4, gla_heads = 2, attn_heads = 4, attn_kv_heads = 0, mlp_hidden = 0, tie = 1;
    const char* pattern = "gla:3";
    float expand_k = 0.5f, expand_v = 1.0f;
    // data and training
    const char *train_glob = "data/tinyshakespeare/tiny_shakespeare_train.bin",
               *val_glob = "data/tinyshakespeare/tiny_shakespeare_val.bin",
               *tok_path = "data/tokenizer_bytes.bin", *out_dir = "out", *prompt = "\n";
    int B = 16, T = 256, steps = 1000, warmup = 50, val_every = 250, val_batches = 20, sample_every = 500,
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
        {"attn-heads", 0, FLAG_INT, &attn_heads, 1, 1024, "attention heads (head dim d/heads)"},
        {"kv-heads", 0, FLAG_INT, &attn_kv_heads, 0, 1024, "attention key/value heads for GQA (0: = attn-heads)"},
        {"mlp-hidden", 0, FLAG_INT, &mlp_hidden, 0, 65536, "SwiGLU width (0: fla's rule, 8d/3 rounded up to 256)"},
        {"tie", 0, FLAG_INT, &tie, 0, 1, "1: LM head tied to the embedding"},
        {"chunk", 0, FLAG_INT, &chunk, 1, 1024, "GLA chunk length for training"},
        {"batch", 'b', FLAG_INT, &B, 1, 4096, "batch size B"},
        {"seq-len", 'T', FLAG_INT, &T, 2, 65536, "sequence length T"},
        {"steps", 'n', FLAG_INT, &steps, 0, 100000000, "training steps (the cosine schedule's length)"},
        {"stop-at", 0, FLAG_INT, &stop_at, 0, 100000000, "stop at this step, keeping the schedule of --steps (0: at --steps)"},
        {"max-time", 'x', FLAG_FLOAT, &max_time, 0, 1e9, "stop after this many seconds of training (0: no limit)"},
        {"lr", 'l', FLAG_FLOAT, &lr, 0, 10, "peak learning rate"},
        {"warmup", 'u', FLAG_INT, &warmup, 0, 100000000, "linear warmup steps"},
        {"min-lr-frac", 'q', FLAG_FLOAT, &min_lr_frac, 0, 1, "final learning rate as a fraction of the peak"},
        {"weight-decay", 'c', FLAG_FLOAT, &wd, 0, 10, "AdamW decoupled weight decay (matrices only)"},
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
                "Trains a GLA / softmax-attention hybrid language model on the CPU.");
    if (warmup > steps && steps > 0) fail("--warmup %d exceeds --steps %d", warmup, steps);

    Tokenizer tok;
    tokenizer_load(&tok, tok_path);

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
        const char* bad = parse_pattern(pattern, n_layer, cfg.pattern);
        if (bad) fail("--pattern '%s': %s", pattern, bad);
        bad = validate_config(&cfg);
        if (bad) fail("bad model flags: %s", bad);
    }
    if (cfg.vocab_size != tok.vocab_size)
        fail("the model's vocabulary (%d) differs from the tokenizer's '%s' (%d)", cfg.vocab_size, tok_path, tok.vocab_size);

    Model model;
    model_build(&model, &cfg);
    model.chunk_size = chunk;
    DataLoader train, val;
    loader_init(&train, train_glob, B, T, cfg.vocab_size);
    loader_init(&val, val_glob, B, T, cfg.vocab_size);
    ts.rng = (uint64_t)seed * 0x9E3779B97F4A7C15ull + 1;
    if (start >= 0) {
        checkpoint_read_params(path, &cfg, model.params, model.num_params);
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
    mkdir(out_dir, 0755);

    char pat[1024];
    format_pattern(&cfg, pat, sizeof(pat));
    double MiB = 1.0 / 1048576.0;
    size_t act_floats = model_count_acts(&model, B, T);
    double need = (model.num_params * 16.0 + act_floats * 4.0) * MiB;   // params, grads, 2 moments
    printf("model: d=%d L=%d pattern=%s vocab=%d mlp=%d tie=%d gla(H=%d Dk=%d Dv=%d) attn(H=%d Hkv=%d)\n",
           cfg.d_model, cfg.n_layer, pat, cfg.vocab_size, cfg.mlp_hidden, cfg.tie_embeddings, cfg.gla_heads,
           cfg.gla_dk, cfg.gla_dv, cfg.attn_heads, cfg.attn_kv_heads);
    printf("parameters: %zu (%.2f M)\n", model.num_params, model.num_params * 1e-6);
    printf("memory: params %.1f MiB, grads %.1f MiB, AdamW %.1f MiB, activations %.1f MiB (B=%d T=%d), total %.1f MiB\n",
           model.num_params * 4 * MiB, model.num_params * 4 * MiB, model.num_params * 8 * MiB, act_floats * 4 * MiB, B,
           T, need);
    double ram = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) * MiB;
    if (ram > 0 && need > 0.9 * ram)
        fail("this run needs about %.0f MiB but the machine has %.0f MiB: reduce -b, -T or the model", need, ram);
    model_alloc_acts(&model, B, T);
#ifdef _OPENMP
    printf("threads: %d\n", omp_get_max_threads());
#endif
    printf("data: %zu shard(s) train, val %zu shard(s); %d steps of %d tokens\n", train.files.gl_pathc,
           val.files.gl_pathc, steps, B * T);
    TrainHyper hyper = {lr, min_lr_frac, wd, 0.9f, 0.95f, 1e-8f, clip, warmup, steps};

    double t_start = now_seconds();
    int first_step = ts.step, step = ts.step;
    for (;; step++) {
        int last = step >= steps || (stop_at > 0 && step >= stop_at) || (max_time > 0 && now_seconds() - t_start > max_time);
        if ((val_every && step % val_every == 0) || last) {
            double bpb;
            float vl = evaluate(&model, &val, val_batches, &tok, &bpb);
            printf("step %5d | val loss %.4f nats/token | %.4f bits/byte\n", step, vl, bpb);
        }
        if ((sample_every && step % sample_every == 0 && step > 0) || last) {
            uint64_t srng = ts.rng ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
            generate(&model, &tok, prompt, gen_tokens, temperature, &srng);
        }
        if ((ckpt_every && step % ckpt_every == 0 && step > start) || last) {
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
        double dt = now_seconds() - t0;
        printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s\n", step + 1, steps, model.loss,
               step_lr, norm, dt * 1e3, B * T / dt);
        fflush(stdout);
    }
    printf("trained steps %d..%d in %.1f s\n", first_step, step, now_seconds() - t_start);
    loader_free(&train);
    loader_free(&val);
    tokenizer_free(&tok);
    model_free(&model);
    return 0;
}
#endif // TESTING
