#!/usr/bin/env python3
"""Write a random-weight Qwen3 checkpoint of a real model's shapes, keeping only the first
--layers decoder layers (config.json still names the full depth), for timing the streaming
loader of `spense_gpu bench-prune --model DIR --layers N` on the GPU machine, where there is
no `spense synth` (that needs the CPU libraries). Weights ~ N(0, 0.02) drawn on the GPU
(torch, seeded), norms 1, stored in BF16 with the safetensors package.

    python3 tools/device/synth_checkpoint.py --preset qwen3-8b --layers 4 --out /tmp/q8b
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

# hidden, layers, heads, kv heads, head_dim, intermediate, vocab, tied: src/engine/presets.cpp
PRESETS = {
    "qwen3-0.6b": (1024, 28, 16, 8, 128, 3072, 151936, True),
    "qwen3-8b": (4096, 36, 32, 8, 128, 12288, 151936, False),
    "qwen3-32b": (5120, 64, 64, 8, 128, 25600, 151936, False),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="qwen3-8b", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=4, help="decoder layers actually written")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    H, L, NH, NKV, D, I, V, tied = PRESETS[a.preset]
    if not 1 <= a.layers <= L:
        ap.error(f"--layers must be in [1, {L}]")
    g = torch.Generator(device="cuda").manual_seed(a.seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, device="cuda") * 0.02).to(torch.bfloat16).cpu()

    t = {"model.embed_tokens.weight": rnd(V, H), "model.norm.weight": torch.ones(H, dtype=torch.bfloat16)}
    if not tied:
        t["lm_head.weight"] = rnd(V, H)
    for l in range(a.layers):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        t[p + "post_attention_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        t[p + "self_attn.q_norm.weight"] = torch.ones(D, dtype=torch.bfloat16)
        t[p + "self_attn.k_norm.weight"] = torch.ones(D, dtype=torch.bfloat16)
        t[p + "self_attn.q_proj.weight"] = rnd(NH * D, H)
        t[p + "self_attn.k_proj.weight"] = rnd(NKV * D, H)
        t[p + "self_attn.v_proj.weight"] = rnd(NKV * D, H)
        t[p + "self_attn.o_proj.weight"] = rnd(H, NH * D)
        t[p + "mlp.gate_proj.weight"] = rnd(I, H)
        t[p + "mlp.up_proj.weight"] = rnd(I, H)
        t[p + "mlp.down_proj.weight"] = rnd(H, I)
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": H,
        "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": D,
        "intermediate_size": I, "vocab_size": V, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": tied, "hidden_act": "silu", "attention_bias": False,
        "torch_dtype": "bfloat16",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote {a.out}: {a.preset} shapes, {a.layers} of {L} layers")


if __name__ == "__main__":
    main()
