/*
 * train_gla.c — train a linear-attention / softmax-attention hybrid language model on the CPU, in one file.
 *
 * Model (fla's layout, LAYERS.md): token embedding -> L blocks -> RMSNorm -> LM head -> cross-entropy.
 *   block l:  h = h + Mixer_l(RMSNorm(h));  h = h + SwiGLU(RMSNorm(h))
 *   Mixer_l is one of the six linear families `hgrn`, `retnet`, `gla`, `hgrn2`, `deltanet`,
 *   `gated_deltanet`, or `attn` (causal softmax attention with RoPE), one per layer, any mix.
 * Every layer has a _forward and, right after it, its _backward. Shapes are written (B,T,C) and
 * N = B*T. Gradients accumulate (+=) into buffers the caller zeroed, as in llm.c.
 *
 * Reading order: matmul, small layers (embedding, RMSNorm, SwiGLU, RoPE), GLA (recurrent form,
 * chunkwise form, gated output norm), the other linear mixers' pieces (short convolution, L2 norm,
 * forget gates with lower bounds, HGRN's recurrence and chunked scan, the delta rule recurrent and
 * chunkwise), the layers (GLA, HGRN, HGRN2, RetNet, DeltaNet / Gated DeltaNet), attention,
 * cross-entropy, the model, AdamW, generation, checkpoints, main.
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
 *   pc : K in blocks of <= MM_KC (up to MM_KC*MM_NC/Nc when C is narrow)
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
 *   j  : strips of the chunk -> micro-kernel, which starts from C (or 0) and
 *        writes the tile straight back; a ragged tile goes through a small
 *        buffer and mm_store() writes/accumulates its valid part.  A bias is
 *        written into C first and the sums start from it.
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
 * within a K block, K blocks ascending, block size a function of the shape);
 * which kernel handles a column depends only on Nc.  So results are
 * bitwise identical for any OMP_NUM_THREADS and for builds without OpenMP.
 *
 * Scratch memory.  Each thread needs MM_KC*MM_NC + MM_MR*MM_KC*MM_NC/MM_NR
 * floats (~0.5 MiB).  It is malloc'ed on the first call (re-allocated only if the
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

/* c (MR,NR) (+)= A (MR,kc) @ Bstrip (kc,NR), with A(i,k) at a[i*rsa + k*csa],
 * B(k,j) at b[k*ldb + j] (ldb = NR for a packed strip) and c(i,j) at c[i*ldc + j];
 * load_c: the sums start from c (accumulate), else from 0.  acc[][] has
 * only compile-time indices, so it lives entirely in vector registers: the
 * j loop becomes NR/SIMD vector FMAs and the i loop is unrolled.  Always inlined into the
 * wrappers below, which fix rsa or csa to 1 (A row- or column-major). */
static inline MM_KERNEL_ATTR
void mm_kernel_wide(int kc, const float* restrict a, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* restrict b, ptrdiff_t ldb, float* restrict c, ptrdiff_t ldc,
                    int load_c) {
    float acc[MM_MR][MM_NR];
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR; j++) acc[i][j] = load_c ? c[i * ldc + j] : 0.0f;
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
        for (int j = 0; j < MM_NR; j++) c[i * ldc + j] = acc[i][j];
    }
}

/* Same with a strip of MM_NR2 columns (one SIMD vector): for the ragged
 * right edge of C, and for narrow outputs such as OC=16.  With only MR
 * accumulators the FMA latency would be exposed, so even and odd k are
 * summed into two separate accumulator sets (fixed order: deterministic). */
static inline MM_KERNEL_ATTR
void mm_kernel_narrow(int kc, const float* restrict a, ptrdiff_t rsa, ptrdiff_t csa,
                      const float* restrict b, ptrdiff_t ldb, float* restrict c, ptrdiff_t ldc,
                      int load_c) {
    float acc0[MM_MR][MM_NR2], acc1[MM_MR][MM_NR2];
    for (int i = 0; i < MM_MR; i++) {
        MM_JLOOP
        for (int j = 0; j < MM_NR2; j++) { acc0[i][j] = load_c ? c[i * ldc + j] : 0.0f; acc1[i][j] = 0.0f; }
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
        for (int j = 0; j < MM_NR2; j++) c[i * ldc + j] = acc0[i][j] + acc1[i][j];
    }
}

/* The four instantiations: wide/narrow strip x A row-major/column-major.
 * (Kept out of line so each is register-allocated on its own.) */
#define MM_KERNEL_ARGS int kc, const float* a, ptrdiff_t lda, const float* b, ptrdiff_t ldb, \
                       float* c, ptrdiff_t ldc, int load_c
static MM_NOINLINE void mm_kernel_wide_rowA(MM_KERNEL_ARGS)
{ mm_kernel_wide(kc, a, lda, 1, b, ldb, c, ldc, load_c); }
static MM_NOINLINE void mm_kernel_wide_colA(MM_KERNEL_ARGS)
{ mm_kernel_wide(kc, a, 1, lda, b, ldb, c, ldc, load_c); }
static MM_NOINLINE void mm_kernel_narrow_rowA(MM_KERNEL_ARGS)
{ mm_kernel_narrow(kc, a, lda, 1, b, ldb, c, ldc, load_c); }
static MM_NOINLINE void mm_kernel_narrow_colA(MM_KERNEL_ARGS)
{ mm_kernel_narrow(kc, a, 1, lda, b, ldb, c, ldc, load_c); }

/* Write the valid (mr,nr) corner of a tile (row stride tstride) into C: C += tile when
 * accumulate, else C = tile. */
static void mm_store(float* restrict c, ptrdiff_t ldc, const float* restrict tile,
                     int tstride, int mr, int nr, int accumulate) {
    for (int i = 0; i < mr; i++) {
        const float* t = tile + i * tstride;
        float* ci = c + i * ldc;
        if (accumulate) for (int j = 0; j < nr; j++) ci[j] += t[j];
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

#define MM_THREAD_SCRATCH (MM_KC * MM_NCS * MM_NR + MM_MR * MM_KC * MM_NCS + 32)

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

/* This thread's block of mm_scratch(nthreads), inside a parallel region. */
static float* mm_thread_scratch(float* scratch) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    return scratch + (size_t)tid * MM_THREAD_SCRATCH;
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
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

/* One thread's share of C (M,Nc) (+)= A (M,K) @ B (K,Nc): row panels [p0,p1) and columns [c0,c1)
 * (c0 a multiple of MM_NR).  A(i,k) at A[i*rsa + k*csa], B(k,j) at B[k*rsb + j*csb], C(i,j) at
 * C[i*ldc + j].  accumulate != 0: C += A@B; otherwise C = A@B.
 * scratch: this thread's MM_THREAD_SCRATCH floats (packed B chunk, then a ragged A panel). */
static void mm_block(int M, int Nc, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                     const float* B, ptrdiff_t rsb, ptrdiff_t csb, float* C, ptrdiff_t ldc,
                     int accumulate, int p0, int p1, int c0, int c1, float* scratch) {
    float* bpack = scratch;                                    /* KC x NC */
    float* apanel = scratch + MM_KC * MM_NCS * MM_NR;          /* MR x kc */
    float tile[MM_MR * MM_NR];
    /* K blocks of equal size <= kmax, which depends only on the shape (determinism): MM_KC, or
     * more when C is narrow and A row-major, so that the packed B block stays MM_KC x MM_NC floats
     * and C is loaded and stored fewer times (a column-major A panel is kmax cache lines: MM_KC) */
    const int a_rowmajor = (csa == 1);
    const int nslots = MM_CEIL_DIV(Nc, MM_NR);
    const int kmax = MM_KC * (a_rowmajor && nslots < MM_NCS ? MM_NCS / nslots : 1);
    const int kcb = MM_CEIL_DIV(K, MM_CEIL_DIV(K, kmax));
    /* B with contiguous rows and little reuse (few row panels, e.g. dweight with small OC) is
     * read in place instead of being packed: packing would cost about as much as using it. */
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
                    /* a full tile goes straight to C; a ragged one through tile[] */
                    float* dst = mr == MM_MR ? c + j : tile;
                    const ptrdiff_t ldd = mr == MM_MR ? ldc : MM_NR;
                    const int load = mr == MM_MR && acc_mode;
                    if (rowA) mm_kernel_wide_rowA(kc, a, lda, bs, ldb, dst, ldd, load);
                    else      mm_kernel_wide_colA(kc, a, lda, bs, ldb, dst, ldd, load);
                    if (dst == tile) mm_store(c + j, ldc, tile, MM_NR, mr, MM_NR, acc_mode);
                }
                for (int j = jw; j < nc; j += MM_NR2) {          /* narrow strips */
                    const float* bs = bpack + (ptrdiff_t)j * kc;
                    ptrdiff_t ldb = MM_NR2;
                    if (direct_b) {
                        bs = j < jr ? bblk + j : bpack;
                        ldb = j < jr ? rsb : MM_NR2;
                    }
                    const int full = mr == MM_MR && j + MM_NR2 <= nc;
                    float* dst = full ? c + j : tile;
                    const ptrdiff_t ldd = full ? ldc : MM_NR2;
                    if (rowA) mm_kernel_narrow_rowA(kc, a, lda, bs, ldb, dst, ldd, full && acc_mode);
                    else      mm_kernel_narrow_colA(kc, a, lda, bs, ldb, dst, ldd, full && acc_mode);
                    if (!full) mm_store(c + j, ldc, tile, MM_NR2, mr, MM_MIN(MM_NR2, nc - j), acc_mode);
                }
            }
        }
    }
}

/* Empty sum (K = 0): C = bias (or 0), or nothing when accumulating. */
static void mm_empty(int M, int Nc, float* C, ptrdiff_t ldc, int accumulate, const float* bias) {
    if (!accumulate)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < Nc; j++) C[i * ldc + j] = bias ? bias[j] : 0.0f;
}

/* C (M,Nc) (+)= A (M,K) @ B (K,Nc), all of it on the calling thread, for callers that are
 * already inside a parallel region (one product per task).  scratch: the caller's
 * MM_THREAD_SCRATCH floats: mm_thread_scratch(mm_scratch(nthreads)). */
static void mm_gemm_serial(int M, int Nc, int K, const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                           const float* B, ptrdiff_t rsb, ptrdiff_t csb, float* C, ptrdiff_t ldc,
                           int accumulate, float* scratch) {
    if (M <= 0 || Nc <= 0) return;
    if (K <= 0) { mm_empty(M, Nc, C, ldc, accumulate, NULL); return; }
    mm_block(M, Nc, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, 0, MM_CEIL_DIV(M, MM_MR), 0, Nc,
             scratch);
}

/* C (M,Nc) (+)= A (M,K) @ B (K,Nc), strides as in mm_block, split over the OpenMP threads. */
static void mm_gemm(int M, int Nc, int K,
                    const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* B, ptrdiff_t rsb, ptrdiff_t csb,
                    float* C, ptrdiff_t ldc, int accumulate, const float* bias) {
    if (M <= 0 || Nc <= 0) return;
    if (K <= 0) { mm_empty(M, Nc, C, ldc, accumulate, bias); return; }
    const int npanels = MM_CEIL_DIV(M, MM_MR);
    const int nslots = MM_CEIL_DIV(Nc, MM_NR);   /* NR-wide column slots */

    int nth = max_threads();
    if ((long)npanels * nslots < nth) nth = npanels * nslots;   /* tiny GEMM */
    float* scratch = mm_scratch(nth);

    #pragma omp parallel num_threads(nth) if (nth > 1)
    {
        int tid = 0, team = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        team = omp_get_num_threads();   /* may be < nth (e.g. nested call) */
#endif
        int tr, tc;
        mm_thread_grid(team, npanels, nslots, csa == 1, &tr, &tc);
        /* this thread's block of the output: panels [p0,p1), columns [c0,c1) */
        const int ti = tid / tc, tj = tid % tc;
        const int p0 = (int)((long)npanels * ti / tr), p1 = (int)((long)npanels * (ti + 1) / tr);
        const int c0 = (int)((long)nslots * tj / tc) * MM_NR;
        const int c1 = MM_MIN(Nc, (int)((long)nslots * (tj + 1) / tc) * MM_NR);
        /* a bias is where this thread's sums start: C = bias, then C += A@B */
        if (bias && !accumulate)
            for (int i = p0 * MM_MR; i < MM_MIN(M, p1 * MM_MR); i++)
                for (int j = c0; j < c1; j++) C[i * ldc + j] = bias[j];
        mm_block(M, Nc, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate || bias, p0, p1, c0, c1,
                 mm_thread_scratch(scratch));
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

// x (n) = 0, by all threads (the gradient buffers are megabytes: a serial memset left the other
// threads waiting)
static void zero_floats(float* x, size_t n) {
    const size_t chunk = 16384;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += chunk) memset(x + i, 0, (n - i < chunk ? n - i : chunk) * sizeof(float));
}

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
    // One parallel region for both loops (each region costs a fork and a join), no barrier between
    // them (nowait): they write different arrays. dweight is split over threads by column chunks
    // of 16, each summing n in order, so every sum is the serial one whatever the thread count.
    const int nchunks = (C + 15) / 16;
    #pragma omp parallel
    {
        #pragma omp for nowait
        for (int n = 0; n < N; n++) {
            const float* x = inp + (size_t)n * C;
            const float* dy = dout + (size_t)n * C;
            float r = rstd[n], dot = 0.0f;
            for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c] * r;
            dot /= C;
            float* dx = dinp + (size_t)n * C;
            for (int c = 0; c < C; c++) dx[c] += r * (dy[c] * weight[c] - x[c] * r * dot);
        }
        #pragma omp for schedule(static)
        for (int ch = 0; ch < nchunks; ch++) {
            const int c0 = ch * 16, w = C - c0 < 16 ? C - c0 : 16;
            float acc[16];   // the running sums in registers, starting from dweight
            for (int c = 0; c < w; c++) acc[c] = dweight[c0 + c];
            for (int n = 0; n < N; n++) {
                const float* x = inp + (size_t)n * C + c0;
                const float* dy = dout + (size_t)n * C + c0;
                for (int c = 0; c < w; c++) acc[c] += dy[c] * x[c] * rstd[n];
            }
            for (int c = 0; c < w; c++) dweight[c0 + c] = acc[c];
        }
    }
}

