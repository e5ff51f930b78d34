/*
 * test_gla.cu — checks train_gla.cu on the GPU against the PyTorch float64 reference dumps and against
 * its CPU twin: train_gla.c compiled beside it, the two in the namespaces gpu and cpu, so that
 * gpu::gla_chunk_forward and cpu::gla_chunk_forward are the two implementations of one function.
 *   1. reference dumps: activations, logits, loss, every gradient, 10 AdamW steps (the CPU suite's checks)
 *   2. every GPU function against its CPU twin at realistic shapes (T ≥ 256, widths 128–256, chunk
 *      lengths that leave a partial last chunk, log-gates down to −20): outputs the functions add into
 *      start from the same random values on both sides (checks +=), outputs they overwrite start as
 *      NaN on the GPU (checks that every element is written)
 *   3. chunkwise == recurrent on the GPU, for every linear core
 *   4. whole models, GPU against CPU: logits, loss, every gradient (every layer's _backward,
 *      attention's included), grad_norm, one AdamW step; the same init from the same seed
 *   5. incremental decoding == full forward on the GPU
 *   6. determinism: the same training step twice gives the same bits
 *   7. a GPU checkpoint read by the CPU program: the same parameters and moments bit for bit, then one
 *      CPU step == one GPU step
 * Ends with "N passed, N failed" and exits non-zero on any failure. Without a GPU it says so, runs
 * nothing, and exits 0 ("0 passed, 0 failed (no GPU: skipped)"), so that CI without a GPU can run it.
 *
 * Metric: relative RMS error ‖ref − x‖ / ‖ref‖ per tensor, printed. Tolerances:
 *   dumps (GPU fp32 against float64): the CPU suite's own, for the same reasons (test_gla.c):
 *     forward activations, logits, loss 1e-5; gradients 1e-4; 10 AdamW steps (losses, norms, params) 1e-4
 *   GPU fp32 against the CPU's fp32 (the same formulas; sums added in another order, expf against the
 *   CPU's exp_fast (≤ 2 ulp), fused multiply-adds):
 *     TOL_EXACT 0      pure copies and gathers (embedding lookup)
 *     TOL_ELEM  1e-6   elementwise maps (SwiGLU, gates, RoPE, AdamW): a few ulp per element, ~1e-7
 *     TOL_SUM   1e-5   anything with a reduction (norms, matmuls, softmax, recurrences, chunk forms):
 *                      rounding ε = 6e-8 grown as √n over sums of ≤ 10⁴ terms is ~1e-6; 10x margin
 *     TOL_GRAD  1e-4   backward passes of the linear cores at T ≥ 256 (a state gradient carried back
 *                      over hundreds of steps, through decays and, for the delta rule, through the
 *                      products of (I − β k kᵀ)) and whole-model gradients (a chain of every layer's
 *                      backward) and anything after an AdamW step (mhat/√vhat amplifies the rounding of
 *                      the smallest gradient entries): the CPU suite's gradient tolerance
 *     da under log-gates down to −20: measured against the size of the terms whose difference it is
 *                      (gla_gate_grad's suffix sums), 1e-5, as in the CPU suite's recurrent == chunkwise
 */
#define TESTING

// The two programs side by side, each in its own namespace: gpu::gla_chunk_forward and
// cpu::gla_chunk_forward are the twins, called with the same arguments. (The GPU program cannot stay
// in the global namespace: its static helpers share the CPU's names and take model.h's global types,
// e.g. gla_head_k(const Config*), so argument-dependent lookup would find both from inside cpu.)
// The system headers both include come first, outside the namespaces (their own #includes then find
// them included; model.h is guarded: a system header train_gla.cu comes to include must be added
// here too). C's `restrict` is C++'s __restrict__; nvcc's front end does not
// know `#pragma GCC unroll` (the host compiler, which acts on it, does).
#include "model.h"
#include <cuda_runtime.h>
#include <cublas_v2.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stddef.h>
#include <time.h>
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
using gpu::cuda_check_at;   // for train_gla.cu's cuda_check()

#define TOL_EXACT 0.0
#define TOL_ELEM 1e-6
#define TOL_SUM 1e-5
#define TOL_GRAD 1e-4


// Waits for the GPU and stops the run on an error (a kernel fault leaves the context unusable).
static void gpu_sync(const char* after) {
    cudaError_t err = cudaDeviceSynchronize();
    if (err == cudaSuccess) err = cudaGetLastError();
    if (err != cudaSuccess) {
        check(0, "CUDA error after %s: %s", after, cudaGetErrorString(err));
        printf("%d passed, %d failed (stopped at the CUDA error)\n", passed, failed);
        exit(EXIT_FAILURE);
    }
}

// ----------------------------------------------------------------------------
// buffers: host and device allocations live until release_all() at the end of each test

#define MAX_ALLOCS 4096
static void* host_allocs[MAX_ALLOCS];
static void* device_allocs[MAX_ALLOCS];
static int n_host_allocs, n_device_allocs;

static float* host_new(size_t n) {
    if (n_host_allocs == MAX_ALLOCS) fail("test_gla_cu: too many live host buffers");
    float* p = (float*)calloc_check(n, sizeof(float));
    host_allocs[n_host_allocs++] = p;
    return p;
}
static float* device_new(size_t n) {
    if (n_device_allocs == MAX_ALLOCS) fail("test_gla_cu: too many live device buffers");
    float* p;
    cuda_check(cudaMalloc((void**)&p, (n ? n : 1) * sizeof(float)));
    device_allocs[n_device_allocs++] = p;
    return p;
}
// token ids for the launchers: managed memory, which the GPU reads and the host launchers (that copy
// the ids back, as encoder_backward does) read too
static int* managed_ints(const int* h, size_t n) {
    if (n_device_allocs == MAX_ALLOCS) fail("test_gla_cu: too many live device buffers");
    int* p;
    cuda_check(cudaMallocManaged((void**)&p, (n ? n : 1) * sizeof(int)));
    memcpy(p, h, n * sizeof(int));
    device_allocs[n_device_allocs++] = p;
    return p;
}
static void release_all(void) {
    gpu_sync("the test's last launch");
    for (int i = 0; i < n_host_allocs; i++) free(host_allocs[i]);
    for (int i = 0; i < n_device_allocs; i++) cuda_check(cudaFree(device_allocs[i]));
    n_host_allocs = n_device_allocs = 0;
}

static void upload(float* d, const float* h, size_t n) { cuda_check(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice)); }
// n floats from p, wherever p lives (cudaMemcpyDefault: unified addressing tells host from device)
static float* fetch(const float* p, size_t n) {
    float* h = host_new(n);
    cuda_check(cudaMemcpy(h, p, n * sizeof(float), cudaMemcpyDefault));
    return h;
}

static uint64_t test_rng = 42;
static float* host_randn(size_t n, float std) {
    float* h = host_new(n);
    for (size_t i = 0; i < n; i++) h[i] = std * random_normal(&test_rng);
    return h;
}

// A tensor on both sides: h for the CPU twin, d for the GPU, n floats.
typedef struct { float* h; float* d; size_t n; } Pair;

static Pair pair_copy(const float* h, size_t n) {
    Pair p = {host_new(n), device_new(n), n};
    memcpy(p.h, h, n * sizeof(float));
    upload(p.d, p.h, n);
    return p;
}
// the same N(0, std²) values on both sides: inputs, and outputs the functions add into (+=)
static Pair pair_randn(size_t n, float std) { return pair_copy(host_randn(n, std), n); }
// an output the functions overwrite: zeros for the CPU, NaN on the GPU, so that an element the GPU
// does not write fails the comparison
static Pair pair_out(size_t n) {
    Pair p = {host_new(n), device_new(n), n};
    cuda_check(cudaMemset(p.d, 0xff, n * sizeof(float)));
    return p;
}
// compares the GPU's values of p with the CPU's
static void compare(const char* what, Pair p, double tol) {
    gpu_sync(what);
    check_close(what, p.h, fetch(p.d, p.n), p.n, tol);
}

// da of the GLA kernels under strong decay is the difference of suffix sums of q ⊙ dq and k ⊙ dk
// (gla_gate_grad), far smaller than those terms: its error is measured against their size,
// M_t = Σ_{s≥t} |q_s dq_s| + |k_s dk_s| per batch and channel (test_gla.c does the same).
static double da_error(const float* ref, const float* x, const float* q, const float* k, const float* dq,
                       const float* dk, int B, int T, int HK) {
    double err = 0.0, mag = 0.0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < HK; c++) {
            double m = 0.0;
            for (int t = T - 1; t >= 0; t--) {
                size_t r = ((size_t)b * T + t) * HK + c;
                m += fabs((double)q[r] * dq[r]) + fabs((double)k[r] * dk[r]);
                err += ((double)ref[r] - x[r]) * ((double)ref[r] - x[r]);
                mag += m * m;
            }
        }
    return mag > 0 ? sqrt(err / mag) : sqrt(err);
}
static void check_da(const char* what, const float* ref, const float* x, const float* q, const float* k,
                     const float* dq, const float* dk, int B, int T, int HK, double tol) {
    double e = da_error(ref, x, q, k, dq, dk, B, T, HK);
    check(e <= tol && isfinite(e), "%-58s err/terms %.2e (tol %.0e; rel RMS %.2e)", what, e, tol,
          rel_rms(ref, x, (size_t)B * T * HK));
}

