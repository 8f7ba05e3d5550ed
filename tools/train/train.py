#!/usr/bin/env python3
"""Train Spense's evaluation model: a small Qwen3-architecture LM on real English text.

Runs on the GPU machine (torch 2.11, transformers 5.x, tokenizers). Steps, all seeded:
  1. train a byte-level BPE tokenizer (Qwen-style: NFC, Split regex, ByteLevel) on train.txt;
  2. tokenize train / eval splits;
  3. train Qwen3ForCausalLM (GQA, q/k norm, SwiGLU, RoPE) in bf16 autocast with AdamW and a
     cosine schedule for a fixed number of steps;
  4. save an HF checkpoint (config.json, model.safetensors, tokenizer.json, generation_config.json);
  5. report held-out perplexity (non-overlapping windows, the protocol of `spense ppl`), a
     unigram baseline of the same tokenizer, task accuracies, and the perplexity after
     magnitude 2:4 pruning of every linear layer (a check that pruning damage is visible).

Usage: python3 tools/train/train.py --data DIR --out DIR [--steps 3000] [--tasks DIR]
DIR holds train.txt and eval.txt (tools/corpus/build_corpus.sh).
"""
import argparse, json, math, os, random, sys, time

import numpy as np
import torch

SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # the Qwen2/Qwen3 pre-tokenizer pattern


def log(*a):
    print(*a, flush=True)


def train_tokenizer(train_txt, vocab_size, out_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers, Regex
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([train_txt], trainer)
    tok.save(out_path)
    return tok


def encode_file(tok, path, eot_id):
    """The corpus files hold one paragraph per line and documents separated by one empty line
    (tools/corpus); each document is encoded and followed by <|endoftext|>."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = [d for d in text.split("\n\n") if d.strip()]
    ids = []
    B = 4096
    for i in range(0, len(docs), B):
        for e in tok.encode_batch(docs[i:i + B]):
            ids.extend(e.ids)
            ids.append(eot_id)
    return np.array(ids, dtype=np.int32)


@torch.no_grad()
def window_ppl(model, ids, seqlen, max_windows, dev):
    n = len(ids) // seqlen
    if max_windows:
        n = min(n, max_windows)
    nll, cnt = 0.0, 0
    for b in range(0, n, 16):
        x = torch.tensor(np.stack([ids[(b + j) * seqlen:(b + j + 1) * seqlen] for j in range(min(16, n - b))]),
                         dtype=torch.long, device=dev)
        logits = model(x).logits.float()
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
        nll -= lp.double().sum().item()
        cnt += lp.numel()
    return math.exp(nll / cnt), n, cnt


@torch.no_grad()
def task_accuracy(model, tok, path, dev, limit=None):
    """lm-evaluation-harness style: sum log-likelihood of each continuation given the context;
    acc = argmax of the sum, acc_norm = argmax of the sum divided by the continuation's length
    in bytes; greedy items: the greedy continuation must equal the choice's tokens."""
    items = [json.loads(l) for l in open(path, encoding="utf-8")]
    if limit:
        items = items[:limit]
    acc = accn = 0
    for it in items:
        ctx = tok.encode(it["context"]).ids
        scores, norms = [], []
        greedy_ok = True
        for ch in it["choices"]:
            cont = tok.encode(it["context"] + ch).ids[len(ctx):]
            x = torch.tensor([ctx + cont], device=dev)
            lp = torch.log_softmax(model(x).logits[0].float(), -1)
            tgt = torch.tensor(cont, device=dev)
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=dev)
            s = lp[pos, tgt].sum().item()
            scores.append(s)
            norms.append(s / max(1, len(ch.encode("utf-8"))))
            if it.get("greedy"):
                greedy_ok = bool((lp[pos].argmax(-1) == tgt).all().item())
        if it.get("greedy"):
            acc += greedy_ok
            accn += greedy_ok
        else:
            acc += int(np.argmax(scores) == it["label"])
            accn += int(np.argmax(norms) == it["label"])
    return acc / len(items), accn / len(items), len(items)