// e^x in plain C that compilers vectorise (libm's expf is a call that stops loops from vectorising).
// Cody–Waite reduction x = n ln2 + r, |r| ≤ ln2/2, then Cephes' degree-6 polynomial for e^r and 2^n
// from the exponent bits: within 2 ulp of expf. Inputs are clamped to [−87, 88], so results stay
// normal floats: e^{−87} ≈ 1.6e−38 stands in for "underflows to 0", which is harmless everywhere it
// is used (decays, softmax weights).
static inline float exp_fast(float x) {
    // the clamp as comparisons, not fminf/fmaxf: without -ffinite-math-only gcc calls libm for those
    // (NaN rules), which kept every loop around exp_fast scalar. These select the same values, NaN
    // included (a NaN fails both tests and becomes −87, as fmaxf(NaN, −87) = −87 did), and compile
    // to vmaxps/vminps.
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    // n = x / ln 2 rounded to the nearest integer by the 1.5·2^23 trick (adding it leaves no fraction
    // bits; |x / ln 2| < 128): floorf(x / ln 2 + 0.5) was a libm call that kept these loops scalar
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
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
    for (size_t i = 0; i < n; i++) { // one σ per element for both gradients (silu_grad and siluf each took one)
        float g = gate[i], sg = sigmoidf(g);
        dgate[i] = dout[i] * up[i] * (sg * (1.0f + g * (1.0f - sg)));
        dup[i] = dout[i] * (g * sg);
    }
}

// RoPE, non-interleaved ("rotate half"): for i < D/2, angle φ = p θ_i, θ_i = base^(−2i/D),
// (x_i, x_{i+D/2}) -> (x_i cos φ − x_{i+D/2} sin φ, x_{i+D/2} cos φ + x_i sin φ).
// x (B,T,NH,D) rotated in place; position of row (b,t) is pos0 + t. sign = +1 forward, −1 backward
// (the backward of a rotation is the rotation by −φ).
void rope_rotate(float* x, int B, int T, int NH, int D, int pos0, float theta, int sign) {
    int half = D / 2;
    // the angles depend on (t, i) only: a table of cos and sin (T,half) each, computed once (pow, cos
    // and sin are libm calls), then every row (b,t,h) rotated along its contiguous D floats
    float* cs = (float*)malloc_check((size_t)2 * T * half * sizeof(float));
    float* sn = cs + (size_t)T * half;
    #pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double phi = (pos0 + t) * pow(theta, -2.0 * i / D);
            cs[(size_t)t * half + i] = (float)cos(phi);
            sn[(size_t)t * half + i] = sign * (float)sin(phi);
        }
    #pragma omp parallel for
    for (size_t r = 0; r < (size_t)B * T * NH; r++) {
        float* v = x + r * D;
        const float *c = cs + (r / NH % T) * half, *s = sn + (r / NH % T) * half;
        for (int i = 0; i < half; i++) {
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * c[i] - x2 * s[i];
            v[i + half] = x2 * c[i] + x1 * s[i];
        }
    }
    free(cs);
}
void rope_forward(float* x, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(x, B, T, NH, D, pos0, theta, +1); }
void rope_backward(float* dx, int B, int T, int NH, int D, int pos0, float theta) { rope_rotate(dx, B, T, NH, D, pos0, theta, -1); }

// ln x for a positive normal float, in plain C that vectorises (as exp_fast; libm's logf/log1pf are
// calls, and they sat in the gate loops of every GLA layer). x = m 2^e with m in [√½, √2), then
// Cephes' degree-9 polynomial for ln(1 + (m − 1)) and e ln 2 in two parts: within ~2 ulp of logf.
static inline float log_fast(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    int e = ((bits >> 23) & 0xff) - 126;          // x = m 2^e, m in [0.5, 1)
    bits = (bits & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &bits, sizeof(m));
    int small = m < 0.707106781186547524f;        // move m to [√½, √2)
    e -= small;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m, y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe - 0.5f * z;
    return m + y + 0.693359375f * fe;
}
// ln(1 + y) for y >= 0, accurate for small y too: with u = 1 + y rounded, ln(u) · y / (u − 1) cancels
// the rounding of u (Goldberg's trick); y below half an ulp of 1 gives u = 1 and ln(1 + y) = y.
static inline float log1p_fast(float y) {
    float u = 1.0f + y, d = u - 1.0f;
    return d == 0.0f ? y : log_fast(u) * (y / d);
}

// log σ(x) = min(x, 0) − log1p(e^{−|x|}) (stable for any x); its derivative is 1 − σ(x) = σ(−x)
// (min as a comparison and log1p_fast: no libm calls, so the gate loops vectorise)
static inline float logsigmoidf(float x) { return (x < 0.0f ? x : 0.0f) - log1p_fast(exp_fast(-fabsf(x))); }

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

// Σ_l a_l of 16 partial sums, added pairwise in a fixed order (the sums kept in 16 lanes by
// dot_lanes and by the delta rule's row passes)
static inline float lanes_sum(const float* a) {
    float s[8];
    for (int l = 0; l < 8; l++) s[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) s[l] += s[l + 4];
    return (s[0] + s[2]) + (s[1] + s[3]);
}

// Σ_m x_m y_m over n terms in a fixed order that vectorises: 16 interleaved partial sums (lane l
// takes the terms m ≡ l mod 16 below the last multiple of 16), added pairwise (lanes_sum), then the
// leftover terms in order. A plain running sum has to stay scalar without -ffast-math (reassociating
// it would change the result).
static inline float dot_lanes(const float* x, const float* y, int n) {
    float acc[16] = {0.0f};
    int m = 0;
    for (; m + 16 <= n; m += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[m + l] * y[m + l];
    float sum = lanes_sum(acc);
    for (; m < n; m++) sum += x[m] * y[m];
    return sum;
}

// dst (width,C) = the transpose of n rows (n,width) `stride` floats apart (columns n.. untouched).
// Filled one dst row at a time: strided loads and contiguous stores run ~5x faster than the
// other way round.
static void transpose_rows(float* restrict dst, int C, const float* restrict src, int n, int width, size_t stride) {
    for (int m = 0; m < width; m++)
        for (int i = 0; i < n; i++) dst[(size_t)m * C + i] = src[i * stride + m];
}

// Per-(batch, head) working set of one chunk of n ≤ C rows: the chunk-local cumulative log-gates,
// the exponentials built from them and the chunk's small matrices. The chunk's q, k, v, do rows are
// read in place.
typedef struct {
    float *G;         // (C,K) inclusive cumsum of a within the chunk (≤ 0, decreasing)
    float *eG;        // (C,K) e^{G_i}; its last row e^{G_L} decays the whole state across the chunk
    float *eGL;       // (C,K) e^{G_L − G_i}
    float *q_decay;   // (C,K) scale q_i ⊙ e^{G_i}      (reads the entering state)
    float *k_decay;   // (C,K) k_j ⊙ e^{G_L − G_j}      (writes the leaving state)
    float *kw;        // (K)   k_j ⊙ e^{G_i − G_j} for the pair (i, j) being scored
    float *P;         // (C,C) P_ij = scale Σ_c q_ic k_jc e^{G_ic − G_jc} for j ≤ i, 0 above the diagonal
    float *dP;        // (C,C) backward: scale do_i·v_j (all i, j; only j ≤ i is used)
    float *vT, *doT;  // (V,C) backward: v and do of the chunk, transposed
    float *sq, *sk;   // (K,C) backward: S do_i and dS v_i, one column per row i
} ChunkScratch;

static void chunk_scratch_alloc(ChunkScratch* s, int C, int K, int V, int backward) {
    size_t CK = (size_t)C * K, CC = (size_t)C * C, CV = (size_t)C * V;
    size_t n = 5 * CK + K + CC + (backward ? CC + 2 * CV + 2 * CK : 0);
    s->G = (float*)malloc_check(n * sizeof(float));   // one block for all
    s->eG = s->G + CK;
    s->eGL = s->eG + CK;
    s->q_decay = s->eGL + CK;
    s->k_decay = s->q_decay + CK;
    s->kw = s->k_decay + CK;
    s->P = s->kw + K;
    s->dP = s->P + CC;
    s->vT = s->dP + CC;
    s->doT = s->vT + CV;
    s->sq = s->doT + CV;
    s->sk = s->sq + CK;
}
static void chunk_scratch_free(ChunkScratch* s) { free(s->G); }

// Gathers rows t0..t0+n of one head (rows `stride` floats apart) into dst (n, width).
static void gather_rows(float* dst, const float* src, int n, int width, size_t stride) {
    for (int i = 0; i < n; i++) memcpy(dst + (size_t)i * width, src + i * stride, width * sizeof(float));
}

// Computes G, e^G, e^{G_L − G}, q_decay and k_decay of one chunk of n rows; q, k, a (n,K) with
// rows sk floats apart.
static void chunk_prepare(ChunkScratch* s, const float* q, const float* k, const float* a, int n, int K, size_t sk,
                          float scale) {
    float *G = s->G, *eG = s->eG, *eGL = s->eGL, *qd = s->q_decay, *kd = s->k_decay;
    for (int c = 0; c < K; c++) G[c] = a[c];
    for (int i = 1; i < n; i++)
        for (int c = 0; c < K; c++) G[i * K + c] = G[(i - 1) * K + c] + a[i * sk + c];
    const float* GL = G + (size_t)(n - 1) * K;
    for (int i = 0; i < n; i++) {
        size_t r = (size_t)i * K;
        const float *qi = q + i * sk, *ki = k + i * sk;
        for (int c = 0; c < K; c++) {   // (two loops: one would need too many aliasing checks to vectorise)
            eG[r + c] = exp_fast(G[r + c]);
            qd[r + c] = scale * qi[c] * eG[r + c];
        }
        for (int c = 0; c < K; c++) {
            eGL[r + c] = exp_fast(GL[c] - G[r + c]);
            kd[r + c] = ki[c] * eGL[r + c];
        }
    }
}

// P (n,n) of one chunk (row stride C): P_ij = scale Σ_c q_ic k_jc e^{G_ic − G_jc} for j ≤ i, 0 above
// the diagonal; q, k (n,K) with rows sk floats apart
static void chunk_scores(ChunkScratch* s, const float* q, const float* k, int n, int C, int K, size_t sk,
                         float scale) {
    for (int i = 0; i < n; i++) {
        const float *Gi = s->G + (size_t)i * K, *qi = q + i * sk;
        for (int j = 0; j <= i; j++) {
            const float *Gj = s->G + (size_t)j * K, *kj = k + j * sk;
            for (int c = 0; c < K; c++) s->kw[c] = kj[c] * exp_fast(Gi[c] - Gj[c]);
            s->P[i * C + j] = scale * dot_lanes(qi, s->kw, K);
        }
        for (int j = i + 1; j < n; j++) s->P[i * C + j] = 0.0f;
    }
}

// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each of the NC = ceil(T/C) chunks (kept for
// the backward; each chunk writes the next one's); q, k, a (B,T,H,K); v (B,T,H,V)
void gla_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* a,
                       int B, int T, int H, int K, int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    size_t sk = (size_t)H * K, sv = (size_t)H * V, KV = (size_t)K * V;   // time strides, state size
    int nth = max_threads();
    float* scratch = mm_scratch(nth);   // the small products go through mm_gemm_serial
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* ws = mm_thread_scratch(scratch);
            ChunkScratch s;
            chunk_scratch_alloc(&s, C, K, V, 0);
            float* Sbh = states + ((size_t)b * H + h) * NC * KV;
            memset(Sbh, 0, KV * sizeof(float));
            for (int ch = 0; ch < NC; ch++) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                size_t base_k = ((size_t)b * T + t0) * sk + h * K, base_v = ((size_t)b * T + t0) * sv + h * V;
                const float *S = Sbh + ch * KV, *vc = v + base_v;
                chunk_prepare(&s, q + base_k, k + base_k, a + base_k, n, K, sk, scale);
                chunk_scores(&s, q + base_k, k + base_k, n, C, K, sk, scale);
                // o = (scale q ⊙ e^G) S + P v
                mm_gemm_serial(n, V, K, s.q_decay, K, 1, S, V, 1, o + base_v, sv, 0, ws);
                mm_gemm_serial(n, V, n, s.P, C, 1, vc, sv, 1, o + base_v, sv, 1, ws);
                // the next chunk's S = diag(e^{G_L}) S + Σ_j (k_j ⊙ e^{G_L − G_j}) v_jᵀ
                if (ch + 1 == NC) break;
                float* Snext = Sbh + (ch + 1) * KV;
                const float* decay = s.eG + (size_t)(n - 1) * K;
                for (int c = 0; c < K; c++)
                    for (int j = 0; j < V; j++) Snext[c * V + j] = decay[c] * S[c * V + j];
                mm_gemm_serial(K, V, n, s.k_decay, 1, K, vc, sv, 1, Snext, V, 1, ws);
            }
            chunk_scratch_free(&s);
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
    size_t sk = (size_t)H * K, sv = (size_t)H * V, KV = (size_t)K * V;
    int nth = max_threads();
    float* scratch = mm_scratch(nth);   // the small products go through mm_gemm_serial
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* ws = mm_thread_scratch(scratch);
            ChunkScratch s;
            chunk_scratch_alloc(&s, C, K, V, 1);
            float* dS = (float*)calloc_check(KV, sizeof(float));
            for (int ch = NC - 1; ch >= 0; ch--) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                size_t base_k = ((size_t)b * T + t0) * sk + h * K, base_v = ((size_t)b * T + t0) * sv + h * V;
                const float* S = states + (((size_t)b * H + h) * NC + ch) * KV;
                const float *qc = q + base_k, *kc = k + base_k, *vc = v + base_v, *doc = dout + base_v;
                float *dqc = dq + base_k, *dkc = dk + base_k, *dvc = dv + base_v;
                chunk_prepare(&s, qc, kc, a + base_k, n, K, sk, scale);
                transpose_rows(s.vT, C, vc, n, V, sv);
                transpose_rows(s.doT, C, doc, n, V, sv);
                // terms through the entering state S and the leaving state's gradient dS:
                // dq_i = scale e^{G_i} ⊙ (S do_i), dk_i = e^{G_L − G_i} ⊙ (dS v_i), dv = (k ⊙ e^{G_L − G}) dS
                mm_gemm_serial(K, n, V, S, V, 1, s.doT, C, 1, s.sq, C, 0, ws);
                mm_gemm_serial(K, n, V, dS, V, 1, s.vT, C, 1, s.sk, C, 0, ws);
                for (int i = 0; i < n; i++)
                    for (int c = 0; c < K; c++) {
                        dqc[i * sk + c] = scale * s.eG[i * K + c] * s.sq[c * C + i];
                        dkc[i * sk + c] = s.eGL[i * K + c] * s.sk[c * C + i];
                    }
                mm_gemm_serial(n, V, K, s.k_decay, K, 1, dS, V, 1, dvc, sv, 0, ws);
                // intra-chunk pairs j ≤ i: one vector of exponentials serves P_ij, dq_i and dk_j
                mm_gemm_serial(n, n, V, doc, sv, 1, s.vT, C, 1, s.dP, C, 0, ws);
                for (int i = 0; i < n; i++) {
                    const float *Gi = s.G + (size_t)i * K, *qi = qc + i * sk;
                    float* dqi = dqc + i * sk;
                    for (int j = 0; j <= i; j++) {
                        const float *Gj = s.G + (size_t)j * K, *kj = kc + j * sk;
                        float *dkj = dkc + j * sk, dp = scale * s.dP[i * C + j];
                        for (int c = 0; c < K; c++) {
                            float w = exp_fast(Gi[c] - Gj[c]);
                            s.kw[c] = kj[c] * w;
                            dqi[c] += dp * s.kw[c];
                            dkj[c] += dp * qi[c] * w;
                        }
                        s.P[i * C + j] = scale * dot_lanes(qi, s.kw, K);
                    }
                    for (int j = i + 1; j < n; j++) s.P[i * C + j] = 0.0f;
                }
                mm_gemm_serial(n, V, n, s.P, 1, C, doc, sv, 1, dvc, sv, 1, ws);   // dv_j += Σ_i P_ij do_i
                // dS for the previous chunk
                const float* decay = s.eG + (size_t)(n - 1) * K;
                for (int c = 0; c < K; c++)
                    for (int j = 0; j < V; j++) dS[c * V + j] *= decay[c];
                mm_gemm_serial(K, V, n, s.q_decay, 1, K, doc, sv, 1, dS, V, 1, ws);
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
        // one σ per element: silu(g) = g σ, silu'(g) = σ (1 + g (1 − σ)); dx keeps dy ⊙ silu(g) ⊙ w
        // until the dot product is known
        for (int j = 0; j < V; j++) {
            float xhat = xr[j] * s, sg = sigmoidf(gr[j]), u = dy[j] * (gr[j] * sg) * w[j];
            dg[r * V + j] = dy[j] * xhat * w[j] * (sg * (1.0f + gr[j] * (1.0f - sg)));
            dot += u * xhat;
            dx[r * V + j] = u;
        }
        dot /= V;
        for (int j = 0; j < V; j++) dx[r * V + j] = s * (dx[r * V + j] - xr[j] * s * dot);
    }
    // dw by column chunks over threads, each summing r in order: the serial sums at any thread count
    // (16 columns: one cache line of each row; the running sums in registers start from dw)
    const int nchunks = (V + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nchunks; ch++) {
        const int j0 = ch * 16, w = V - j0 < 16 ? V - j0 : 16;
        float acc[16];
        for (int j = 0; j < w; j++) acc[j] = dw[j0 + j];
        for (size_t r = 0; r < (size_t)N * H; r++) {
            const size_t o = r * V + j0;
            for (int j = 0; j < w; j++) acc[j] += dout[o + j] * siluf(g[o + j]) * x[o + j] * rstd[r];
        }
        for (int j = 0; j < w; j++) dw[j0 + j] = acc[j];
    }
}

