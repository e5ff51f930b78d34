/*
 * check_model.cu — the CUDA trainer (train_gla.cu) against the CPU program (train_gla.c) at tiny, odd
 * shapes, written to run on the CPU emulation (dev/cuda/emu/run.sh check), where a shape costs seconds
 * rather than milliseconds. It also builds with nvcc and runs on a GPU unchanged.
 *
 *   1. kernels at odd shapes (sizes no multiple of a tile, warp or chunk): matmul, rmsnorm, attention,
 *      the GLA, HGRN and delta-rule chunk cores, forward and backward. Outputs a function overwrites
 *      start as NaN on the GPU side (cudaMalloc's fill here), outputs it adds into (+=) start from the
 *      same random values on both sides.
 *   2. whole models, every mixer pure and in a hybrid with attention, d = 64 and d = 48 (heads of 12,
 *      16, 20, 24 wide), B = 2, T = 37, chunk 16 (a partial last chunk): every layer's mixer output,
 *      logits, loss, every parameter's gradient, grad_norm, one AdamW step; then incremental decoding
 *      (decode_step, B = 1) against the CPU's forward logits.
 * Prints the relative RMS error ‖cpu − gpu‖ / ‖cpu‖ of every tensor; ends with "N passed, N failed".
 * Tolerances as test_gla.cu: 1e-5 forward (sums in another order), 1e-4 gradients and after AdamW.
 *   usage: check_model [filter]   (runs only the models whose pattern contains `filter`)
 */
#define TESTING
#include "model.h"
#include <cuda_runtime.h>
#include <cublas_v2.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stddef.h>
#include <time.h>
#include <vector>
namespace gpu {
#include "train_gla.cu"
}
#pragma nv_diag_suppress 1675
#define restrict __restrict__
namespace cpu {
#include "train_gla.c"
}
#undef restrict
#pragma nv_diag_default 1675
using gpu::cuda_check_at;

#define TOL_FWD 1e-5
#define TOL_GRAD 1e-4

static uint64_t rng = 7;

// check_close's twin (model.h) that also counts the non-finite elements and returns the error
static double check(const char* what, const float* ref, const float* x, size_t n, double tol) {
    double e = rel_rms(ref, x, n);
    int ok = e <= tol && isfinite(e);
    size_t nan = 0;
    for (size_t i = 0; i < n; i++) nan += !isfinite(x[i]);
    printf("%s  %-64s rel RMS %.2e (tol %.0e)", ok ? "ok  " : "FAIL", what, e, tol);
    if (nan) printf("  %zu of %zu not finite", nan, n);
    printf("\n");
    if (ok) passed++; else failed++;
    return e;
}
static void sync(const char* after) {
    cudaError_t err = cudaDeviceSynchronize();
    if (err == cudaSuccess) err = cudaGetLastError();
    if (err != cudaSuccess) {
        printf("FAIL  CUDA error after %s: %s\n%d passed, %d failed (stopped)\n", after, cudaGetErrorString(err), passed, failed + 1);
        exit(EXIT_FAILURE);
    }
}

