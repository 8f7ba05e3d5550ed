#!/usr/bin/env python3
"""Reference fixtures from Hugging Face transformers for the CPU reference model.

Builds tiny random-weight models of each supported architecture with transformers itself
(AutoConfig.for_model + AutoModelForCausalLM.from_config, torch.manual_seed), saves them with
save_pretrained, and records what transformers computes on them, so the C++ tests compare
against transformers and never against our own output:

  tests/fixtures/hf/<name>/config.json, model.safetensors (or shards + index)
  tests/fixtures/hf/<name>/ref.safetensors
      input_ids.<i>  I64 [T_i]          sequences of length 1, 7 and 33
      logits.<i>     F32 [T_i, vocab]   eager attention, fp32, on the CPU
      hidden.<l>     F32 [33, hidden]   output of decoder layer l for the length-33 sequence
      hook.<role>    F32 [33, in]       input of layer 1's q_proj/o_proj/gate_proj/down_proj
      inv_freq       F32 [head_dim/2]   the model's rotary inv_freq buffer
      input_ids.long I64 [300], logits.long_tail F32 [50, vocab], long_from I64 [1] (qwen3_tiny
                     and llama3_rope): a sequence longer than the C++ attention's query block
                     (256), logits of positions 250..299 only, to keep the fixtures small
  tests/fixtures/hf/llama3_rope/config_tx4.json   the same config in the transformers 4.x
      spelling (torch_dtype, rope_theta, rope_scaling), checked here to load to the same logits
  tests/fixtures/hf/llama_tiny/ppl.safetensors    perplexity by the window protocol of
      spense::perplexity (non-overlapping windows of `seqlen`, last partial window dropped)
  tests/fixtures/hf/VERSIONS.txt

Weights: embeddings N(0, 1), linear weights N(0, 1/in), biases N(0, 0.1), norm weights
1 + N(0, 0.1): larger than real init so attention and RoPE errors show in the logits.
Models saved in bfloat16 have their weights rounded to bfloat16 BEFORE the reference run, so
the reference is exactly what the stored weights compute in fp32.

Run on a machine with torch + transformers (no GPU needed, everything runs on the CPU):
  python3 tools/make_fixture.py --out tests/fixtures/hf
"""
import argparse
import json
import os
import platform
import shutil
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from safetensors.torch import save_file

FIXTURE_VERSION = "1"
TX_MAJOR = int(transformers.__version__.split(".")[0])

SEQ_LENS = [1, 7, 33]
HOOK_LAYER = 1
LONG_LEN, LONG_FROM = 300, 250
LONG_MODELS = ("qwen3_tiny", "llama3_rope")

# name, model_type, storage dtype, seed, sharding, config fields
SPECS = [
    dict(name="llama_tiny", model_type="llama", dtype="float32", seed=1, max_shard_size="150KB",
         cfg=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, vocab_size=320, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=False),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    dict(name="qwen2_tiny", model_type="qwen2", dtype="bfloat16", seed=2, max_shard_size=None,
         cfg=dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=320, max_position_embeddings=256,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen3_tiny", model_type="qwen3", dtype="float32", seed=3, max_shard_size=None,
         cfg=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, intermediate_size=96, vocab_size=320, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    # llama3 rope scaling with original context 64 so head_dim 16's frequencies fall in all
    # three bands (kept, smoothed, divided by factor); attention_bias adds q/k/v/o biases.
    dict(name="llama3_rope", model_type="llama", dtype="bfloat16", seed=4, max_shard_size=None,
         cfg=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                  intermediate_size=96, vocab_size=320, max_position_embeddings=512,
                  rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True),
         rope=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=64)),
]

PPL_MODEL = "llama_tiny"
PPL_TOKENS = 300
PPL_SEQLEN = 64


def make_config(spec):
    kw = dict(spec["cfg"])
    rope = dict(spec["rope"])
    if TX_MAJOR >= 5:
        kw["rope_parameters"] = rope
    else:
        kw["rope_theta"] = rope.pop("rope_theta")
        if rope["rope_type"] != "default":
            kw["rope_scaling"] = rope
    return AutoConfig.for_model(spec["model_type"], **kw)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # linear weights [out, in], lm_head too
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def build(spec):
    torch.manual_seed(spec["seed"])
    cfg = make_config(spec)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float().eval()
    if model.config.tie_word_embeddings:
        model.tie_weights()
    randomize(model, spec["seed"])
    if spec["dtype"] == "bfloat16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    if model.config.tie_word_embeddings and \
            model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        print(f"WARNING: {spec['name']}: lm_head not tied after from_config; copying the embedding", flush=True)
        with torch.no_grad():
            model.lm_head.weight.copy_(model.model.embed_tokens.weight)
    return model