// ----------------------------------------------------------------------------
// ShortConvolution (LAYERS.md §1.3), used by DeltaNet and Gated DeltaNet on q, k and v: a depthwise
// causal convolution over time with kernel W (no bias), then silu. For channel c at time t:
//     y[t,c] = silu(z[t,c]),   z[t,c] = Σ_{i<W} w[c,i] x[t−W+1+i, c],   x[τ] = 0 for τ < 0
// so w[c,W−1] multiplies the current token (PyTorch's cross-correlation orientation).

// the first tap i whose input x[t−W+1+i] exists (the earlier ones read the zero padding)
static inline int conv_first_tap(int t, int W) { return t >= W - 1 ? 0 : W - 1 - t; }

// out (B,T,C) from x (B,T,C), w (C,W)
void shortconv_forward(float* out, const float* x, const float* w, int B, int T, int C, int W) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) o[c] = 0.0f;
            for (int i = conv_first_tap(t, W); i < W; i++) {
                const float* xs = x + ((size_t)b * T + t - W + 1 + i) * C;
                for (int c = 0; c < C; c++) o[c] += w[c * W + i] * xs[c];
            }
            for (int c = 0; c < C; c++) o[c] = siluf(o[c]);
        }
}
// dx (B,T,C) overwritten, dw (C,W) +=. dout (B,T,C) = dL/dy is overwritten with dz = dout ⊙ silu'(z)
// (z recomputed from x), then
//     dx[τ,c] = Σ_i w[c,i] dz[τ+W−1−i, c]  (terms past T−1 dropped),   dw[c,i] = Σ_t dz[t,c] x[t−W+1+i, c]
void shortconv_backward(float* dx, float* dw, float* dout, const float* x, const float* w, int B, int T, int C, int W) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* dz = dout + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) {
                float z = 0.0f;
                for (int i = conv_first_tap(t, W); i < W; i++) z += w[c * W + i] * x[((size_t)b * T + t - W + 1 + i) * C + c];
                dz[c] *= silu_grad(z);
            }
        }
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* d = dx + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) d[c] = 0.0f;
            for (int i = 0; i < W; i++) {
                int later = t + W - 1 - i;
                if (later >= T) continue;
                const float* dz = dout + ((size_t)b * T + later) * C;
                for (int c = 0; c < C; c++) d[c] += w[c * W + i] * dz[c];
            }
        }
    for (int b = 0; b < B; b++) // serial: every row adds into the same weight gradient
        for (int t = 0; t < T; t++) {
            const float* dz = dout + ((size_t)b * T + t) * C;
            for (int i = conv_first_tap(t, W); i < W; i++) {
                const float* xs = x + ((size_t)b * T + t - W + 1 + i) * C;
                for (int c = 0; c < C; c++) dw[c * W + i] += dz[c] * xs[c];
            }
        }
}
// One time step for generation: out (C) = silu(Σ_{i<W−1} w[c,i] cache[i,c] + w[c,W−1] x[c]). The cache
// (W−1, C) holds the previous W−1 inputs, oldest first (zeros before the first token); it is then
// shifted by one row to end with x.
void shortconv_step(float* out, float* cache, const float* x, const float* w, int C, int W) {
    for (int c = 0; c < C; c++) {
        float z = w[c * W + W - 1] * x[c];
        for (int i = 0; i < W - 1; i++) z += w[c * W + i] * cache[(size_t)i * C + c];
        out[c] = siluf(z);
    }
    if (W > 1) {
        memmove(cache, cache + C, (size_t)(W - 2) * C * sizeof(float));
        memcpy(cache + (size_t)(W - 2) * C, x, C * sizeof(float));
    }
}

// L2 norm inside the delta-rule layers (LAYERS.md §1.4), per row of D (one head):
//     y = x r,  r = 1/√(Σ x² + 1e-6)      (eps inside the square root, unlike F.normalize)
// out, x (R,D) (out may be x); rinv (R) = r
void l2norm_forward(float* out, float* rinv, const float* x, size_t R, int D) {
    #pragma omp parallel for
    for (size_t n = 0; n < R; n++) {
        const float* xr = x + n * D;
        float ss = 0.0f;
        for (int i = 0; i < D; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss + 1e-6f);
        for (int i = 0; i < D; i++) out[n * D + i] = xr[i] * r;
        rinv[n] = r;
    }
}
// dx (R,D) = r (dy − (dy·y) y) from dout = dy (R,D), y = the normalised rows (dx may be dout)
void l2norm_backward(float* dx, const float* dout, const float* y, const float* rinv, size_t R, int D) {
    #pragma omp parallel for
    for (size_t n = 0; n < R; n++) {
        const float *dy = dout + n * D, *yr = y + n * D;
        float dot = 0.0f;
        for (int i = 0; i < D; i++) dot += dy[i] * yr[i];
        for (int i = 0; i < D; i++) dx[n * D + i] = rinv[n] * (dy[i] - dot * yr[i]);
    }
}

// ----------------------------------------------------------------------------
// HGRN / HGRN2 forget gates and the model-level lower bounds (LAYERS.md §3, §3b)
//
// One parameter P (L,d) per model; s = softmax of P over the layer axis, per channel, and
//     lb_l = Σ_{j=1..l} s_j = cumsum(s)_l − s_0     (lb_0 = 0; zero init gives lb_l = l/L)
// Layer l > 0 of type hgrn/hgrn2 bounds its forget gate from below by lb_l (layer 0 has no bound):
//     a = log(lb + (1 − lb) σ(f))          (a = logσ(f) without a bound)

// lb, s (L,D) from P (L,D)
void lower_bounds_forward(float* lb, float* s, const float* P, int L, int D) {
    for (int c = 0; c < D; c++) {
        float maxv = -INFINITY, sum = 0.0f, acc = 0.0f;
        for (int l = 0; l < L; l++) maxv = fmaxf(maxv, P[l * D + c]);
        for (int l = 0; l < L; l++) { s[l * D + c] = expf(P[l * D + c] - maxv); sum += s[l * D + c]; }
        for (int l = 0; l < L; l++) s[l * D + c] /= sum;
        lb[c] = 0.0f;
        for (int l = 1; l < L; l++) { acc += s[l * D + c]; lb[l * D + c] = acc; }
    }
}
// dP (L,D) += the gradient from dlb (L,D): s_0 cancels out of every lb_l, so ds_0 = 0 and
// ds_j = Σ_{l≥j} dlb_l (j ≥ 1); then through the softmax, dP_j = s_j (ds_j − Σ_i s_i ds_i).
void lower_bounds_backward(float* dP, const float* dlb, const float* s, int L, int D) {
    for (int c = 0; c < D; c++) {
        float suffix = 0.0f, dot = 0.0f;
        for (int l = L - 1; l >= 1; l--) { suffix += dlb[l * D + c]; dot += s[l * D + c] * suffix; }
        suffix = 0.0f;
        for (int l = L - 1; l >= 0; l--) {
            float ds = 0.0f;
            if (l >= 1) { suffix += dlb[l * D + c]; ds = suffix; }
            dP[l * D + c] += s[l * D + c] * (ds - dot);
        }
    }
}

// a (N,D) from the forget logits f (N,D) and the bound lb (D) or NULL. With x = (1 − lb) σ(−f), the
// fraction forgotten per step, a = log(1 − x) is taken as log1p(−x) while x ≤ 1/2, so gates close to
// 1 (a → 0) keep their relative precision, which the input gates 1 − e^a rely on.
void forget_gate_forward(float* a, const float* f, const float* lb, int N, int D) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < D; c++) {
            size_t i = (size_t)n * D + c;
            if (!lb) { a[i] = logsigmoidf(f[i]); continue; }
            float x = (1.0f - lb[c]) * sigmoidf(-f[i]);
            a[i] = x <= 0.5f ? log1pf(-x) : logf(lb[c] + (1.0f - lb[c]) * sigmoidf(f[i]));
        }
}
// With m = e^a = lb + (1 − lb) σ(f):  ∂a/∂f = (1 − lb) σ(f) σ(−f) / m  (σ(−f) without a bound),
// ∂a/∂lb = σ(−f) / m.  df (N,D) = da ∂a/∂f (overwritten; may be da); dlb (D) += Σ_n da ∂a/∂lb
// when lb is given.
void forget_gate_backward(float* df, float* dlb, const float* da, const float* f, const float* lb, int N, int D) {
    if (lb)
        for (int n = 0; n < N; n++) // serial: every row adds into the same bound gradient
            for (int c = 0; c < D; c++) {
                size_t i = (size_t)n * D + c;
                dlb[c] += da[i] * sigmoidf(-f[i]) / (lb[c] + (1.0f - lb[c]) * sigmoidf(f[i]));
            }
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < D; c++) {
            size_t i = (size_t)n * D + c;
            float sp = sigmoidf(f[i]), sn = sigmoidf(-f[i]);
            df[i] = lb ? da[i] * (1.0f - lb[c]) * sp * sn / (lb[c] + (1.0f - lb[c]) * sp) : da[i] * sn;
        }
}

// ----------------------------------------------------------------------------
// HGRN core (LAYERS.md §3b): an elementwise gated recurrence with a vector state h ∈ R^D,
//     h_t = e^{a_t} ⊙ h_{t−1} + x_t,   h_0 = 0          (a ≤ 0 the log-forget gate, x the gated input)

// One time step for generation: h (D) updated in place, o (D) = h
void hgrn_recurrent_step(float* o, float* h, const float* x, const float* a, int D) {
    for (int c = 0; c < D; c++) o[c] = h[c] = exp_fast(a[c]) * h[c] + x[c];
}

// h (B,T,D) from x, a (B,T,D)
void hgrn_recurrent_forward(float* h, const float* x, const float* a, int B, int T, int D) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float* state = (float*)calloc_check(D, sizeof(float));
        for (int t = 0; t < T; t++) {
            size_t r = ((size_t)b * T + t) * D;
            hgrn_recurrent_step(h + r, state, x + r, a + r, D);
        }
        free(state);
    }
}

