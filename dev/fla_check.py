#!/usr/bin/env python3
"""Cross-checks between this project's C models and flash-linear-attention (fla) / Hugging Face.

Run it with the interpreter of a virtual environment that has torch, flash-linear-attention (fla),
transformers and safetensors (not needed by `make test`; dev/fla_names.md says how it was set up and
maps every parameter name). Commands:

  fla_check.py load DIR --ids "1 2 3" --logits FILE [--tol 1e-4]
      Loads DIR (model.safetensors + config.json, as `train_gla export` writes them) with
      AutoModelForCausalLM.from_pretrained, refusing missing / unexpected / mis-shaped weights, runs
      fla's forward in float32 on the ids and compares its logits with FILE (raw little-endian
      float32, shape (T, V), as `train_gla logits` writes them).

  fla_check.py make FAMILY DIR [--hybrid] [--layers N] [--tie 0|1] [--seed S] [--seq-len T]
      Builds a small random model with fla's own config and model classes (d = 64, vocab 256),
      FAMILY one of gla hgrn hgrn2 retnet deltanet gated_deltanet attn, with --hybrid a 3:1 pattern
      whose every 4th layer is softmax attention (the config's `attn` dict), and saves it with
      save_pretrained(DIR). Also writes DIR/ids.txt and DIR/logits.f32 (fla's logits on those ids),
      so that `train_gla import` + `train_gla logits` can be compared with them.

  fla_check.py to-c DIR OUT.bin
      A Python twin of `train_gla import`: checks DIR's config against what the C program
      implements (the same refusals) and writes a C model file (header + float32 parameters in
      model.h's canonical order). Lets the fla -> C direction be checked without the C importer, and
      gives the C importer a file to compare byte for byte.

  fla_check.py ref FAMILY [--hybrid] [...make options]
      Builds the model as `make` does and compares fla's logits with dev/reference.py's float64
      forward on the same weights, renamed through the name map below: checks the name/shape map
      and the layer math without the C program.

  fla_check.py from-c CKPT.bin DIR
      A Python twin of `train_gla export`: C model file -> DIR/model.safetensors + config.json
      (the minimal config.json the C exporter should write; see fla_config_json).

  fla_check.py all --c-bin PATH/train_gla --work DIR [--families ...] [--py-import] [--py-export]
      Every family, pure and 3:1 (plus the attention-only Transformer), both directions:
        C -> fla: train_gla -n 0 (a fresh model), train_gla export, train_gla logits, then `load`;
        fla -> C: `make`, train_gla import (or `to-c` with --py-import), train_gla logits, compare.
      (--py-export: `from-c` instead of train_gla export.)
      Prints one line per case and a final 'N passed, N failed'; exits non-zero on any failure.

CPU: fla's layers are Triton kernels and its Attention needs flash-attn. On a machine without a GPU
this script (setup_fla) sets TRITON_INTERPRET=1 (Triton's interpreter runs the kernels on CPU
tensors with numpy), keeps only the first autotuning config (the autotuner would otherwise call
for a GPU driver to time the candidates), replaces fla.layers.attn.flash_attn_func by a plain
causal (optionally windowed) softmax attention, and loads every model with
attn_mode='fused_recurrent' (fla itself uses that kernel for T <= 64 at inference; its chunk
kernels fail under the interpreter and chunk_delta_rule refuses float32). Same math either way.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# our mixer names (model.h MIXER_NAMES, ids are the list index) and fla's model_type per family
MIXER_NAMES = ["attn", "hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet"]
MODEL_TYPE = {"gla": "gla", "hgrn": "hgrn", "hgrn2": "hgrn2", "retnet": "retnet", "deltanet": "delta_net",
              "gated_deltanet": "gated_deltanet", "attn": "transformer"}
FAMILY_OF_MODEL_TYPE = {v: k for k, v in MODEL_TYPE.items()}
LINEAR_FAMILIES = ["gla", "hgrn", "hgrn2", "retnet", "deltanet", "gated_deltanet"]

CKPT_MAGIC, CKPT_VERSION, HEADER_INTS = 20261101, 1, 256

# Default tolerance on the relative RMS error |ref - x| / |ref| of the logits. Both sides compute in
# float32 (unit roundoff 6e-8) with different summation orders (BLAS vs the C loops, fla's
# recurrent kernels vs the C chunked form with chunk 16); at d = 64, T = 40 the error that
# produces is ~1e-6 (a few 1e-7 per op, accumulated over ~10 layers of ops and T steps). A
# wrong tensor, transposition, eps or scale moves the logits by >= 1e-3 (HGRN2's output-norm
# eps 1e-5 vs 1e-6 alone: ~1e-3), so 1e-4 separates the two with margin on both sides.
DEFAULT_TOL = 1e-4


# ----------------------------------------------------------------------------------------------
# running fla on a CPU


def setup_fla(device):
    """Imports torch + fla (which registers its models with transformers' Auto classes) and, on
    the CPU, makes its kernels runnable there (see the module docstring). Returns torch."""
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import warnings
    warnings.filterwarnings("ignore", message=".*Triton is not supported on current platform.*")
    warnings.filterwarnings("ignore", message=".*Flash Attention is not installed.*")
    warnings.filterwarnings("ignore", message=".*ShortConvolution is crucial.*")
    import torch
    import fla  # noqa: F401  (registers GLAConfig, ... with AutoConfig / AutoModelForCausalLM)
    import fla.layers.attn as fla_attn
    if device == "cpu":
        import triton.runtime.autotuner as autotuner
        original_prune = autotuner.Autotuner.prune_configs

        def first_config_only(self, kwargs, *args, **kw):
            return original_prune(self, kwargs, *args, **kw)[:1]
        autotuner.Autotuner.prune_configs = first_config_only
    if fla_attn.flash_attn_func is None:
        fla_attn.flash_attn_func = softmax_attention
    return torch


def softmax_attention(q, k, v, causal=True, window_size=(-1, -1), softmax_scale=None, **unused):
    """Stand-in for flash_attn_func: q (B,T,H,D), k, v (B,S,Hkv,D) -> (B,T,H,D). Causal softmax
    attention, query head j reads kv head j // (H/Hkv); window (w-1, 0): keys i-w < j <= i."""
    import torch
    B, T, H, D = q.shape
    S, group = k.shape[1], H // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scale
    i = torch.arange(T)[:, None] + (S - T)  # absolute position of each query
    j = torch.arange(S)[None, :]
    visible = j <= i if causal else torch.ones(T, S, dtype=torch.bool)
    if window_size[0] >= 0:
        visible = visible & (j >= i - window_size[0])
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v.float()).to(q.dtype)


