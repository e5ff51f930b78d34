"""CPU training throughput: ./train_gla against the same model trained by PyTorch (float32).

Run from the repository root:
    /usr/bin/python3 dev/bench_cpu.py            # full run, 4 sequence lengths, ~5-10 min on 2 cores
    /usr/bin/python3 dev/bench_cpu.py --quick    # smoke test, < 1 min
--quick: 4 steps per run (2 timed), T = 128 and 1024 only, torch with the tuned malloc only.
Options: --threads N (default 2), --steps N (default 20), --T 128,512 (sequence lengths),
--python PY[,PY:compile,...] (the torch side's interpreters, e.g. /usr/bin/python3 for Debian's torch 1.13
and a venv's python for a pip torch 2.x; ':compile' runs that one under torch.compile),
--tokens N (B*T per step, default 4096), --torch-malloc both|tuned|default (default both),
--no-build, --no-matmul, --no-check, --system-blas, --verbose (torch per-step lines),
--retries N / --max-wait S (see "Other processes" below).

Needs: apt-get install -y python3-torch libopenblas0-openmp   (plus gcc, make, and
libopenblas-openmp-dev for OpenBLAS's cblas.h to build dev/bench_matmul.c with -DWITH_CBLAS), and the
Tiny Shakespeare shards (built here with `make data` if missing, from
TINYSHAKESPEARE=../shared/data/tinyshakespeare.txt).

What is compared, like with like, for T = 128, 256, 512, 1024 at B*T = 4096 tokens per step
(B = 32, 16, 8, 4), on the same number of threads:
  C      OMP_NUM_THREADS=2 ./train_gla -b B -T T -n STEPS -u 1 -v 0 -s 0 -G 0 -k 0 -m 1 -o /tmp/bench_out --overwrite 1
         (the train_gla defaults: vocab 256, d 128, layers gla,gla,gla,attn, tied embeddings, SwiGLU
         512, GLA 2 heads Dk 64 Dv 128 gate rank 16 normaliser 16, attention 4 heads + RoPE, GLA
         chunk 16 (train_gla's default; each side runs its own fastest chunk length), AdamW lr 3e-3 betas (0.9, 0.95) wd 0.1 on matrices, clip 1.0). ms/step is the
         trainer's own per-step time (batch + forward + backward + clip + AdamW); the median over
         the steps after the first 2 is reported. -m 1 only shortens the final validation that
         train_gla runs after the last step (it is not timed).
  torch  the same model in plain PyTorch float32 (this file): chunkwise GLA with chunk 64
         (intra-chunk matrix from masked exponentials of cumulative-log-gate differences <= 0,
         batched; the state carried by a loop over chunks only), explicit causal softmax attention
         with RoPE, autograd backward, clip_grad_norm_(1.0), torch.optim.AdamW(lr 3e-3 with the
         same warmup/cosine schedule, betas (0.9, 0.95), wd 0.1 on 2-D tensors, foreach=True),
         torch.set_num_threads(2), the same training data. Same step boundaries and median.
  Both runs start from the same init distribution (fla: matrices N(0, 0.02), norms 1, bias 0) and
  read the same batches, so their losses after the last step should be close (printed).
  Peak memory is ru_maxrss of each process (the torch figure includes the ~0.2-0.3 GiB of the
  torch import itself; the baseline after import is printed too).

BLAS. Debian's torch 1.13 calls sgemm through libblas.so.3 / libopenblas.so.0, i.e. whatever the
alternatives libblas.so.3-x86_64-linux-gnu and libopenblas.so.0-x86_64-linux-gnu point at (reference
BLAS: ~3 GFLOP/s; OpenBLAS pthread flavour: fights torch's own OpenMP pool). Two fixes are applied
to the torch processes only (nothing is changed system-wide):
  * LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp, so that torch loads the OpenMP
    flavour of OpenBLAS whatever the alternatives say (checked in /proc/self/maps; the script stops
    if a non-OpenBLAS libblas is loaded). The system-wide equivalent would be
      update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
      update-alternatives --set liblapack.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3
      update-alternatives --set libopenblas.so.0-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0
  * OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512 and the variable is unset: OpenBLAS 0.3.21
    does not know recent Xeons and falls back to its SSE3 "Prescott" kernels (~3x slower sgemm).
--system-blas turns both off. The header prints the BLAS torch loaded, its core type, and the
torch.mm GFLOP/s of a 1024^3 product, and dev/bench_matmul.c (the C matmul beside OpenBLAS sgemm on
the model's shapes, N = B*T rows) is built and run with the same OpenBLAS settings.

Allocator. With glibc's default malloc, torch frees its large activations back to the kernel
(blocks above the dynamic mmap threshold, at most 32 MiB, are munmap'ed; the heap top is trimmed)
and page-faults them in again at every step, which costs it up to ~2x here. The torch runs are
therefore done twice: "tuned" with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=
68719476736 (glibc keeps freed memory, as a caching allocator such as jemalloc would; faster, more
RSS), which is the first table, and "default" (second table). ./train_gla allocates once.

Other processes. The machine is shared, so before each measurement (the BLAS timings, the matmul
table, every C and torch run) the script waits up to --max-wait seconds for the CPUs to be idle,
measures the CPU time other processes take during the run (/proc/stat minus its own children), and
redoes a run disturbed by more than 5% of the CPUs up to --retries times; runs still disturbed are
flagged in the output.

Before timing, the torch chunkwise GLA is checked against dev/reference.py's recurrent GLA (float64,
random inputs with mild and strong gates, T not a multiple of 64, outputs and gradients), and the
whole float32 torch model against the float64 reference model (loss and gradients).
"""

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPENMP_BLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
OPENMP_BLAS_INCLUDE = "/usr/include/x86_64-linux-gnu/openblas-openmp"  # its cblas.h (libopenblas-openmp-dev)
TRAIN_BIN = "data/tinyshakespeare/tiny_shakespeare_train.bin"
SHARD_HEADER_BYTES = 1024  # 256 int32, then uint16 tokens
DEFAULT_TS = (128, 256, 512, 1024)