def seq_ids(seed, vocab):
    g = torch.Generator().manual_seed(seed + 2000)
    out = []
    for T in SEQ_LENS:
        ids = torch.randint(0, vocab, (T,), generator=g)
        if T >= 7:  # the vocabulary's edges
            ids[1] = 0
            ids[2] = vocab - 1
        out.append(ids)
    return out


@torch.no_grad()
def references(model, spec):
    vocab = model.config.vocab_size
    tensors = {}
    seqs = seq_ids(spec["seed"], vocab)
    for i, ids in enumerate(seqs):
        logits = model(input_ids=ids[None]).logits[0].float()
        tensors[f"input_ids.{i}"] = ids.to(torch.int64).contiguous()
        tensors[f"logits.{i}"] = logits.contiguous()
    # per-layer outputs and linear-layer inputs for the longest sequence
    captured = {}
    handles = []
    for l, layer in enumerate(model.model.layers):
        def out_hook(mod, args, out, l=l):
            captured[f"hidden.{l}"] = (out[0] if isinstance(out, tuple) else out)[0].float().clone()
        handles.append(layer.register_forward_hook(out_hook))
    layer = model.model.layers[HOOK_LAYER]
    for role, mod in [("qkv", layer.self_attn.q_proj), ("o", layer.self_attn.o_proj),
                      ("gate_up", layer.mlp.gate_proj), ("down", layer.mlp.down_proj)]:
        def pre_hook(mod, args, role=role):
            captured[f"hook.{role}"] = args[0][0].float().clone()
        handles.append(mod.register_forward_pre_hook(pre_hook))
    logits = model(input_ids=seqs[-1][None]).logits[0]
    for h in handles:
        h.remove()
    rerun = (logits - tensors[f"logits.{len(seqs) - 1}"]).abs().max().item()
    if rerun > 1e-6:
        print(f"WARNING: hooked rerun differs by {rerun}", flush=True)
    tensors.update({k: v.contiguous() for k, v in captured.items()})
    tensors["inv_freq"] = model.model.rotary_emb.inv_freq.float().contiguous()
    if spec["name"] in LONG_MODELS:
        g = torch.Generator().manual_seed(spec["seed"] + 4000)
        ids = torch.randint(0, vocab, (LONG_LEN,), generator=g)
        tensors["input_ids.long"] = ids.to(torch.int64)
        tensors["logits.long_tail"] = model(input_ids=ids[None]).logits[0, LONG_FROM:].float().clone()
        tensors["long_from"] = torch.tensor([LONG_FROM], dtype=torch.int64)
    return tensors


@torch.no_grad()
def ppl_reference(model, seed):
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed + 3000)
    ids = torch.randint(0, vocab, (PPL_TOKENS,), generator=g)
    windows = PPL_TOKENS // PPL_SEQLEN  # the partial tail window is dropped
    nlls = []
    for w in range(windows):
        x = ids[w * PPL_SEQLEN:(w + 1) * PPL_SEQLEN]
        logits = model(input_ids=x[None]).logits[0].float()
        logp = torch.log_softmax(logits.double(), dim=-1)
        nlls.append(-logp[torch.arange(PPL_SEQLEN - 1), x[1:]].sum())
    nll = torch.stack(nlls).sum()
    predicted = windows * (PPL_SEQLEN - 1)
    ppl = torch.exp(nll / predicted)
    # cross-check with transformers' own loss (mean over the window's shifted labels)
    loss_ppl = torch.exp(torch.stack([
        model(input_ids=ids[w * PPL_SEQLEN:(w + 1) * PPL_SEQLEN][None],
              labels=ids[w * PPL_SEQLEN:(w + 1) * PPL_SEQLEN][None]).loss.double()
        for w in range(windows)]).mean())
    if abs(loss_ppl.item() / ppl.item() - 1) > 1e-5:
        print(f"WARNING: ppl {ppl.item()} vs transformers loss ppl {loss_ppl.item()}", flush=True)
    return {
        "ids": ids.to(torch.int64),
        "window_nll": torch.stack(nlls).double(),
        "nll": nll.reshape(1).double(),
        "ppl": ppl.reshape(1).double(),
        "seqlen": torch.tensor([PPL_SEQLEN], dtype=torch.int64),
        "predicted": torch.tensor([predicted], dtype=torch.int64),
    }, ppl.item()