def load_fla(model_dir, device):
    """AutoModelForCausalLM.from_pretrained(model_dir) in float32, refusing any missing,
    unexpected or mis-shaped weight. Returns (model, config)."""
    torch = setup_fla(device)
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(model_dir)
    if hasattr(config, "attn_mode"):
        config.attn_mode = "fused_recurrent"  # same math as 'chunk'; the kernel that runs on a CPU
    try:
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32,
                                                           output_loading_info=True)
    except RuntimeError as e:  # transformers raises on mis-shaped weights
        raise SystemExit(f"fla_check: loading '{model_dir}' failed: {e}")
    problems = []
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = sorted(str(x) for x in (info.get(what) or []))
        if found:
            problems.append(f"{what}: {', '.join(found)}")
    if problems:
        raise SystemExit(f"fla_check: '{model_dir}' does not load cleanly into {type(model).__name__}:\n  "
                         + "\n  ".join(problems))
    return model.to(device).eval(), config


def fla_logits(model, ids, device):
    """fla's logits (T, V) float32 for one sequence of ids (a list of ints)."""
    import torch
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long, device=device), use_cache=False)
    return out.logits[0].float().cpu()


# ----------------------------------------------------------------------------------------------
# comparing logits


def read_f32(path, rows, cols):
    """Raw little-endian float32 (rows, cols) -> torch tensor, checking the file length."""
    import torch
    data = open(path, "rb").read()
    if len(data) != rows * cols * 4:
        raise SystemExit(f"fla_check: '{path}' is {len(data)} bytes, expected {rows * cols * 4} "
                         f"for ({rows}, {cols}) float32 logits")
    return torch.tensor(struct.unpack(f"<{rows * cols}f", data), dtype=torch.float32).view(rows, cols)


def write_f32(path, tensor):
    t = tensor.detach().float().contiguous().view(-1).tolist()
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{len(t)}f", *t))


def compare(ref, x, tol, what):
    """Prints and returns (ok, rel_rms, max_abs) of x against ref (both (T, V))."""
    ref64, x64 = ref.double(), x.double()
    rel = ((ref64 - x64).norm() / ref64.norm()).item()
    max_abs = (ref64 - x64).abs().max().item()
    ok = math.isfinite(rel) and rel <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {what}: rel RMS {rel:.3e}, max abs {max_abs:.3e} "
          f"(tol {tol:.0e}, |ref| RMS {ref64.pow(2).mean().sqrt().item():.3e})")
    return ok, rel, max_abs


def parse_ids(text):
    return [int(t) for t in text.split()]


# ----------------------------------------------------------------------------------------------
# the fla config -> our C config (what `train_gla import` must accept or refuse)


def _get(cfg, name, default=None):
    return getattr(cfg, name, default)


def fla_mlp_hidden(cfg):
    """fla's GatedMLP size: intermediate_size, else int(d * hidden_ratio * 2/3) rounded up to 256."""
    if _get(cfg, "intermediate_size") is not None:
        return int(cfg.intermediate_size)
    ratio = _get(cfg, "hidden_ratio") or 4
    return (int(cfg.hidden_size * ratio * 2 / 3) + 255) // 256 * 256