// -- buffers: a host copy (the CPU's) and a device copy (the GPU's) of one tensor
struct Pair { float* h; float* d; size_t n; };
static std::vector<void*> host_bufs, dev_bufs;
static float* host_alloc(size_t n) { float* p = (float*)calloc(n ? n : 1, 4); host_bufs.push_back(p); return p; }
static float* dev_alloc(size_t n) { float* p; cuda_check(cudaMalloc((void**)&p, (n ? n : 1) * 4)); dev_bufs.push_back(p); return p; }
static void release(void) {
    for (void* p : host_bufs) free(p);
    for (void* p : dev_bufs) cuda_check(cudaFree(p));
    host_bufs.clear();
    dev_bufs.clear();
}
static float* fetch(const float* d, size_t n) {
    float* h = host_alloc(n);
    cuda_check(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost));
    return h;
}
// the same values on both sides: inputs, and outputs added into
static Pair randn(size_t n, float std) {
    Pair p = {host_alloc(n), dev_alloc(n), n};
    for (size_t i = 0; i < n; i++) p.h[i] = std * random_normal(&rng);
    cuda_check(cudaMemcpy(p.d, p.h, n * 4, cudaMemcpyHostToDevice));
    return p;
}
// an output the function overwrites: 0 on the CPU, NaN on the GPU (an element never written shows)
static Pair out(size_t n) {
    Pair p = {host_alloc(n), dev_alloc(n), n};
    cuda_check(cudaMemset(p.d, 0xff, n * 4));
    return p;
}
static void upload(Pair p) { cuda_check(cudaMemcpy(p.d, p.h, p.n * 4, cudaMemcpyHostToDevice)); }
static void cmp(const char* what, Pair p, double tol) { sync(what); check(what, p.h, fetch(p.d, p.n), p.n, tol); }
// log-decays in (−3, 0): log σ(x)
static Pair loggates(size_t n) {
    Pair p = randn(n, 1.5f);
    for (size_t i = 0; i < n; i++) p.h[i] = fminf(p.h[i], 0.0f) - log1pf(expf(-fabsf(p.h[i])));
    upload(p);
    return p;
}
static void l2rows(Pair p, int D) {
    for (size_t r = 0; r < p.n / D; r++) {
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)p.h[r * D + i] * p.h[r * D + i];
        for (int i = 0; i < D; i++) p.h[r * D + i] /= (float)sqrt(s);
    }
    upload(p);
}

// ----------------------------------------------------------------------------
// 1. kernels at odd shapes