def tx4_config(cfg_json):
    """transformers 4.x spelling: torch_dtype, rope_theta + rope_scaling."""
    d = dict(cfg_json)
    if "dtype" in d:
        d["torch_dtype"] = d.pop("dtype")
    rp = d.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        d["rope_theta"] = rp.pop("rope_theta")
        d["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    d["transformers_version"] = "4.46.0"
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/hf", help="output directory")
    args = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    meta = {"spense_fixture": FIXTURE_VERSION, "generator": "tools/make_fixture.py",
            "torch": torch.__version__, "transformers": transformers.__version__}
    summary = []
    for spec in SPECS:
        d = os.path.join(args.out, spec["name"])
        shutil.rmtree(d, ignore_errors=True)
        model = build(spec)
        refs = references(model, spec)
        save_dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
        kw = {}
        if spec["max_shard_size"]:
            kw["max_shard_size"] = spec["max_shard_size"]
        model.to(save_dtype).save_pretrained(d, **kw)
        model.float()
        save_file(refs, os.path.join(d, "ref.safetensors"), metadata=dict(meta, model=spec["name"]))
        with open(os.path.join(d, "config.json")) as f:
            cfg_json = json.load(f)
        line = f"{spec['name']}: {spec['model_type']} {spec['dtype']} files={sorted(os.listdir(d))}"
        if spec["name"] == "llama3_rope":
            t4 = tx4_config(cfg_json)
            with open(os.path.join(d, "config_tx4.json"), "w") as f:
                json.dump(t4, f, indent=2, sort_keys=True)
                f.write("\n")
            # transformers itself must read the 4.x spelling to the same model
            tmp = d + "_tx4_check"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            shutil.copy(os.path.join(d, "config_tx4.json"), os.path.join(tmp, "config.json"))
            shutil.copy(os.path.join(d, "model.safetensors"), tmp)
            m4 = AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="eager", dtype=torch.float32) \
                if TX_MAJOR >= 5 else AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="eager",
                                                                           torch_dtype=torch.float32)
            m4.eval()
            with torch.no_grad():
                l4 = m4(input_ids=refs["input_ids.2"][None]).logits[0]
            err = (l4 - refs["logits.2"]).abs().max().item()
            ferr = (m4.model.rotary_emb.inv_freq - refs["inv_freq"]).abs().max().item()
            shutil.rmtree(tmp)
            line += f" tx4-config-check: logits max|diff|={err} inv_freq max|diff|={ferr}"
        if spec["name"] == PPL_MODEL:
            ppl_tensors, ppl = ppl_reference(model, spec["seed"])
            save_file(ppl_tensors, os.path.join(d, "ppl.safetensors"), metadata=dict(meta, model=spec["name"]))
            line += f" ppl={ppl:.6f}"
        # the saved checkpoint must reload to the same logits (checks dtype/sharding/tying)
        rl = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").float().eval()
        with torch.no_grad():
            l2 = rl(input_ids=refs["input_ids.2"][None]).logits[0]
        err = (l2 - refs["logits.2"]).abs().max().item()
        line += f" reload max|diff|={err} inv_freq={refs['inv_freq'].tolist()[:4]}..."
        summary.append(line)
        print(line, flush=True)
    with open(os.path.join(args.out, "VERSIONS.txt"), "w") as f:
        f.write("Generated by tools/make_fixture.py (fixture format %s)\n" % FIXTURE_VERSION)
        f.write(f"python {platform.python_version()}\n")
        f.write(f"torch {torch.__version__}\n")
        f.write(f"transformers {transformers.__version__}\n")
        try:
            import safetensors
            f.write(f"safetensors {safetensors.__version__}\n")
        except Exception:
            pass
        f.write("reference logits: eager attention, float32, CPU\n")
        for line in summary:
            f.write(line + "\n")
    total = 0
    for root, _, files in os.walk(args.out):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    print(f"total size {total} bytes", flush=True)


if __name__ == "__main__":
    sys.exit(main())
