#!/usr/bin/env python3
"""Whole-model SparseGPT 2:4 reference in PyTorch (the published algorithm: sequential,
block by block, Hessians from the dense block's inputs, every linear of a block pruned, then
the block's outputs recomputed with the pruned weights), on the SAME calibration windows as
`spense prune --save-calib FILE`, then perplexity by the protocol of `spense ppl`.

Uses sparsegpt_24() of tools/sparsegpt_ref.py (fp64). Pruned weights are rounded to the
checkpoint's dtype (bf16) as `spense prune` writes them. Runs on the GPU machine.

Usage: python3 tools/sparsegpt_model_ref.py --model DIR --calib-ids FILE --text EVAL.txt
                                            [--seqlen 512] [--max-windows 40]
"""
import argparse, json, math, os, sys
import torch
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparsegpt_ref import sparsegpt_24  # noqa: E402

PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib-ids", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=40)
    a = ap.parse_args()
    dev = "cuda"
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").to(dev).eval()
    store_dtype = torch.bfloat16
    wins = [[int(t) for t in l.split()] for l in open(a.calib_ids) if l.strip()]
    x = torch.tensor(wins, device=dev)
    # Inputs of layer 0: the embeddings; positions 0..L-1 for every window.
    hidden = m.model.embed_tokens(x)
    L = x.shape[1]
    pos_ids = torch.arange(L, device=dev)[None]
    rot = m.model.rotary_emb(hidden, pos_ids)
    mask = torch.full((L, L), float("-inf"), device=dev).triu(1)[None, None]
    for li, layer in enumerate(m.model.layers):
        mods = {n: layer.get_submodule(n) for n in PROJ}
        H = {n: torch.zeros(mod.in_features, mod.in_features, dtype=torch.float64, device=dev) for n, mod in mods.items()}
        cnt = {n: 0 for n in mods}

        def hook(name):
            def f(mod, inp, out):
                xx = inp[0].reshape(-1, inp[0].shape[-1]).double()
                # running mean of 2 x x^T over all rows, as SparseGPT's add_batch
                n_new = xx.shape[0]
                H[name] *= cnt[name] / (cnt[name] + n_new)
                cnt[name] += n_new
                H[name] += (2.0 / cnt[name]) * xx.T @ xx
            return f
        hs = [mods[n].register_forward_hook(hook(n)) for n in mods]
        for b in range(hidden.shape[0]):
            layer(hidden[b:b + 1], attention_mask=mask, position_embeddings=rot, position_ids=pos_ids)
        for h in hs:
            h.remove()
        for n, mod in mods.items():
            W = sparsegpt_24(mod.weight.double().cpu(), H[n].cpu())
            mod.weight.copy_(W.to(store_dtype).float().to(dev))
        outs = [layer(hidden[b:b + 1], attention_mask=mask, position_embeddings=rot, position_ids=pos_ids)
                for b in range(hidden.shape[0])]
        hidden = torch.cat([o[0] if isinstance(o, tuple) else o for o in outs], 0)
        print(f"layer {li} pruned", flush=True)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    ids = tok.encode(open(a.text, encoding="utf-8").read(), add_special_tokens=False).ids
    n = min(len(ids) // a.seqlen, a.max_windows)
    nll, c = 0.0, 0
    for w in range(n):
        xx = torch.tensor([ids[w * a.seqlen:(w + 1) * a.seqlen]], device=dev)
        lp = torch.log_softmax(m(xx).logits.double(), -1)[:, :-1].gather(-1, xx[:, 1:, None])[..., 0]
        nll -= lp.sum().item(); c += lp.numel()
    print(json.dumps({"method": "sparsegpt-pytorch-ref", "calib_windows": len(wins), "calib_seqlen": L,
                      "windows": n, "seqlen": a.seqlen, "predicted": c, "ppl": math.exp(nll / c)}))


if __name__ == "__main__":
    main()