// ----------------------------------------------------------------------------
// models: configs, random parameters, a GPU model holding a CPU model's parameters

// main's defaults scaled to width d: GLA 2 heads (K = d/4, V = d/2), attention 4 heads over 2 kv heads
// (GQA), HGRN width d, HGRN2 head dim 128, RetNet 4 heads, DeltaNet 2 heads, GDN 3 heads of 32 (V = 64),
// short convs of 4, lower bounds on; the byte vocabulary
static Config model_config(const char* pattern, int n_layer, int d, int tie) {
    Config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 256;
    c.d_model = d;
    c.n_layer = n_layer;
    c.mlp_hidden = default_mlp_hidden(d);
    c.tie_embeddings = tie;
    c.gla_heads = 2;
    c.gla_dk = d / 2;
    c.gla_dv = d;
    c.gla_gate_rank = 16;
    c.gla_gate_normalizer = 16;
    c.attn_heads = 4;
    c.attn_kv_heads = 2;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-6f;
    c.hgrn_dim = d;
    c.hgrn2_heads = d >= 256 ? d / 128 : 1;
    c.retnet_heads = 4;
    c.deltanet_heads = 2;
    c.gdn_heads = 3;
    c.gdn_head_dim = 32;
    c.gdn_expand_v = 2;
    c.conv_size = 4;
    c.use_lower_bound = 1;
    const char* bad = parse_pattern(pattern, n_layer, c.pattern);
    if (bad) fail("pattern '%s': %s", pattern, bad);
    bad = validate_config(&c);
    if (bad) fail("config for '%s': %s", pattern, bad);
    return c;
}

// Matrices N(0, std²), vectors 1 + 0.2 N(0,1); GDN's A_log = log U(0.5, 2) and dt_bias N(0, 0.25)
// (dev/reference.py's choice: moderate decays, every path carries signal)
static void randomize_params(float* params, const ParamSpec* specs, int num_specs, float std) {
    for (int i = 0; i < num_specs; i++) {
        const ParamSpec* p = &specs[i];
        int slot = p->layer >= 0 ? p->slot : -1;
        for (size_t j = 0; j < p->numel; j++) {
            float* w = &params[p->offset + j];
            if (slot == W_DELTA_A_LOG) *w = logf(0.5f + 1.5f * random_f32(&test_rng));
            else if (slot == W_DELTA_DT_BIAS) *w = 0.5f * random_normal(&test_rng);
            else *w = p->ndim == 2 ? std * random_normal(&test_rng) : 1.0f + 0.2f * random_normal(&test_rng);
        }
    }
}

// A CPU model and a GPU model with the same config, chunk length and random parameters.
static void model_pair(cpu::Model* cm, gpu::Model* gm, const Config* c, int chunk, float std) {
    cpu::model_build(cm, c);
    gpu::model_build(gm, c);
    if (cm->num_params != gm->num_params) fail("parameter counts differ: CPU %zu, GPU %zu", cm->num_params, gm->num_params);
    cm->chunk_size = gm->chunk_size = chunk;
    randomize_params(cm->params, cm->specs, cm->num_specs, std);
    upload(gm->params, cm->params, cm->num_params);
}

// B·T random tokens, and targets with every 7th ignored
static void random_batch(int* in, int* tg, int n, int V) {
    for (int i = 0; i < n; i++) {
        in[i] = (int)(random_u32(&test_rng) % V);
        tg[i] = i % 7 == 3 ? IGNORE_INDEX : (int)(random_u32(&test_rng) % V);
    }
}

// every parameter tensor's gradient, CPU against GPU; returns the worst error
static double compare_grads(const char* label, const cpu::Model* cm, const gpu::Model* gm, double tol) {
    float* g = fetch(gm->grads, gm->num_params);
    double worst = 0.0;
    const char* worst_name = "";
    for (int i = 0; i < cm->num_specs; i++) {
        const ParamSpec* p = &cm->specs[i];
        char what[256];
        snprintf(what, sizeof(what), "%s grad %s", label, p->name);
        double e = rel_rms(cm->grads + p->offset, g + p->offset, p->numel);
        check(e <= tol && isfinite(e), "%-58s rel RMS %.2e (tol %.0e)", what, e, tol);
        if (!(e <= worst)) { worst = e; worst_name = p->name; }
    }
    printf("   worst gradient: %s %.2e\n", worst_name, worst);
    return worst;
}

// ----------------------------------------------------------------------------
// 1. reference dumps, through the GPU model (the dump reader is model.h's)

static Config dump_config(Dump* d, const char* path) {
    Config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = dump_int(d, "config.vocab_size");
    c.d_model = dump_int(d, "config.d_model");
    c.n_layer = dump_int(d, "config.n_layer");
    c.mlp_hidden = dump_int(d, "config.mlp_hidden");
    c.tie_embeddings = dump_int(d, "config.tie_embeddings");
    c.gla_heads = dump_int(d, "config.gla_heads");
    c.gla_dk = dump_int(d, "config.gla_dk");
    c.gla_dv = dump_int(d, "config.gla_dv");
    c.gla_gate_rank = dump_int(d, "config.gla_gate_rank");
    c.gla_gate_normalizer = dump_int(d, "config.gla_gate_normalizer");
    c.attn_heads = dump_int(d, "config.attn_heads");
    c.attn_kv_heads = dump_int(d, "config.attn_kv_heads");
    c.rope_theta = dump_float(d, "config.rope_theta");
    c.norm_eps = dump_float(d, "config.norm_eps");
    c.hgrn_dim = dump_int(d, "config.hgrn_dim");
    c.hgrn2_heads = dump_int(d, "config.hgrn2_heads");
    c.retnet_heads = dump_int(d, "config.retnet_heads");
    c.deltanet_heads = dump_int(d, "config.deltanet_heads");
    c.gdn_heads = dump_int(d, "config.gdn_heads");
    c.gdn_head_dim = dump_int(d, "config.gdn_head_dim");
    c.gdn_expand_v = dump_int(d, "config.gdn_expand_v");
    c.conv_size = dump_int(d, "config.conv_size");
    c.use_lower_bound = dump_int(d, "config.use_lower_bound");
    Record* pat = dump_find(d, "config.pattern");
    if ((int)pat->numel != c.n_layer) fail("'%s': pattern has %zu entries for %d layers", path, pat->numel, c.n_layer);
    for (int l = 0; l < c.n_layer; l++) c.pattern[l] = ((int32_t*)pat->data)[l];
    const char* bad = validate_config(&c);
    if (bad) fail("'%s': %s", path, bad);
    return c;
}