// Exact backward of hgrn_recurrent_forward. dx, da (B,T,D) overwritten; dout (B,T,D) = dL/dh from
// the outputs. Reverse sweep carrying g = e^{a_{t+1}} ⊙ dh_{t+1}, what reaches h_t through step t+1:
//     dh_t = dout_t + g;   dx_t = dh_t;   da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1};   g = e^{a_t} ⊙ dh_t
void hgrn_recurrent_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float* g = (float*)calloc_check(D, sizeof(float));
        for (int t = T - 1; t >= 0; t--) {
            size_t r = ((size_t)b * T + t) * D;
            for (int c = 0; c < D; c++) {
                float dh = dout[r + c] + g[c], decay = exp_fast(a[r + c]);
                dx[r + c] = dh;
                da[r + c] = t > 0 ? dh * decay * h[r - D + c] : 0.0f;
                g[c] = decay * dh;
            }
        }
        free(g);
    }
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
// h (B,T,D) from x, a (B,T,D)
void hgrn_chunk_forward(float* h, const float* x, const float* a, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    float* GL = (float*)malloc_check((size_t)B * NC * D * sizeof(float));     // (B,NC,D) G_L per chunk
    float* h_in = (float*)malloc_check((size_t)B * NC * D * sizeof(float));   // (B,NC,D)
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < NC; ch++) {
            int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
            float* G = GL + ((size_t)b * NC + ch) * D;
            for (int c = 0; c < D; c++) G[c] = 0.0f;
            for (int i = 0; i < n; i++) {
                size_t r = ((size_t)b * T + t0 + i) * D;
                for (int c = 0; c < D; c++) {
                    h[r + c] = (i ? exp_fast(a[r + c]) * h[r - D + c] : 0.0f) + x[r + c];
                    G[c] += a[r + c];
                }
            }
        }
    #pragma omp parallel for
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < NC; ch++) {
            float* hin = h_in + ((size_t)b * NC + ch) * D;
            if (ch == 0) { for (int c = 0; c < D; c++) hin[c] = 0.0f; continue; }
            const float *prev = hin - D, *G = GL + ((size_t)b * NC + ch - 1) * D;
            const float* last = h + ((size_t)b * T + (size_t)ch * C - 1) * D;  // h̃_L of the previous chunk
            for (int c = 0; c < D; c++) hin[c] = exp_fast(G[c]) * prev[c] + last[c];
        }
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int ch = 1; ch < NC; ch++) {
            int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
            const float* hin = h_in + ((size_t)b * NC + ch) * D;
            float* G = (float*)calloc_check(D, sizeof(float));
            for (int i = 0; i < n; i++) {
                size_t r = ((size_t)b * T + t0 + i) * D;
                for (int c = 0; c < D; c++) {
                    G[c] += a[r + c];
                    h[r + c] += exp_fast(G[c]) * hin[c];
                }
            }
            free(G);
        }
    free(GL);
    free(h_in);
}

// Backward of hgrn_chunk_forward: the reverse sweep dh_t = dout_t + e^{a_{t+1}} dh_{t+1}, chunked the
// same way. With R_t = Σ_{s=t+1..L} a_s (the decay from t to the chunk's last row L, ≤ 0):
//   1. every chunk sweeps itself from zero, d̃_t = dout_t + e^{a_{t+1}} d̃_{t+1}   (chunks in parallel)
//   2. the gradient entering chunk c from the right, g(c) = e^{a_F(c+1)} dh_F(c+1) at the first row F
//      of the next chunk, is carried from the last chunk to the first: dh_F(c) = d̃_F(c) + e^{R_F(c)} g(c)
//   3. dh_t = d̃_t + e^{R_t} g(c);  dx_t = dh_t;  da_t = dh_t ⊙ e^{a_t} ⊙ h_{t−1}   (chunks in parallel)
// dx, da (B,T,D) overwritten; dout (B,T,D); h, a (B,T,D) from the forward pass
void hgrn_chunk_backward(float* dx, float* da, const float* dout, const float* h, const float* a, int B, int T, int D, int C) {
    int NC = (T + C - 1) / C;
    float* RF = (float*)malloc_check((size_t)B * NC * D * sizeof(float));      // (B,NC,D) R at the first row
    float* g_in = (float*)malloc_check((size_t)B * NC * D * sizeof(float));    // (B,NC,D) g(c)
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < NC; ch++) {
            int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
            float* R = RF + ((size_t)b * NC + ch) * D;
            for (int c = 0; c < D; c++) R[c] = 0.0f;
            for (int i = n - 1; i >= 0; i--) {
                size_t r = ((size_t)b * T + t0 + i) * D;
                for (int c = 0; c < D; c++) {
                    dx[r + c] = dout[r + c] + (i < n - 1 ? exp_fast(a[r + D + c]) * dx[r + D + c] : 0.0f);
                    if (i > 0) R[c] += a[r + c];
                }
            }
        }
    #pragma omp parallel for
    for (int b = 0; b < B; b++)
        for (int ch = NC - 1; ch >= 0; ch--) {
            float* g = g_in + ((size_t)b * NC + ch) * D;
            if (ch == NC - 1) { for (int c = 0; c < D; c++) g[c] = 0.0f; continue; }
            // dh at the first row of chunk ch+1, then through its decay into chunk ch
            const float *gn = g + D, *R = RF + ((size_t)b * NC + ch + 1) * D;
            size_t r = ((size_t)b * T + (size_t)(ch + 1) * C) * D;
            for (int c = 0; c < D; c++) g[c] = exp_fast(a[r + c]) * (dx[r + c] + exp_fast(R[c]) * gn[c]);
        }
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < NC; ch++) {
            int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
            const float* g = g_in + ((size_t)b * NC + ch) * D;
            float* R = (float*)calloc_check(D, sizeof(float));
            for (int i = n - 1; i >= 0; i--) {
                size_t r = ((size_t)b * T + t0 + i) * D;
                for (int c = 0; c < D; c++) {
                    float decay = exp_fast(a[r + c]);
                    dx[r + c] += exp_fast(R[c]) * g[c];
                    da[r + c] = t0 + i > 0 ? dx[r + c] * decay * h[r - D + c] : 0.0f;
                    R[c] += a[r + c];
                }
            }
            free(R);
        }
    free(RF);
    free(g_in);
}

// ----------------------------------------------------------------------------
// The delta rule (DeltaNet, LAYERS.md §5) and the gated delta rule (Gated DeltaNet, §6), recurrent
// form. Per head, S ∈ R^{K×V}; q, k are L2-normalised, β ∈ (0,1), g ≤ 0 (no decay for DeltaNet):
//     S'_{t−1} = e^{g_t} S_{t−1}             decay first
//     u_t = v_t − S'_{t−1}ᵀ k_t              the prediction error of the decayed state
//     S_t = S'_{t−1} + β_t k_t u_tᵀ          = e^{g_t} (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ
//     o_t = S_tᵀ (scale q_t)

// One head, one step: S_new (K,V) = α S_old + β k uᵀ with u (V) = v − α S_oldᵀ k written out.
// α = e^{g}. S_new may be S_old.
static void delta_head_update(float* S_new, float* u, const float* S_old, const float* k, const float* v,
                              float beta, float alpha, int K, int V) {
    for (int j = 0; j < V; j++) u[j] = v[j];
    for (int i = 0; i < K; i++) {
        const float* row = S_old + (size_t)i * V;
        float ki = alpha * k[i];
        for (int j = 0; j < V; j++) u[j] -= row[j] * ki;
    }
    for (int i = 0; i < K; i++) {
        const float* row = S_old + (size_t)i * V;
        float* out = S_new + (size_t)i * V;
        float bk = beta * k[i];
        for (int j = 0; j < V; j++) out[j] = alpha * row[j] + bk * u[j];
    }
}

// One time step for all heads. S (H,K,V) updated in place; o (H,V); q, k (H,K); v (H,V); beta (H);
// g (H) log-decays, or NULL for none (DeltaNet)
void delta_recurrent_step(float* o, float* S, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int H, int K, int V, float scale) {
    for (int h = 0; h < H; h++) {
        float* Sh = S + (size_t)h * K * V;
        float* oh = o + h * V;
        // the prediction error u goes through o's row, which then receives the output
        delta_head_update(Sh, oh, Sh, k + h * K, v + h * V, beta[h], g ? exp_fast(g[h]) : 1.0f, K, V);
        for (int j = 0; j < V; j++) oh[j] = 0.0f;
        for (int i = 0; i < K; i++) {
            float qi = scale * q[h * K + i];
            const float* row = Sh + (size_t)i * V;
            for (int j = 0; j < V; j++) oh[j] += row[j] * qi;
        }
    }
}

// o (B,T,H,V) from q, k (B,T,H,K), v (B,T,H,V), beta, g (B,T,H) (g may be NULL), zero initial state
void delta_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* beta,
                             const float* g, int B, int T, int H, int K, int V, float scale) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        float* S = (float*)calloc_check((size_t)H * K * V, sizeof(float));
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            delta_recurrent_step(o + r * H * V, S, q + r * H * K, k + r * H * K, v + r * H * V, beta + r * H,
                                 g ? g + r * H : NULL, H, K, V, scale);
        }
        free(S);
    }
}

// One reverse step of the exact backward (LAYERS.md §5.5, §6.4) for one head. D (K,V) holds dL/dS_t
// on entry and dL/dS_{t−1} on exit; S_prev = S_{t−1} (before its decay), S_t the state after the step,
// u = u_t, alpha = e^{g_t}:
//     D += scale q doᵀ;   dq = scale S_t do
//     r = Dᵀ k;   dβ = u·r;   du = β r;   dv = du
//     dk = β D u − S' du;   D −= k duᵀ  (now dL/dS');   dg = Σ S' ⊙ D;   D = alpha D
// (S' = alpha S_prev). dq, dk (K), dv (V) overwritten; returns dβ, and dg in *dg unless dg is NULL.
static float delta_backward_step(float* D, float* dq, float* dk, float* dv, float* dg, const float* dout,
                                 const float* q, const float* k, const float* u, const float* S_prev,
                                 const float* S_t, float beta, float alpha, int K, int V, float scale) {
    // r = Dᵀk is built in dv, which then becomes du = β r
    for (int j = 0; j < V; j++) dv[j] = 0.0f;
    for (int i = 0; i < K; i++) {
        float* Di = D + (size_t)i * V;
        const float* Si = S_t + (size_t)i * V;
        float qi = scale * q[i], sdo = 0.0f;
        for (int j = 0; j < V; j++) {
            Di[j] += qi * dout[j];
            sdo += Si[j] * dout[j];
            dv[j] += Di[j] * k[i];
        }
        dq[i] = scale * sdo;
    }
    float dbeta = 0.0f, gate = 0.0f;
    for (int j = 0; j < V; j++) {
        dbeta += u[j] * dv[j];
        dv[j] *= beta;
    }
    for (int i = 0; i < K; i++) {
        float* Di = D + (size_t)i * V;
        const float* Pi = S_prev + (size_t)i * V;
        float du_dot = 0.0f, sp_dot = 0.0f, gi = 0.0f;
        for (int j = 0; j < V; j++) {
            du_dot += Di[j] * u[j];
            sp_dot += Pi[j] * dv[j];
        }
        dk[i] = beta * du_dot - alpha * sp_dot;
        for (int j = 0; j < V; j++) {
            Di[j] -= k[i] * dv[j];
            gi += Pi[j] * Di[j];
            Di[j] *= alpha;
        }
        gate += gi;
    }
    if (dg) *dg = alpha * gate;
    return dbeta;
}

// Exact backward of delta_recurrent_forward, the readable ground truth for the chunkwise backward:
// a forward sweep keeps every state, then delta_backward_step runs from t = T−1 down to 0.
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_recurrent_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                              const float* q, const float* k, const float* v, const float* beta, const float* g,
                              int B, int T, int H, int K, int V, float scale) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t KV = (size_t)K * V;
            float* S = (float*)calloc_check((T + 1) * KV, sizeof(float));   // S[t] = state after t steps
            float* u = (float*)malloc_check((size_t)T * V * sizeof(float));
            float* D = (float*)calloc_check(KV, sizeof(float));
            for (int t = 0; t < T; t++) {
                size_t r = ((size_t)b * T + t) * H + h;
                delta_head_update(S + (t + 1) * KV, u + (size_t)t * V, S + t * KV, k + r * K, v + r * V, beta[r],
                                  g ? exp_fast(g[r]) : 1.0f, K, V);
            }
            for (int t = T - 1; t >= 0; t--) {
                size_t r = ((size_t)b * T + t) * H + h;
                dbeta[r] = delta_backward_step(D, dq + r * K, dk + r * K, dv + r * V, g ? dg + r : NULL, dout + r * V,
                                               q + r * K, k + r * K, u + (size_t)t * V, S + t * KV, S + (t + 1) * KV,
                                               beta[r], g ? exp_fast(g[r]) : 1.0f, K, V, scale);
            }
            free(S);
            free(u);
            free(D);
        }
}

// Columns j0..j0+W of delta_state_step (below). With W a constant the strip of u and w stays in
// registers across the K rows.
static inline void delta_state_strip(float* restrict S_new, float* restrict w, const float* restrict S_old,
                                     const float* restrict k, const float* restrict k_next, const float* restrict u,
                                     float beta, float alpha, int K, int V, int j0, int W) {
    for (int j = j0; j < j0 + W; j++) w[j] = 0.0f;
    for (int c = 0; c < K; c++) {
        const float* Pc = S_old + (size_t)c * V;
        float* Sc = S_new + (size_t)c * V;
        float bk = beta * k[c], kn = k_next[c];
        for (int j = j0; j < j0 + W; j++) {
            float s = alpha * Pc[j] + bk * u[j];
            Sc[j] = s;
            w[j] += kn * s;
        }
    }
}

// The chunk backward's recompute of one step of the recurrence for one head, one pass over the
// state: S_new (K,V) = α S_old + β k uᵀ (u (V) = u_t, already computed), and w (V) = S_newᵀ k_next,
// the next step's Sᵀk (its prediction error is v − α w), summed over the rows while they are hot.
// In column strips of 64, 32, 16 and the rest.
static void delta_state_step(float* restrict S_new, float* restrict w, const float* restrict S_old,
                             const float* restrict k, const float* restrict k_next, const float* restrict u,
                             float beta, float alpha, int K, int V) {
    int j0 = 0;
    for (; j0 + 64 <= V; j0 += 64) delta_state_strip(S_new, w, S_old, k, k_next, u, beta, alpha, K, V, j0, 64);
    if (j0 + 32 <= V) {
        delta_state_strip(S_new, w, S_old, k, k_next, u, beta, alpha, K, V, j0, 32);
        j0 += 32;
    }
    if (j0 + 16 <= V) {
        delta_state_strip(S_new, w, S_old, k, k_next, u, beta, alpha, K, V, j0, 16);
        j0 += 16;
    }
    if (j0 < V) delta_state_strip(S_new, w, S_old, k, k_next, u, beta, alpha, K, V, j0, V - j0);
}