static void kernels(void) {
    char w[160];
    {   // matmul with bias, N = 37 rows, C = 24, OC = 40
        int N = 37, C = 24, OC = 40;
        Pair x = randn((size_t)N * C, 1), W = randn((size_t)OC * C, 0.2f), b = randn(OC, 0.1f), y = out((size_t)N * OC);
        cpu::matmul_forward(y.h, x.h, W.h, b.h, N, C, OC);
        gpu::matmul_forward(y.d, x.d, W.d, b.d, N, C, OC);
        cmp("matmul_forward N=37 C=24 OC=40", y, TOL_FWD);
        Pair dy = randn((size_t)N * OC, 1), dx = randn((size_t)N * C, 1), dW = randn((size_t)OC * C, 1), db = randn(OC, 1);
        cpu::matmul_backward(dx.h, dW.h, db.h, dy.h, x.h, W.h, N, C, OC);
        gpu::matmul_backward(dx.d, dW.d, db.d, dy.d, x.d, W.d, N, C, OC);
        cmp("matmul_backward dinp (+=)", dx, TOL_FWD);
        cmp("matmul_backward dweight (+=)", dW, TOL_FWD);
        cmp("matmul_backward dbias (+=)", db, TOL_FWD);
        release();
    }
    {   // rmsnorm, N = 37 (not a multiple of the 8 rows per block), C = 40
        int N = 37, C = 40;
        Pair x = randn((size_t)N * C, 1), g = randn(C, 1), y = out((size_t)N * C), r = out(N);
        cpu::rmsnorm_forward(y.h, r.h, x.h, g.h, N, C, 1e-6f);
        gpu::rmsnorm_forward(y.d, r.d, x.d, g.d, N, C, 1e-6f);
        cmp("rmsnorm_forward out", y, TOL_FWD);
        cmp("rmsnorm_forward rstd", r, TOL_FWD);
        Pair dy = randn((size_t)N * C, 1), dx = randn((size_t)N * C, 1), dg = randn(C, 1);
        cpu::rmsnorm_backward(dx.h, dg.h, dy.h, x.h, g.h, r.h, N, C);
        gpu::rmsnorm_backward(dx.d, dg.d, dy.d, x.d, g.d, r.d, N, C);
        cmp("rmsnorm_backward dinp (+=)", dx, TOL_FWD);
        cmp("rmsnorm_backward dweight (+=)", dg, TOL_FWD);
        release();
    }
    {   // attention, GQA 6 heads over 2, D = 12, T = 37
        int B = 2, T = 37, H = 6, Hkv = 2, D = 12;
        size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
        Pair q = randn(nq, 1), k = randn(nk, 1), v = randn(nk, 1), o = out(nq);
        float* att_h = host_alloc((size_t)B * H * T * T);
        float* att_d = dev_alloc((size_t)B * H * T * T);
        cpu::attention_forward(o.h, att_h, q.h, k.h, v.h, B, T, H, Hkv, D);
        gpu::attention_forward(o.d, att_d, q.d, k.d, v.d, B, T, H, Hkv, D);
        cmp("attention_forward B=2 T=37 H=6 Hkv=2 D=12", o, TOL_FWD);
        Pair dout = randn(nq, 1), dq = randn(nq, 1), dk = randn(nk, 1), dv = randn(nk, 1);
        cpu::attention_backward(dq.h, dk.h, dv.h, dout.h, att_h, q.h, k.h, v.h, B, T, H, Hkv, D);
        gpu::attention_backward(dq.d, dk.d, dv.d, dout.d, att_d, q.d, k.d, v.d, B, T, H, Hkv, D);
        cmp("attention_backward dq (+=)", dq, TOL_FWD);
        cmp("attention_backward dk (+=)", dk, TOL_FWD);
        cmp("attention_backward dv (+=)", dv, TOL_FWD);
        release();
    }
    // GLA chunk core: K, V no multiple of the tiles, T = 37 with chunks of 16 and 5
    int gla_shapes[][6] = {{2, 37, 2, 12, 20, 16}, {1, 37, 3, 20, 12, 5}, {1, 40, 1, 70, 33, 16}};
    for (auto& s : gla_shapes) {
        int B = s[0], T = s[1], H = s[2], K = s[3], V = s[4], C = s[5], NC = (T + C - 1) / C;
        size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ns = (size_t)B * H * NC * K * V;
        float scale = 1.0f / sqrtf((float)K);
        Pair q = randn(nk, 1), k = randn(nk, 1), v = randn(nv, 1), a = loggates(nk), o = out(nv), st = out(ns);
        cpu::gla_chunk_forward(o.h, st.h, q.h, k.h, v.h, a.h, B, T, H, K, V, C, scale);
        gpu::gla_chunk_forward(o.d, st.d, q.d, k.d, v.d, a.d, B, T, H, K, V, C, scale);
        snprintf(w, sizeof(w), "gla_chunk_forward B=%d T=%d H=%d K=%d V=%d C=%d: o", B, T, H, K, V, C);
        cmp(w, o, TOL_FWD);
        cmp("gla_chunk_forward states", st, TOL_FWD);
        Pair dout = randn(nv, 1), dq = out(nk), dk = out(nk), dv = out(nv), da = out(nk);
        cpu::gla_chunk_backward(dq.h, dk.h, dv.h, da.h, dout.h, st.h, q.h, k.h, v.h, a.h, B, T, H, K, V, C, scale);
        gpu::gla_chunk_backward(dq.d, dk.d, dv.d, da.d, dout.d, st.d, q.d, k.d, v.d, a.d, B, T, H, K, V, C, scale);
        cmp("gla_chunk_backward dq", dq, TOL_GRAD);
        cmp("gla_chunk_backward dk", dk, TOL_GRAD);
        cmp("gla_chunk_backward dv", dv, TOL_GRAD);
        cmp("gla_chunk_backward da", da, TOL_GRAD);
        release();
    }
    // HGRN chunk core: D = 70 (not a multiple of the 256-thread blocks), chunk 16 over T = 37
    {
        int B = 2, T = 37, D = 70, C = 16;
        size_t n = (size_t)B * T * D;
        Pair x = randn(n, 1), a = loggates(n), h = out(n);
        cpu::hgrn_chunk_forward(h.h, x.h, a.h, B, T, D, C);
        gpu::hgrn_chunk_forward(h.d, x.d, a.d, B, T, D, C);
        cmp("hgrn_chunk_forward B=2 T=37 D=70 C=16", h, TOL_FWD);
        Pair dout = randn(n, 1), dx = out(n), da = out(n);
        cpu::hgrn_chunk_backward(dx.h, da.h, dout.h, h.h, a.h, B, T, D, C);
        gpu::hgrn_chunk_backward(dx.d, da.d, dout.d, h.d, a.d, B, T, D, C);
        cmp("hgrn_chunk_backward dx", dx, TOL_GRAD);
        cmp("hgrn_chunk_backward da", da, TOL_GRAD);
        release();
    }
    // delta rule chunk core, gated and not: K, V odd, T = 37 with chunks of 16 and 5
    int delta_shapes[][7] = {{2, 37, 2, 20, 24, 16, 1}, {1, 37, 3, 12, 40, 5, 0}, {1, 37, 1, 33, 17, 16, 1}};
    for (auto& s : delta_shapes) {
        int B = s[0], T = s[1], H = s[2], K = s[3], V = s[4], C = s[5], gated = s[6], NC = (T + C - 1) / C;
        size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, nr = (size_t)B * T * H, ns = (size_t)B * H * NC * K * V;
        float scale = 1.0f / sqrtf((float)K);
        Pair q = randn(nk, 1), k = randn(nk, 1), v = randn(nv, 1), beta = randn(nr, 1), g = loggates(nr);
        l2rows(q, K);
        l2rows(k, K);
        for (size_t i = 0; i < nr; i++) beta.h[i] = 1.0f / (1.0f + expf(-beta.h[i]));
        upload(beta);
        Pair o = out(nv), st = out(ns);
        cpu::delta_chunk_forward(o.h, st.h, q.h, k.h, v.h, beta.h, gated ? g.h : NULL, B, T, H, K, V, C, scale);
        gpu::delta_chunk_forward(o.d, st.d, q.d, k.d, v.d, beta.d, gated ? g.d : NULL, B, T, H, K, V, C, scale);
        snprintf(w, sizeof(w), "delta_chunk_forward B=%d T=%d H=%d K=%d V=%d C=%d gated=%d: o", B, T, H, K, V, C, gated);
        cmp(w, o, TOL_FWD);
        cmp("delta_chunk_forward states", st, TOL_FWD);
        Pair dout = randn(nv, 1), dq = out(nk), dk = out(nk), dv = out(nv), db = out(nr), dg = out(nr);
        cpu::delta_chunk_backward(dq.h, dk.h, dv.h, db.h, gated ? dg.h : NULL, dout.h, st.h, q.h, k.h, v.h, beta.h,
                                  gated ? g.h : NULL, B, T, H, K, V, C, scale);
        gpu::delta_chunk_backward(dq.d, dk.d, dv.d, db.d, gated ? dg.d : NULL, dout.d, st.d, q.d, k.d, v.d, beta.d,
                                  gated ? g.d : NULL, B, T, H, K, V, C, scale);
        cmp("delta_chunk_backward dq", dq, TOL_GRAD);
        cmp("delta_chunk_backward dk", dk, TOL_GRAD);
        cmp("delta_chunk_backward dv", dv, TOL_GRAD);
        cmp("delta_chunk_backward dbeta", db, TOL_GRAD);
        if (gated) cmp("delta_chunk_backward dg", dg, TOL_GRAD);
        release();
    }
}