# ==============================================================================================
# the PyTorch model (imported only in worker processes)
# ==============================================================================================


class ModelConfig:
    """train_gla's defaults (./train_gla -h)."""
    vocab_size = 256
    d_model = 128
    pattern = ("gla", "gla", "gla", "attn")
    mlp_hidden = 512
    tie_embeddings = True
    gla_heads = 2
    gla_dk = 64
    gla_dv = 128
    gla_gate_rank = 16
    gla_gate_normalizer = 16
    attn_heads = 4
    attn_kv_heads = 4
    rope_theta = 10000.0
    norm_eps = 1e-6
    chunk = 64


def torch_model_code():
    """Defines the torch model in a namespace (keeps `import torch` out of the parent process)."""
    import torch
    import torch.nn.functional as F

    def rms_norm(x, w, eps):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w

    def gla_chunkwise(q, k, v, log_gate, scale, chunk=64):
        """Chunkwise-parallel GLA.  q, k, log_gate (B,T,H,K); v (B,T,H,V) -> o (B,T,H,V).
        o_t = S_t^T (scale q_t), S_t = diag(exp(a_t)) S_{t-1} + k_t v_t^T, S_0 = 0.
        Per chunk (G = chunk-local inclusive cumsum of a, <= 0 and decreasing; S = entering state):
          o_i = scale q_i^T [ diag(exp(G_i)) S + sum_{j<=i} diag(exp(G_i - G_j)) k_j v_j^T ]
          S'  = diag(exp(G_last)) S + sum_j (exp(G_last - G_j) * k_j) v_j^T
        Every exponent is <= 0. All chunks are processed at once except the state carry."""
        B, T, H, K = q.shape
        V = v.shape[-1]
        pad = (-T) % chunk
        if pad:  # zero keys/values and zero log-gates at the end change nothing before them
            q, k, log_gate = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, log_gate))
            v = F.pad(v, (0, 0, 0, 0, 0, pad))
        N = (T + pad) // chunk

        def chunks(x):  # (B,T,H,D) -> (B,H,N,C,D)
            return x.reshape(B, N, chunk, H, x.shape[-1]).permute(0, 3, 1, 2, 4)

        q, k, v, a = chunks(q * scale), chunks(k), chunks(v), chunks(log_gate)
        G = a.cumsum(dim=-2)  # (B,H,N,C,K)
        causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
        # intra-chunk: P_ij = sum_c q_ic k_jc exp(G_ic - G_jc), j <= i; masked before the exp
        diff = G.unsqueeze(-2) - G.unsqueeze(-3)  # (B,H,N,C,C,K): [i, j] = G_i - G_j
        decay = diff.masked_fill(~causal[:, :, None], float("-inf")).exp()
        P = (q.unsqueeze(-2) * decay * k.unsqueeze(-3)).sum(-1)  # (B,H,N,C,C)
        o = P @ v  # (B,H,N,C,V)
        # inter-chunk
        G_last = G[..., -1:, :]  # (B,H,N,1,K)
        q_decay = q * G.exp()
        kv = (k * (G_last - G).exp()).transpose(-1, -2) @ v  # (B,H,N,K,V)
        chunk_decay = G_last.squeeze(-2).exp().unsqueeze(-1)  # (B,H,N,K,1)
        S = torch.zeros(B, H, K, V, dtype=q.dtype, device=q.device)
        entering = []
        for n in range(N):
            entering.append(S)
            S = chunk_decay[:, :, n] * S + kv[:, :, n]
        o = o + q_decay @ torch.stack(entering, dim=2)
        return o.permute(0, 2, 3, 1, 4).reshape(B, N * chunk, H, V)[:, :T]

    rope_cache = {}

    def rope(x, theta):
        """Non-interleaved rotate-half RoPE at positions 0..T-1.  x (B,T,H,D)."""
        B, T, H, D = x.shape
        key = (T, D, x.dtype)
        if key not in rope_cache:
            half = D // 2
            inv = theta ** (-torch.arange(half, dtype=torch.float64) * 2.0 / D)
            ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
            rope_cache[key] = (ang.cos().to(x.dtype)[None, :, None, :], ang.sin().to(x.dtype)[None, :, None, :])
        cos, sin = rope_cache[key]
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    mask_cache = {}

    def gla_mixer(cfg, p, x):
        B, T, _ = x.shape
        H = cfg.gla_heads
        K, V = cfg.gla_dk // H, cfg.gla_dv // H
        q = F.linear(x, p["q_proj"]).view(B, T, H, K)
        k = F.linear(x, p["k_proj"]).view(B, T, H, K)
        v = F.linear(x, p["v_proj"]).view(B, T, H, V)
        z = F.linear(x, p["g_proj"]).view(B, T, H, V)
        gk = F.linear(F.linear(x, p["gk_proj1"]), p["gk_proj2"], p["gk_bias"])
        log_gate = (F.logsigmoid(gk) / cfg.gla_gate_normalizer).view(B, T, H, K)
        o = gla_chunkwise(q, k, v, log_gate, K ** -0.5, cfg.chunk)
        gated = rms_norm(o, p["g_norm"], cfg.norm_eps) * F.silu(z)
        return F.linear(gated.reshape(B, T, H * V), p["o_proj"])

    def attn_mixer(cfg, p, x):
        B, T, d = x.shape
        H, Hkv = cfg.attn_heads, cfg.attn_kv_heads
        hd = d // H
        q = rope(F.linear(x, p["q_proj"]).view(B, T, H, hd), cfg.rope_theta).transpose(1, 2)
        k = rope(F.linear(x, p["k_proj"]).view(B, T, Hkv, hd), cfg.rope_theta).transpose(1, 2)
        v = F.linear(x, p["v_proj"]).view(B, T, Hkv, hd).transpose(1, 2)
        if Hkv != H:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        if T not in mask_cache:
            mask_cache[T] = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = (q @ k.transpose(-1, -2)) * hd ** -0.5  # (B,H,T,T)
        probs = torch.softmax(scores.masked_fill(mask_cache[T], float("-inf")), dim=-1)
        o = (probs @ v).transpose(1, 2).reshape(B, T, H * hd)
        return F.linear(o, p["o_proj"])

    MIXERS = {"gla": gla_mixer, "attn": attn_mixer}

    def parameter_shapes(cfg):
        """(name, shape, init) in dev/reference.py's canonical order and naming."""
        d, I, r = cfg.d_model, cfg.mlp_hidden, cfg.gla_gate_rank
        out = [("embed", (cfg.vocab_size, d), "w")]
        for l, name in enumerate(cfg.pattern):
            out.append((f"layers.{l}.attn_norm", (d,), "one"))
            if name == "gla":
                dk, dv = cfg.gla_dk, cfg.gla_dv
                out += [(f"layers.{l}.gla.{s}", shp, ini) for s, shp, ini in [
                    ("q_proj", (dk, d), "w"), ("k_proj", (dk, d), "w"), ("v_proj", (dv, d), "w"),
                    ("g_proj", (dv, d), "w"), ("gk_proj1", (r, d), "w"), ("gk_proj2", (dk, r), "w"),
                    ("gk_bias", (dk,), "zero"), ("g_norm", (dv // cfg.gla_heads,), "one"),
                    ("o_proj", (d, dv), "w")]]
            else:
                hd = d // cfg.attn_heads
                out += [(f"layers.{l}.attn.q_proj", (cfg.attn_heads * hd, d), "w"),
                        (f"layers.{l}.attn.k_proj", (cfg.attn_kv_heads * hd, d), "w"),
                        (f"layers.{l}.attn.v_proj", (cfg.attn_kv_heads * hd, d), "w"),
                        (f"layers.{l}.attn.o_proj", (d, cfg.attn_heads * hd), "w")]
            out += [(f"layers.{l}.mlp_norm", (d,), "one"), (f"layers.{l}.mlp.gate_proj", (I, d), "w"),
                    (f"layers.{l}.mlp.up_proj", (I, d), "w"), (f"layers.{l}.mlp.down_proj", (d, I), "w")]
        out.append(("norm", (d,), "one"))
        if not cfg.tie_embeddings:
            out.append(("lm_head", (cfg.vocab_size, d), "w"))
        return out

    def init_params(cfg, seed):
        """fla's init as in train_gla: matrices N(0, 0.02), norm weights 1, biases 0 (float32)."""
        gen = torch.Generator().manual_seed(seed)
        params = {}
        for name, shape, init in parameter_shapes(cfg):
            if init == "w":
                t = 0.02 * torch.randn(shape, generator=gen)
            elif init == "one":
                t = torch.ones(shape)
            else:
                t = torch.zeros(shape)
            params[name] = t.requires_grad_(True)
        return params

    def sub(params, prefix):
        n = len(prefix) + 1
        return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}

    def forward(cfg, params, inputs, targets):
        """inputs, targets (B,T) int64 -> mean cross-entropy (targets -100 ignored)."""
        eps = cfg.norm_eps
        h = F.embedding(inputs, params["embed"])
        for l, name in enumerate(cfg.pattern):
            x = rms_norm(h, params[f"layers.{l}.attn_norm"], eps)
            h = h + MIXERS[name](cfg, sub(params, f"layers.{l}.{name}"), x)
            x = rms_norm(h, params[f"layers.{l}.mlp_norm"], eps)
            mlp = F.linear(F.silu(F.linear(x, params[f"layers.{l}.mlp.gate_proj"]))
                           * F.linear(x, params[f"layers.{l}.mlp.up_proj"]), params[f"layers.{l}.mlp.down_proj"])
            h = h + mlp
        h = rms_norm(h, params["norm"], eps)
        logits = F.linear(h, params["embed"] if cfg.tie_embeddings else params["lm_head"])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    return dict(gla_chunkwise=gla_chunkwise, forward=forward, init_params=init_params,
                parameter_shapes=parameter_shapes)


# ==============================================================================================
# worker processes (torch)
# ==============================================================================================


def blas_info():
    """Which BLAS this (torch) process loaded, and what OpenBLAS says about itself."""
    import ctypes
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[-1].startswith("/"):
                maps.add(parts[-1])
    blas = sorted(p for p in maps if re.search(r"/lib(open)?blas[^/]*\.so", p))
    info = dict(libs=blas, core=None, parallel=None, blas_threads=None, config=None)
    for path in blas:
        if "openblas" in os.path.basename(path) or "libopenblas" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_get_config.restype = ctypes.c_char_p
                info.update(core=lib.openblas_get_corename().decode(), parallel=lib.openblas_get_parallel(),
                            blas_threads=lib.openblas_get_num_threads(),
                            config=lib.openblas_get_config().decode().strip())
                break
            except (OSError, AttributeError):
                pass
    return info


def worker_blas(args):
    import torch
    torch.set_num_threads(args.threads)
    info = blas_info()
    gen = torch.Generator().manual_seed(0)
    results = {}
    for n in (1024,):
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        for _ in range(3):
            torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(20))
        results[f"mm{n}"] = 2 * n ** 3 / best * 1e-9
    # the model's shapes, N = tokens rows: y = x W^T (as F.linear does)
    shapes = [(128, 64), (128, 128), (128, 512), (512, 128), (128, 256), (128, 16), (16, 64)]
    rows = []
    for C, OC in shapes:
        x = torch.randn(args.tokens, C, generator=gen)
        w = torch.randn(OC, C, generator=gen)
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        best = min(_timed(lambda: torch.nn.functional.linear(x, w)) for _ in range(15))
        rows.append((C, OC, 2 * args.tokens * C * OC / best * 1e-9))
    info.update(results, linear=rows, torch=torch.__version__, threads=torch.get_num_threads())
    print("JSON " + json.dumps(info))


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker_check(args):
    """Chunkwise torch GLA vs the recurrent reference; the float32 model vs the float64 reference."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True
    import reference as ref
    M = torch_model_code()

    gen = torch.Generator().manual_seed(7)
    B, T, H, K, V = 2, 150, 2, 8, 16  # T = 2 full chunks + a partial one
    worst = {}
    for what, make_gate in [
        ("mild", lambda: F.logsigmoid(torch.randn(B, T, H, K, dtype=torch.float64, generator=gen)) / 16),
        ("strong", lambda: -5.0 * torch.rand(B, T, H, K, dtype=torch.float64, generator=gen)),
    ]:
        q, k = (torch.randn(B, T, H, K, dtype=torch.float64, generator=gen) for _ in range(2))
        v = torch.randn(B, T, H, V, dtype=torch.float64, generator=gen)
        g = make_gate()
        dout = torch.randn(B, T, H, V, dtype=torch.float64, generator=gen)
        for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 2e-5)]:
            leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v, g)]
            o_ref = ref.gla_recurrent(*[t.double() for t in leaves], K ** -0.5)
            grads_ref = torch.autograd.grad((o_ref * dout).sum(), leaves)
            o = M["gla_chunkwise"](*leaves, K ** -0.5, 64)
            grads = torch.autograd.grad((o * dout.to(dtype)).sum(), leaves)
            errs = [((o.double() - o_ref).abs().max() / o_ref.abs().max()).item()]
            errs += [((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
                     for a, b in zip(grads, grads_ref)]
            err = max(errs)
            worst[f"{what}/{str(dtype)[6:]}"] = err
            assert err <= tol, f"chunkwise GLA ({what} gates, {dtype}) differs from the recurrent one by {err:.2e}"

    # the whole model, float32 chunkwise vs the float64 recurrent reference, same parameters
    cfg = ModelConfig()
    rcfg = ref.Config(vocab_size=cfg.vocab_size, d_model=cfg.d_model, pattern=cfg.pattern, mlp_hidden=cfg.mlp_hidden,
                      tie_embeddings=cfg.tie_embeddings, gla_heads=cfg.gla_heads, gla_dk=cfg.gla_dk,
                      gla_dv=cfg.gla_dv, gla_gate_rank=cfg.gla_gate_rank,
                      gla_gate_normalizer=cfg.gla_gate_normalizer, attn_heads=cfg.attn_heads,
                      attn_kv_heads=cfg.attn_kv_heads, rope_theta=cfg.rope_theta, norm_eps=cfg.norm_eps,
                      batch=2, seq_len=100)
    names = [n for n, _, _ in M["parameter_shapes"](cfg)]
    ref_names = [n for n, _, _ in ref.parameter_specs(rcfg)]
    assert names == ref_names, "torch model parameters differ from dev/reference.py's table"
    p64 = ref.init_parameters(rcfg, torch.Generator().manual_seed(11))  # float32-representable
    inputs = torch.randint(0, cfg.vocab_size, (2, 100), generator=gen)
    targets = torch.randint(0, cfg.vocab_size, (2, 100), generator=gen)
    loss_ref, grads_ref = ref.loss_and_grads(rcfg, p64, inputs, targets)
    p32 = {n: t.float().requires_grad_(True) for n, t in p64.items()}
    loss = M["forward"](cfg, p32, inputs, targets)
    grads = torch.autograd.grad(loss, list(p32.values()))
    loss_err = abs(loss.item() - loss_ref) / abs(loss_ref)
    grad_err = max(((g.double() - grads_ref[n]).abs().max() / grads_ref[n].abs().max().clamp_min(1e-12)).item()
                   for n, g in zip(p32, grads))
    assert loss_err < 1e-5 and grad_err < 1e-3, f"torch model vs reference: loss {loss_err:.2e} grads {grad_err:.2e}"
    nparams = sum(t.numel() for t in p32.values())
    print("JSON " + json.dumps(dict(gla=worst, model_loss=loss_err, model_grad=grad_err, nparams=nparams)))


def worker_train(args):
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    M = torch_model_code()
    cfg = ModelConfig()
    rss_import = _rss_mib()

    B, T, steps = args.B, args.T, args.steps
    tokens = np.fromfile(os.path.join(ROOT, TRAIN_BIN), dtype=np.uint16, offset=SHARD_HEADER_BYTES)
    tokens = torch.from_numpy(tokens.astype(np.int64))
    params = M["init_params"](cfg, 1337)
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() != 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1), dict(params=no_decay, weight_decay=0.0)],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    plist = list(params.values())

    def lr_at(step, lr=3e-3, warmup=1, min_frac=0.1):  # train_gla's schedule
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * min_frac + 0.5 * (lr - lr * min_frac) * (1 + math.cos(math.pi * progress))

    # --compile: torch.compile of the whole forward (its backward compiled by AOTAutograd); the first
    # steps compile and are warm-up, outside the median
    forward = torch.compile(M["forward"]) if args.compile else M["forward"]
    pos, span = 0, B * T
    times, losses = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        if pos + span + 1 > tokens.numel():
            pos = 0
        chunk = tokens[pos: pos + span + 1]
        pos += span
        inputs, targets = chunk[:-1].view(B, T), chunk[1:].view(B, T)
        loss = forward(cfg, params, inputs, targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(plist, 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - t0) * 1e3)
        losses.append(loss.item())
        if args.verbose:
            print(f"  torch step {step + 1}/{steps} | loss {losses[-1]:.4f} | norm {norm.item():.3f} | "
                  f"{times[-1]:.1f} ms", file=sys.stderr)
    print("JSON " + json.dumps(dict(ms=times, losses=losses, rss_import=rss_import,
                                    nparams=sum(p.numel() for p in plist))))


def _rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ==============================================================================================
# the parent: builds, runs the workers and ./train_gla, prints the tables (no torch imported here)
# ==============================================================================================


def run_with_rusage(cmd, env, timeout=None):
    """Like subprocess.run, plus the child's own peak RSS (os.wait4), in MiB."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import threading
    bufs = {}

    def drain(name, stream):
        bufs[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", p.stdout), ("err", p.stderr))]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.time() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if deadline is not None and time.time() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            for t in threads:
                t.join()
            raise RuntimeError(f"timed out after {timeout} s: {' '.join(cmd)}\n{bufs.get('out', '')[-3000:]}")
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    return p.returncode, bufs.get("out", ""), bufs.get("err", ""), ru.ru_maxrss / 1024.0


# glibc malloc returns every freed block above mmap_threshold (at most 32 MiB) to the kernel, so each
# torch step page-faults its large activations in afresh (~2x slower steps here). Raising both
# thresholds makes glibc keep freed memory, as a caching allocator (jemalloc, tcmalloc) would.
MALLOC_TUNED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def torch_env(args, malloc="tuned"):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.threads)
    if malloc == "tuned":
        env["GLIBC_TUNABLES"] = MALLOC_TUNED + (":" + env["GLIBC_TUNABLES"] if env.get("GLIBC_TUNABLES") else "")
    env.pop("OPENBLAS_NUM_THREADS", None)
    if not args.system_blas:
        if os.path.isdir(OPENMP_BLAS_DIR):
            env["LD_LIBRARY_PATH"] = OPENMP_BLAS_DIR + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        if "OPENBLAS_CORETYPE" not in env and cpu_has("avx512f"):
            env["OPENBLAS_CORETYPE"] = "SkylakeX"
    return env


