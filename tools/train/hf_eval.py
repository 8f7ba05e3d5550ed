#!/usr/bin/env python3
"""Reference evaluation with HF transformers, by the same protocols as `spense ppl` / `spense eval`.

- perplexity: tokenize the whole text at once (no special tokens), cut into non-overlapping
  windows of seqlen (last partial window dropped), NLL of tokens 1..seqlen-1 of each window;
  ppl = exp(total NLL / predicted tokens). fp32, eager attention.
- tasks (jsonl: context, choices, label, optional greedy): continuation tokens = the token
  suffix of encode(context + choice) after encode(context); acc = argmax of the summed
  log-likelihood, acc_norm = argmax of that divided by the choice's UTF-8 byte length;
  greedy items are correct when every continuation token is the argmax.
- --logits IDS_FILE OUT: fp32 logits [T, vocab] of whitespace-separated ids (tensor `logits`),
  to compare with `spense logits`.
Prints one JSON object.
"""
import argparse, json, math
import numpy as np
import torch
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--tasks", nargs="*", default=[])
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--logits", nargs=2, metavar=("IDS", "OUT"))
    a = ap.parse_args()
    dev = "cuda"
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").to(dev).eval()
    tok = Tokenizer.from_file(a.model + "/tokenizer.json")
    res = {"model": a.model}
    if a.text:
        ids = tok.encode(open(a.text, encoding="utf-8").read(), add_special_tokens=False).ids
        n = len(ids) // a.seqlen
        if a.max_windows:
            n = min(n, a.max_windows)
        nll, cnt = 0.0, 0
        for b in range(0, n, 32):
            x = torch.tensor([ids[(b + j) * a.seqlen:(b + j + 1) * a.seqlen] for j in range(min(32, n - b))], device=dev)
            lp = torch.log_softmax(m(x).logits.double(), -1)[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
            nll -= lp.sum().item(); cnt += lp.numel()
        res.update(tokens=len(ids), windows=n, seqlen=a.seqlen, predicted=cnt, nll=nll, ppl=math.exp(nll / cnt))
    for path in a.tasks:
        items = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
        if a.limit:
            items = items[:a.limit]
        acc = accn = 0
        for it in items:
            ctx = tok.encode(it["context"], add_special_tokens=False).ids
            scores, norms, greedy_ok = [], [], True
            for ch in it["choices"]:
                full = tok.encode(it["context"] + ch, add_special_tokens=False).ids
                cont = full[len(ctx):]
                x = torch.tensor([full], device=dev)
                lp = torch.log_softmax(m(x).logits[0].double(), -1)
                pos = torch.arange(len(ctx) - 1, len(full) - 1, device=dev)
                tgt = torch.tensor(cont, device=dev)
                s = lp[pos, tgt].sum().item()
                scores.append(s); norms.append(s / max(1, len(ch.encode("utf-8"))))
                greedy_ok = bool((lp[pos].argmax(-1) == tgt).all().item())
            if it.get("greedy"):
                acc += greedy_ok; accn += greedy_ok
            else:
                acc += int(np.argmax(scores) == it["label"]); accn += int(np.argmax(norms) == it["label"])
        name = path.rsplit("/", 1)[-1].split(".")[0]
        res[name] = {"n": len(items), "acc": acc / len(items), "acc_norm": accn / len(items)}
    if a.logits:
        from safetensors.torch import save_file
        ids = [int(t) for t in open(a.logits[0]).read().split()]
        lg = m(torch.tensor([ids], device=dev)).logits[0].float().cpu().contiguous()
        save_file({"logits": lg}, a.logits[1])
        res["logits_shape"] = list(lg.shape)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