// ----------------------------------------------------------------------------
// 2. whole models

// width d: GLA 2 heads (K = d/4, V = d/2), attention 4 heads over 2 (GQA), HGRN width d, HGRN2 one
// head, RetNet 4 heads, DeltaNet 2 heads, GDN 3 heads of d/3.2 rounded to even (V = 2K), convs of 4
static Config config(const char* pattern, int n_layer, int d, int tie) {
    Config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 256;
    c.d_model = d;
    c.n_layer = n_layer;
    c.mlp_hidden = 2 * d + 8;
    c.tie_embeddings = tie;
    c.gla_heads = 2;
    c.gla_dk = d / 2;
    c.gla_dv = d;
    c.gla_gate_rank = 8;
    c.gla_gate_normalizer = 16;
    c.attn_heads = 4;
    c.attn_kv_heads = 2;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-6f;
    c.hgrn_dim = d;
    c.hgrn2_heads = 1;
    c.retnet_heads = 4;
    c.deltanet_heads = 2;
    c.gdn_heads = 3;
    c.gdn_head_dim = d == 64 ? 20 : 16;
    c.gdn_expand_v = 2;
    c.conv_size = 4;
    c.use_lower_bound = 1;
    const char* bad = parse_pattern(pattern, n_layer, c.pattern);
    if (bad) fail("pattern '%s': %s", pattern, bad);
    bad = validate_config(&c);
    if (bad) fail("config '%s' d=%d: %s", pattern, d, bad);
    return c;
}

