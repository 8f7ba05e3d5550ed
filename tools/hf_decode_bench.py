#!/usr/bin/env python3
"""Peer comparison for `spense bench-decode`: HF transformers decode speed on the same shapes.

Builds a random-weight Qwen3 model of the Qwen3-32B layer shapes (hidden 5120, 64/8 heads,
head_dim 128, intermediate 25600, vocab 151936; --layers of them, default 8, the same as
`spense bench-decode --synthetic qwen3-32b --layers 8`), BF16 on the GPU, fills a static KV
cache with a `ctx`-token prompt, then times greedy decode steps (CUDA events around
model.generate with a static cache, minus the prefill-only call). Prints one JSON line per
(mode, batch): ms per step, tokens/s and weight GB/s (projection + LM head bytes / step time).

Run on the GPU machine: python3 tools/hf_decode_bench.py --batch 1,16 [--compile]
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="also time with torch.compile (static cache)")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        "qwen3", hidden_size=5120, num_hidden_layers=a.layers, num_attention_heads=64, num_key_value_heads=8,
        head_dim=128, intermediate_size=25600, vocab_size=151936, max_position_embeddings=4096,
        tie_word_embeddings=False)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    proj = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    step_bytes = 2 * (proj + model.lm_head.weight.numel())
    modes = ["eager-static"] + (["compiled-static"] if a.compile else [])
    for mode in modes:
        if mode == "compiled-static":
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
        for b in [int(x) for x in a.batch.split(",")]:
            ids = torch.randint(0, 151936, (b, a.ctx), device="cuda")
            kw = dict(do_sample=False, cache_implementation="static", pad_token_id=0,
                      eos_token_id=None, min_new_tokens=1)

            def run(n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(ids, max_new_tokens=n, min_length=a.ctx + n, **kw)
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            run(2)  # warm-up (and compilation)
            run(a.steps + 1)
            t1 = min(run(1) for _ in range(2))
            tn = min(run(a.steps + 1) for _ in range(2))
            ms = (tn - t1) / a.steps * 1e3
            print(json.dumps({"impl": "transformers " + __import__("transformers").__version__, "mode": mode,
                              "layers": a.layers, "batch": b, "ctx": a.ctx, "ms_per_step": round(ms, 3),
                              "tokens_per_s": round(b / ms * 1e3, 1),
                              "weight_gbps": round(step_bytes / (ms * 1e-3) / 1e9, 1)}), flush=True)


if __name__ == "__main__":
    main()