static void test_dump(const char* path) {
    Dump d;
    dump_load(&d, path);
    const char* base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    Config c = dump_config(&d, path);
    int B = dump_int(&d, "config.batch"), T = dump_int(&d, "config.seq_len"), N = B * T;
    const int* inputs = (const int*)dump_find(&d, "inputs")->data;
    const int* targets = (const int*)dump_find(&d, "targets")->data;
    size_t nd = (size_t)N * c.d_model, nl = (size_t)N * c.vocab_size;
    char name[256], label[320];

    // chunk 16 so that T crosses chunk boundaries (and ends in a partial chunk) in every dump
    gpu::Model m;
    gpu::model_build(&m, &c);
    m.chunk_size = 16;
    float* params = host_new(m.num_params);
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "params.%s", m.specs[i].name);
        memcpy(params + m.specs[i].offset, dump_floats(&d, name, m.specs[i].numel), m.specs[i].numel * 4);
    }
    upload(m.params, params, m.num_params);
    printf("-- %s: B=%d T=%d, %zu parameters\n", base, B, T, m.num_params);

    gpu::model_forward(&m, inputs, NULL, B, T);
    gpu_sync("model_forward");
    check_close("acts.embed", dump_floats(&d, "acts.embed", nd), fetch(m.embed_out, nd), nd, 1e-5);
    for (int l = 0; l < c.n_layer; l++) {
        const char* parts[] = {"mixer", "mlp", "out"};
        const float* mine[] = {m.acts[l].mixer, m.acts[l].mlp, m.acts[l].res2};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "acts.layers.%d.%s", l, parts[k]);
            snprintf(label, sizeof(label), "%s (%s)", name, MIXER_NAMES[c.pattern[l]]);
            check_close(label, dump_floats(&d, name, nd), fetch(mine[k], nd), nd, 1e-5);
        }
    }
    check_close("acts.norm", dump_floats(&d, "acts.norm", nd), fetch(m.final_norm, nd), nd, 1e-5);
    check_close("logits", dump_floats(&d, "logits", nl), fetch(m.logits, nl), nl, 1e-5);

    gpu::model_forward(&m, inputs, targets, B, T);
    float ref_loss = dump_float(&d, "loss");
    check_close("loss", &ref_loss, &m.loss, 1, 1e-5);
    gpu::model_backward(&m, inputs, targets);
    gpu_sync("model_backward");
    float* grads = fetch(m.grads, m.num_params);
    double worst = 0.0;
    const char* worst_name = "";
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "grads.%s", m.specs[i].name);
        double e = rel_rms(dump_floats(&d, name, m.specs[i].numel), grads + m.specs[i].offset, m.specs[i].numel);
        check(e <= 1e-4 && isfinite(e), "%-58s rel RMS %.2e (tol 1e-4)", name, e);
        if (!(e <= worst)) { worst = e; worst_name = m.specs[i].name; }
    }
    printf("   worst gradient: %s %.2e\n", worst_name, worst);

    // 10 AdamW steps on the same batch with the dump's hyperparameters
    TrainHyper h = {dump_float(&d, "train.lr"), dump_float(&d, "train.min_lr_frac"), dump_float(&d, "train.weight_decay"),
                    dump_float(&d, "train.beta1"), dump_float(&d, "train.beta2"), dump_float(&d, "train.eps"),
                    dump_float(&d, "train.grad_clip"), dump_int(&d, "train.warmup_steps"), dump_int(&d, "train.total_steps")};
    int steps = h.total_steps;
    float* losses = host_new(steps);
    float* norms = host_new(steps);
    for (int s = 0; s < steps; s++) {
        gpu::model_forward(&m, inputs, targets, B, T);
        gpu::model_backward(&m, inputs, targets);
        losses[s] = m.loss;
        norms[s] = gpu::grad_norm(&m);
        float scale = (h.grad_clip > 0 && norms[s] > h.grad_clip) ? h.grad_clip / norms[s] : 1.0f;
        gpu::adamw_update(&m, &h, learning_rate(&h, s), s + 1, scale);
    }
    gpu_sync("10 AdamW steps");
    check_close("train.losses (10 AdamW steps)", dump_floats(&d, "train.losses", steps), losses, steps, 1e-4);
    check_close("train.grad_norms", dump_floats(&d, "train.grad_norms", steps), norms, steps, 1e-4);
    float* final_params = fetch(m.params, m.num_params);
    worst = 0.0;
    for (int i = 0; i < m.num_specs; i++) {
        snprintf(name, sizeof(name), "train.final.%s", m.specs[i].name);
        double e = rel_rms(dump_floats(&d, name, m.specs[i].numel), final_params + m.specs[i].offset, m.specs[i].numel);
        if (!(e <= worst)) { worst = e; worst_name = m.specs[i].name; }
    }
    check(worst <= 1e-4, "%-58s worst rel RMS %.2e in %s (tol 1e-4)", "train.final.* (parameters after 10 steps)", worst,
          worst_name);
    gpu::model_free(&m);
    dump_free(&d);
    release_all();
}

// ----------------------------------------------------------------------------
// 2. every GPU function against its CPU twin