// The pass of delta_backward_fused (its notation) over columns j0..j0+W of every row: D updated,
// rk = Dᵀk_prev summed, the row sums S_prev[c]·do added to sdo[c] and dk_c to dk[c], and, when gated,
// Σ S_prev ⊙ D' into gate (16 lanes) and gate_rest (the leftover columns); gated = 0 (α = 1 and no
// dg wanted: DeltaNet) drops those two operations per element. The sums along a row run in 16 lanes, the
// leftover columns in order after them. Called with W a constant (64, 32 or 16), the strip's do, βu,
// du, αdu and rk stay in registers across all K rows.
static inline void delta_backward_strip(float* restrict D, float* restrict rk, float* restrict sdo, float* restrict dk,
                                        float* restrict gate, float* gate_rest, const float* restrict dout,
                                        const float* restrict dv, const float* restrict bu,
                                        const float* restrict adu, const float* restrict q, const float* restrict k,
                                        const float* k_prev, const float* restrict S_prev, float alpha, int K, int V,
                                        int j0, int W, float scale, int gated) {
    int W16 = W - W % 16;
    const float *o = dout + j0, *dvs = dv + j0, *bus = bu + j0, *adus = adu + j0;
    float* rks = rk + j0;
    for (int c = 0; c < K; c++) {
        float* Dc = D + (size_t)c * V + j0;
        const float* Pc = S_prev + (size_t)c * V + j0;
        float qc = scale * q[c], kc = k[c], kp = k_prev ? k_prev[c] : 0.0f;
        float ao[16] = {0.0f}, ak[16] = {0.0f};
        for (int m = 0; m < W16; m += 16)
            for (int l = 0; l < 16; l++) {
                int j = m + l;
                float d = Dc[j] + qc * o[j];
                ao[l] += Pc[j] * o[j];
                ak[l] += d * bus[j] - Pc[j] * adus[j];
                d -= kc * dvs[j];
                if (gated) {
                    gate[l] += Pc[j] * d;
                    d *= alpha;
                }
                Dc[j] = d;
                rks[j] += kp * d;
            }
        float so = lanes_sum(ao), sk = lanes_sum(ak);
        for (int j = W16; j < W; j++) {
            float d = Dc[j] + qc * o[j];
            so += Pc[j] * o[j];
            sk += d * bus[j] - Pc[j] * adus[j];
            d -= kc * dvs[j];
            if (gated) {
                *gate_rest += Pc[j] * d;
                d *= alpha;
            }
            Dc[j] = d;
            rks[j] += kp * d;
        }
        sdo[c] += so;
        dk[c] += sk;
    }
}

// The row pass of delta_backward_fused in strips of 64, 32, 16 columns and the rest (arguments as
// delta_backward_strip); sdo (K) scratch. Writes dq, dk; returns Σ S_prev ⊙ D' when gated, else 0.
static inline float delta_backward_pass(float* restrict D, float* restrict rk, float* restrict dq,
                                        float* restrict dk, float* restrict sdo, const float* restrict dv,
                                        const float* restrict bu, const float* restrict adu,
                                        const float* restrict dout, const float* restrict q, const float* restrict k,
                                        const float* k_prev, const float* restrict S_prev, float beta, float alpha,
                                        float ud, int K, int V, float scale, int gated) {
    float gate[16] = {0.0f}, gate_rest = 0.0f;
    for (int c = 0; c < K; c++) sdo[c] = dk[c] = 0.0f;
    int j0 = 0;
    for (; j0 + 64 <= V; j0 += 64)
        delta_backward_strip(D, rk, sdo, dk, gate, &gate_rest, dout, dv, bu, adu, q, k, k_prev, S_prev, alpha, K, V, j0,
                             64, scale, gated);
    if (j0 + 32 <= V) {
        delta_backward_strip(D, rk, sdo, dk, gate, &gate_rest, dout, dv, bu, adu, q, k, k_prev, S_prev, alpha, K, V, j0,
                             32, scale, gated);
        j0 += 32;
    }
    if (j0 + 16 <= V) {
        delta_backward_strip(D, rk, sdo, dk, gate, &gate_rest, dout, dv, bu, adu, q, k, k_prev, S_prev, alpha, K, V, j0,
                             16, scale, gated);
        j0 += 16;
    }
    if (j0 < V)
        delta_backward_strip(D, rk, sdo, dk, gate, &gate_rest, dout, dv, bu, adu, q, k, k_prev, S_prev, alpha, K, V, j0,
                             V - j0, scale, gated);
    for (int c = 0; c < K; c++) dq[c] = scale * (alpha * sdo[c] + beta * k[c] * ud);
    return gated ? lanes_sum(gate) + gate_rest : 0.0f;
}

// delta_backward_step fused into one pass over D and S_prev, for the chunk backward. The step reads
// D_full = D + scale q doᵀ; its pieces are rearranged so that nothing else needs a pass of its own:
//     r = D_fullᵀ k = rk + scale (q·k) do         rk (V) = Dᵀk, summed by the previous step's pass
//     dβ = u·r;   du = dv = β r
//     dq_c = scale S_t[c]·do = scale (α S_prev[c]·do + β k_c (u·do))     (S_t = α S_prev + β k uᵀ)
//     dk_c = β D_full[c]·u − α S_prev[c]·du
//     D' = D_full − k duᵀ;   dg = α Σ S_prev ⊙ D';   D = α D'
// and rk = Dᵀk_prev for the step before (k_prev (K) = its k; NULL at t = 0, where rk is not needed).
// D (K,V) dL/dS_t in, dL/dS_{t−1} out; rk (V) in and out; dq, dk (K), dv (V) overwritten; tmp
// (2V + K) scratch; u = u_t, dout (V); q, k (K); S_prev (K,V). Returns dβ, and dg in *dg unless dg
// is NULL.
static float delta_backward_fused(float* restrict D, float* restrict rk, float* restrict dq, float* restrict dk,
                                  float* restrict dv, float* dg, float* restrict tmp, const float* restrict dout,
                                  const float* restrict q, const float* restrict k, const float* k_prev,
                                  const float* restrict u, const float* restrict S_prev, float beta, float alpha,
                                  int K, int V, float scale) {
    float qk = scale * dot_lanes(q, k, K);
    for (int j = 0; j < V; j++) dv[j] = rk[j] + qk * dout[j];
    float dbeta = dot_lanes(u, dv, V), ud = dot_lanes(u, dout, V);
    float *bu = tmp, *adu = tmp + V;   // β u and α du
    for (int j = 0; j < V; j++) {
        dv[j] *= beta;
        bu[j] = beta * u[j];
        adu[j] = alpha * dv[j];
        rk[j] = 0.0f;
    }
    float gate = dg || alpha != 1.0f
                     ? delta_backward_pass(D, rk, dq, dk, tmp + 2 * V, dv, bu, adu, dout, q, k, k_prev, S_prev, beta,
                                           alpha, ud, K, V, scale, 1)
                     : delta_backward_pass(D, rk, dq, dk, tmp + 2 * V, dv, bu, adu, dout, q, k, k_prev, S_prev, beta,
                                           alpha, ud, K, V, scale, 0);
    if (dg) *dg = alpha * gate;
    return dbeta;
}

// The delta rule, chunkwise-parallel (training; LAYERS.md §6.3, the WY / UT form). For a chunk of
// n ≤ C rows entered with state S, G = chunk-local inclusive cumsum of g (0 for DeltaNet),
// Γ_ij = e^{G_i − G_j} for j ≤ i (a difference ≤ 0, never a factored e^{G_i} e^{−G_j}):
//     M      = strictly_lower( diag(β) (K Kᵀ ⊙ Γ) )
//     V_new  = (I + M)^{−1} diag(β) (V − diag(e^G) K S)      the UT transform, by forward substitution
//     O      = scale [ diag(e^G) Q S + ((Q Kᵀ) ⊙ Γ ⊙ lower_incl) V_new ]
//     S_next = e^{G_n} S + (diag(e^{G_n − G}) K)ᵀ V_new
// fla writes the middle line as W = A diag(βe^G) K, U = A diag(β) V (A = (I + M)^{−1}), V_new = U − W S;
// applying A to diag(β)(V − diag(e^G) K S) is the same product with one substitution instead of two.
// Row i of V_new is β_i u_i, the recurrence's scaled prediction error.
// o (B,T,H,V); states (B,H,NC,K,V) = the state entering each chunk (kept for the backward);
// q, k (B,T,H,K); v (B,T,H,V); beta, g (B,T,H) (g may be NULL)
void delta_chunk_forward(float* o, float* states, const float* q, const float* k, const float* v, const float* beta,
                         const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    size_t sk = (size_t)H * K, sv = (size_t)H * V;   // time strides
    int nth = max_threads();
    float* scratch = mm_scratch(nth);   // the small products go through mm_gemm_serial
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* ws = mm_thread_scratch(scratch);
            float* S = (float*)calloc_check((size_t)K * V, sizeof(float));
            float* qc = (float*)malloc_check((size_t)C * K * sizeof(float));    // (C,K) the chunk's rows
            float* kc = (float*)malloc_check((size_t)C * K * sizeof(float));    // (C,K) k, then k_j e^{G_n − G_j}
            float* vn = (float*)malloc_check((size_t)C * V * sizeof(float));    // (C,V) K S, then V_new
            float* P = (float*)malloc_check((size_t)C * C * sizeof(float));     // (C,C) scale (Q Kᵀ) ⊙ Γ, lower
            float* G = (float*)malloc_check(C * sizeof(float));
            float* eG = (float*)malloc_check(C * sizeof(float));                // (C) e^{G_i}
            float* bc = (float*)malloc_check(C * sizeof(float));
            for (int ch = 0; ch < NC; ch++) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                size_t rk = ((size_t)b * T + t0) * sk + h * K, rv = ((size_t)b * T + t0) * sv + h * V;
                size_t rg = ((size_t)b * T + t0) * H + h;
                memcpy(states + (((size_t)b * H + h) * NC + ch) * K * V, S, (size_t)K * V * sizeof(float));
                gather_rows(qc, q + rk, n, K, sk);
                gather_rows(kc, k + rk, n, K, sk);
                for (int i = 0; i < n; i++) {
                    bc[i] = beta[rg + (size_t)i * H];
                    G[i] = (i ? G[i - 1] : 0.0f) + (g ? g[rg + (size_t)i * H] : 0.0f);
                    eG[i] = exp_fast(G[i]);
                }
                // the reads of the entering state: K S into vn, Q S into o; then the right-hand side
                // diag(β)(V − diag(e^G) K S) into vn, and scale diag(e^G) Q S in o
                mm_gemm_serial(n, V, K, kc, K, 1, S, V, 1, vn, V, 0, ws);
                mm_gemm_serial(n, V, K, qc, K, 1, S, V, 1, o + rv, sv, 0, ws);
                for (int i = 0; i < n; i++) {
                    float *vi = vn + (size_t)i * V, *oi = o + rv + i * sv, sq = scale * eG[i];
                    const float* vin = v + rv + i * sv;
                    for (int j = 0; j < V; j++) {
                        vi[j] = bc[i] * (vin[j] - eG[i] * vi[j]);
                        oi[j] *= sq;
                    }
                }
                // forward substitution: V_new_i = rhs_i − Σ_{j<i} M_ij V_new_j, M_ij = β_i (k_i·k_j) Γ_ij
                for (int i = 1; i < n; i++) {
                    float* vi = vn + (size_t)i * V;
                    for (int jr = 0; jr < i; jr++) {
                        float m = bc[i] * dot_lanes(kc + i * K, kc + jr * K, K) * exp_fast(G[i] - G[jr]);
                        const float* vj = vn + (size_t)jr * V;
                        for (int j = 0; j < V; j++) vi[j] -= m * vj[j];
                    }
                }
                // o_i += Σ_{j≤i} P_ij V_new_j, P_ij = scale (q_i·k_j) Γ_ij
                for (int i = 0; i < n; i++)
                    for (int jr = 0; jr < n; jr++)
                        P[i * C + jr] = jr <= i ? scale * dot_lanes(qc + i * K, kc + jr * K, K) * exp_fast(G[i] - G[jr])
                                                : 0.0f;
                mm_gemm_serial(n, V, n, P, C, 1, vn, V, 1, o + rv, sv, 1, ws);
                // S = e^{G_n} S + Σ_j (k_j e^{G_n − G_j}) V_new_jᵀ
                for (int jr = 0; jr < n; jr++) {
                    float x = exp_fast(G[n - 1] - G[jr]);
                    for (int c = 0; c < K; c++) kc[jr * K + c] *= x;
                }
                for (size_t e = 0; e < (size_t)K * V; e++) S[e] *= eG[n - 1];
                mm_gemm_serial(K, V, n, kc, 1, K, vn, V, 1, S, V, 1, ws);
            }
            free(S); free(qc); free(kc); free(vn); free(P); free(G); free(eG); free(bc);
        }
}

