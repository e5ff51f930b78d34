/*
 * matmul.h -- portable, cache-blocked, OpenMP-parallel float32 matmul
 * (forward + backward of a torch-style Linear layer) for a CPU trainer.
 *
 * Plain C99, no intrinsics: the inner kernel is written so that gcc/clang
 * auto-vectorise it (SIMD width chosen per ISA below).  Everything funnels
 * into one GEMM driver, mm_gemm(), that computes
 *
 *     C (M,Nc) (+)= A (M,K) @ B (K,Nc)
 *
 * where A, B and C are addressed through (row stride, column stride) pairs,
 * so the three products of a Linear layer are just different stride choices:
 *
 *     forward   out     = inp  @ W^T   A=inp (N,C)     B=W^T (C,OC)  K=C
 *     backward  dinp   += dout @ W     A=dout (N,OC)   B=W (OC,C)    K=OC
 *     backward  dweight+= dout^T @ inp A=dout^T(OC,N)  B=inp (N,C)   K=N
 *
 * Blocking (classic Goto/BLIS scheme, loops from outside in):
 *
 *   jc : columns of C in blocks of MM_NC            (bounds the packed-B buffer)
 *   pc : the K dimension in blocks of <= MM_KC
 *        -> the B block (kc x nc) is packed into "strips" of MM_NR columns,
 *           stored k-major: strip[k*MM_NR + j].  A strip (kc*MM_NR floats)
 *           is what stays hot in L1/L2 while the kernel sweeps rows.
 *   ic : rows of C in blocks of MM_MC (per thread)
 *        -> the A block (mc x kc) is packed into "panels" of MM_MR rows,
 *           stored k-major: panel[k*MM_MR + i]  (L2 resident).
 *   jr : strips of the packed B block
 *   ir : panels of the packed A block
 *        -> micro-kernel: an MM_MR x MM_NR tile of C is accumulated in
 *           registers over the kc loop: for each k, MM_NR/SIMD vector loads
 *           of B, MM_MR broadcasts of A, MM_MR*MM_NR/SIMD FMAs.
 *
 * Packing zero-pads ragged edges, so the kernel always runs full MR x NR
 * tiles; only the final store is clipped.  Any M, Nc, K >= 1 work.
 *
 * Threading / determinism: threads only split the *output* tile space (rows
 * of panels x columns of strips); each element of C is always summed in the
 * same order (k ascending inside a K block, K blocks ascending), regardless
 * of thread count or schedule.  Block sizes do not depend on the thread
 * count, so results are bitwise identical for any OMP_NUM_THREADS and also
 * for builds without OpenMP.
 *
 * Scratch: one static packed-B buffer (MM_KC*MM_NC floats, 1 MiB) plus a
 * per-thread packed-A buffer on the stack (MM_MC*MM_KC floats, <= 96 KiB).
 * Nothing is malloc'ed.  Because of the static buffer the functions are not
 * re-entrant: do not call them concurrently from several threads.
 */
#ifndef MATMUL_H
#define MATMUL_H

#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------ */
/* Tuning parameters.  MR x NR is the register tile of the micro-kernel:    */
/* MR*NR/SIMD accumulators + NR/SIMD B vectors + 1 broadcast must fit in     */
/* the vector register file.                                                 */
#ifndef MM_MR                       /* (all of these can be overridden with -D) */
#if defined(__AVX512F__)            /* 32 x 512-bit regs: 24 acc + 4 B      */
#define MM_MR 6
#define MM_NR 64
#elif defined(__AVX__)              /* 16 x 256-bit regs: 12 acc + 2 B      */
#define MM_MR 6
#define MM_NR 16
#elif defined(__aarch64__)          /* 32 x 128-bit regs: 24 acc + 4 B      */
#define MM_MR 6
#define MM_NR 16
#else                               /* SSE2 / generic: 16 x 128-bit regs    */
#define MM_MR 4
#define MM_NR 8
#endif
#endif
#ifndef MM_KC
#define MM_KC 256                   /* K block: kc*NR floats of B per strip */
#endif
#ifndef MM_MC
#define MM_MC (16 * MM_MR)          /* rows of A packed per thread block    */
#endif
#ifndef MM_NC
#define MM_NC 1024                  /* columns of B packed per jc block     */
#endif
/* MM_MC and MM_NC rounded to whole panels / strips */
#define MM_MCP ((MM_MC + MM_MR - 1) / MM_MR)       /* panels per A block  */
#define MM_NCS ((MM_NC + MM_NR - 1) / MM_NR)       /* strips per B block  */