static void test_small_layers(void) {
    int B = 2, T = 300, N = B * T, d = 256, I = 768, V = 256;
    char what[160];

    // embedding: 64 distinct tokens over 600 rows, so rows share tokens in the backward's scatter
    int* ids = (int*)host_new(N);
    for (int i = 0; i < N; i++) ids[i] = (int)(random_u32(&test_rng) % 64);
    int* ids_d = managed_ints(ids, N);
    Pair wte = pair_randn((size_t)V * d, 1), emb = pair_out((size_t)N * d);
    cpu::encoder_forward(emb.h, ids, wte.h, N, d);
    gpu::encoder_forward(emb.d, ids_d, wte.d, N, d);
    compare("encoder_forward (a copy: identical)", emb, TOL_EXACT);
    Pair demb = pair_randn((size_t)N * d, 1), dwte = pair_randn((size_t)V * d, 1);
    cpu::encoder_backward(dwte.h, demb.h, ids, N, d);
    gpu::encoder_backward(dwte.d, demb.d, ids_d, N, d);
    compare("encoder_backward dwte (+=, shared tokens)", dwte, TOL_SUM);

    // RMSNorm
    Pair x = pair_randn((size_t)N * d, 1), w = pair_randn(d, 1), y = pair_out((size_t)N * d), rstd = pair_out(N);
    cpu::rmsnorm_forward(y.h, rstd.h, x.h, w.h, N, d, 1e-6f);
    gpu::rmsnorm_forward(y.d, rstd.d, x.d, w.d, N, d, 1e-6f);
    compare("rmsnorm_forward out", y, TOL_SUM);
    compare("rmsnorm_forward rstd", rstd, TOL_SUM);
    Pair rstd_in = pair_copy(rstd.h, N), dy = pair_randn((size_t)N * d, 1);
    Pair dx = pair_randn((size_t)N * d, 1), dw = pair_randn(d, 1);
    cpu::rmsnorm_backward(dx.h, dw.h, dy.h, x.h, w.h, rstd_in.h, N, d);
    gpu::rmsnorm_backward(dx.d, dw.d, dy.d, x.d, w.d, rstd_in.d, N, d);
    compare("rmsnorm_backward dinp (+=)", dx, TOL_SUM);
    compare("rmsnorm_backward dweight (+=)", dw, TOL_SUM);

    // SwiGLU
    size_t ni = (size_t)N * I;
    Pair gate = pair_randn(ni, 2), up = pair_randn(ni, 1), h = pair_out(ni);
    cpu::swiglu_forward(h.h, gate.h, up.h, ni);
    gpu::swiglu_forward(h.d, gate.d, up.d, ni);
    compare("swiglu_forward", h, TOL_ELEM);
    Pair dh = pair_randn(ni, 1), dgate = pair_out(ni), dup = pair_out(ni);
    cpu::swiglu_backward(dgate.h, dup.h, dh.h, gate.h, up.h, ni);
    gpu::swiglu_backward(dgate.d, dup.d, dh.d, gate.d, up.d, ni);
    compare("swiglu_backward dgate", dgate, TOL_ELEM);
    compare("swiglu_backward dup", dup, TOL_ELEM);

    // RoPE at positions 7 .. 7+T−1 (a decoding offset), 4 heads of 64, in place; then back
    Pair r = pair_randn((size_t)N * 4 * 64, 1);
    cpu::rope_forward(r.h, B, T, 4, 64, 7, 10000.0f);
    gpu::rope_forward(r.d, B, T, 4, 64, 7, 10000.0f);
    compare("rope_forward (pos0 = 7)", r, TOL_ELEM);
    Pair dr = pair_copy(r.h, r.n);
    cpu::rope_backward(dr.h, B, T, 4, 64, 7, 10000.0f);
    gpu::rope_backward(dr.d, B, T, 4, 64, 7, 10000.0f);
    compare("rope_backward (pos0 = 7)", dr, TOL_ELEM);

    // gated RMSNorm, 4 heads of 64
    int H = 4, Vh = 64;
    size_t nv = (size_t)N * H * Vh;
    Pair o = pair_randn(nv, 1), z = pair_randn(nv, 2), gw = pair_randn(Vh, 1), og = pair_out(nv), ors = pair_out((size_t)N * H);
    cpu::gated_rmsnorm_forward(og.h, ors.h, o.h, z.h, gw.h, N, H, Vh, 1e-6f);
    gpu::gated_rmsnorm_forward(og.d, ors.d, o.d, z.d, gw.d, N, H, Vh, 1e-6f);
    compare("gated_rmsnorm_forward out", og, TOL_SUM);
    compare("gated_rmsnorm_forward rstd", ors, TOL_SUM);
    Pair ors_in = pair_copy(ors.h, ors.n), dog = pair_randn(nv, 1);
    Pair dox = pair_out(nv), dz = pair_out(nv), dgw = pair_randn(Vh, 1);
    cpu::gated_rmsnorm_backward(dox.h, dz.h, dgw.h, dog.h, o.h, z.h, gw.h, ors_in.h, N, H, Vh);
    gpu::gated_rmsnorm_backward(dox.d, dz.d, dgw.d, dog.d, o.d, z.d, gw.d, ors_in.d, N, H, Vh);
    compare("gated_rmsnorm_backward dx", dox, TOL_SUM);
    compare("gated_rmsnorm_backward dg", dz, TOL_SUM);
    compare("gated_rmsnorm_backward dw (+=)", dgw, TOL_SUM);

    // short convolution (+ silu), kernel 4, 256 channels
    int Cc = 256, W = 4;
    size_t nc = (size_t)N * Cc;
    Pair cx = pair_randn(nc, 1), cw = pair_randn((size_t)Cc * W, 0.5f), cy = pair_out(nc);
    cpu::shortconv_forward(cy.h, cx.h, cw.h, B, T, Cc, W);
    gpu::shortconv_forward(cy.d, cx.d, cw.d, B, T, Cc, W);
    compare("shortconv_forward", cy, TOL_SUM);
    Pair cdy = pair_randn(nc, 1), cdx = pair_out(nc), cdw = pair_randn((size_t)Cc * W, 1);
    cpu::shortconv_backward(cdx.h, cdw.h, cdy.h, cx.h, cw.h, B, T, Cc, W);
    gpu::shortconv_backward(cdx.d, cdw.d, cdy.d, cx.d, cw.d, B, T, Cc, W);
    compare("shortconv_backward dx", cdx, TOL_SUM);
    compare("shortconv_backward dw (+=)", cdw, TOL_SUM);
    compare("shortconv_backward dout -> dz (in place)", cdy, TOL_SUM);
    Pair cache = pair_randn((size_t)(W - 1) * Cc, 1), sx = pair_randn(Cc, 1), sy = pair_out(Cc);
    cpu::shortconv_step(sy.h, cache.h, sx.h, cw.h, Cc, W);
    gpu::shortconv_step(sy.d, cache.d, sx.d, cw.d, Cc, W);
    compare("shortconv_step out", sy, TOL_SUM);
    compare("shortconv_step cache (shifted)", cache, TOL_EXACT);

    // L2 norm over rows of 64, out of place and in place; backward in place (dx = dout)
    size_t R = (size_t)N * H;
    Pair lx = pair_randn(R * 64, 1), ly = pair_out(R * 64), lr = pair_out(R);
    cpu::l2norm_forward(ly.h, lr.h, lx.h, R, 64);
    gpu::l2norm_forward(ly.d, lr.d, lx.d, R, 64);
    compare("l2norm_forward out", ly, TOL_SUM);
    compare("l2norm_forward rinv", lr, TOL_SUM);
    Pair lin = pair_copy(lx.h, lx.n), lr2 = pair_out(R);
    cpu::l2norm_forward(lin.h, lr2.h, lin.h, R, 64);
    gpu::l2norm_forward(lin.d, lr2.d, lin.d, R, 64);
    compare("l2norm_forward in place", lin, TOL_SUM);
    Pair ly_in = pair_copy(ly.h, ly.n), lr_in = pair_copy(lr.h, R), ldy = pair_randn(R * 64, 1);
    cpu::l2norm_backward(ldy.h, ldy.h, ly_in.h, lr_in.h, R, 64);
    gpu::l2norm_backward(ldy.d, ldy.d, ly_in.d, lr_in.d, R, 64);
    compare("l2norm_backward (in place)", ldy, TOL_SUM);

    // lower bounds over 12 layers, and the forget gates with and without a bound
    int L = 12;
    Pair P = pair_randn((size_t)L * d, 1), lb = pair_out((size_t)L * d), ls = pair_out((size_t)L * d);
    cpu::lower_bounds_forward(lb.h, ls.h, P.h, L, d);
    gpu::lower_bounds_forward(lb.d, ls.d, P.d, L, d);
    compare("lower_bounds_forward lb", lb, TOL_SUM);
    compare("lower_bounds_forward softmax", ls, TOL_SUM);
    Pair ls_in = pair_copy(ls.h, ls.n), dlb = pair_randn((size_t)L * d, 1), dP = pair_randn((size_t)L * d, 1);
    cpu::lower_bounds_backward(dP.h, dlb.h, ls_in.h, L, d);
    gpu::lower_bounds_backward(dP.d, dlb.d, ls_in.d, L, d);
    compare("lower_bounds_backward dP (+=)", dP, TOL_SUM);
    Pair bound = pair_copy(lb.h + (size_t)5 * d, d);   // layer 5's bound, in (0, 1)
    for (int bounded = 0; bounded < 2; bounded++) {
        const float* lbh = bounded ? bound.h : NULL;
        const float* lbd = bounded ? bound.d : NULL;
        const char* tag = bounded ? "with a lower bound" : "without a bound";
        Pair f = pair_randn((size_t)N * d, 3), a = pair_out((size_t)N * d);
        cpu::forget_gate_forward(a.h, f.h, lbh, N, d);
        gpu::forget_gate_forward(a.d, f.d, lbd, N, d);
        snprintf(what, sizeof(what), "forget_gate_forward %s", tag);
        compare(what, a, TOL_ELEM);
        Pair da = pair_randn((size_t)N * d, 1), df = pair_out((size_t)N * d), dlbd = pair_randn(d, 1);
        cpu::forget_gate_backward(df.h, bounded ? dlbd.h : NULL, da.h, f.h, lbh, N, d);
        gpu::forget_gate_backward(df.d, bounded ? dlbd.d : NULL, da.d, f.d, lbd, N, d);
        snprintf(what, sizeof(what), "forget_gate_backward df %s", tag);
        compare(what, df, TOL_ELEM);
        if (bounded) compare("forget_gate_backward dlb (+=)", dlbd, TOL_SUM);
        // in place (df = da), as the layers call it
        Pair dai = pair_copy(da.h, da.n), dlb2 = pair_randn(d, 1);
        cpu::forget_gate_backward(dai.h, bounded ? dlb2.h : NULL, dai.h, f.h, lbh, N, d);
        gpu::forget_gate_backward(dai.d, bounded ? dlb2.d : NULL, dai.d, f.d, lbd, N, d);
        snprintf(what, sizeof(what), "forget_gate_backward in place %s", tag);
        compare(what, dai, TOL_ELEM);
    }

    // matmul (N,C) x (OC,C)ᵀ with and without bias; backward with every gradient, then dinp only
    int C = 256, OC = 768;
    Pair mi = pair_randn((size_t)N * C, 1), mw = pair_randn((size_t)OC * C, 0.05f), mb = pair_randn(OC, 1);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        Pair mo = pair_out((size_t)N * OC);
        cpu::matmul_forward(mo.h, mi.h, mw.h, with_bias ? mb.h : NULL, N, C, OC);
        gpu::matmul_forward(mo.d, mi.d, mw.d, with_bias ? mb.d : NULL, N, C, OC);
        compare(with_bias ? "matmul_forward with bias" : "matmul_forward", mo, TOL_SUM);
    }
    Pair mdo = pair_randn((size_t)N * OC, 1), mdi = pair_randn((size_t)N * C, 1), mdw = pair_randn((size_t)OC * C, 1),
         mdb = pair_randn(OC, 1);
    cpu::matmul_backward(mdi.h, mdw.h, mdb.h, mdo.h, mi.h, mw.h, N, C, OC);
    gpu::matmul_backward(mdi.d, mdw.d, mdb.d, mdo.d, mi.d, mw.d, N, C, OC);
    compare("matmul_backward dinp (+=)", mdi, TOL_SUM);
    compare("matmul_backward dweight (+=)", mdw, TOL_SUM);
    compare("matmul_backward dbias (+=)", mdb, TOL_SUM);
    Pair mdi2 = pair_randn((size_t)N * C, 1);
    cpu::matmul_backward(mdi2.h, NULL, NULL, mdo.h, mi.h, mw.h, N, C, OC);
    gpu::matmul_backward(mdi2.d, NULL, NULL, mdo.d, mi.d, mw.d, N, C, OC);
    compare("matmul_backward dinp only (others NULL)", mdi2, TOL_SUM);

    // cross-entropy over the byte vocabulary, every 7th target ignored
    int* tg = (int*)host_new(N);
    for (int i = 0; i < N; i++) tg[i] = i % 7 == 3 ? IGNORE_INDEX : (int)(random_u32(&test_rng) % V);
    int* tg_d = managed_ints(tg, N);
    Pair logits = pair_randn((size_t)N * V, 3);
    int nv_cpu = 0, nv_gpu = 0;
    float loss_cpu = cpu::crossentropy_forward(logits.h, tg, N, V, &nv_cpu);
    float loss_gpu = gpu::crossentropy_forward(logits.d, tg_d, N, V, &nv_gpu);
    gpu_sync("crossentropy_forward");
    check_close("crossentropy_forward loss", &loss_cpu, &loss_gpu, 1, TOL_SUM);
    check(nv_cpu == nv_gpu, "crossentropy_forward n_valid: CPU %d, GPU %d", nv_cpu, nv_gpu);
    compare("crossentropy_forward probabilities (in place)", logits, TOL_SUM);
    Pair probs = pair_copy(logits.h, logits.n);
    cpu::crossentropy_backward(probs.h, tg, N, V, nv_cpu);
    gpu::crossentropy_backward(probs.d, tg_d, N, V, nv_cpu);
    compare("crossentropy_backward dlogits (in place)", probs, TOL_SUM);
    release_all();
}