// Backward of delta_chunk_forward: the exact recurrent backward, a chunk at a time from the last,
// carrying D = dL/dS (and rk = Dᵀk of the step to come) across chunk boundaries. Each chunk's
// per-step states are first recomputed from its stored entering state into scratch (one pass per
// step, delta_state_step), then swept in reverse (one pass per step, delta_backward_fused). Memory
// is (T/C + C)·K·V per head instead of T·K·V (LAYERS.md §6.4; inverting the recurrence instead
// would be unstable: it divides by e^g, and I − βkkᵀ is singular at β‖k‖² = 1). The work is
// O(T K V), the order of the forward pass.
// dq, dk (B,T,H,K), dv (B,T,H,V), dbeta (B,T,H) and dg (B,T,H, when g is given) overwritten.
void delta_chunk_backward(float* dq, float* dk, float* dv, float* dbeta, float* dg, const float* dout,
                          const float* states, const float* q, const float* k, const float* v, const float* beta,
                          const float* g, int B, int T, int H, int K, int V, int C, float scale) {
    int NC = (T + C - 1) / C;
    size_t KV = (size_t)K * V, sk = (size_t)H * K;   // sk: k's time stride
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* S = (float*)malloc_check((size_t)C * KV * sizeof(float));   // S + (i−1)KV: state before row i ≥ 1
            float* u = (float*)malloc_check((size_t)C * V * sizeof(float));    // (C,V) prediction errors u_i
            float* D = (float*)calloc_check(KV, sizeof(float));                 // (K,V) dL/dS
            float* w = (float*)calloc_check(4 * (size_t)V + K, sizeof(float));  // (V) Sᵀk in the recompute
            float* rk = w + V;                                                   // (V) Dᵀk, zero at t = T−1
            float* tmp = w + 2 * V;                                              // (2V + K) the step's scratch
            float* alpha = (float*)malloc_check(C * sizeof(float));             // (C) e^{g_i}
            for (int ch = NC - 1; ch >= 0; ch--) {
                int t0 = ch * C, n = T - t0 < C ? T - t0 : C;
                const float* S0 = states + (((size_t)b * H + h) * NC + ch) * KV;   // state entering the chunk
                size_t r0 = ((size_t)b * T + t0) * H + h;                            // row 0's (b,t,h)
                for (int i = 0; i < n; i++) alpha[i] = g ? exp_fast(g[r0 + (size_t)i * H]) : 1.0f;
                // forward: u_i = v_i − α_i S_iᵀk_i, S_{i+1} = α_i S_i + β_i k_i u_iᵀ (the last not needed)
                for (int j = 0; j < V; j++) w[j] = 0.0f;
                for (int c = 0; c < K; c++)
                    for (int j = 0; j < V; j++) w[j] += k[r0 * K + c] * S0[(size_t)c * V + j];
                for (int i = 0; i < n; i++) {
                    size_t r = r0 + (size_t)i * H;
                    float* ui = u + (size_t)i * V;
                    for (int j = 0; j < V; j++) ui[j] = v[r * V + j] - alpha[i] * w[j];
                    if (i + 1 < n)
                        delta_state_step(S + (size_t)i * KV, w, i ? S + (size_t)(i - 1) * KV : S0, k + r * K,
                                         k + (r + H) * K, ui, beta[r], alpha[i], K, V);
                }
                // reverse sweep, D and rk carried in from the chunk after
                for (int i = n - 1; i >= 0; i--) {
                    size_t r = r0 + (size_t)i * H;
                    dbeta[r] = delta_backward_fused(D, rk, dq + r * K, dk + r * K, dv + r * V, g ? dg + r : NULL,
                                                    tmp, dout + r * V, q + r * K, k + r * K,
                                                    t0 + i > 0 ? k + r * K - sk : NULL, u + (size_t)i * V,
                                                    i ? S + (size_t)(i - 1) * KV : S0, beta[r], alpha[i], K, V,
                                                    scale);
                }
            }
            free(S);
            free(u);
            free(D);
            free(w);
            free(alpha);
        }
}

// ----------------------------------------------------------------------------
// activations: one struct per layer, sized for (B,T) at allocation

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
    float *lower_bounds;                    // (L,d) hgrn/hgrn2 forget-gate lower bounds, or NULL
    float* layer[MAX_LAYERS][NUM_LAYER_SLOTS];
} Weights;

typedef struct {
    Config config;
    ParamSpec specs[MAX_PARAMS];
    int num_specs;
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v;   // (num_params) each
    Weights w, g;                              // views into params and grads
    int chunk_size;                            // chunk length of the linear mixers in training (C)
    // activations for a (B,T) batch
    int B, T;
    size_t act_floats;                         // memory accounting
    float *embed_out;                          // (N,d)
    float *lower_bound, *lower_softmax;        // (L,d) each: lb and softmax(P) of the lower bounds
    LayerActs acts[MAX_LAYERS];
    float *final_norm, *final_rstd;            // (N,d), (N)
    float *logits;                             // (N,V): logits, then probabilities, then dlogits
    // backward scratch, shared by all layers
    float *dresid, *dln;                       // (N,d) each
    float *dbuf[6];                            // (N, max width) each
    float *dlower_bound;                       // (L,d) dL/dlb, summed over the hgrn/hgrn2 layers
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
        else if (p->slot == G_LOWER_BOUNDS) w->lower_bounds = ptr;
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
    #pragma omp parallel for   // an exp and a log per element: worth a second thread
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
    zero_floats(do_gated, (size_t)N * Dv);
    matmul_backward(do_gated, dW[W_GLA_O], NULL, dout, A->o_gated, W[W_GLA_O], N, Dv, d);
    gated_rmsnorm_backward(d_o, dz, dW[W_GLA_G_NORM], do_gated, A->o, A->z, W[W_GLA_G_NORM], A->o_rstd, N, H, V);
    // the recurrence; da reuses do_gated's buffer (no longer needed)
    float* da = do_gated;
    gla_chunk_backward(dq, dk, dv, da, d_o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size,
                       1.0f / sqrtf((float)K));
    // gate chain: a = logσ(gk)/16  ->  dgk = da (1 − σ(gk)) / 16, written over da
    float inv = 1.0f / c->gla_gate_normalizer;
    #pragma omp parallel for   // an exp and a division per element: worth a second thread
    for (size_t i = 0; i < (size_t)N * Dk; i++) da[i] *= inv * sigmoidf(-A->gk[i]);
    float* dgk1 = d_o;  // (N,R), d_o no longer needed
    zero_floats(dgk1, (size_t)N * R);
    matmul_backward(dgk1, dW[W_GLA_GK2], dW[W_GLA_GK_BIAS], da, A->gk1, W[W_GLA_GK2], N, R, Dk);
    // the five d -> * projections all read ln1
    zero_floats(dln, (size_t)N * d);
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

// i (in q_lin), f, g (in z), a and the gated input x̃ (in v) for N rows of x = ln1 (N,d); lb (D) or NULL
void hgrn_project_forward(LayerActs* A, float* const* W, const Config* c, const float* lb, int N) {
    int d = c->d_model, D = c->hgrn_dim;
    matmul_forward(A->q_lin, A->ln1, W[W_HGRN_I], NULL, N, d, D);
    matmul_forward(A->f, A->ln1, W[W_HGRN_F], NULL, N, d, D);
    matmul_forward(A->z, A->ln1, W[W_HGRN_G], NULL, N, d, D);
    forget_gate_forward(A->a, A->f, lb, N, D);
    #pragma omp parallel for
    for (size_t i = 0; i < (size_t)N * D; i++) A->v[i] = siluf(A->q_lin[i]) * -expm1f(A->a[i]);
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
    zero_floats(do_gated, (size_t)N * D);
    matmul_backward(do_gated, dW[W_HGRN_O], NULL, dout, A->o_gated, W[W_HGRN_O], N, D, d);
    gated_rmsnorm_backward(dh, dg, dW[W_HGRN_G_NORM], do_gated, A->o, A->z, W[W_HGRN_G_NORM], A->o_rstd, N, 1, D);
    hgrn_chunk_backward(dx, da, dh, A->o, A->a, B, T, D, m->chunk_size);
    // x̃ = silu(i) (1 − e^a):  da −= dx̃ silu(i) e^a;  di = dx̃ (1 − e^a) silu'(i)  (written over dx̃)
    #pragma omp parallel for
    for (size_t i = 0; i < (size_t)N * D; i++) {
        da[i] -= dx[i] * siluf(A->q_lin[i]) * exp_fast(A->a[i]);
        dx[i] *= -expm1f(A->a[i]) * silu_grad(A->q_lin[i]);
    }
    forget_gate_backward(da, lb ? m->dlower_bound + (size_t)l * d : NULL, da, A->f, lb, N, D);
    zero_floats(dln, (size_t)N * d);
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

// q_lin, q, f, a, k, v for N rows of x = ln1 (N,d); lb (d) or NULL
void hgrn2_project_forward(LayerActs* A, float* const* W, const Config* c, const float* lb, int N) {
    int d = c->d_model;
    matmul_forward(A->q_lin, A->ln1, W[W_HGRN2_Q], NULL, N, d, d);
    matmul_forward(A->f, A->ln1, W[W_HGRN2_F], NULL, N, d, d);
    matmul_forward(A->v, A->ln1, W[W_HGRN2_I], NULL, N, d, d);
    forget_gate_forward(A->a, A->f, lb, N, d);
    #pragma omp parallel for
    for (size_t i = 0; i < (size_t)N * d; i++) {
        A->q[i] = siluf(A->q_lin[i]);
        A->k[i] = -expm1f(A->a[i]);
    }
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

void hgrn2_layer_backward(Model* m, int l, const float* dout, float* dln, int B, int T) {
    const Config* c = &m->config;
    LayerActs* A = &m->acts[l];
    float* const* W = m->w.layer[l];
    float* const* dW = m->g.layer[l];
    int N = B * T, d = c->d_model, E = hgrn2_head_dim(c);
    const float* lb = layer_lower_bound(m, l);
    float *do_norm = m->dbuf[0], *d_o = m->dbuf[1], *da = m->dbuf[2];
    float *dq = m->dbuf[3], *dk = m->dbuf[4], *dv = m->dbuf[5];
    zero_floats(do_norm, (size_t)N * d);
    matmul_backward(do_norm, dW[W_HGRN2_O], NULL, dout, A->o_gated, W[W_HGRN2_O], N, d, d);
    zero_floats(d_o, (size_t)N * d);
    rmsnorm_backward(d_o, dW[W_HGRN2_G_NORM], do_norm, A->o, W[W_HGRN2_G_NORM], A->o_rstd, N, d);
    gla_chunk_backward(dq, dk, dv, da, d_o, A->states, A->q, A->k, A->v, A->a, B, T, c->hgrn2_heads, E, E,
                       m->chunk_size, 1.0f / sqrtf((float)E));
    // k = 1 − e^a adds −dk e^a to the gate's gradient; q = silu(q_lin)
    #pragma omp parallel for
    for (size_t i = 0; i < (size_t)N * d; i++) {
        da[i] -= dk[i] * exp_fast(A->a[i]);
        dq[i] *= silu_grad(A->q_lin[i]);
    }
    forget_gate_backward(da, lb ? m->dlower_bound + (size_t)l * d : NULL, da, A->f, lb, N, d);
    zero_floats(dln, (size_t)N * d);
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

// q, k (roped at positions pos0..pos0+T−1), v, z and the log-gates a (N,d) for B·T rows of x = ln1
void retnet_project_forward(LayerActs* A, float* const* W, const Config* c, int B, int T, int pos0) {
    int N = B * T, d = c->d_model, H = c->retnet_heads, K = retnet_head_k(c);
    matmul_forward(A->q, A->ln1, W[W_RET_Q], NULL, N, d, d);
    matmul_forward(A->k, A->ln1, W[W_RET_K], NULL, N, d, d);
    matmul_forward(A->v, A->ln1, W[W_RET_V], NULL, N, d, 2 * d);
    matmul_forward(A->z, A->ln1, W[W_RET_G], NULL, N, d, 2 * d);
    rope_forward(A->q, B, T, H, K, pos0, c->rope_theta);
    rope_forward(A->k, B, T, H, K, pos0, c->rope_theta);
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            float log_gamma = log1pf(-ldexpf(1.0f, -5 - h));
            for (int i = 0; i < K; i++) A->a[(size_t)n * d + h * K + i] = log_gamma;
        }
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
    zero_floats(do_gated, (size_t)N * 2 * d);
    matmul_backward(do_gated, dW[W_RET_O], NULL, dout, A->o_gated, W[W_RET_O], N, 2 * d, d);
    gated_rmsnorm_backward(d_o, dz, dW[W_RET_G_NORM], do_gated, A->o, A->z, W[W_RET_G_NORM], A->o_rstd, N, H, V);
    // the fixed decay has no gradient: the kernel's gate gradient goes to do_gated's buffer, unused
    gla_chunk_backward(dq, dk, dv, do_gated, d_o, A->states, A->q, A->k, A->v, A->a, B, T, H, K, V, m->chunk_size,
                       1.0f / sqrtf((float)K));
    rope_backward(dq, B, T, H, K, 0, c->rope_theta);
    rope_backward(dk, B, T, H, K, 0, c->rope_theta);
    zero_floats(dln, (size_t)N * d);
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
static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// q_lin, k_lin, v_lin (the convs' inputs), β, and for GDN the gate logits gate_lin, the log-decays a
// and the output-gate logits z, for N rows of x = ln1 (N,d)
void delta_project_forward(LayerActs* A, float* const* W, const Config* c, int mixer, int N) {
    int d = c->d_model, H, K, V;
    mixer_dims(c, mixer, &H, &K, &V);
    matmul_forward(A->q_lin, A->ln1, W[W_DELTA_Q], NULL, N, d, H * K);
    matmul_forward(A->k_lin, A->ln1, W[W_DELTA_K], NULL, N, d, H * K);
    matmul_forward(A->v_lin, A->ln1, W[W_DELTA_V], NULL, N, d, H * V);
    matmul_forward(A->beta, A->ln1, W[W_DELTA_B], NULL, N, d, H);
    for (size_t i = 0; i < (size_t)N * H; i++) A->beta[i] = sigmoidf(A->beta[i]);
    if (mixer != MIXER_GATED_DELTANET) return;
    matmul_forward(A->gate_lin, A->ln1, W[W_DELTA_A], NULL, N, d, H);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)n * H + h;
            A->a[i] = -expf(W[W_DELTA_A_LOG][h]) * softplusf(A->gate_lin[i] + W[W_DELTA_DT_BIAS][h]);
        }
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
    zero_floats(do_norm, (size_t)N * H * V);
    matmul_backward(do_norm, dW[W_DELTA_O], NULL, dout, A->o_gated, W[W_DELTA_O], N, H * V, d);
    if (gated) {
        gated_rmsnorm_backward(d_o, dz, dW[W_DELTA_O_NORM], do_norm, A->o, A->z, W[W_DELTA_O_NORM], A->o_rstd, N, H, V);
    } else {
        zero_floats(d_o, (size_t)N * H * V);
        rmsnorm_backward(d_o, dW[W_DELTA_O_NORM], do_norm, A->o, W[W_DELTA_O_NORM], A->o_rstd, N * H, V);
    }
    // the recurrence; dβ and dg (N,H) each reuse do_norm's buffer (no longer needed)
    float *dbeta = do_norm, *dg = do_norm + (size_t)N * H;
    delta_chunk_backward(dq, dk, dv, dbeta, gated ? dg : NULL, d_o, A->states, A->q, A->k, A->v, A->beta,
                         gated ? A->a : NULL, B, T, H, K, V, m->chunk_size, 1.0f / sqrtf((float)K));
    l2norm_backward(dq, dq, A->q, A->q_rinv, (size_t)N * H, K);
    l2norm_backward(dk, dk, A->k, A->k_rinv, (size_t)N * H, K);
    // each short conv then its projection; d_o's buffer takes each conv's input gradient in turn
    zero_floats(dln, (size_t)N * d);
    shortconv_backward(d_o, dW[W_DELTA_Q_CONV], dq, A->q_lin, W[W_DELTA_Q_CONV], B, T, H * K, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_Q], NULL, d_o, A->ln1, W[W_DELTA_Q], N, d, H * K);
    shortconv_backward(d_o, dW[W_DELTA_K_CONV], dk, A->k_lin, W[W_DELTA_K_CONV], B, T, H * K, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_K], NULL, d_o, A->ln1, W[W_DELTA_K], N, d, H * K);
    shortconv_backward(d_o, dW[W_DELTA_V_CONV], dv, A->v_lin, W[W_DELTA_V_CONV], B, T, H * V, c->conv_size);
    matmul_backward(dln, dW[W_DELTA_V], NULL, d_o, A->ln1, W[W_DELTA_V], N, d, H * V);
    // β = σ(b): db = dβ β (1 − β), in place
    for (size_t i = 0; i < (size_t)N * H; i++) dbeta[i] *= A->beta[i] * (1.0f - A->beta[i]);
    matmul_backward(dln, dW[W_DELTA_B], NULL, dbeta, A->ln1, W[W_DELTA_B], N, d, H);
    if (!gated) return;
    // g = −e^{A_log} softplus(x), x = gate_lin + dt_bias:  ∂g/∂A_log = g;  ∂g/∂x = −e^{A_log} σ(x).
    // dg becomes d(gate_lin) in place; dt_bias collects the same sums.
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            size_t i = (size_t)n * H + h;
            dW[W_DELTA_A_LOG][h] += dg[i] * A->a[i];
            dg[i] *= -expf(W[W_DELTA_A_LOG][h]) * sigmoidf(A->gate_lin[i] + W[W_DELTA_DT_BIAS][h]);
            dW[W_DELTA_DT_BIAS][h] += dg[i];
        }
    matmul_backward(dln, dW[W_DELTA_A], NULL, dg, A->ln1, W[W_DELTA_A], N, d, H);
    matmul_backward(dln, dW[W_DELTA_G], NULL, dz, A->ln1, W[W_DELTA_G], N, d, H * V);
}