def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split()
    except OSError:
        pass
    return False


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def worker(mode, args, extra=(), timeout=900, malloc="tuned", python=None, compile=False, env_extra=None):
    cmd = [python or args.pythons[0], os.path.abspath(__file__), "--worker", mode, "--threads", str(args.threads),
           "--tokens", str(args.tokens)] + (["--compile"] if compile else []) + list(extra)
    env = torch_env(args, malloc)
    env.update(env_extra or {})
    rc, out, err, rss = run_with_rusage(cmd, env, timeout)
    if rc != 0:
        sys.exit(f"torch worker '{mode}' failed (exit {rc}):\n{out[-3000:]}\n{err[-3000:]}")
    js = [line[5:] for line in out.splitlines() if line.startswith("JSON ")]
    return json.loads(js[-1]), rss, err


STEP_RE = re.compile(r"^step\s+(\d+)/(\d+) \| loss ([0-9.eE+-]+|nan|inf) \|.*\| ([0-9.]+) ms \| ([0-9.]+) tok/s")


def run_c(args, B, T, steps):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = ["./train_gla", "-b", str(B), "-T", str(T), "-n", str(steps), "-u", "1", "-v", "0", "-s", "0",
           "-G", "0", "-k", "0", "-m", "1", "-o", "/tmp/bench_out", "--overwrite", "1"]
    rc, out, err, rss = run_with_rusage(cmd, env, timeout=900)
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {rc}):\n{out[-3000:]}\n{err[-3000:]}")
    ms, losses, gflops, nparams, flops_tok = [], [], [], None, float("nan")
    for line in out.splitlines():
        m = STEP_RE.match(line)
        if m:
            ms.append(float(m.group(4)))
            losses.append(float(m.group(3)))
            g = re.search(r"\| ([0-9.]+) GFLOP/s", line)
            if g:
                gflops.append(float(g.group(1)))
        m = re.match(r"FLOPs per token: ([0-9.eE+]+)", line)
        if m:
            flops_tok = float(m.group(1))
        m = re.match(r"parameters: (\d+)", line)
        if m:
            nparams = int(m.group(1))
    if len(ms) != steps:
        sys.exit(f"parsed {len(ms)} step lines from ./train_gla, expected {steps}:\n{out[-3000:]}")
    return dict(ms=ms, losses=losses, nparams=nparams, rss=rss, cmd=" ".join(cmd), gflops=gflops, flops_tok=flops_tok)