/* clang prefers 256-bit vectors on AVX-512 parts unless told otherwise;   */
/* ask for full-width vectors in the micro-kernel (gcc picks zmm itself).   */
#if defined(__clang__) && defined(__AVX512F__)
#define MM_PRAGMA_(x) _Pragma(#x)
#define MM_VECTORIZE MM_PRAGMA_(clang loop vectorize_width(16) interleave_count(1))
#define MM_KERNEL_ATTR __attribute__((min_vector_width(512)))
#else
#define MM_VECTORIZE
#define MM_KERNEL_ATTR
#endif

#define MM_MIN(a, b) ((a) < (b) ? (a) : (b))

static inline float* mm_align64(float* p) {
    return (float*)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                  */

/* Pack rows [0,mr) x cols [0,kc) of A (element (i,k) at a[i*rsa + k*csa])
 * into an MR-row panel laid out k-major: dst[k*MM_MR + i]; rows >= mr are 0. */
static void mm_pack_a(float* restrict dst, const float* restrict a,
                      ptrdiff_t rsa, ptrdiff_t csa, int mr, int kc) {
    if (csa == 1) {                     /* rows of A contiguous: transpose  */
        for (int i = 0; i < mr; i++) {
            const float* src = a + i * rsa;
            for (int k = 0; k < kc; k++) dst[k * MM_MR + i] = src[k];
        }
    } else {                            /* columns of A contiguous (rsa==1) */
        for (int k = 0; k < kc; k++) {
            const float* src = a + k * csa;
            for (int i = 0; i < mr; i++) dst[k * MM_MR + i] = src[i * rsa];
        }
    }
    for (int i = mr; i < MM_MR; i++)
        for (int k = 0; k < kc; k++) dst[k * MM_MR + i] = 0.0f;
}

/* Pack rows [0,kc) x cols [0,nr) of B (element (k,j) at b[k*rsb + j*csb])
 * into an NR-column strip laid out k-major: dst[k*MM_NR + j]; cols >= nr are 0. */
static void mm_pack_b(float* restrict dst, const float* restrict b,
                      ptrdiff_t rsb, ptrdiff_t csb, int kc, int nr) {
    if (csb == 1) {                     /* rows of B contiguous: plain copy */
        for (int k = 0; k < kc; k++) {
            const float* src = b + k * rsb;
            float* d = dst + k * MM_NR;
            for (int j = 0; j < nr; j++) d[j] = src[j];
            for (int j = nr; j < MM_NR; j++) d[j] = 0.0f;
        }
    } else {                            /* columns contiguous: transpose    */
        for (int j = 0; j < nr; j++) {
            const float* src = b + j * csb;
            for (int k = 0; k < kc; k++) dst[k * MM_NR + j] = src[k * rsb];
        }
        for (int k = 0; k < kc; k++)
            for (int j = nr; j < MM_NR; j++) dst[k * MM_NR + j] = 0.0f;
    }
}

/* ------------------------------------------------------------------------ */
/* Micro-kernel                                                             */

/* tile (MR,NR) = Apanel (MR,kc) @ Bstrip (kc,NR).  acc[][] has only
 * compile-time indices, so the compiler keeps it entirely in vector
 * registers; the loop over j vectorises, the loop over i is unrolled. */
MM_KERNEL_ATTR
static inline void mm_kernel(int kc, const float* restrict ap,
                             const float* restrict bp, float* restrict tile) {
    float acc[MM_MR][MM_NR];
    for (int i = 0; i < MM_MR; i++) {
        MM_VECTORIZE
        for (int j = 0; j < MM_NR; j++) acc[i][j] = 0.0f;
    }
    for (int k = 0; k < kc; k++) {
        const float* b = bp + k * MM_NR;
        const float* a = ap + k * MM_MR;
        for (int i = 0; i < MM_MR; i++) {
            const float ai = a[i];
            MM_VECTORIZE
            for (int j = 0; j < MM_NR; j++) acc[i][j] += ai * b[j];
        }
    }
    for (int i = 0; i < MM_MR; i++) {
        MM_VECTORIZE
        for (int j = 0; j < MM_NR; j++) tile[i * MM_NR + j] = acc[i][j];
    }
}

/* Write the valid (mr,nr) corner of a tile into C (element (i,j) at
 * c[i*rsc + j*csc]).  accumulate: C += tile.  Otherwise C = tile + bias,
 * with bias indexed by column (bias_col) or by row (bias_row), or none. */
static void mm_store(float* c, ptrdiff_t rsc, ptrdiff_t csc,
                     const float* restrict tile, int mr, int nr, int accumulate,
                     const float* bias_col, const float* bias_row) {
    for (int i = 0; i < mr; i++) {
        const float* t = tile + i * MM_NR;
        float* ci = c + i * rsc;
        if (csc == 1) {
            if (accumulate)    for (int j = 0; j < nr; j++) ci[j] += t[j];
            else if (bias_col) for (int j = 0; j < nr; j++) ci[j] = t[j] + bias_col[j];
            else {
                const float bi = bias_row ? bias_row[i] : 0.0f;
                for (int j = 0; j < nr; j++) ci[j] = t[j] + bi;
            }
        } else {
            for (int j = 0; j < nr; j++) {
                float v = t[j];
                if (accumulate)    v += ci[j * csc];
                else if (bias_col) v += bias_col[j];
                else if (bias_row) v += bias_row[i];
                ci[j * csc] = v;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* GEMM driver                                                              */

static float mm_bpack_storage[MM_KC * MM_NCS * MM_NR + 16];

/* C (M,Nc) (+)= A (M,K) @ B (K,Nc), all float32, strided as described at
 * the top.  accumulate != 0: C += A@B.  accumulate == 0: C = A@B + bias,
 * where bias_col (length Nc) or bias_row (length M) may be given (or NULL). */
static void mm_gemm(int M, int Nc, int K,
                    const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                    const float* B, ptrdiff_t rsb, ptrdiff_t csb,
                    float* C, ptrdiff_t rsc, ptrdiff_t csc,
                    int accumulate, const float* bias_col, const float* bias_row) {
    float* bpack = mm_align64(mm_bpack_storage);
    /* split K into equal blocks of at most MM_KC (independent of threads) */
    const int nkb = (K + MM_KC - 1) / MM_KC;
    const int kcb = (K + nkb - 1) / nkb;

    #pragma omp parallel
    {
        int nth = 1, tid = 0;
#ifdef _OPENMP
        nth = omp_get_num_threads();
        tid = omp_get_thread_num();
#endif
        float apack_storage[MM_MCP * MM_MR * MM_KC + 16];
        float* apack = mm_align64(apack_storage);
        float tile[MM_MR * MM_NR];

        for (int jc = 0; jc < Nc; jc += MM_NCS * MM_NR) {
            const int nc = MM_MIN(MM_NCS * MM_NR, Nc - jc);
            const int nstrips = (nc + MM_NR - 1) / MM_NR;
            const int npanels = (M + MM_MR - 1) / MM_MR;

            /* Split the (panels x strips) tile grid over a tr x tc thread
             * grid, choosing the factorisation with the least work on the
             * busiest thread (ties: fewer column splits). */
            int tr = nth, tc = 1;
            {
                long best = -1;
                for (int c = 1; c <= nth; c++) {
                    if (nth % c) continue;
                    int r = nth / c;
                    long w = (long)((npanels + r - 1) / r) * ((nstrips + c - 1) / c);
                    if (best < 0 || w < best) { best = w; tr = r; tc = c; }
                }
            }
            const int my_r = tid / tc, my_c = tid % tc;
            const int p0 = (int)((long)npanels * my_r / tr);
            const int p1 = (int)((long)npanels * (my_r + 1) / tr);
            const int s0 = (int)((long)nstrips * my_c / tc);
            const int s1 = (int)((long)nstrips * (my_c + 1) / tc);

            for (int pc = 0; pc < K; pc += kcb) {
                const int kc = MM_MIN(kcb, K - pc);
                const int acc_mode = accumulate || pc > 0;

                /* pack the (kc x nc) block of B, strips shared by all threads */
                #pragma omp for schedule(static)
                for (int s = 0; s < nstrips; s++) {
                    const int j0 = jc + s * MM_NR;
                    mm_pack_b(bpack + (size_t)s * kc * MM_NR,
                              B + pc * rsb + j0 * csb, rsb, csb,
                              kc, MM_MIN(MM_NR, Nc - j0));
                }   /* implicit barrier: B block ready */

                for (int pb = p0; pb < p1; pb += MM_MCP) {
                    const int pe = MM_MIN(p1, pb + MM_MCP);
                    /* pack this thread's A block, one MR-row panel at a time */
                    for (int p = pb; p < pe; p++) {
                        const int i0 = p * MM_MR;
                        mm_pack_a(apack + (size_t)(p - pb) * kc * MM_MR,
                                  A + i0 * rsa + pc * csa, rsa, csa,
                                  MM_MIN(MM_MR, M - i0), kc);
                    }
                    for (int s = s0; s < s1; s++) {
                        const int j0 = jc + s * MM_NR;
                        const int nr = MM_MIN(MM_NR, Nc - j0);
                        const float* bs = bpack + (size_t)s * kc * MM_NR;
                        for (int p = pb; p < pe; p++) {
                            const int i0 = p * MM_MR;
                            mm_kernel(kc, apack + (size_t)(p - pb) * kc * MM_MR, bs, tile);
                            mm_store(C + i0 * rsc + j0 * csc, rsc, csc, tile,
                                     MM_MIN(MM_MR, M - i0), nr, acc_mode,
                                     (acc_mode || !bias_col) ? NULL : bias_col + j0,
                                     (acc_mode || !bias_row) ? NULL : bias_row + i0);
                        }
                    }
                }
                #pragma omp barrier   /* B block is overwritten next round */
            }
        }
    }
}

/* Decide whether computing the transposed product C^T = B^T A^T wastes less
 * work on zero padding (matters when Nc is much smaller than MM_NR), then run. */
static void mm_gemm_auto(int M, int Nc, int K,
                         const float* A, ptrdiff_t rsa, ptrdiff_t csa,
                         const float* B, ptrdiff_t rsb, ptrdiff_t csb,
                         float* C, ptrdiff_t rsc, ptrdiff_t csc,
                         int accumulate, const float* bias_col) {
    long pad_mr = (long)(M + MM_MR - 1) / MM_MR * MM_MR;
    long pad_nr = (long)(Nc + MM_NR - 1) / MM_NR * MM_NR;
    long work = pad_mr * pad_nr;
    long pad_mr_t = (long)(Nc + MM_MR - 1) / MM_MR * MM_MR;
    long pad_nr_t = (long)(M + MM_NR - 1) / MM_NR * MM_NR;
    long work_t = pad_mr_t * pad_nr_t;
    if (4 * work_t < 3 * work) {
        mm_gemm(Nc, M, K, B, csb, rsb, A, csa, rsa, C, csc, rsc,
                accumulate, NULL, bias_col);
    } else {
        mm_gemm(M, Nc, K, A, rsa, csa, B, rsb, csb, C, rsc, csc,
                accumulate, bias_col, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC)
// bias may be NULL.  out is overwritten.
void matmul_forward(float* out, const float* inp, const float* weight,
                    const float* bias, int N, int C, int OC) {
    /* A = inp: (i,k) at inp[i*C + k];  B = W^T: (k,j) at weight[j*C + k] */
    mm_gemm_auto(N, OC, C, inp, C, 1, weight, 1, C, out, OC, 1, 0, bias);
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
        mm_gemm_auto(N, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1, 1, NULL);
    }
    if (dweight) {
        /* A = dout^T: (o,n) at dout[n*OC + o];  B = inp: (n,c) at inp[n*C + c] */
        mm_gemm_auto(OC, C, N, dout, 1, OC, inp, C, 1, dweight, C, 1, 1, NULL);
    }
    if (dbias) {
        /* columns split into chunks of 16 across threads; each chunk sums
         * over n in order, so the result does not depend on threading. */
        const int nchunks = (OC + 15) / 16;
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