// ----------------------------------------------------------------------------
// causal softmax attention with RoPE and GQA (LAYERS.md §8)

// Both passes go through the matmul's kernels one (batch, head) task per thread (mm_gemm_serial),
// a block of ATT_QB queries at a time against the keys it can see: S = Q Kᵀ, then O = P V; the
// backward's dP = dO Vᵀ, dQ = dS K, dK = dSᵀ Q and dV = Pᵀ dO likewise. Within the diagonal block
// the scores above the diagonal are computed and discarded (their probabilities are zero), so a
// block costs at most ATT_QB²/2 wasted products. Each task's sums run in a fixed order: the same
// bits at any thread count.
#define ATT_QB (8 * MM_MR)

// out (B,T,H,D); att (B,H,T,T) probabilities (the upper triangle outside the diagonal ATT_QB blocks
// left unused; inside them zero); q (B,T,H,D); k, v (B,T,Hkv,D). Query head h reads kv head
// h / (H/Hkv).
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int B, int T,
                       int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int group = H / Hkv, nth = max_threads();
    size_t sq = (size_t)H * D, skv = (size_t)Hkv * D;   // time strides
    float* scratch = mm_scratch(nth);
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* ws = mm_thread_scratch(scratch);
            const float* qh = q + (size_t)b * T * sq + (size_t)h * D;                  // (T,D), stride sq
            const float* kh = k + (size_t)b * T * skv + (size_t)(h / group) * D;       // (T,D), stride skv
            const float* vh = v + (size_t)b * T * skv + (size_t)(h / group) * D;
            float* oh = out + (size_t)b * T * sq + (size_t)h * D;
            float* ph = att + ((size_t)b * H + h) * T * T;                            // (T,T)
            for (int t0 = 0; t0 < T; t0 += ATT_QB) {
                int n = T - t0 < ATT_QB ? T - t0 : ATT_QB, ns = t0 + n;   // queries, keys seen
                // S (n,ns) = Q[t0:t0+n] K[0:ns]ᵀ
                mm_gemm_serial(n, ns, D, qh + t0 * sq, sq, 1, kh, 1, skv, ph + (size_t)t0 * T, T, 0, ws);
                for (int t = t0; t < ns; t++) {
                    float* p = ph + (size_t)t * T;
                    float maxv = -INFINITY, sum = 0.0f;
                    for (int s = 0; s <= t; s++) {
                        p[s] *= scale;
                        maxv = p[s] > maxv ? p[s] : maxv; // fmaxf's value, no libm call
                    }
                    for (int s = 0; s <= t; s++) { p[s] = exp_fast(p[s] - maxv); sum += p[s]; }
                    float inv = 1.0f / sum;
                    for (int s = 0; s <= t; s++) p[s] *= inv;
                    for (int s = t + 1; s < ns; s++) p[s] = 0.0f;
                }
                // O[t0:t0+n] (n,D) = P (n,ns) V[0:ns]
                mm_gemm_serial(n, D, ns, ph + (size_t)t0 * T, T, 1, vh, skv, 1, oh + t0 * sq, sq, 0, ws);
            }
        }
}

// dq (B,T,H,D), dk, dv (B,T,Hkv,D) +=. With P the probabilities: dV = Pᵀ dO; dP = dO Vᵀ;
// dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = scale dS K; dK = scale dSᵀ Q. Parallel over (b, kv head) so
// the heads of one GQA group add into their shared dk, dv without races. att as attention_forward
// leaves it, read only at and below the diagonal.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att, const float* q,
                        const float* k, const float* v, int B, int T, int H, int Hkv, int D) {
    float scale = 1.0f / sqrtf((float)D);
    int group = H / Hkv, nth = max_threads();
    size_t sq = (size_t)H * D, skv = (size_t)Hkv * D;
    float* scratch = mm_scratch(nth);
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++) {
            float* ws = mm_thread_scratch(scratch);
            float* ds = (float*)malloc_check((size_t)ATT_QB * T * sizeof(float));   // (n,ns) dP, then dS
            float* pz = (float*)malloc_check((size_t)ATT_QB * T * sizeof(float));   // (n,ns) P, zero above
            const float* kh = k + (size_t)b * T * skv + (size_t)g * D;
            const float* vh = v + (size_t)b * T * skv + (size_t)g * D;
            float* dkh = dk + (size_t)b * T * skv + (size_t)g * D;
            float* dvh = dv + (size_t)b * T * skv + (size_t)g * D;
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float* qh = q + (size_t)b * T * sq + (size_t)h * D;
                const float* doh = dout + (size_t)b * T * sq + (size_t)h * D;
                float* dqh = dq + (size_t)b * T * sq + (size_t)h * D;
                const float* ph = att + ((size_t)b * H + h) * T * T;
                for (int t0 = 0; t0 < T; t0 += ATT_QB) {
                    int n = T - t0 < ATT_QB ? T - t0 : ATT_QB, ns = t0 + n;
                    // dP (n,ns) = dO[t0:t0+n] V[0:ns]ᵀ
                    mm_gemm_serial(n, ns, D, doh + t0 * sq, sq, 1, vh, 1, skv, ds, ns, 0, ws);
                    for (int i = 0; i < n; i++) {
                        const float* p = ph + (size_t)(t0 + i) * T;
                        float *dsi = ds + (size_t)i * ns, *pzi = pz + (size_t)i * ns;
                        float rowsum = 0.0f;
                        for (int s = 0; s <= t0 + i; s++) rowsum += p[s] * dsi[s];
                        for (int s = 0; s <= t0 + i; s++) {
                            pzi[s] = p[s];
                            dsi[s] = p[s] * (dsi[s] - rowsum) * scale;
                        }
                        for (int s = t0 + i + 1; s < ns; s++) { pzi[s] = 0.0f; dsi[s] = 0.0f; }
                    }
                    // dQ[t0:t0+n] += dS K[0:ns];  dK[0:ns] += dSᵀ Q[t0:t0+n];  dV[0:ns] += Pᵀ dO[t0:t0+n]
                    mm_gemm_serial(n, D, ns, ds, ns, 1, kh, skv, 1, dqh + t0 * sq, sq, 1, ws);
                    mm_gemm_serial(ns, D, n, ds, 1, ns, qh + t0 * sq, sq, 1, dkh, skv, 1, ws);
                    mm_gemm_serial(ns, D, n, pz, 1, ns, doh + t0 * sq, sq, 1, dvh, skv, 1, ws);
                }
            }
            free(ds); free(pz);
        }
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
    zero_floats(datt_out, (size_t)N * H * D);
    matmul_backward(datt_out, dW[W_ATT_O], NULL, dout, A->att_out, W[W_ATT_O], N, H * D, d);
    zero_floats(dq, (size_t)N * H * D);
    zero_floats(dk, (size_t)N * Hkv * D);
    zero_floats(dv, (size_t)N * Hkv * D);
    attention_backward(dq, dk, dv, datt_out, A->att, A->q, A->k, A->v, B, T, H, Hkv, D);
    rope_backward(dq, B, T, H, D, 0, c->rope_theta);
    rope_backward(dk, B, T, Hkv, D, 0, c->rope_theta);
    zero_floats(dln, (size_t)N * d);
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
    zero_floats(dh, (size_t)N * I);
    matmul_backward(dh, dW[W_MLP_DOWN], NULL, dout, A->mlp_h, W[W_MLP_DOWN], N, I, d);
    swiglu_backward(dgate, dup, dh, A->mlp_gate, A->mlp_up, (size_t)N * I);
    zero_floats(dln, (size_t)N * d);
    matmul_backward(dln, dW[W_MLP_GATE], NULL, dgate, A->ln2, W[W_MLP_GATE], N, d, I);
    matmul_backward(dln, dW[W_MLP_UP], NULL, dup, A->ln2, W[W_MLP_UP], N, d, I);
}

// ----------------------------------------------------------------------------
// cross-entropy with an ignore index (targets < 0 do not count; IGNORE_INDEX = −100 as in fla)

// logits (N,V) are turned into probabilities in place; returns the mean loss over counted rows,
// *n_valid = their number.
float crossentropy_forward(float* logits, const int* targets, int N, int V, int* n_valid) {
    double total = 0.0;
    int count = 0;
    #pragma omp parallel for reduction(+ : total, count)
    for (int n = 0; n < N; n++) {
        float* row = logits + (size_t)n * V;
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++) maxv = row[i] > maxv ? row[i] : maxv; // fmaxf's value, no libm call
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

// fla's init (LAYERS.md §9.5): every Linear and short-conv weight, the embedding and the LM head
// N(0, 0.02); norm weights 1; GLA's gate bias and HGRN's lower bounds 0; GDN's
//     A_log = log A, A ~ U(0, 16]       (per-head decay rates; 0 excluded, log 0 = −inf)
//     dt_bias = dt + log(−expm1(−dt))   (softplus⁻¹(dt), dt = exp(U(log 1e-3, log 0.1)) clamped ≥ 1e-4)
void model_init_weights(Model* m, uint64_t seed) { init_params(m->specs, m->num_specs, m->params, seed); }

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

// every mixer's layer, by mixer id (deltanet and gated_deltanet share one code path)
typedef void (*LayerForwardFn)(Model* m, int l, int B, int T);
typedef void (*LayerBackwardFn)(Model* m, int l, const float* dout, float* dln, int B, int T);
static const LayerForwardFn MIXER_FORWARD[NUM_MIXER_IDS] = {
    [MIXER_ATTN] = attn_layer_forward, [MIXER_HGRN] = hgrn_layer_forward, [MIXER_RETNET] = retnet_layer_forward,
    [MIXER_GLA] = gla_layer_forward, [MIXER_HGRN2] = hgrn2_layer_forward, [MIXER_DELTANET] = delta_layer_forward,
    [MIXER_GATED_DELTANET] = delta_layer_forward};
static const LayerBackwardFn MIXER_BACKWARD[NUM_MIXER_IDS] = {
    [MIXER_ATTN] = attn_layer_backward, [MIXER_HGRN] = hgrn_layer_backward, [MIXER_RETNET] = retnet_layer_backward,
    [MIXER_GLA] = gla_layer_backward, [MIXER_HGRN2] = hgrn2_layer_backward, [MIXER_DELTANET] = delta_layer_backward,
    [MIXER_GATED_DELTANET] = delta_layer_backward};

// inputs, targets (B,T); targets may be NULL (then only logits are computed). Sets m->loss.
void model_forward(Model* m, const int* inputs, const int* targets, int B, int T) {
    const Config* c = &m->config;
    int N = B * T, d = c->d_model, V = c->vocab_size;
    for (int i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= V) fail("input token %d at position %d is outside the vocabulary (%d)", inputs[i], i, V);
    model_alloc_acts(m, B, T);
    encoder_forward(m->embed_out, inputs, m->w.embed, N, d);
    if (m->w.lower_bounds) lower_bounds_forward(m->lower_bound, m->lower_softmax, m->w.lower_bounds, c->n_layer, d);
    const float* x = m->embed_out;
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, x, W[W_ATTN_NORM], N, d, c->norm_eps);
        MIXER_FORWARD[c->pattern[l]](m, l, B, T);
        #pragma omp parallel for
        for (size_t i = 0; i < (size_t)N * d; i++) A->res1[i] = x[i] + A->mixer[i];
        rmsnorm_forward(A->ln2, A->ln2_rstd, A->res1, W[W_MLP_NORM], N, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, N);
        #pragma omp parallel for
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
    zero_floats(m->grads, m->num_params);
    crossentropy_backward(m->logits, targets, N, V, m->n_valid);
    const float* x_last = c->n_layer ? m->acts[c->n_layer - 1].res2 : m->embed_out;
    float* dfinal = m->dln;
    zero_floats(dfinal, (size_t)N * d);
    matmul_backward(dfinal, m->g.lm_head, NULL, m->logits, m->final_norm, m->w.lm_head, N, d, V);
    zero_floats(m->dresid, (size_t)N * d);
    rmsnorm_backward(m->dresid, m->g.norm, dfinal, x_last, m->w.norm, m->final_rstd, N, d);
    if (m->w.lower_bounds) zero_floats(m->dlower_bound, (size_t)c->n_layer * d);
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
    encoder_backward(m->g.embed, m->dresid, inputs, N, d);
}