// --- causal softmax attention with GQA (4 query heads over 2 kv heads of 32, d = 128)

static void test_attention(void) {
    int B = 2, T = 300, H = 4, Hkv = 2, D = 32;
    size_t nq = (size_t)B * T * H * D, nkv = (size_t)B * T * Hkv * D, natt = (size_t)B * H * T * T;
    Pair q = pair_randn(nq, 1), k = pair_randn(nkv, 1), v = pair_randn(nkv, 1);
    // The CPU leaves the upper triangle of att as it found it (zeros here); the GPU writes zeros there
    // (its backward's GEMMs read the whole T×T): compared in full, a NaN left there fails
    Pair out = pair_out(nq), att = pair_out(natt);
    cpu::attention_forward(out.h, att.h, q.h, k.h, v.h, B, T, H, Hkv, D);
    gpu::attention_forward(out.d, att.d, q.d, k.d, v.d, B, T, H, Hkv, D);
    compare("attention_forward out", out, TOL_SUM);
    compare("attention_forward probabilities (upper triangle 0)", att, TOL_SUM);
    Pair att_in = pair_copy(att.h, natt), dout = pair_randn(nq, 1);
    Pair dq = pair_randn(nq, 1), dk = pair_randn(nkv, 1), dv = pair_randn(nkv, 1);
    cpu::attention_backward(dq.h, dk.h, dv.h, dout.h, att_in.h, q.h, k.h, v.h, B, T, H, Hkv, D);
    gpu::attention_backward(dq.d, dk.d, dv.d, dout.d, att_in.d, q.d, k.d, v.d, B, T, H, Hkv, D);
    compare("attention_backward dq (+=)", dq, TOL_SUM);
    compare("attention_backward dk (+=, two query heads per kv head)", dk, TOL_SUM);
    compare("attention_backward dv (+=)", dv, TOL_SUM);
    release_all();
}

// --- GLA kernels: recurrent and chunkwise, forward and backward, and the gate gradient

enum { GATES_MILD, GATES_STRONG, GATES_RETNET, GATES_HGRN2 };
static const char* GATE_NAMES[] = {"GLA gates", "log-gates to -20", "RetNet gates", "HGRN2 k=1-e^a"};

static void test_gla_kernels(int B, int T, int H, int K, int V, int C, int gates) {
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, NC = (T + C - 1) / C;
    size_t ns = (size_t)B * H * NC * K * V;
    float scale = 1.0f / sqrtf((float)K);
    int strong = gates == GATES_STRONG;
    char tag[128];
    snprintf(tag, sizeof(tag), "B=%d T=%d H=%d K=%d V=%d C=%d, %s", B, T, H, K, V, C, GATE_NAMES[gates]);
    printf("-- GLA kernels: %s\n", tag);
    float *qh = host_randn(nk, 1), *kh = host_randn(nk, 1), *ah = host_randn(nk, 1);
    for (size_t i = 0; i < nk; i++) {
        int h = (int)(i / K % H);
        if (gates == GATES_MILD) ah[i] = cpu::logsigmoidf(2.0f * ah[i]) / 16.0f;          // GLA's logσ(·)/16
        else if (gates == GATES_STRONG) ah[i] = -20.0f * random_f32(&test_rng);          // down to −20 per step
        else if (gates == GATES_RETNET) ah[i] = log1pf(-ldexpf(1.0f, -5 - h));
        else { ah[i] = cpu::logsigmoidf(ah[i] + 2.0f); kh[i] = -expm1f(ah[i]); }
    }
    Pair q = pair_copy(qh, nk), k = pair_copy(kh, nk), a = pair_copy(ah, nk), v = pair_randn(nv, 1);
    Pair dout = pair_randn(nv, 1);

    // recurrent forward; chunkwise forward (o and the chunk-entry states)
    Pair o_rec = pair_out(nv);
    cpu::gla_recurrent_forward(o_rec.h, q.h, k.h, v.h, a.h, B, T, H, K, V, scale);
    gpu::gla_recurrent_forward(o_rec.d, q.d, k.d, v.d, a.d, B, T, H, K, V, scale);
    compare("gla_recurrent_forward o", o_rec, TOL_SUM);
    Pair o = pair_out(nv), states = pair_out(ns);
    cpu::gla_chunk_forward(o.h, states.h, q.h, k.h, v.h, a.h, B, T, H, K, V, C, scale);
    gpu::gla_chunk_forward(o.d, states.d, q.d, k.d, v.d, a.d, B, T, H, K, V, C, scale);
    compare("gla_chunk_forward o", o, TOL_SUM);
    compare("gla_chunk_forward states", states, TOL_SUM);
    check_close("GPU: gla chunk == recurrent, o", fetch(o_rec.d, nv), fetch(o.d, nv), nv, TOL_SUM);

    // chunkwise backward from the CPU's states (the same input on both sides)
    Pair st = pair_copy(states.h, ns);
    Pair dq = pair_out(nk), dk = pair_out(nk), dv = pair_out(nv), da = pair_out(nk);
    cpu::gla_chunk_backward(dq.h, dk.h, dv.h, da.h, dout.h, st.h, q.h, k.h, v.h, a.h, B, T, H, K, V, C, scale);
    gpu::gla_chunk_backward(dq.d, dk.d, dv.d, da.d, dout.d, st.d, q.d, k.d, v.d, a.d, B, T, H, K, V, C, scale);
    compare("gla_chunk_backward dq", dq, TOL_GRAD);
    compare("gla_chunk_backward dk", dk, TOL_GRAD);
    compare("gla_chunk_backward dv", dv, TOL_GRAD);
    float* da_gpu = fetch(da.d, nk);
    if (strong) check_da("gla_chunk_backward da", da.h, da_gpu, qh, kh, dq.h, dk.h, B, T, H * K, 1e-5);
    else check_close("gla_chunk_backward da", da.h, da_gpu, nk, TOL_GRAD);

    // recurrent backward, and the GPU's chunkwise backward against it
    Pair rq = pair_out(nk), rk = pair_out(nk), rv = pair_out(nv), ra = pair_out(nk);
    cpu::gla_recurrent_backward(rq.h, rk.h, rv.h, ra.h, dout.h, q.h, k.h, v.h, a.h, B, T, H, K, V, scale);
    gpu::gla_recurrent_backward(rq.d, rk.d, rv.d, ra.d, dout.d, q.d, k.d, v.d, a.d, B, T, H, K, V, scale);
    compare("gla_recurrent_backward dq", rq, TOL_GRAD);
    compare("gla_recurrent_backward dk", rk, TOL_GRAD);
    compare("gla_recurrent_backward dv", rv, TOL_GRAD);
    compare("gla_recurrent_backward da", ra, TOL_GRAD);
    float *gq = fetch(rq.d, nk), *gk = fetch(rk.d, nk), *gv = fetch(rv.d, nv), *ga = fetch(ra.d, nk);
    check_close("GPU: gla chunk == recurrent, dq", gq, fetch(dq.d, nk), nk, TOL_GRAD);
    check_close("GPU: gla chunk == recurrent, dk", gk, fetch(dk.d, nk), nk, TOL_GRAD);
    check_close("GPU: gla chunk == recurrent, dv", gv, fetch(dv.d, nv), nv, TOL_GRAD);
    if (strong) check_da("GPU: gla chunk == recurrent, da", ga, da_gpu, qh, kh, gq, gk, B, T, H * K, 1e-5);
    else check_close("GPU: gla chunk == recurrent, da", ga, da_gpu, nk, TOL_GRAD);

    // the gate gradient alone, from the CPU's dq, dk
    Pair gdq = pair_copy(dq.h, nk), gdk = pair_copy(dk.h, nk), gda = pair_out(nk);
    cpu::gla_gate_grad(gda.h, q.h, k.h, gdq.h, gdk.h, B, T, H * K);
    gpu::gla_gate_grad(gda.d, q.d, k.d, gdq.d, gdk.d, B, T, H * K);
    gpu_sync("gla_gate_grad");
    check_da("gla_gate_grad da", gda.h, fetch(gda.d, nk), qh, kh, gdq.h, gdk.h, B, T, H * K, TOL_SUM);

    // one recurrent step from a random state (the first row's inputs)
    Pair S = pair_randn((size_t)H * K * V, 1), so = pair_out((size_t)H * V);
    cpu::gla_recurrent_step(so.h, S.h, q.h, k.h, v.h, a.h, H, K, V, scale);
    gpu::gla_recurrent_step(so.d, S.d, q.d, k.d, v.d, a.d, H, K, V, scale);
    compare("gla_recurrent_step o", so, TOL_SUM);
    compare("gla_recurrent_step state", S, TOL_SUM);
    release_all();
}

// --- HGRN: the elementwise recurrence and its chunked scan