def c_config_from_fla(cfg):
    """Our C Config (a dict with model.h's field names, pattern as mixer names) for an fla config,
    or ValueError naming the first setting the C program does not implement. This is the list of
    refusals of `train_gla import` (dev/fla_names.md, 'Refuse on import')."""
    def refuse(cond, msg):
        if cond:
            raise ValueError(msg)

    mt = cfg.model_type
    refuse(mt not in FAMILY_OF_MODEL_TYPE, f"model_type '{mt}' is not one of {sorted(FAMILY_OF_MODEL_TYPE)}")
    family = FAMILY_OF_MODEL_TYPE[mt]
    d, L = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    refuse(_get(cfg, "attnres_block_size") is not None, "attnres_block_size (AttnRes residuals) is not implemented")
    refuse(_get(cfg, "hidden_act", "swish") not in ("swish", "silu"), f"hidden_act '{cfg.hidden_act}' (only swish)")
    refuse(_get(cfg, "elementwise_affine", True) is not True, "elementwise_affine must be true (norms with weights)")
    refuse(not (2 <= cfg.vocab_size <= 65536), f"vocab_size {cfg.vocab_size} outside [2, 65536]")
    c = dict(vocab_size=int(cfg.vocab_size), d_model=d, n_layer=L, mlp_hidden=fla_mlp_hidden(cfg),
             tie_embeddings=int(bool(cfg.tie_word_embeddings)), norm_eps=float(cfg.norm_eps),
             # fields of families the pattern does not use: any valid value (model.h validate_config)
             gla_heads=1, gla_dk=d // 2, gla_dv=d, gla_gate_rank=16, gla_gate_normalizer=16,
             attn_heads=1, attn_kv_heads=1, rope_theta=10000.0, hgrn_dim=d, hgrn2_heads=1, retnet_heads=1,
             deltanet_heads=1, gdn_heads=1, gdn_head_dim=d, gdn_expand_v=1, conv_size=4, use_lower_bound=0)

    if family == "attn":  # TransformerConfig: every layer is softmax attention
        refuse(_get(cfg, "qk_norm", False), "qk_norm is not implemented")
        refuse(_get(cfg, "qkv_bias", False), "qkv_bias is not implemented")
        refuse(_get(cfg, "window_size") is not None, "window_size (sliding window) is not implemented")
        c.update(attn_heads=int(cfg.num_heads), attn_kv_heads=int(cfg.num_kv_heads or cfg.num_heads),
                 rope_theta=float(cfg.rope_theta))
        c["pattern"] = ["attn"] * L
        return c

    # the hybrid's attention layers: one spec or a list, all alike (the C config has one attention setting)
    specs = cfg.attn if isinstance(cfg.attn, list) else ([cfg.attn] if cfg.attn else [])
    attn_layers = set()
    for s in specs:
        refuse(s.get("qkv_bias", False), "attn.qkv_bias is not implemented")
        refuse(s.get("window_size") is not None, "attn.window_size (sliding window) is not implemented")
        refuse(s.get("qk_norm", False), "attn.qk_norm is not implemented")
        heads, kv = int(s["num_heads"]), int(s.get("num_kv_heads") or s["num_heads"])
        theta = float(s.get("rope_theta", 10000.0))
        refuse(attn_layers and (heads, kv, theta) != (c["attn_heads"], c["attn_kv_heads"], c["rope_theta"]),
               "attn specs with different num_heads / num_kv_heads / rope_theta are not implemented")
        c.update(attn_heads=heads, attn_kv_heads=kv, rope_theta=theta)
        attn_layers |= set(s["layers"])
    c["pattern"] = ["attn" if l in attn_layers else family for l in range(L)]
    if specs:
        refuse(d % c["attn_heads"] or (d // c["attn_heads"]) % 2, f"attention head dim d/{c['attn_heads']} must be an even integer")
        refuse(c["attn_heads"] % c["attn_kv_heads"], "attn num_kv_heads must divide num_heads")

    if family == "gla":
        dk, dv = d * float(cfg.expand_k), d * float(cfg.expand_v)
        refuse(dk != int(dk) or dv != int(dv), "hidden_size * expand_k / expand_v must be integers")
        H = int(cfg.num_heads)
        refuse(_get(cfg, "num_kv_heads") not in (None, H), "GLA num_kv_heads (grouped k/v) is not implemented")
        refuse(_get(cfg, "feature_map") is not None, f"GLA feature_map '{cfg.feature_map}' is not implemented")
        refuse(_get(cfg, "use_short_conv", False), "GLA use_short_conv is not implemented")
        refuse(not _get(cfg, "use_output_gate", True), "GLA without the output gate is not implemented")
        refuse(_get(cfg, "clamp_min") is not None, "GLA clamp_min is not implemented")
        refuse(int(dk) % H or int(dv) % H, "GLA key/value dims must be multiples of num_heads")
        c.update(gla_heads=H, gla_dk=int(dk), gla_dv=int(dv))  # gate rank 16 and normalizer 16: fla's fixed defaults
    elif family == "hgrn":
        D = int(d * cfg.expand_ratio)
        refuse(_get(cfg, "use_short_conv", False), "HGRN use_short_conv is not implemented")
        refuse(cfg.use_lower_bound and D != d, "HGRN expand_ratio must be 1 with use_lower_bound")
        c.update(hgrn_dim=D, use_lower_bound=int(bool(cfg.use_lower_bound)))
    elif family == "hgrn2":
        E = int(cfg.expand_ratio)  # the layer takes num_heads = d // expand_ratio (config.num_heads is ignored)
        refuse(E < 1 or d % E, f"HGRN2 expand_ratio {E} must divide hidden_size {d}")
        refuse(_get(cfg, "use_short_conv", False), "HGRN2 use_short_conv is not implemented")
        c.update(hgrn2_heads=d // E, use_lower_bound=int(bool(cfg.use_lower_bound)))
    elif family == "retnet":
        H = int(cfg.num_heads)
        refuse(float(cfg.expand_k) != 1.0 or float(cfg.expand_v) != 2.0, "RetNet needs expand_k 1 and expand_v 2")
        refuse(_get(cfg, "num_kv_heads") not in (None, H), "RetNet num_kv_heads is not implemented")
        refuse(_get(cfg, "feature_map") is not None, "RetNet feature_map is not implemented")
        refuse(not _get(cfg, "use_output_gate", True), "RetNet without the output gate is not implemented")
        refuse(d % H or (d // H) % 2, f"RetNet key head dim d/{H} must be an even integer")
        # fla's RetNet RoPE has base 10000 whatever the config says; the C code uses rope_theta for both
        refuse(c["rope_theta"] != 10000.0, "attention rope_theta != 10000 beside RetNet layers (one theta in C)")
        c.update(retnet_heads=H)
    elif family == "deltanet":
        H = int(cfg.num_heads)
        refuse(float(cfg.expand_k) != 1.0 or float(cfg.expand_v) != 1.0, "DeltaNet needs expand_k = expand_v = 1")
        refuse(_get(cfg, "use_gate", False), "DeltaNet use_gate is not implemented")
        refuse(not _get(cfg, "use_beta", True), "DeltaNet without beta is not implemented")
        refuse(not _get(cfg, "use_short_conv", True), "DeltaNet without short convolutions is not implemented")
        refuse(_get(cfg, "allow_neg_eigval", False), "allow_neg_eigval is not implemented")
        refuse(_get(cfg, "qk_norm", "l2") != "l2", f"DeltaNet qk_norm '{cfg.qk_norm}' (only l2)")
        refuse(_get(cfg, "qk_activation", "silu") != "silu", f"DeltaNet qk_activation '{cfg.qk_activation}' (only silu)")
        refuse(d % H, f"DeltaNet num_heads {H} must divide hidden_size")
        c.update(deltanet_heads=H, conv_size=int(cfg.conv_size))
    elif family == "gated_deltanet":
        H, K = int(cfg.num_heads), int(cfg.head_dim)
        refuse(_get(cfg, "num_v_heads") not in (None, H), "Gated DeltaNet num_v_heads != num_heads (GVA) is not implemented")
        refuse(not _get(cfg, "use_gate", True), "Gated DeltaNet without the output gate is not implemented")
        refuse(not _get(cfg, "use_short_conv", True), "Gated DeltaNet without short convolutions is not implemented")
        refuse(_get(cfg, "allow_neg_eigval", False), "allow_neg_eigval is not implemented")
        refuse(_get(cfg, "output_gate_activation", "swish") not in ("swish", "silu"), "output_gate_activation must be swish")
        refuse(float(cfg.expand_v) != int(cfg.expand_v), "Gated DeltaNet expand_v must be an integer")
        c.update(gdn_heads=H, gdn_head_dim=K, gdn_expand_v=int(cfg.expand_v), conv_size=int(cfg.conv_size))
    return c


# ----------------------------------------------------------------------------------------------
# the name map: model.h param_table names <-> fla / HF state-dict keys


# fla key suffixes under model.layers.N.attn. that are not "<our suffix>.weight"
ATTN_SUFFIX = {
    "gla": {"gk_proj1": "gk_proj.0.weight", "gk_proj2": "gk_proj.1.weight", "gk_bias": "gk_proj.1.bias",
            "g_norm": "g_norm_swish_gate.weight"},
    "retnet": {"g_norm": "g_norm_swish_gate.weight"},
    "deltanet": {"q_conv": "q_conv1d.weight", "k_conv": "k_conv1d.weight", "v_conv": "v_conv1d.weight"},
    "gated_deltanet": {"q_conv": "q_conv1d.weight", "k_conv": "k_conv1d.weight", "v_conv": "v_conv1d.weight",
                       "A_log": "A_log", "dt_bias": "dt_bias"},
}
# with fuse_norm=False (or no output gate) GLA / RetNet name their gated norm `g_norm` instead
ALT_KEYS = {"g_norm_swish_gate.weight": "g_norm.weight"}


def hf_key(c_name):
    """model.h name -> fla key, e.g. layers.3.gla.gk_bias -> model.layers.3.attn.gk_proj.1.bias."""
    if c_name == "embed":
        return "model.embeddings.weight"
    if c_name == "lower_bounds":
        return "model.lower_bounds"
    if c_name == "norm":
        return "model.norm.weight"
    if c_name == "lm_head":
        return "lm_head.weight"
    _, l, rest = c_name.split(".", 2)
    if rest in ("attn_norm", "mlp_norm"):
        return f"model.layers.{l}.{rest}.weight"
    if rest.startswith("mlp."):
        return f"model.layers.{l}.{rest}.weight"
    mixer, suffix = rest.split(".", 1)
    return f"model.layers.{l}.attn.{ATTN_SUFFIX.get(mixer, {}).get(suffix, suffix + '.weight')}"


def param_table(c):
    """model.h param_table() in Python: [(name, shape)] in canonical order (Linear [out, in],
    short convs [channels, W_c]; fla stores those as [channels, 1, W_c])."""
    d, I, W = c["d_model"], c["mlp_hidden"], c["conv_size"]
    t = [("embed", (c["vocab_size"], d))]
    if c["use_lower_bound"] and any(m in ("hgrn", "hgrn2") for m in c["pattern"]):
        t.append(("lower_bounds", (c["n_layer"], d)))
    for l, m in enumerate(c["pattern"]):
        p = f"layers.{l}.{m}."
        t.append((f"layers.{l}.attn_norm", (d,)))
        if m == "gla":
            dk, dv, R = c["gla_dk"], c["gla_dv"], c["gla_gate_rank"]
            t += [(p + "q_proj", (dk, d)), (p + "k_proj", (dk, d)), (p + "v_proj", (dv, d)), (p + "g_proj", (dv, d)),
                  (p + "gk_proj1", (R, d)), (p + "gk_proj2", (dk, R)), (p + "gk_bias", (dk,)),
                  (p + "g_norm", (dv // c["gla_heads"],)), (p + "o_proj", (d, dv))]
        elif m == "hgrn":
            D = c["hgrn_dim"]
            t += [(p + "i_proj", (D, d)), (p + "f_proj", (D, d)), (p + "g_proj", (D, d)), (p + "g_norm", (D,)),
                  (p + "o_proj", (d, D))]
        elif m == "hgrn2":
            t += [(p + "q_proj", (d, d)), (p + "f_proj", (d, d)), (p + "i_proj", (d, d)), (p + "g_norm", (d,)),
                  (p + "o_proj", (d, d))]
        elif m == "retnet":
            t += [(p + "q_proj", (d, d)), (p + "k_proj", (d, d)), (p + "v_proj", (2 * d, d)), (p + "g_proj", (2 * d, d)),
                  (p + "g_norm", (2 * d // c["retnet_heads"],)), (p + "o_proj", (d, 2 * d))]
        elif m in ("deltanet", "gated_deltanet"):
            gated = m == "gated_deltanet"
            H = c["gdn_heads"] if gated else c["deltanet_heads"]
            dk = H * c["gdn_head_dim"] if gated else d
            dv = dk * c["gdn_expand_v"] if gated else d
            t += [(p + "q_proj", (dk, d)), (p + "k_proj", (dk, d)), (p + "v_proj", (dv, d))]
            if gated:
                t.append((p + "a_proj", (H, d)))
            t.append((p + "b_proj", (H, d)))
            if gated:
                t += [(p + "A_log", (H,)), (p + "dt_bias", (H,))]
            t += [(p + "q_conv", (dk, W)), (p + "k_conv", (dk, W)), (p + "v_conv", (dv, W))]
            if gated:
                t.append((p + "g_proj", (dv, d)))
            t += [(p + "o_norm", (dv // H,)), (p + "o_proj", (d, dv))]
        else:  # attn
            hd = d // c["attn_heads"]
            kv = c["attn_kv_heads"] * hd
            t += [(p + "q_proj", (d, d)), (p + "k_proj", (kv, d)), (p + "v_proj", (kv, d)), (p + "o_proj", (d, d))]
        t += [(f"layers.{l}.mlp_norm", (d,)), (f"layers.{l}.mlp.gate_proj", (I, d)),
              (f"layers.{l}.mlp.up_proj", (I, d)), (f"layers.{l}.mlp.down_proj", (d, I))]
    t.append(("norm", (d,)))
    if not c["tie_embeddings"]:
        t.append(("lm_head", (c["vocab_size"], d)))
    return t


def c_params_from_fla(c, state):
    """[(name, float32 tensor in our shape)] in canonical order from an fla state dict."""
    out = []
    for name, shape in param_table(c):
        key = hf_key(name)
        if key not in state and key.endswith("g_norm_swish_gate.weight"):
            key = key.replace("g_norm_swish_gate.weight", ALT_KEYS["g_norm_swish_gate.weight"])
        if key not in state:
            raise SystemExit(f"fla_check: the fla model has no '{key}' (for our '{name}')")
        w = state[key].detach().float().cpu()
        if w.dim() == 3:  # ShortConvolution (nn.Conv1d) weight [C, 1, W] -> ours [C, W]
            w = w[:, 0, :]
        if tuple(w.shape) != tuple(shape):
            raise SystemExit(f"fla_check: '{key}' has shape {tuple(w.shape)}, our '{name}' needs {shape}")
        out.append((name, w.contiguous()))
    return out


def write_c_checkpoint(path, c, params):
    """A C model file: 256 int32 header (model.h config_to_header) + float32 parameters."""
    h = [0] * HEADER_INTS
    n = sum(w.numel() for _, w in params)
    h[0:14] = [CKPT_MAGIC, CKPT_VERSION, c["vocab_size"], c["d_model"], c["n_layer"], c["mlp_hidden"],
               c["tie_embeddings"], c["gla_heads"], c["gla_dk"], c["gla_dv"], c["gla_gate_rank"],
               c["gla_gate_normalizer"], c["attn_heads"], c["attn_kv_heads"]]
    h[15] = struct.unpack("<i", struct.pack("<f", c["rope_theta"]))[0]
    h[16] = struct.unpack("<i", struct.pack("<f", c["norm_eps"]))[0]
    h[17], h[18] = n & 0x7FFFFFFF, n >> 31
    h[19:28] = [c["hgrn_dim"], c["hgrn2_heads"], c["retnet_heads"], c["deltanet_heads"], c["gdn_heads"],
                c["gdn_head_dim"], c["gdn_expand_v"], c["conv_size"], c["use_lower_bound"]]
    for l, m in enumerate(c["pattern"]):
        h[64 + l] = MIXER_NAMES.index(m)
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", *h))
        for _, w in params:
            flat = w.view(-1).tolist()
            f.write(struct.pack(f"<{len(flat)}f", *flat))


# ----------------------------------------------------------------------------------------------
# make: a small random fla model


D_MODEL, VOCAB, MLP_HIDDEN, SEQ_LEN = 64, 256, 128, 40


def fla_config(family, hybrid, layers, tie):
    """fla's own config class for FAMILY at d = 64 with the options the C code implements (sizes:
    model.h's defaults scaled to d = 64); --hybrid puts attention at layers 3, 7, ... (3:1)."""
    from transformers import AutoConfig
    d = D_MODEL
    common = dict(hidden_size=d, num_hidden_layers=layers, vocab_size=VOCAB, intermediate_size=MLP_HIDDEN,
                  tie_word_embeddings=bool(tie), norm_eps=1e-6, hidden_act="swish")
    per_family = {
        "gla": dict(num_heads=2, expand_k=0.5, expand_v=1.0),                 # K = 16, V = 32
        "hgrn": dict(expand_ratio=1, use_lower_bound=True),
        "hgrn2": dict(expand_ratio=d // 2, use_lower_bound=True),             # 2 heads of 32 (tests H > 1)
        "retnet": dict(num_heads=4, expand_k=1.0, expand_v=2.0),              # K = 16, V = 32
        "deltanet": dict(num_heads=2, expand_k=1.0, expand_v=1.0, use_gate=False, conv_size=4),
        "gated_deltanet": dict(num_heads=3, head_dim=16, expand_v=2, use_gate=True, conv_size=4),
        "attn": dict(num_heads=4, num_kv_heads=2, rope_theta=10000.0),        # GQA, head dim 16
    }[family]
    if hybrid:
        if family == "attn":
            raise SystemExit("fla_check: --hybrid needs a linear family")
        common["attn"] = {"layers": [l for l in range(layers) if (l + 1) % 4 == 0], "num_heads": 4,
                          "num_kv_heads": 2, "qkv_bias": False, "window_size": None, "rope_theta": 10000.0}
    return AutoConfig.for_model(MODEL_TYPE[family], **common, **per_family)


def randomize(model, seed):
    """Draws every tensor afresh at scales that make each one matter to the logits: fla's init has
    norm weights 1, biases and lower bounds 0 and tiny convs, so a swapped or missing norm, bias or
    bound would go unnoticed. Linear N(0, 0.1), embedding N(0, 0.5), norms 1 + 0.1 N, GLA gate
    bias N(0, 1), lower bounds N(0, 1), convs N(0, 0.3), GDN A_log = log U(0.5, 2), dt_bias
    N(0, 0.5) (the gates stay away from 0 and 1, as in dev/reference.py's dumps)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("A_log"):
                p.copy_((0.5 + 1.5 * torch.rand(p.shape, generator=gen)).log())
            elif name.endswith("dt_bias"):
                p.copy_(0.5 * z)
            elif name.endswith("lower_bounds") or name.endswith(".bias"):
                p.copy_(z)
            elif "conv1d" in name:
                p.copy_(0.3 * z)
            elif "embeddings" in name or name == "lm_head.weight":
                p.copy_(0.5 * z)
            elif p.dim() == 1:  # norm weights
                p.copy_(1 + 0.1 * z)
            else:
                p.copy_(0.1 * z)


def make_model(family, hybrid, layers, tie, seed, device):
    torch = setup_fla(device)
    from transformers import AutoModelForCausalLM
    cfg = fla_config(family, hybrid, layers, tie)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).float()
    randomize(model, seed)
    if hasattr(model.config, "attn_mode"):
        model.config.attn_mode = "fused_recurrent"  # the kernel that runs here; restored before saving
    return model.to(device).eval()


def cmd_make(a):
    model = make_model(a.family, a.hybrid, a.layers, a.tie, a.seed, a.device)
    import torch
    gen = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, VOCAB, (a.seq_len,), generator=gen).tolist()
    logits = fla_logits(model, ids, a.device)
    if hasattr(model.config, "attn_mode"):
        model.config.attn_mode = "chunk"  # fla's default in the saved config
    os.makedirs(a.dir, exist_ok=True)
    model.save_pretrained(a.dir, safe_serialization=True)
    with open(os.path.join(a.dir, "ids.txt"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    write_f32(os.path.join(a.dir, "logits.f32"), logits)
    n = sum(p.numel() for p in model.parameters())
    print(f"made {type(model).__name__} ({n} parameters, {'3:1 hybrid' if a.hybrid else 'pure'}, "
          f"tie={int(bool(a.tie))}) in '{a.dir}': model.safetensors, config.json, ids.txt ({len(ids)} ids), "
          f"logits.f32 ({len(ids)} x {VOCAB})")


# ----------------------------------------------------------------------------------------------
# load, to-c, ref


def cmd_load(a):
    model, cfg = load_fla(a.dir, a.device)
    ids = parse_ids(a.ids)
    if any(not 0 <= i < cfg.vocab_size for i in ids):
        raise SystemExit(f"fla_check: an id is outside [0, {cfg.vocab_size})")
    ref = fla_logits(model, ids, a.device)
    other = read_f32(a.logits, len(ids), cfg.vocab_size)
    ok, _, _ = compare(ref, other, a.tol, f"fla({cfg.model_type}, '{a.dir}') vs '{a.logits}'")
    return 0 if ok else 1


def cmd_to_c(a):
    setup_fla(a.device)
    from transformers import AutoConfig
    from safetensors.torch import load_file
    cfg = AutoConfig.from_pretrained(a.dir)
    try:
        c = c_config_from_fla(cfg)
    except ValueError as e:
        raise SystemExit(f"fla_check: '{a.dir}' cannot become a C model: {e}")
    state = load_file(os.path.join(a.dir, "model.safetensors"))
    params = c_params_from_fla(c, state)
    write_c_checkpoint(a.out, c, params)
    print(f"wrote '{a.out}': pattern {','.join(c['pattern'])}, {sum(w.numel() for _, w in params)} parameters")
    return 0


def read_c_checkpoint(path):
    """A C model file -> (our config dict, [(name, float32 tensor)] in canonical order)."""
    import torch
    data = open(path, "rb").read()
    h = struct.unpack(f"<{HEADER_INTS}i", data[:HEADER_INTS * 4])
    if h[0] != CKPT_MAGIC or h[1] != CKPT_VERSION:
        raise SystemExit(f"fla_check: '{path}' is not a version {CKPT_VERSION} C model file")
    keys = ["vocab_size", "d_model", "n_layer", "mlp_hidden", "tie_embeddings", "gla_heads", "gla_dk", "gla_dv",
            "gla_gate_rank", "gla_gate_normalizer", "attn_heads", "attn_kv_heads"]
    c = dict(zip(keys, h[2:14]))
    c["rope_theta"] = struct.unpack("<f", struct.pack("<i", h[15]))[0]
    c["norm_eps"] = struct.unpack("<f", struct.pack("<i", h[16]))[0]
    c.update(zip(["hgrn_dim", "hgrn2_heads", "retnet_heads", "deltanet_heads", "gdn_heads", "gdn_head_dim",
                  "gdn_expand_v", "conv_size", "use_lower_bound"], h[19:28]))
    c["pattern"] = [MIXER_NAMES[h[64 + l]] for l in range(c["n_layer"])]
    params, off = [], HEADER_INTS * 4
    for name, shape in param_table(c):
        n = math.prod(shape)
        params.append((name, torch.tensor(struct.unpack_from(f"<{n}f", data, off)).view(shape)))
        off += 4 * n
    if off != len(data):
        raise SystemExit(f"fla_check: '{path}' is {len(data)} bytes, its config implies {off}")
    return c, params


def fla_config_json(c):
    """The config.json of our model for fla (what `train_gla export` writes): the model_type of
    the one linear family in the pattern (or 'transformer'), its sizes, and an `attn` dict naming
    the attention layers. Fields left out take fla's defaults, which are what the C code does
    (use_short_conv false for GLA/HGRN/HGRN2, true for DeltaNet/GDN, output gates as below ...)."""
    d, pattern = c["d_model"], c["pattern"]
    families = sorted(set(pattern) - {"attn"})
    if len(families) > 1:
        raise ValueError(f"fla has no model with two linear families ({', '.join(families)})")
    family = families[0] if families else "attn"
    j = {"model_type": MODEL_TYPE[family], "vocab_size": c["vocab_size"], "hidden_size": d,
         "num_hidden_layers": c["n_layer"], "intermediate_size": c["mlp_hidden"], "hidden_act": "swish",
         "norm_eps": c["norm_eps"], "tie_word_embeddings": bool(c["tie_embeddings"]),
         "fuse_norm": True, "fuse_swiglu": True, "fuse_cross_entropy": True}
    attn = {"num_heads": c["attn_heads"], "num_kv_heads": c["attn_kv_heads"], "qkv_bias": False,
            "window_size": None, "rope_theta": c["rope_theta"]}
    if family == "attn":
        j.update(num_heads=c["attn_heads"], num_kv_heads=c["attn_kv_heads"], qkv_bias=False, qk_norm=False,
                 window_size=None, rope_theta=c["rope_theta"])
        return j
    if "attn" in pattern:
        j["attn"] = {"layers": [l for l, m in enumerate(pattern) if m == "attn"], **attn}
    if family == "gla":
        if (c["gla_gate_rank"], c["gla_gate_normalizer"]) != (16, 16):
            raise ValueError("fla's GLA has gate rank 16 and normalizer 16 fixed")
        j.update(num_heads=c["gla_heads"], expand_k=c["gla_dk"] / d, expand_v=c["gla_dv"] / d,
                 use_short_conv=False, use_output_gate=True, feature_map=None, clamp_min=None)
    elif family == "hgrn":
        j.update(expand_ratio=c["hgrn_dim"] // d if c["hgrn_dim"] % d == 0 else c["hgrn_dim"] / d,
                 use_short_conv=False, use_lower_bound=bool(c["use_lower_bound"]))
    elif family == "hgrn2":
        j.update(num_heads=c["hgrn2_heads"], expand_ratio=d // c["hgrn2_heads"], use_short_conv=False,
                 use_lower_bound=bool(c["use_lower_bound"]))
    elif family == "retnet":
        if "attn" in pattern and c["rope_theta"] != 10000.0:
            raise ValueError("fla's RetNet RoPE base is 10000")
        j.update(num_heads=c["retnet_heads"], expand_k=1, expand_v=2, use_output_gate=True, feature_map=None)
    elif family == "deltanet":
        j.update(num_heads=c["deltanet_heads"], expand_k=1, expand_v=1, use_gate=False, use_beta=True,
                 use_short_conv=True, conv_size=c["conv_size"], allow_neg_eigval=False, qk_norm="l2",
                 qk_activation="silu")
    elif family == "gated_deltanet":
        j.update(num_heads=c["gdn_heads"], head_dim=c["gdn_head_dim"], expand_v=c["gdn_expand_v"],
                 num_v_heads=None, use_gate=True, use_short_conv=True, conv_size=c["conv_size"],
                 allow_neg_eigval=False)
    return j


def cmd_from_c(a):
    """A Python twin of `train_gla export`: C model file -> DIR/model.safetensors + config.json."""
    setup_fla(a.device)
    from safetensors.torch import save_file
    c, params = read_c_checkpoint(a.ckpt)
    try:
        j = fla_config_json(c)
    except ValueError as e:
        raise SystemExit(f"fla_check: '{a.ckpt}' cannot be exported: {e}")
    tensors = {}
    for name, w in params:
        if name.endswith("_conv"):
            w = w[:, None, :]  # ours [C, W] -> nn.Conv1d's [C, 1, W]
        tensors[hf_key(name)] = w.contiguous()
    os.makedirs(a.dir, exist_ok=True)
    save_file(tensors, os.path.join(a.dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(j, f, indent=2)
    print(f"wrote '{a.dir}': model_type {j['model_type']}, {len(tensors)} tensors")
    return 0


def cmd_ref(a):
    """fla (float32, its kernels) vs dev/reference.py (float64, written from LAYERS.md) on the
    same weights: checks the name map and the math without the C program."""
    torch = setup_fla(a.device)
    sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # leave no dev/__pycache__ behind
    import reference
    model = make_model(a.family, a.hybrid, a.layers, a.tie, a.seed, a.device)
    c = c_config_from_fla(model.config)
    ours = param_table(c)
    ref_cfg = reference.Config(**{k: v for k, v in c.items() if k in reference.Config.__dataclass_fields__ and k != "pattern"},
                               pattern=tuple(c["pattern"]))
    theirs = [(n, tuple(s)) for n, s, _ in reference.parameter_specs(ref_cfg)]
    if [(n, tuple(s)) for n, s in ours] != theirs:
        raise SystemExit("fla_check: this script's param_table differs from dev/reference.py's parameter_specs")
    params = {n: w.double() for n, w in c_params_from_fla(c, model.state_dict())}
    ids = torch.randint(0, VOCAB, (a.seq_len,), generator=torch.Generator().manual_seed(a.seed + 1))
    acts = {}
    reference.model_forward(ref_cfg, params, ids[None], ids[None], acts=acts)
    ref = acts["logits"][0]
    got = fla_logits(model, ids.tolist(), a.device)
    what = f"fla {a.family}{' 3:1' if a.hybrid else ''} (float32) vs dev/reference.py (float64)"
    ok, _, _ = compare(ref, got, a.tol, what)
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------
# all: both directions with the C program


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = "\n      ".join(r.stdout.strip().splitlines()[-6:])
        raise RuntimeError(f"`{' '.join(cmd)}` exited {r.returncode}:\n      {tail}")
    return r.stdout


def cmd_all(a):
    bin_ = os.path.abspath(a.c_bin)
    root = os.path.dirname(bin_)  # the repository: data/ is beside the binary
    tok = os.path.join(root, "data", "tokenizer_bytes.bin")
    train = os.path.join(root, "data", "tinyshakespeare", "tiny_shakespeare_train.bin")
    val = os.path.join(root, "data", "tinyshakespeare", "tiny_shakespeare_val.bin")
    if not os.path.exists(train):
        run(["./data/prepare", os.path.join(os.path.dirname(root), "shared", "data", "tinyshakespeare.txt")], root)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    me = [sys.executable, os.path.abspath(__file__)]
    ids = " ".join(str((37 * i + 11) % VOCAB) for i in range(SEQ_LEN))  # any fixed sequence
    cases = [(f, h) for f in a.families for h in ((False, True) if f != "attn" else (False,))]
    passed = failed = 0
    for family, hybrid in cases:
        tag = f"{family}_{'hybrid' if hybrid else 'pure'}"
        for direction in a.directions:
            t0 = time.time()
            try:
                if direction == "export":  # C -> fla
                    ck, hf = os.path.join(work, f"c_{tag}"), os.path.join(work, f"c_{tag}_hf")
                    pattern = "attn" if family == "attn" else f"{family}:{3 if hybrid else 'pure'}"
                    run([bin_, "-n", "0", "-d", "64", "-L", "4", "-p", pattern, "--mlp-hidden", "128", "-o", ck,
                         "--overwrite", "1", "-G", "0", "-m", "1", "-z", tok, "-i", train, "-j", val], root)
                    if a.py_export:
                        latest = sorted(f for f in os.listdir(ck) if f.startswith("model_") and f.endswith(".bin"))[-1]
                        run(me + ["from-c", os.path.join(ck, latest), hf], root)
                    else:
                        run([bin_, "export", "-c", ck, "-o", hf], root)
                    out = os.path.join(work, f"c_{tag}.logits.f32")
                    run([bin_, "logits", "-c", ck, "--ids", ids, "-o", out, "-z", tok], root)
                    res = run(me + ["load", hf, "--ids", ids, "--logits", out, "--tol", str(a.tol)], root)
                else:  # fla -> C
                    hf = os.path.join(work, f"fla_{tag}")
                    run(me + ["make", family, hf, "--layers", "4"] + (["--hybrid"] if hybrid else []), root)
                    cbin = os.path.join(hf, "c_model.bin")
                    if a.py_import:
                        run(me + ["to-c", hf, cbin], root)
                    else:
                        run([bin_, "import", "-i", hf, "-o", cbin], root)
                    out = os.path.join(hf, "c_logits.f32")
                    fla_ids = open(os.path.join(hf, "ids.txt")).read().strip()
                    run([bin_, "logits", "-c", cbin, "--ids", fla_ids, "-o", out, "-z", tok], root)
                    res = run(me + ["compare", os.path.join(hf, "logits.f32"), out, "--rows",
                                    str(len(fla_ids.split())), "--cols", str(VOCAB), "--tol", str(a.tol)], root)
                line = res.strip().splitlines()[-1]
                ok = line.startswith("ok")
            except RuntimeError as e:
                ok, line = False, str(e)
            passed += ok
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {direction:6s} {tag:24s} {time.time() - t0:5.1f}s  {line}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def cmd_compare(a):
    ref = read_f32(a.ref, a.rows, a.cols)
    x = read_f32(a.other, a.rows, a.cols)
    ok, _, _ = compare(ref, x, a.tol, f"'{a.ref}' vs '{a.other}'")
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=os.environ.get("FLA_CHECK_DEVICE", "cpu"),
                   help="cpu (Triton interpreter, default) or cuda (fla's real kernels; TF32 may then need --tol 1e-3)")
    sub = p.add_subparsers(dest="command", required=True)
    families = ["gla", "hgrn", "hgrn2", "retnet", "deltanet", "gated_deltanet", "attn"]

    q = sub.add_parser("load", help="load an exported model into fla and compare its logits with a file")
    q.add_argument("dir")
    q.add_argument("--ids", required=True, help='token ids, e.g. "1 2 3"')
    q.add_argument("--logits", required=True, help="raw float32 (T, V) logits of the other program")
    q.add_argument("--tol", type=float, default=DEFAULT_TOL)

    def model_options(q):
        q.add_argument("family", choices=families)
        q.add_argument("--hybrid", action="store_true", help="3:1: attention at layers 3, 7, ...")
        q.add_argument("--layers", type=int, default=None, help="layers (default 4 with --hybrid, else 2)")
        q.add_argument("--tie", type=int, choices=(0, 1), default=None,
                       help="tie the LM head to the embedding (default: tied for --hybrid, untied otherwise)")
        q.add_argument("--seed", type=int, default=1234)
        q.add_argument("--seq-len", type=int, default=SEQ_LEN)

    q = sub.add_parser("make", help="a small random fla model, saved with save_pretrained, + ids and logits")
    model_options(q)
    q.add_argument("dir")

    q = sub.add_parser("ref", help="fla vs dev/reference.py (float64) on a `make` model")
    model_options(q)
    q.add_argument("--tol", type=float, default=DEFAULT_TOL)

    q = sub.add_parser("to-c", help="fla checkpoint directory -> C model file (Python twin of `train_gla import`)")
    q.add_argument("dir")
    q.add_argument("out")

    q = sub.add_parser("from-c", help="C model file -> fla checkpoint directory (Python twin of `train_gla export`)")
    q.add_argument("ckpt")
    q.add_argument("dir")

    q = sub.add_parser("compare", help="two raw float32 (rows, cols) logit files")
    q.add_argument("ref")
    q.add_argument("other")
    q.add_argument("--rows", type=int, required=True)
    q.add_argument("--cols", type=int, required=True)
    q.add_argument("--tol", type=float, default=DEFAULT_TOL)

    q = sub.add_parser("all", help="every family, pure and 3:1, C -> fla and fla -> C")
    q.add_argument("--c-bin", required=True, help="the CPU trainer, e.g. ./train_gla")
    q.add_argument("--work", required=True, help="a scratch directory")
    q.add_argument("--families", nargs="+", default=families, choices=families)
    q.add_argument("--directions", nargs="+", default=["export", "import"], choices=["export", "import"])
    q.add_argument("--py-import", action="store_true", help="fla -> C through `to-c` instead of `train_gla import`")
    q.add_argument("--py-export", action="store_true", help="C -> fla through `from-c` instead of `train_gla export`")
    q.add_argument("--tol", type=float, default=DEFAULT_TOL)

    a = p.parse_args()
    if a.command in ("make", "ref"):
        if a.layers is None:
            a.layers = 4 if a.hybrid else 2
        if a.tie is None:
            a.tie = 1 if a.hybrid else 0
    handler = {"load": cmd_load, "make": cmd_make, "ref": cmd_ref, "to-c": cmd_to_c, "from-c": cmd_from_c, "compare": cmd_compare,
               "all": cmd_all}[a.command]
    sys.exit(handler(a) or 0)


if __name__ == "__main__":
    main()