// parameters as test_gla.cu's: matrices N(0, std²), vectors 1 + N(0, 0.2²), A_log, dt_bias in range
static void randomize(float* params, const ParamSpec* specs, int n, float std) {
    for (int i = 0; i < n; i++) {
        const ParamSpec* p = &specs[i];
        int slot = p->layer >= 0 ? p->slot : -1;
        for (size_t j = 0; j < p->numel; j++) {
            float* w = &params[p->offset + j];
            if (slot == W_DELTA_A_LOG) *w = logf(0.5f + 1.5f * random_f32(&rng));
            else if (slot == W_DELTA_DT_BIAS) *w = 0.5f * random_normal(&rng);
            else *w = p->ndim == 2 ? std * random_normal(&rng) : 1.0f + 0.2f * random_normal(&rng);
        }
    }
}

static void model(const char* pattern, int n_layer, int d, int tie) {
    int B = 2, T = 37, N = B * T, chunk = 16;
    Config c = config(pattern, n_layer, d, tie);
    cpu::Model cm;
    gpu::Model gm;
    cpu::model_build(&cm, &c);
    gpu::model_build(&gm, &c);
    if (cm.num_params != gm.num_params) fail("parameter counts differ: %zu, %zu", cm.num_params, gm.num_params);
    cm.chunk_size = gm.chunk_size = chunk;
    randomize(cm.params, cm.specs, cm.num_specs, 0.1f);
    cuda_check(cudaMemcpy(gm.params, cm.params, cm.num_params * 4, cudaMemcpyHostToDevice));
    char pat[512], w[600];
    format_pattern(&c, pat, sizeof(pat));
    printf("-- %s (L=%d d=%d tie=%d) B=%d T=%d chunk %d, %zu parameters\n", pat, n_layer, d, tie, B, T, chunk, cm.num_params);
    fflush(stdout);
    int* in = (int*)host_alloc(N);
    int* tg = (int*)host_alloc(N);
    for (int i = 0; i < N; i++) {
        in[i] = (int)(random_u32(&rng) % c.vocab_size);
        tg[i] = i % 7 == 3 ? IGNORE_INDEX : (int)(random_u32(&rng) % c.vocab_size);
    }
    size_t nd = (size_t)N * d, nl = (size_t)N * c.vocab_size;
    cpu::model_forward(&cm, in, tg, B, T);
    gpu::model_forward(&gm, in, tg, B, T);
    sync("model_forward");
    for (int l = 0; l < n_layer; l++) {
        snprintf(w, sizeof(w), "%s d=%d layer %d (%s) mixer", pattern, d, l, MIXER_NAMES[c.pattern[l]]);
        check(w, cm.acts[l].mixer, fetch(gm.acts[l].mixer, nd), nd, TOL_FWD);
    }
    snprintf(w, sizeof(w), "%s d=%d loss (CPU %.6f GPU %.6f)", pattern, d, cm.loss, gm.loss);
    check(w, &cm.loss, &gm.loss, 1, TOL_FWD);
    if (cm.n_valid != gm.n_valid) { printf("FAIL  n_valid CPU %d GPU %d\n", cm.n_valid, gm.n_valid); failed++; }
    // the logits' buffer holds the probabilities after the loss on both sides: compare them there
    snprintf(w, sizeof(w), "%s d=%d logits (after crossentropy_forward)", pattern, d);
    check(w, cm.logits, fetch(gm.logits, nl), nl, TOL_FWD);
    cpu::model_backward(&cm, in, tg);
    gpu::model_backward(&gm, in, tg);
    sync("model_backward");
    float* g = fetch(gm.grads, gm.num_params);
    double worst = 0;
    const char* worst_name = "";
    int bad = 0;
    for (int i = 0; i < cm.num_specs; i++) {
        const ParamSpec* p = &cm.specs[i];
        double e = rel_rms(cm.grads + p->offset, g + p->offset, p->numel);
        if (!(e <= TOL_GRAD)) {   // print the failures; the rest as one line
            snprintf(w, sizeof(w), "%s d=%d grad %s", pattern, d, p->name);
            check(w, cm.grads + p->offset, g + p->offset, p->numel, TOL_GRAD);
            bad++;
        }
        if (e > worst || !isfinite(e)) { worst = e; worst_name = p->name; }
    }
    if (!bad) {
        snprintf(w, sizeof(w), "%s d=%d all %d gradients (worst: %s)", pattern, d, cm.num_specs, worst_name);
        printf("ok    %-64s rel RMS %.2e (tol %.0e)\n", w, worst, TOL_GRAD);   // one line for them all
        passed++;
    }
    float ncpu = cpu::grad_norm(&cm), ngpu = gpu::grad_norm(&gm);
    snprintf(w, sizeof(w), "%s d=%d grad_norm (CPU %.6g GPU %.6g)", pattern, d, ncpu, ngpu);
    check(w, &ncpu, &ngpu, 1, TOL_FWD);
    TrainHyper h = {1e-4f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 0, 100};   // model.h's
    cpu::adamw_update(&cm, &h, h.lr, 1, ncpu > 1.0f ? 1.0f / ncpu : 1.0f);
    gpu::adamw_update(&gm, &h, h.lr, 1, ngpu > 1.0f ? 1.0f / ngpu : 1.0f);
    sync("adamw_update");
    snprintf(w, sizeof(w), "%s d=%d parameters after one AdamW step", pattern, d);
    check(w, cm.params, fetch(gm.params, cm.num_params), cm.num_params, TOL_GRAD);

    // incremental decoding of row 0 on the GPU == the CPU's forward logits of row 0 (new parameters)
    int Td = 21;
    cpu::Model cd;   // activations are sized for one (B, T): a second CPU model for B = 1
    cpu::model_build(&cd, &c);
    cd.chunk_size = chunk;
    memcpy(cd.params, cm.params, cm.num_params * 4);
    cpu::model_forward(&cd, in, NULL, 1, Td);
    gpu::DecodeState s;
    gpu::decode_init(&s, &c, Td);
    float* step = host_alloc((size_t)Td * c.vocab_size);
    for (int t = 0; t < Td; t++) {
        gpu::decode_step(&gm, &s, in[t], t);
        memcpy(step + (size_t)t * c.vocab_size, s.logits_host, c.vocab_size * 4);
    }
    sync("decode_step");
    snprintf(w, sizeof(w), "%s d=%d GPU decode_step logits == CPU forward (T=%d)", pattern, d, Td);
    check(w, cd.logits, step, (size_t)Td * c.vocab_size, TOL_GRAD);
    gpu::decode_free(&s, &c);
    cpu::model_free(&cd);
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release();
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char* filter = argc > 1 ? argv[1] : NULL;
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!filter) {
        printf("== 1. kernels at odd shapes\n");
        kernels();
    }
    printf("== 2. whole models, GPU program against CPU program\n");
    const char* pure[] = {"gla:pure", "retnet:pure", "hgrn2:pure", "hgrn:pure", "deltanet:pure", "gated_deltanet:pure", "attn"};
    const char* hybrid[] = {"gla,attn", "retnet,attn", "hgrn2,attn", "hgrn,attn", "deltanet,attn", "gated_deltanet,attn"};
    for (int d : {64, 48}) {
        for (int i = 0; i < 7; i++)
            if (!filter || strstr(pure[i], filter)) model(pure[i], 2, d, i % 2);
        for (int i = 0; i < 6; i++)
            if (!filter || strstr(hybrid[i], filter)) model(hybrid[i], 2, d, (i + 1) % 2);
    }
    if (!filter || strstr("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", filter))
        model("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", 7, 64, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("(%.1f s)\n", (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec));
#ifdef CUDA_EMULATED
    emu_print_stats(stdout);
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? EXIT_FAILURE : 0;
}