static void test_hgrn_kernels(int B, int T, int D, int C, int strong) {
    size_t n = (size_t)B * T * D;
    printf("-- HGRN kernels: B=%d T=%d D=%d C=%d, %s\n", B, T, D, C, strong ? "log-gates to -20" : "mild gates");
    float* ah = host_randn(n, 1);
    for (size_t i = 0; i < n; i++) ah[i] = strong ? -20.0f * random_f32(&test_rng) : cpu::logsigmoidf(ah[i] + 2.0f);
    Pair x = pair_randn(n, 1), a = pair_copy(ah, n), dout = pair_randn(n, 1);
    Pair h_rec = pair_out(n), h = pair_out(n);
    cpu::hgrn_recurrent_forward(h_rec.h, x.h, a.h, B, T, D);
    gpu::hgrn_recurrent_forward(h_rec.d, x.d, a.d, B, T, D);
    compare("hgrn_recurrent_forward h", h_rec, TOL_SUM);
    cpu::hgrn_chunk_forward(h.h, x.h, a.h, B, T, D, C);
    gpu::hgrn_chunk_forward(h.d, x.d, a.d, B, T, D, C);
    compare("hgrn_chunk_forward h", h, TOL_SUM);
    check_close("GPU: hgrn chunk == recurrent, h", fetch(h_rec.d, n), fetch(h.d, n), n, TOL_SUM);
    Pair hin = pair_copy(h_rec.h, n);
    Pair rdx = pair_out(n), rda = pair_out(n), cdx = pair_out(n), cda = pair_out(n);
    cpu::hgrn_recurrent_backward(rdx.h, rda.h, dout.h, hin.h, a.h, B, T, D);
    gpu::hgrn_recurrent_backward(rdx.d, rda.d, dout.d, hin.d, a.d, B, T, D);
    compare("hgrn_recurrent_backward dx", rdx, TOL_SUM);
    compare("hgrn_recurrent_backward da", rda, TOL_SUM);
    cpu::hgrn_chunk_backward(cdx.h, cda.h, dout.h, hin.h, a.h, B, T, D, C);
    gpu::hgrn_chunk_backward(cdx.d, cda.d, dout.d, hin.d, a.d, B, T, D, C);
    compare("hgrn_chunk_backward dx", cdx, TOL_SUM);
    compare("hgrn_chunk_backward da", cda, TOL_SUM);
    check_close("GPU: hgrn chunk == recurrent, dx", fetch(rdx.d, n), fetch(cdx.d, n), n, TOL_SUM);
    check_close("GPU: hgrn chunk == recurrent, da", fetch(rda.d, n), fetch(cda.d, n), n, TOL_SUM);
    Pair state = pair_randn(D, 1), so = pair_out(D);
    cpu::hgrn_recurrent_step(so.h, state.h, x.h, a.h, D);
    gpu::hgrn_recurrent_step(so.d, state.d, x.d, a.d, D);
    compare("hgrn_recurrent_step o", so, TOL_ELEM);
    compare("hgrn_recurrent_step state", state, TOL_ELEM);
    release_all();
}

// --- the delta rule: recurrent and chunkwise (WY), forward and backward, with and without a gate

static void test_delta_kernels(int B, int T, int H, int K, int V, int C, int gates) {
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, nh = (size_t)B * T * H, NC = (T + C - 1) / C;
    size_t ns = (size_t)B * H * NC * K * V;
    float scale = 1.0f / sqrtf((float)K);
    const char* gname = gates == 0 ? "no gate (DeltaNet)" : gates == 1 ? "mild gates" : "log-gates to -20";
    printf("-- delta-rule kernels: B=%d T=%d H=%d K=%d V=%d C=%d, %s\n", B, T, H, K, V, C, gname);
    // q, k L2-normalised per head as the layer feeds them; β ∈ (0,1); g ≤ 0
    float *qh = host_randn(nk, 1), *kh = host_randn(nk, 1), *bh = host_randn(nh, 1), *gh = host_randn(nh, 1);
    float* rinv = host_new(nh);
    cpu::l2norm_forward(qh, rinv, qh, nh, K);
    cpu::l2norm_forward(kh, rinv, kh, nh, K);
    for (size_t i = 0; i < nh; i++) {
        bh[i] = 1.0f / (1.0f + expf(-bh[i]));
        gh[i] = gates == 2 ? -20.0f * random_f32(&test_rng) : -0.2f / (1.0f + expf(-gh[i]));
    }
    Pair q = pair_copy(qh, nk), k = pair_copy(kh, nk), beta = pair_copy(bh, nh), g = pair_copy(gh, nh);
    Pair v = pair_randn(nv, 1), dout = pair_randn(nv, 1);
    const float* gH = gates ? g.h : NULL;
    const float* gD = gates ? g.d : NULL;

    Pair o_rec = pair_out(nv), o = pair_out(nv), states = pair_out(ns);
    cpu::delta_recurrent_forward(o_rec.h, q.h, k.h, v.h, beta.h, gH, B, T, H, K, V, scale);
    gpu::delta_recurrent_forward(o_rec.d, q.d, k.d, v.d, beta.d, gD, B, T, H, K, V, scale);
    compare("delta_recurrent_forward o", o_rec, TOL_SUM);
    cpu::delta_chunk_forward(o.h, states.h, q.h, k.h, v.h, beta.h, gH, B, T, H, K, V, C, scale);
    gpu::delta_chunk_forward(o.d, states.d, q.d, k.d, v.d, beta.d, gD, B, T, H, K, V, C, scale);
    compare("delta_chunk_forward o", o, TOL_SUM);
    compare("delta_chunk_forward states", states, TOL_SUM);
    check_close("GPU: delta chunk == recurrent, o", fetch(o_rec.d, nv), fetch(o.d, nv), nv, TOL_SUM);

    Pair st = pair_copy(states.h, ns);
    Pair grads_c[5] = {pair_out(nk), pair_out(nk), pair_out(nv), pair_out(nh), pair_out(nh)};
    Pair grads_r[5] = {pair_out(nk), pair_out(nk), pair_out(nv), pair_out(nh), pair_out(nh)};
    const char* names[5] = {"dq", "dk", "dv", "dbeta", "dg"};
    Pair* c = grads_c;
    Pair* r = grads_r;
    cpu::delta_chunk_backward(c[0].h, c[1].h, c[2].h, c[3].h, gates ? c[4].h : NULL, dout.h, st.h, q.h, k.h, v.h, beta.h,
                              gH, B, T, H, K, V, C, scale);
    gpu::delta_chunk_backward(c[0].d, c[1].d, c[2].d, c[3].d, gates ? c[4].d : NULL, dout.d, st.d, q.d, k.d, v.d, beta.d, gD,
                         B, T, H, K, V, C, scale);
    cpu::delta_recurrent_backward(r[0].h, r[1].h, r[2].h, r[3].h, gates ? r[4].h : NULL, dout.h, q.h, k.h, v.h, beta.h,
                                  gH, B, T, H, K, V, scale);
    gpu::delta_recurrent_backward(r[0].d, r[1].d, r[2].d, r[3].d, gates ? r[4].d : NULL, dout.d, q.d, k.d, v.d, beta.d, gD,
                             B, T, H, K, V, scale);
    char what[128];
    for (int i = 0; i < (gates ? 5 : 4); i++) {
        snprintf(what, sizeof(what), "delta_chunk_backward %s", names[i]);
        compare(what, c[i], TOL_GRAD);
        snprintf(what, sizeof(what), "delta_recurrent_backward %s", names[i]);
        compare(what, r[i], TOL_GRAD);
        snprintf(what, sizeof(what), "GPU: delta chunk == recurrent, %s", names[i]);
        check_close(what, fetch(r[i].d, r[i].n), fetch(c[i].d, c[i].n), c[i].n, TOL_GRAD);
    }

    Pair S = pair_randn((size_t)H * K * V, 0.3f), so = pair_out((size_t)H * V);
    cpu::delta_recurrent_step(so.h, S.h, q.h, k.h, v.h, beta.h, gH, H, K, V, scale);
    gpu::delta_recurrent_step(so.d, S.d, q.d, k.d, v.d, beta.d, gD, H, K, V, scale);
    compare("delta_recurrent_step o", so, TOL_SUM);
    compare("delta_recurrent_step state", S, TOL_SUM);
    release_all();
}

// --- AdamW and the gradient norm on a model's flat buffers