void model_free(Model* m) {
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    if (!m->B) return;
    free(m->embed_out);
    free(m->lower_bound); free(m->lower_softmax); free(m->dlower_bound);
    for (int l = 0; l < m->config.n_layer; l++) {
        LayerActs* A = &m->acts[l];
        float* bufs[] = {A->ln1, A->ln1_rstd, A->q, A->k, A->v, A->a, A->z, A->states, A->o, A->o_rstd, A->o_gated,
                         A->gk1, A->gk, A->f, A->q_lin, A->k_lin, A->v_lin, A->q_rinv, A->k_rinv, A->beta,
                         A->gate_lin, A->att, A->att_out, A->mixer, A->res1, A->ln2, A->ln2_rstd, A->mlp_gate,
                         A->mlp_up, A->mlp_h, A->mlp, A->res2};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
    }
    free(m->final_norm); free(m->final_rstd); free(m->logits); free(m->dresid); free(m->dln);
    for (int i = 0; i < 6; i++) free(m->dbuf[i]);
}

// ----------------------------------------------------------------------------
// optimisation: global gradient norm, clipping, learning-rate schedule, AdamW

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
// (global-norm clipping). Weight decay is decoupled and applies to the Linear weights, embedding and
// LM head only (ParamSpec.decay: not to norms, biases, short convs, A_log, dt_bias, lower bounds).
void adamw_update(Model* m, const TrainHyper* h, float lr, int t, float grad_scale) {
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    const float bc1 = 1.0f - powf(b1, t), bc2 = 1.0f - powf(b2, t);
    // one parallel region for all tensors (one per tensor was ~60 forks and joins per step); the
    // elements are independent, so no barrier between tensors
    #pragma omp parallel
    for (int i = 0; i < m->num_specs; i++) {
        const ParamSpec* p = &m->specs[i];
        const float wd = p->decay ? h->weight_decay : 0.0f;
        float *w = m->params + p->offset, *g = m->grads + p->offset;
        float *mm = m->adam_m + p->offset, *vv = m->adam_v + p->offset;
        #pragma omp for schedule(static) nowait
        for (size_t j = 0; j < p->numel; j++) {
            float grad = g[j] * grad_scale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * grad;
            vv[j] = b2 * vv[j] + (1.0f - b2) * grad * grad;
            float mhat = mm[j] / bc1, vhat = vv[j] / bc2;
            w[j] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[j]);
        }
    }
}

// ----------------------------------------------------------------------------
// generation: O(1) recurrent state per linear layer (plus the short convs' last W_c − 1 inputs for
// the delta-rule layers), a KV cache per attention layer. Each step runs the very same layer
// functions as training on one row (N = 1), with the recurrent step of each linear mixer in place of
// its chunkwise core.

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
} DecodeState;

void decode_init(DecodeState* s, const Config* c, int max_T) {
    memset(s, 0, sizeof(*s));
    s->max_T = max_T;
    size_t d = c->d_model, I = c->mlp_hidden, wmax = max_width(c);
    for (int l = 0; l < c->n_layer; l++) {
        int mix = c->pattern[l];
        if (mix == MIXER_ATTN) {
            size_t kv = (size_t)c->attn_kv_heads * attn_head_dim(c);
            s->k_cache[l] = (float*)calloc_check((size_t)max_T * kv, sizeof(float));
            s->v_cache[l] = (float*)calloc_check((size_t)max_T * kv, sizeof(float));
            continue;
        }
        s->state[l] = (float*)calloc_check(mixer_state_floats(c, mix), sizeof(float));
        if (mix == MIXER_DELTANET || mix == MIXER_GATED_DELTANET) {
            int H, K, V;
            mixer_dims(c, mix, &H, &K, &V);
            s->conv_cache[l] = (float*)calloc_check((size_t)(c->conv_size - 1) * H * (2 * K + V), sizeof(float));
        }
    }
    if (has_lower_bounds(c)) {
        s->lower_bound = (float*)calloc_check((size_t)c->n_layer * d, sizeof(float));
        s->lower_softmax = (float*)calloc_check((size_t)c->n_layer * d, sizeof(float));
    }
    LayerActs* A = &s->acts;
    float** bufs[] = {&A->ln1, &A->q, &A->k, &A->v, &A->a, &A->z, &A->o, &A->o_rstd, &A->o_gated, &A->gk,
                      &A->f, &A->q_lin, &A->k_lin, &A->v_lin, &A->q_rinv, &A->k_rinv, &A->beta, &A->gate_lin,
                      &A->att_out, &A->mixer, &A->ln2, &A->mlp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) *bufs[i] = (float*)calloc_check(wmax, sizeof(float));
    A->gk1 = (float*)calloc_check(c->gla_gate_rank, sizeof(float));
    A->ln1_rstd = (float*)calloc_check(1, sizeof(float));
    A->ln2_rstd = (float*)calloc_check(1, sizeof(float));
    A->mlp_gate = (float*)calloc_check(I, sizeof(float));
    A->mlp_up = (float*)calloc_check(I, sizeof(float));
    A->mlp_h = (float*)calloc_check(I, sizeof(float));
    s->x = (float*)calloc_check(d, sizeof(float));
    s->att_row = (float*)calloc_check((size_t)c->attn_heads * max_T, sizeof(float));
    s->logits = (float*)calloc_check(c->vocab_size, sizeof(float));
}

void decode_free(DecodeState* s, const Config* c) {
    for (int l = 0; l < c->n_layer; l++) {
        free(s->state[l]); free(s->conv_cache[l]); free(s->k_cache[l]); free(s->v_cache[l]);
    }
    free(s->lower_bound); free(s->lower_softmax);
    LayerActs* A = &s->acts;
    float* bufs[] = {A->ln1, A->q, A->k, A->v, A->a, A->z, A->o, A->o_rstd, A->o_gated, A->gk, A->f, A->q_lin,
                     A->k_lin, A->v_lin, A->q_rinv, A->k_rinv, A->beta, A->gate_lin, A->att_out, A->mixer, A->ln2,
                     A->mlp, A->gk1, A->ln1_rstd, A->ln2_rstd, A->mlp_gate, A->mlp_up, A->mlp_h};
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
            maxv = p[s] > maxv ? p[s] : maxv; // fmaxf's value, no libm call
        }
        for (int s = 0; s <= pos; s++) { p[s] = exp_fast(p[s] - maxv); sum += p[s]; }
        for (int i = 0; i < D; i++) out[h * D + i] = 0.0f;
        for (int s = 0; s <= pos; s++) {
            const float* vs = vc + ((size_t)s * Hkv + h / group) * D;
            for (int i = 0; i < D; i++) out[h * D + i] += p[s] / sum * vs[i];
        }
    }
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

// Feeds token at position pos (0-based, consecutive from 0); leaves the next-token logits in s->logits (V).
void decode_step(Model* m, DecodeState* s, int token, int pos) {
    const Config* c = &m->config;
    int d = c->d_model;
    if (pos >= s->max_T) fail("generation past the KV cache length %d", s->max_T);
    if (token < 0 || token >= c->vocab_size) fail("token %d outside the vocabulary (%d)", token, c->vocab_size);
    LayerActs* A = &s->acts;
    if (pos == 0 && s->lower_bound) // they depend on the weights only
        lower_bounds_forward(s->lower_bound, s->lower_softmax, m->w.lower_bounds, c->n_layer, d);
    memcpy(s->x, m->w.embed + (size_t)token * d, d * sizeof(float));
    for (int l = 0; l < c->n_layer; l++) {
        float* const* W = m->w.layer[l];
        rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, W[W_ATTN_NORM], 1, d, c->norm_eps);
        decode_mixer(m, s, l, pos);
        for (int i = 0; i < d; i++) s->x[i] += A->mixer[i];
        rmsnorm_forward(A->ln2, A->ln2_rstd, s->x, W[W_MLP_NORM], 1, d, c->norm_eps);
        mlp_forward(A->mlp, A, W, c, 1);
        for (int i = 0; i < d; i++) s->x[i] += A->mlp[i];
    }
    rmsnorm_forward(A->ln1, A->ln1_rstd, s->x, m->w.norm, 1, d, c->norm_eps);
    matmul_forward(s->logits, A->ln1, m->w.lm_head, NULL, 1, d, c->vocab_size);
}

// The index of the largest of x[0..n) (the first, on ties).

// ----------------------------------------------------------------------------
// checkpoints: model_<s>.bin, state_<s>.bin, then the marker DONE_<s> (model.h: the files and the
// checkpoint directory's rules)

// Saves the checkpoint of step s->step into dir and prunes this run's older ones (keep 0: none).
void save_checkpoint(const char* dir, const Model* m, const TrainState* s, int keep, uint64_t run_id) {
    char path[PATH_CAP];
    const char* bad = params_check(m->params, m->num_params);
    if (bad) fail("refusing to save a checkpoint of step %d: %s", s->step, bad);
    ckpt_path(path, sizeof(path), dir, "model", s->step);
    checkpoint_write(path, &m->config, m->params, m->num_params);
    ckpt_path(path, sizeof(path), dir, "state", s->step);
    state_write(path, &m->config, m->adam_m, m->adam_v, m->num_params, s);
    marker_write(dir, s->step, run_id);
    ckpt_prune(dir, keep, run_id);
}

// Reads the parameters of the model file at path into m (built with the file's config).
void load_model_params(Model* m, const char* path) { checkpoint_read_params(path, &m->config, m->params, m->num_params); }

// Reads the checkpoint of `step` in dir into m (built with the checkpoint's config) and *s.
void load_checkpoint(const char* dir, int step, Model* m, TrainState* s) {
    char path[PATH_CAP];
    ckpt_path(path, sizeof(path), dir, "model", step);
    checkpoint_read_params(path, &m->config, m->params, m->num_params);
    ckpt_path(path, sizeof(path), dir, "state", step);
    state_read(path, &m->config, m->adam_m, m->adam_v, m->num_params, s);
    if (s->step != step) fail("'%s' is for step %d, its model file for step %d", path, s->step, step);
}

// ----------------------------------------------------------------------------
// main: the training program

// How many scored targets (B*T,) are the argmax of their row of probs (B*T, V); *scored counts them.
long argmax_hits(const float* probs, const int* targets, int N, int V, long* scored) {
    long hits = 0, count = 0;
    #pragma omp parallel for reduction(+ : hits, count)
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        hits += argmax(probs + (size_t)n * V, V) == targets[n];
        count++;
    }
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
            hits += argmax_hits(m->logits, val->targets, N, m->config.vocab_size, &count);
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
        int next = sample_token(s.logits, m->config.vocab_size, temperature, top_k, rng);
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
    double per_token = (now_seconds() - t0) / n;
    decode_free(&s, &m->config);
    return per_token;
}

// A copy of the logits of the last forward pass, (N, V) for N = B*T rows (malloc'd).
float* logits_to_host(const Model* m, int N) {
    size_t n = (size_t)N * m->config.vocab_size;
    float* host = (float*)malloc_check(n * sizeof(float));
    memcpy(host, m->logits, n * sizeof(float));
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
    run_flags_parse(&rf, argc, argv, "Trains a GLA / softmax-attention hybrid language model on the CPU.");

    // everything that could fail at the end of the run is checked before step 0
    Tokenizer tok;
    tokenizer_load(&tok, rf.tok_path);
    int* prompt_ids = NULL; // the samples' prompt must encode (an MQAR tokenizer knows only its symbols)
    tokenizer_encode(&tok, rf.prompt, &prompt_ids);
    free(prompt_ids);
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
    // parameters, gradients, two AdamW moments and the activations, refused before any is touched
    double MiB = 1.0 / 1048576.0;
    size_t act_floats = model_count_acts(&model, B, T);
    double need = (model.num_params * 16.0 + act_floats * 4.0) * MiB;
    double ram = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) * MiB;
    if (ram > 0 && need > 0.9 * ram)
        fail("this run needs about %.0f MiB but the machine has %.0f MiB: reduce -b, -T or the model", need, ram);
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
    // model.h's estimate, shared with train_gla.cu: each step line prints the GFLOP/s it reached
    double step_flops = flops_per_token(&cfg, T, model.chunk_size) * B * T;
    printf("FLOPs per token: %.3g (forward + backward, chunk %d); %.3g per step\n", step_flops / (B * T),
           model.chunk_size, step_flops);
    printf("memory: params %.1f MiB, grads %.1f MiB, AdamW %.1f MiB, activations %.1f MiB (B=%d T=%d), total %.1f MiB\n",
           model.num_params * 4 * MiB, model.num_params * 4 * MiB, model.num_params * 8 * MiB, act_floats * 4 * MiB, B,
           T, need);
    model_alloc_acts(&model, B, T);
    printf("threads: %d\n", max_threads());
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
        double dt = now_seconds() - t0;
        step_time = dt > step_time ? dt : 0.5 * (step_time + dt); // the slow steps count: a bound, not an average
        mean_step = mean_step > 0 ? 0.9 * mean_step + 0.1 * dt : dt;
        char eta[32];
        printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | %.1f GFLOP/s | ETA %s\n",
               step + 1, rf.steps, model.loss, step_lr, norm, dt * 1e3, B * T / dt, step_flops / dt * 1e-9,
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
    return stop_signal ? 128 + stop_signal : 0;
}
#endif // TESTING