def magnitude_24_(model):
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            w = mod.weight.data
            g = w.view(w.shape[0], -1, 4)
            idx = g.abs().argsort(-1)[..., :2]
            g.scatter_(-1, idx, 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--steps", type=int, default=3000, help="upper bound on optimizer steps")
    ap.add_argument("--train-seconds", type=float, default=0,
                    help="if > 0: time the first 30 steps and cap the step count so training fits this budget; "
                         "the schedule is then laid over the capped count (recorded in train_report.json)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
    dev = "cuda"
    os.makedirs(args.out, exist_ok=True)
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    import transformers, tokenizers

    t0 = time.time()
    tok = train_tokenizer(os.path.join(args.data, "train.txt"), args.vocab, os.path.join(args.out, "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    log(f"tokenizer: vocab {tok.get_vocab_size()} in {time.time()-t0:.0f}s")
    train_ids = encode_file(tok, os.path.join(args.data, "train.txt"), eot)
    eval_ids = encode_file(tok, os.path.join(args.data, "eval.txt"), eot)
    log(f"tokens: train {len(train_ids)/1e6:.1f}M eval {len(eval_ids)/1e6:.2f}M ({time.time()-t0:.0f}s)")

    cfg = AutoConfig.for_model(
        "qwen3", vocab_size=tok.get_vocab_size(), hidden_size=512, intermediate_size=1280,
        num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_theta=10000.0, bos_token_id=eot, eos_token_id=eot, attention_bias=False)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams/1e6:.2f}M parameters")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    plan = {"steps": args.steps}
    warm = 30
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / plan["steps"])))))
    data = torch.from_numpy(train_ids.astype(np.int64)).to(dev)
    gen = torch.Generator(device=dev); gen.manual_seed(args.seed)
    L = args.seqlen
    model.train()
    t1 = time.time()
    step = 0
    while step < plan["steps"]:
        starts = torch.randint(0, len(data) - L - 1, (args.batch,), device=dev, generator=gen)
        x = data[starts[:, None] + torch.arange(L, device=dev)[None]]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                 x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step()
        if step == 29 and args.train_seconds > 0:
            torch.cuda.synchronize()
            per_step = (time.time() - t1) / 30
            plan["steps"] = min(args.steps, int(args.train_seconds / per_step))
            log(f"{per_step*1e3:.0f} ms/step: training for {plan['steps']} steps")
        step += 1
        if step % 200 == 0 or step == plan["steps"]:
            el = time.time() - t1
            log(f"step {step} loss {loss.item():.3f} lr {sched.get_last_lr()[0]:.2e} "
                f"{(step+1)*args.batch*L/el/1e3:.0f}k tok/s {el:.0f}s")
    train_s = time.time() - t1

    model.eval()
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(args.out, safe_serialization=True)
    GenerationConfig(bos_token_id=eot, eos_token_id=eot, do_sample=False).save_pretrained(args.out)
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "model_max_length": 2048}
    json.dump(tcfg, open(os.path.join(args.out, "tokenizer_config.json"), "w"), indent=2)

    # Evaluate the saved bf16 weights in fp32 (what `spense ppl` computes).
    m32 = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager").to(dev)
    res = {"params": nparams, "train_tokens": int(len(train_ids)), "eval_tokens": int(len(eval_ids)),
           "steps": plan["steps"], "batch": args.batch, "seqlen": L, "train_seconds": round(train_s, 1),
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "tokenizers": tokenizers.__version__}}
    ppl, nw, nt = window_ppl(m32, eval_ids, 512, 0, dev)
    res["eval_ppl_512"] = ppl; res["eval_windows_512"] = nw
    ppl2, nw2, _ = window_ppl(m32, eval_ids, 2048, 0, dev)
    res["eval_ppl_2048"] = ppl2; res["eval_windows_2048"] = nw2
    counts = np.bincount(train_ids, minlength=tok.get_vocab_size()).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    res["unigram_ppl"] = float(np.exp(-logp[eval_ids].mean()))
    if args.tasks:
        for name in ("lastword", "nextsent"):
            p = os.path.join(args.tasks, name + ".jsonl")
            if os.path.exists(p):
                a, an, n = task_accuracy(m32, tok, p, dev, limit=1000)
                res[f"{name}_acc"] = a; res[f"{name}_acc_norm"] = an; res[f"{name}_n"] = n
    magnitude_24_(m32)
    res["magnitude24_eval_ppl_512"] = window_ppl(m32, eval_ids, 512, 0, dev)[0]
    log(json.dumps(res, indent=2))
    json.dump(res, open(os.path.join(args.out, "train_report.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