static void test_optimizer(void) {
    Config c = model_config("gla,attn,hgrn,deltanet", 4, 128, 0);
    cpu::Model cm;
    gpu::Model gm;
    model_pair(&cm, &gm, &c, 64, 0.08f);
    size_t n = cm.num_params;
    for (size_t i = 0; i < n; i++) {
        cm.grads[i] = 0.01f * random_normal(&test_rng);
        cm.adam_m[i] = 0.01f * random_normal(&test_rng);
        cm.adam_v[i] = 1e-4f * random_f32(&test_rng);
    }
    upload(gm.grads, cm.grads, n);
    upload(gm.adam_m, cm.adam_m, n);
    upload(gm.adam_v, cm.adam_v, n);
    float ncpu = cpu::grad_norm(&cm), ngpu = gpu::grad_norm(&gm);
    gpu_sync("grad_norm");
    check_close("grad_norm", &ncpu, &ngpu, 1, TOL_SUM);
    TrainHyper hc = {3e-3f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 5, 100};
    TrainHyper hg = {3e-3f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 5, 100};
    cpu::adamw_update(&cm, &hc, 2e-3f, 7, 0.6f);
    gpu::adamw_update(&gm, &hg, 2e-3f, 7, 0.6f);
    gpu_sync("adamw_update");
    check_close("adamw_update parameters", cm.params, fetch(gm.params, n), n, TOL_ELEM);
    check_close("adamw_update first moments", cm.adam_m, fetch(gm.adam_m, n), n, TOL_ELEM);
    check_close("adamw_update second moments", cm.adam_v, fetch(gm.adam_v, n), n, TOL_ELEM);
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// ----------------------------------------------------------------------------
// 4. whole models, GPU against CPU: every layer's forward and backward in place

static void test_model(const char* pattern, int n_layer, int tie) {
    int B = 2, T = 300, N = B * T, chunk = 64;   // T = 300: a partial last chunk
    Config c = model_config(pattern, n_layer, 128, tie);
    char label[160], pat[512];
    format_pattern(&c, pat, sizeof(pat));
    snprintf(label, sizeof(label), "%s", pattern);
    cpu::Model cm;
    gpu::Model gm;
    model_pair(&cm, &gm, &c, chunk, 0.08f);
    printf("-- model %s (L=%d d=128 tie=%d): B=%d T=%d chunk %d, %zu parameters\n", pat, n_layer, tie, B, T, chunk,
           cm.num_params);
    int* in = (int*)host_new(N);
    int* tg = (int*)host_new(N);
    random_batch(in, tg, N, c.vocab_size);
    size_t nd = (size_t)N * c.d_model, nl = (size_t)N * c.vocab_size;
    char what[256];

    cpu::model_forward(&cm, in, NULL, B, T);
    gpu::model_forward(&gm, in, NULL, B, T);
    gpu_sync("model_forward");
    for (int l = 0; l < n_layer; l++) {
        snprintf(what, sizeof(what), "%s layer %d (%s) mixer output", label, l, MIXER_NAMES[c.pattern[l]]);
        check_close(what, cm.acts[l].mixer, fetch(gm.acts[l].mixer, nd), nd, TOL_SUM);
    }
    snprintf(what, sizeof(what), "%s logits", label);
    check_close(what, cm.logits, fetch(gm.logits, nl), nl, TOL_SUM);
    cpu::model_forward(&cm, in, tg, B, T);
    gpu::model_forward(&gm, in, tg, B, T);
    snprintf(what, sizeof(what), "%s loss", label);
    check_close(what, &cm.loss, &gm.loss, 1, TOL_SUM);
    check(cm.n_valid == gm.n_valid, "%s n_valid: CPU %d, GPU %d", label, cm.n_valid, gm.n_valid);
    cpu::model_backward(&cm, in, tg);
    gpu::model_backward(&gm, in, tg);
    gpu_sync("model_backward");
    compare_grads(label, &cm, &gm, TOL_GRAD);
    float ncpu = cpu::grad_norm(&cm), ngpu = gpu::grad_norm(&gm);
    snprintf(what, sizeof(what), "%s grad_norm", label);
    check_close(what, &ncpu, &ngpu, 1, TOL_SUM);

    // one AdamW step (clipped) from the two models' own gradients, at a small learning rate: the first
    // step moves every weight by lr · g/|g| whatever the size of g, so where an entry of g is within
    // rounding of 0 its sign, and so its step, may differ between two correct programs; at lr = 1e-4
    // those few entries stay far below the tolerance (the update formula itself: test_optimizer)
    TrainHyper hc = {1e-4f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 0, 100};
    TrainHyper hg = {1e-4f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 0, 100};
    cpu::adamw_update(&cm, &hc, hc.lr, 1, ncpu > 1.0f ? 1.0f / ncpu : 1.0f);
    gpu::adamw_update(&gm, &hg, hg.lr, 1, ngpu > 1.0f ? 1.0f / ngpu : 1.0f);
    snprintf(what, sizeof(what), "%s parameters after one AdamW step", label);
    check_close(what, cm.params, fetch(gm.params, cm.num_params), cm.num_params, TOL_GRAD);
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// model_init_weights: the same parameters from the same seed (the host's RNG on both sides), so that
// the two programs start a run from the same model
static void test_init(void) {
    Config c = model_config("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", 7, 128, 0);
    cpu::Model cm;
    gpu::Model gm;
    cpu::model_build(&cm, &c);
    gpu::model_build(&gm, &c);
    cpu::model_init_weights(&cm, 1337);
    gpu::model_init_weights(&gm, 1337);
    gpu_sync("model_init_weights");
    float* g = fetch(gm.params, gm.num_params);
    check(cm.num_params == gm.num_params && memcmp(cm.params, g, cm.num_params * 4) == 0,
          "model_init_weights(seed 1337): the GPU model's parameters are the CPU's, bit for bit");
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// ----------------------------------------------------------------------------
// 5. incremental decoding == full forward, on the GPU

static void test_decode(const char* pattern, int n_layer) {
    int T = 45;   // chunk 16: a partial last chunk in the forward pass
    Config c = model_config(pattern, n_layer, 128, 1);
    cpu::Model cm;
    gpu::Model gm;
    model_pair(&cm, &gm, &c, 16, 0.1f);
    int* in = (int*)host_new(T);
    int* tg = (int*)host_new(T);
    random_batch(in, tg, T, c.vocab_size);
    gpu::model_forward(&gm, in, NULL, 1, T);
    gpu_sync("model_forward");
    size_t V = c.vocab_size;
    float* forward_logits = fetch(gm.logits, (size_t)T * V);
    gpu::DecodeState s;
    gpu::decode_init(&s, &c, T);
    float* step_logits = host_new((size_t)T * V);
    for (int t = 0; t < T; t++) {
        gpu::decode_step(&gm, &s, in[t], t);
        cuda_check(cudaMemcpy(step_logits + (size_t)t * V, s.logits, V * sizeof(float), cudaMemcpyDefault));
    }
    gpu_sync("decode_step");
    char what[160];
    snprintf(what, sizeof(what), "GPU decode == forward logits (%s)", pattern);
    check_close(what, forward_logits, step_logits, (size_t)T * V, TOL_SUM);
    gpu::decode_free(&s, &c);
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// ----------------------------------------------------------------------------
// 6. determinism: one training step (forward, backward, norm, AdamW) twice from the same state gives
// the same bits: no float atomics, fixed reduction orders, cuBLAS deterministic on one GPU

static void test_determinism(void) {
    int B = 2, T = 300, N = B * T;
    Config c = model_config("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", 7, 128, 0);
    cpu::Model cm;
    gpu::Model gm;
    model_pair(&cm, &gm, &c, 64, 0.08f);
    int* in = (int*)host_new(N);
    int* tg = (int*)host_new(N);
    random_batch(in, tg, N, c.vocab_size);
    size_t n = gm.num_params;
    TrainHyper h = {3e-3f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 5, 100};
    float loss[2], norm[2], *grads[2], *params[2], *moments[2];
    for (int run = 0; run < 2; run++) {
        upload(gm.params, cm.params, n);
        cuda_check(cudaMemset(gm.adam_m, 0, n * sizeof(float)));
        cuda_check(cudaMemset(gm.adam_v, 0, n * sizeof(float)));
        gpu::model_forward(&gm, in, tg, B, T);
        gpu::model_backward(&gm, in, tg);
        norm[run] = gpu::grad_norm(&gm);
        gpu::adamw_update(&gm, &h, learning_rate(&h, 0), 1, norm[run] > 1.0f ? 1.0f / norm[run] : 1.0f);
        gpu_sync("a training step");
        loss[run] = gm.loss;
        grads[run] = fetch(gm.grads, n);
        params[run] = fetch(gm.params, n);
        moments[run] = fetch(gm.adam_v, n);
    }
    check(memcmp(&loss[0], &loss[1], 4) == 0, "determinism: the same loss bits twice (%.9g, %.9g)", loss[0], loss[1]);
    check(memcmp(&norm[0], &norm[1], 4) == 0, "determinism: the same gradient-norm bits twice (%.9g, %.9g)", norm[0], norm[1]);
    check(memcmp(grads[0], grads[1], n * 4) == 0, "determinism: the same gradient bits twice (all %zu)", n);
    check(memcmp(params[0], params[1], n * 4) == 0 && memcmp(moments[0], moments[1], n * 4) == 0,
          "determinism: the same parameters and AdamW moments after the step, bit for bit");
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// ----------------------------------------------------------------------------
// 7. a GPU checkpoint read by the CPU program: save_checkpoint (GPU program) into a temporary folder,
// the CPU's readers load it, parameters and AdamW moments bit-identical; then one CPU step from the
// loaded state == one GPU step from its own

static void test_checkpoint_to_cpu(void) {
    int B = 2, T = 300, N = B * T;
    Config c = model_config("gla,gated_deltanet,hgrn,attn", 4, 128, 1);
    cpu::Model cm;
    gpu::Model gm;
    model_pair(&cm, &gm, &c, 64, 0.08f);
    int* in = (int*)host_new(N);
    int* tg = (int*)host_new(N);
    random_batch(in, tg, N, c.vocab_size);
    TrainHyper hg = {3e-3f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 5, 100};
    TrainHyper hc = {3e-3f, 0.1f, 0.1f, 0.9f, 0.95f, 1e-8f, 1.0f, 5, 100};
    // one GPU step, so that the moments are not zero
    gpu::model_forward(&gm, in, tg, B, T);
    gpu::model_backward(&gm, in, tg);
    float norm = gpu::grad_norm(&gm);
    gpu::adamw_update(&gm, &hg, learning_rate(&hg, 0), 1, norm > 1.0f ? 1.0f / norm : 1.0f);
    gpu_sync("a GPU step");

    char dir[] = "/tmp/test_gla_cu_XXXXXX";
    if (!mkdtemp(dir)) fail("cannot create a temporary folder: %s", strerror(errno));
    TrainState ts;
    memset(&ts, 0, sizeof(ts));
    ts.step = 1;
    ts.shard = 0;
    ts.pos = 123457;
    ts.rng = 0x0123456789abcdefull;
    ts.B = B;
    ts.T = T;
    gpu::save_checkpoint(dir, &gm, &ts, 0, 0x5eed);
    gpu_sync("save_checkpoint");

    char path[PATH_CAP], state_path[PATH_CAP], done[PATH_CAP];
    snprintf(path, sizeof(path), "%s/model_%08d.bin", dir, 1);
    snprintf(state_path, sizeof(state_path), "%s/state_%08d.bin", dir, 1);
    snprintf(done, sizeof(done), "%s/DONE_%08d", dir, 1);
    check(access(done, F_OK) == 0, "save_checkpoint (GPU) wrote model, state and the DONE marker");
    Config c2;
    checkpoint_read_config(path, &c2);
    int32_t h1[256], h2[256];
    config_to_header(&c, cm.num_params, h1);
    config_to_header(&c2, cm.num_params, h2);
    check(memcmp(h1, h2, sizeof(h1)) == 0, "GPU checkpoint: the config the CPU reads is the model's");
    cpu::Model cl;
    cpu::model_build(&cl, &c2);
    cl.chunk_size = 64;
    TrainState cs;
    cpu::load_checkpoint(dir, 1, &cl, &cs);
    size_t n = cl.num_params;
    float *gp = fetch(gm.params, n), *gmom = fetch(gm.adam_m, n), *gv = fetch(gm.adam_v, n);
    check(memcmp(cl.params, gp, n * 4) == 0, "GPU checkpoint -> CPU: parameters bit-identical (%zu)", n);
    check(memcmp(cl.adam_m, gmom, n * 4) == 0 && memcmp(cl.adam_v, gv, n * 4) == 0,
          "GPU checkpoint -> CPU: AdamW moments bit-identical");
    check(cs.step == ts.step && cs.shard == ts.shard && cs.pos == ts.pos && cs.rng == ts.rng && cs.B == B && cs.T == T,
          "GPU checkpoint -> CPU: step %d, data position %zu, RNG, B, T as saved", cs.step, cs.pos);

    // the next step on both sides
    cpu::model_forward(&cl, in, tg, B, T);
    cpu::model_backward(&cl, in, tg);
    float ncpu = cpu::grad_norm(&cl);
    cpu::adamw_update(&cl, &hc, learning_rate(&hc, cs.step), cs.step + 1, ncpu > 1.0f ? 1.0f / ncpu : 1.0f);
    gpu::model_forward(&gm, in, tg, B, T);
    gpu::model_backward(&gm, in, tg);
    float ngpu = gpu::grad_norm(&gm);
    gpu::adamw_update(&gm, &hg, learning_rate(&hg, ts.step), ts.step + 1, ngpu > 1.0f ? 1.0f / ngpu : 1.0f);
    gpu_sync("the step after the checkpoint");
    check_close("resumed on the CPU: step 2 loss == the GPU's", &cl.loss, &gm.loss, 1, TOL_SUM);
    check_close("resumed on the CPU: parameters after step 2 == the GPU's", cl.params, fetch(gm.params, n), n, TOL_GRAD);
    check_close("resumed on the CPU: second moments after step 2 == the GPU's", cl.adam_v, fetch(gm.adam_v, n), n,
                TOL_GRAD);
    remove(done);
    remove(path);
    remove(state_path);
    rmdir(dir);
    cpu::model_free(&cl);
    cpu::model_free(&cm);
    gpu::model_free(&gm);
    release_all();
}

// ----------------------------------------------------------------------------

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int devices = 0;
    cudaError_t err = cudaGetDeviceCount(&devices);
    if (err != cudaSuccess || devices == 0) {
        printf("no CUDA GPU found: %s; nothing was run (on a GPU machine: dev/cuda/gpu_check.sh; without one, make emu-test runs this suite on a CPU emulation)\n",
               err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount reports 0 devices");
        printf("0 passed, 0 failed (no GPU: skipped)\n");
        return 0;
    }
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0));
    printf("GPU: %s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0);
#ifdef _OPENMP
    printf("; the CPU twin runs on %d threads", omp_get_max_threads());
#endif
    printf("\n");
    double t0 = now_seconds(), t;

    const char* dump_dir = argc > 1 ? argv[1] : "dev/dumps";
    char pattern[PATH_CAP];
    snprintf(pattern, sizeof(pattern), "%s/*.bin", dump_dir);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) fail("no reference dumps in '%s' (run dev/reference.py)", dump_dir);
    printf("== 1. reference dumps through the GPU model (%zu)\n", g.gl_pathc);
    t = now_seconds();
    for (size_t i = 0; i < g.gl_pathc; i++) test_dump(g.gl_pathv[i]);
    globfree(&g);
    printf("   (%.1f s)\n", now_seconds() - t);

    printf("== 2. every GPU function against its CPU twin (and 3. chunkwise == recurrent on the GPU)\n");
    t = now_seconds();
    test_small_layers();
    test_attention();
    test_gla_kernels(2, 300, 2, 64, 128, 64, GATES_MILD);     // GLA at d = 256: partial last chunk (300 = 4·64 + 44)
    test_gla_kernels(2, 256, 2, 64, 128, 16, GATES_STRONG);
    test_gla_kernels(2, 300, 4, 32, 64, 32, GATES_RETNET);    // RetNet at d = 128
    test_gla_kernels(1, 300, 1, 128, 128, 64, GATES_HGRN2);   // HGRN2 at d = 128, one head
    test_hgrn_kernels(2, 300, 256, 64, 0);
    test_hgrn_kernels(2, 256, 256, 16, 1);
    test_delta_kernels(2, 300, 4, 64, 64, 64, 0);            // DeltaNet at d = 256
    test_delta_kernels(1, 256, 1, 128, 128, 32, 0);          // one head of 128
    test_delta_kernels(2, 256, 3, 32, 64, 16, 1);            // Gated DeltaNet at d = 128 (main's sizes)
    test_delta_kernels(2, 300, 2, 64, 128, 64, 2);           // Gated DeltaNet, log-gates down to −20
    test_optimizer();
    printf("   (%.1f s)\n", now_seconds() - t);

    printf("== 4. whole models, GPU against CPU (B=2 T=300 chunk 64, d=128)\n");
    t = now_seconds();
    test_init();
    const char* pure[] = {"hgrn:pure", "retnet:pure", "gla:pure", "hgrn2:pure", "deltanet:pure", "gated_deltanet:pure", "attn"};
    for (int i = 0; i < 7; i++) test_model(pure[i], 2, i % 2);
    test_model("gla:3", 4, 1);
    test_model("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", 7, 0);
    printf("   (%.1f s)\n", now_seconds() - t);

    printf("== 5. incremental decoding == full forward on the GPU\n");
    t = now_seconds();
    for (int i = 0; i < 7; i++) test_decode(pure[i], 2);
    test_decode("hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet", 7);
    printf("   (%.1f s)\n", now_seconds() - t);

    printf("== 6. determinism\n");
    test_determinism();

    printf("== 7. a GPU checkpoint read and resumed by the CPU program\n");
    test_checkpoint_to_cpu();

    printf("(%.1f s in all)\n", now_seconds() - t0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? EXIT_FAILURE : 0;
}