def build(args):
    if args.no_build:
        if not os.path.exists(os.path.join(ROOT, "train_gla")):
            sys.exit("./train_gla is missing (run make train_gla)")
        return
    r = subprocess.run(["make", "train_gla"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        if os.path.exists(os.path.join(ROOT, "train_gla")):
            print(f"WARNING: make train_gla failed; benchmarking the existing ./train_gla\n{r.stderr[-1500:]}")
        else:
            sys.exit(f"make train_gla failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    if not os.path.exists(os.path.join(ROOT, TRAIN_BIN)):
        env = dict(os.environ)
        env.setdefault("TINYSHAKESPEARE", os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
        r = subprocess.run(["make", "data"], cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(os.path.join(ROOT, TRAIN_BIN)):
            sys.exit(f"make data failed (set TINYSHAKESPEARE=path/to/tinyshakespeare.txt):\n{r.stdout}\n{r.stderr}")


def matmul_bench(args):
    """Builds dev/bench_matmul.c with -DWITH_CBLAS against the OpenMP OpenBLAS and returns its
    speed table (lines), or None where it cannot be built."""
    src = os.path.join(HERE, "bench_matmul.c")
    lib = os.path.join(OPENMP_BLAS_DIR, "libopenblas.so.0")
    if not os.path.exists(src) or not os.path.exists(lib) or shutil.which("gcc") is None:
        return None, "dev/bench_matmul.c, gcc or the OpenMP OpenBLAS is missing"
    exe = f"/tmp/bench_matmul_cpu_{os.getpid()}"
    cmd = ["gcc", "-O3", "-march=native", "-fopenmp", "-Werror=implicit-function-declaration", "-DWITH_CBLAS",
           "-I" + OPENMP_BLAS_INCLUDE, src, "-o", exe, "-lm", lib,
           f"-Wl,-rpath,{OPENMP_BLAS_DIR}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return None, "build failed: " + " ".join(cmd) + "\n" + r.stderr[-1500:]
    env = torch_env(args)
    env["SKIPCHECK"] = "1"
    try:
        r = subprocess.run([exe, str(args.tokens), "0.05" if args.quick else "0.25"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    finally:
        if os.path.exists(exe):
            os.remove(exe)
    if r.returncode not in (0, 1):  # 1: a correctness failure, which SKIPCHECK skips anyway
        return None, f"bench_matmul exited {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
    lines = r.stdout.rstrip().splitlines()
    keep, on = [], False
    for line in lines:
        if line.startswith("matmul:") or line.startswith("OpenBLAS:"):
            keep.append(line)
        if line.startswith("== speed"):
            on = True
        if on:
            keep.append(line)
    return keep, " ".join(cmd)


def fmt_row(cells):
    return "| " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (< 1 min): 4 steps, T = 128 and 1024, torch with the tuned malloc only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="steps per run (default 20, --quick 4)")
    ap.add_argument("--T", default="", help="comma-separated sequence lengths (default 128,256,512,1024)")
    ap.add_argument("--tokens", type=int, default=4096, help="B*T tokens per step")
    ap.add_argument("--no-build", action="store_true", help="do not run make train_gla")
    ap.add_argument("--no-matmul", action="store_true", help="skip the matmul table")
    ap.add_argument("--no-check", action="store_true", help="skip the torch-vs-reference checks")
    ap.add_argument("--system-blas", action="store_true",
                    help="leave torch on the system BLAS (no LD_LIBRARY_PATH / OPENBLAS_CORETYPE)")
    ap.add_argument("--verbose", action="store_true", help="per-step lines from the torch runs")
    ap.add_argument("--retries", type=int, default=-1,
                    help="reruns of a measurement disturbed by other processes (> 5%% of the CPUs);"
                         " default 2, --quick 0")
    ap.add_argument("--max-wait", type=float, default=-1,
                    help="seconds to wait for an idle machine before each measurement; default 120, --quick 5")
    ap.add_argument("--python", default="",
                    help="comma-separated interpreters to run the torch side with, each as is and, with a"
                         " ':compile' suffix, under torch.compile (default: this interpreter, e.g. Debian's"
                         " /usr/bin/python3 with torch 1.13; a pip torch in a venv: /path/venv/bin/python)")
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-malloc", choices=["both", "tuned", "default"], default="",
                    help="glibc malloc settings of the torch runs (default: both; --quick: tuned)")
    # internal
    ap.add_argument("--worker", choices=["blas", "check", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--B", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--T1", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        if args.worker == "train":
            args.T = args.T1
        {"blas": worker_blas, "check": worker_check, "train": worker_train}[args.worker](args)
        return

    t_start = time.time()
    # the torch variants: (label, interpreter, torch.compile)
    torches = []
    for spec in (args.python.split(",") if args.python else [sys.executable]):
        py, _, mode = spec.partition(":")
        if mode not in ("", "compile"):
            sys.exit(f"--python {spec}: the only suffix is ':compile'")
        torches.append((spec, py, mode == "compile"))
    args.pythons = [py for _, py, _ in torches]
    steps = args.steps or (4 if args.quick else 20)
    args.torch_malloc = args.torch_malloc or ("tuned" if args.quick else "both")
    if args.retries < 0:
        args.retries = 0 if args.quick else 2
    if args.max_wait < 0:
        args.max_wait = 5 if args.quick else 120
    if steps < 3:
        sys.exit("--steps must be >= 3 (the first 2 steps are warm-up)")
    Ts = [int(t) for t in args.T.split(",")] if args.T else ([128, 1024] if args.quick else list(DEFAULT_TS))
    for T in Ts:
        if args.tokens % T:
            sys.exit(f"T={T} does not divide --tokens {args.tokens}")

    build(args)
    print(f"# CPU training benchmark: ./train_gla vs PyTorch float32 ({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; threads used: {args.threads} (both sides)")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        print(f"repo: {rev or '?'}{' (+ uncommitted changes)' if dirty else ''}")
    except OSError:
        pass
    alt = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                         capture_output=True, text=True).stdout
    alt_value = re.search(r"^Value: (.*)$", alt, re.M)
    env = torch_env(args)

    (info, _, _), other = run_clean(args, lambda: worker("blas", args), "torch BLAS timing")
    blas_lib = next((p for p in info["libs"] if "libblas.so" in p), None) or (info["libs"] or ["?"])[0]
    print(f"torch {info['torch']} ({info['threads']} threads), BLAS loaded: {', '.join(info['libs']) or 'none found'}")
    print(f"  system alternative libblas.so.3: {alt_value.group(1) if alt_value else '?'}; "
          f"this run: LD_LIBRARY_PATH={env.get('LD_LIBRARY_PATH', '(unset)')} "
          f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', '(unset)')}")
    if info["core"]:
        par = {0: "sequential", 1: "pthreads", 2: "OpenMP"}.get(info["parallel"], str(info["parallel"]))
        print(f"  OpenBLAS core {info['core']}, {par}, {info['blas_threads']} threads ({info['config']})")
    print(f"torch sgemm (torch.mm 1024x1024x1024, fp32): {info['mm1024']:.1f} GFLOP/s"
          + (f"  (WARNING: other processes used {100 * other:.0f}% CPU meanwhile)" if other > 0.05 else ""))
    print("torch F.linear on the model's shapes (N = %d rows), GFLOP/s: %s" % (
        args.tokens, ", ".join(f"{c}->{o} {g:.0f}" for c, o, g in info["linear"])))
    reference_blas = blas_lib.startswith("/usr/lib/x86_64-linux-gnu/blas/") or "openblas" not in " ".join(info["libs"])
    if reference_blas and not args.system_blas:
        sys.exit("torch is not running on OpenBLAS: apt-get install -y libopenblas0-openmp")
    if info["mm1024"] < 50:
        print("WARNING: torch sgemm below 50 GFLOP/s: the comparison would flatter the C code")
    # the arithmetic-rate goal is held against the fastest sgemm at hand: where the environment pins
    # OpenBLAS to other kernels (e.g. OPENBLAS_CORETYPE=Haswell) on an AVX-512 CPU, time its AVX-512
    # kernels too and use the faster
    sgemm = dict(gf=info["mm1024"], what=f"OpenBLAS {info['core'] or '-'} kernels")
    if info["core"] and cpu_has("avx512f") and env.get("OPENBLAS_CORETYPE") != "SkylakeX" and not args.system_blas:
        (info512, _, _), other512 = run_clean(
            args, lambda: worker("blas", args, env_extra={"OPENBLAS_CORETYPE": "SkylakeX"}), "torch BLAS timing (AVX-512)")
        print(f"torch sgemm with OPENBLAS_CORETYPE=SkylakeX (core {info512['core']}): {info512['mm1024']:.1f} GFLOP/s"
              + (f"  (WARNING: other processes used {100 * other512:.0f}% CPU meanwhile)" if other512 > 0.05 else ""))
        if info512["mm1024"] > sgemm["gf"]:
            sgemm = dict(gf=info512["mm1024"], what=f"OpenBLAS {info512['core']} kernels")
    for py in dict.fromkeys(args.pythons[1:]):  # each other interpreter once
        if py == args.pythons[0]:
            continue
        (oi, _, _), _ = run_clean(args, lambda: worker("blas", args, python=py), f"torch BLAS timing ({py})")
        print(f"also: {py}: torch {oi['torch']} ({oi['threads']} threads), BLAS libraries loaded:"
              f" {', '.join(oi['libs']) or 'none (its own, linked in)'}; torch.mm 1024^3 {oi['mm1024']:.1f} GFLOP/s")

    if not args.no_matmul:
        (lines, how), other = run_clean(args, lambda: matmul_bench(args), "bench_matmul")
        if lines is None:
            print(f"C matmul vs OpenBLAS: skipped ({how})")
        else:
            print(f"\nC matmul (train_gla.c) vs OpenBLAS sgemm, dev/bench_matmul.c (built: {how};"
                  f" run with OMP_NUM_THREADS={args.threads} OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', '')}"
                  f" SKIPCHECK=1):")
            for line in lines:
                print("    " + line)
            if other > 0.05:
                print(f"    (WARNING: other processes used {100 * other:.0f}% CPU during this table)")

    if not args.no_check:
        chk, _, _ = worker("check", args)
        print("\ncheck: torch chunkwise GLA vs dev/reference.py gla_recurrent (max rel err of o and grads): "
              + ", ".join(f"{k} {v:.1e}" for k, v in chk["gla"].items()))
        print(f"check: float32 torch model vs float64 reference model (T=100): loss rel err {chk['model_loss']:.1e},"
              f" grads max rel err {chk['model_grad']:.1e}; {chk['nparams']} parameters")

    mallocs = ["tuned", "default"] if args.torch_malloc == "both" else [args.torch_malloc]
    # every (interpreter, compile) with every malloc setting; the label names both when needed
    variants = [(f"{label}/{malloc}" if len(torches) > 1 or len(mallocs) > 1 else label, py, comp, malloc)
                for label, py, comp in torches for malloc in mallocs]
    print(f"\nruns: {steps} steps each, median ms/step over steps 3..{steps}; B*T = {args.tokens} tokens/step;"
          f" torch malloc: {', '.join(mallocs)} (tuned = GLIBC_TUNABLES={MALLOC_TUNED})")
    rows = []
    for T in Ts:
        B = args.tokens // T
        c, c_other = run_clean(args, lambda: run_c(args, B, T, steps), f"C T={T}")
        c_ms = statistics.median(c["ms"][2:])
        c_gf = statistics.median(c["gflops"][2:]) if len(c["gflops"]) == steps else float("nan")
        row = dict(T=T, B=B, c_ms=c_ms, c_tok=args.tokens / c_ms * 1e3, c_rss=c["rss"], c_gf=c_gf,
                   flops_tok=c["flops_tok"], torch={})
        line = (f"T={T:5d} B={B:3d} | C {c_ms:7.1f} ms [{min(c['ms'][2:]):.0f}-{max(c['ms'][2:]):.0f}] "
                f"{c_gf:.0f} GFLOP/s loss {c['losses'][-1]:.3f} rss {c['rss']:.0f} MiB" + busy_note(c_other))
        for label, py, comp, malloc in variants:
            extra = ["--B", str(B), "--T1", str(T), "--steps", str(steps)] + (["--verbose"] if args.verbose else [])
            (tj, trss, terr), t_other = run_clean(
                args, lambda: worker("train", args, extra, malloc=malloc, python=py, compile=comp),
                f"torch {label} T={T}")
            if args.verbose:
                print(f"torch {label} T={T}:\n{terr.rstrip()}")
            if c["nparams"] is not None and c["nparams"] != tj["nparams"]:
                sys.exit(f"parameter counts differ: C {c['nparams']}, torch {tj['nparams']}")
            t_ms = statistics.median(tj["ms"][2:])
            row["torch"][label] = dict(ms=t_ms, tok=args.tokens / t_ms * 1e3, rss=trss)
            line += (f" | torch {label} {t_ms:7.1f} ms [{min(tj['ms'][2:]):.0f}-{max(tj['ms'][2:]):.0f}] "
                     f"loss {tj['losses'][-1]:.3f} rss {trss:.0f} MiB (after import {tj['rss_import']:.0f})"
                     f"{busy_note(t_other)} | C {t_ms / c_ms:.2f}x")
        rows.append(row)
        print(line, flush=True)
    if DISTURBED:
        print("WARNING: other processes used > 5% of the CPUs during: " + ", ".join(DISTURBED)
              + "; those timings are not reliable")
    else:
        print("other processes used < 5% of the CPUs during every run")

    print(f"\nparameters: {c['nparams']}; model: train_gla defaults (d 128, gla,gla,gla,attn, tied, SwiGLU 512,"
          f" GLA 2 heads Dk 64 Dv 128, attn 4 heads; GLA chunk 16 in C, 64 in torch); {args.threads} threads both sides; torch sgemm"
          f" {info['mm1024']:.0f} GFLOP/s (OpenBLAS {info['core'] or '-'}); {steps} steps, median of the last"
          f" {steps - 2}")
    # the C trainer's arithmetic rate (train_gla's own FLOPs-per-token estimate, model.h) beside the
    # sgemm rate of OpenBLAS measured in this run (torch.mm 1024^3 of the first interpreter)
    print(f"\nC trainer GFLOP/s (model.h's FLOPs per token x tok/s, median step) vs the fastest sgemm of this run:"
          f" {sgemm['gf']:.1f} GFLOP/s (torch.mm 1024^3, {sgemm['what']}):\n")
    print(fmt_row(["T", "FLOPs/token", "C GFLOP/s", "% of sgemm"]))
    print(fmt_row(["---:"] * 4))
    for r in rows:
        print(fmt_row([str(r["T"]), f"{r['flops_tok']:.3g}", f"{r['c_gf']:.1f}",
                       f"{100 * r['c_gf'] / sgemm['gf']:.0f}%"]))
    for label, _, _, malloc in variants:
        title = {"tuned": "glibc malloc keeping freed memory (GLIBC_TUNABLES above)",
                 "default": "glibc's default malloc"}[malloc]
        print(f"\ntorch {label}, {title}:\n")
        print(fmt_row(["T", "B", "C tok/s", "C ms/step", "torch tok/s", "torch ms/step", "ratio C/torch",
                       "C max RSS MiB", "torch max RSS MiB"]))
        print(fmt_row(["---:"] * 9))
        for r in rows:
            t = r["torch"][label]
            print(fmt_row([str(r["T"]), str(r["B"]), f"{r['c_tok']:.0f}", f"{r['c_ms']:.1f}", f"{t['tok']:.0f}",
                           f"{t['ms']:.1f}", f"{r['c_tok'] / t['tok']:.2f}", f"{r['c_rss']:.0f}", f"{t['rss']:.0f}"]))
    print(f"\n(ratio = C tok/s / torch tok/s; > 1: the C trainer is faster. Total bench time "
          f"{time.time() - t_start:.0f} s.)")


def cpu_busy_seconds():
    """Non-idle CPU seconds of the whole machine so far (from /proc/stat), or -1."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        steal = fields[7] if len(fields) > 7 else 0
        return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0


DISTURBED = []  # labels of the measurements that stayed disturbed after the reruns
BUSY = 0.05  # a run during which other processes used more than this share of the CPUs is redone


def busy_note(other):
    return f" (BUSY: other processes used {100 * other:.0f}% CPU)" if other > BUSY else ""


def wait_idle(limit_s, window=2.0):
    """Waits (at most limit_s) until other processes use < 10% of the CPUs over `window` seconds."""
    t0 = time.time()
    while True:
        b0, w0 = cpu_busy_seconds(), time.time()
        time.sleep(window)
        frac = (cpu_busy_seconds() - b0) / ((time.time() - w0) * (os.cpu_count() or 1))
        if frac < 0.1 or b0 < 0 or time.time() - t0 > limit_s:
            return frac, time.time() - t0


def run_clean(args, fn, label):
    """Runs fn after waiting for an idle machine; reruns it (up to --retries times) when other
    processes took more than 5% of the CPUs meanwhile. Returns (result, others' CPU share), keeping
    the least disturbed attempt."""
    best = None
    for attempt in range(1 + args.retries):
        frac, waited = wait_idle(args.max_wait)
        if waited > 10 or frac >= 0.1:
            print(f"  ({label}: waited {waited:.0f} s for other processes to finish; still {100 * frac:.0f}% busy)"
                  if frac >= 0.1 else f"  ({label}: waited {waited:.0f} s for an idle machine)", flush=True)
        result, other = measure_others(fn)
        if best is None or other < best[1]:
            best = (result, other)
        if other <= BUSY:
            break
        if attempt < args.retries:
            print(f"  ({label}: other processes used {100 * other:.0f}% CPU meanwhile; rerunning)", flush=True)
    if best[1] > BUSY:
        DISTURBED.append(f"{label} ({100 * best[1]:.0f}%)")
    return best


def measure_others(fn):
    """(fn(), fraction of the machine's CPU time used by processes other than our children)."""
    b0, c0, w0 = cpu_busy_seconds(), children_cpu_seconds(), time.time()
    result = fn()
    wall = max(time.time() - w0, 1e-3)
    return result, max(0.0, (cpu_busy_seconds() - b0) - (children_cpu_seconds() - c0)) / (wall * (os.cpu_count() or 1))


def children_cpu_seconds():
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    main()
