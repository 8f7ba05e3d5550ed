#!/usr/bin/env python3
"""Independent PyTorch reference for SparseGPT 2:4 (fp64), and the fixtures it writes.

Implements the published algorithm (Frantar & Alistarh, "SparseGPT: Massive Language Models
Can Be Accurately Pruned in One-Shot", ICML 2023, Algorithm 1 with the 2:4 mask selection of
section 3.3), in the paper's column-major PyTorch form: Cholesky of H, cholesky_inverse, then
the upper Cholesky factor of H^-1; column blocks of B with lazy batched updates; the 2:4 mask
of each group of 4 columns chosen when the block reaches it by w^2 / [Hinv_chol]_jj^2.
The C++ code (src/prune/obs.cpp) takes a different route to the same factor (one reversed
Cholesky + a triangular inverse) and runs row by row, so agreement tests both.

Writes tests/fixtures/sparsegpt/<case>.safetensors with F64 tensors
  W [N,K]         seeded weights
  H [K,K]         2/n X^T X of seeded correlated inputs with outlier channels
  W_pruned [N,K]  SparseGPT 2:4 result (percdamp 0.01, blocksize in the metadata)
and metadata (seed, blocksize, percdamp, n, torch version). Run on any machine with torch and
safetensors (CPU is enough):  python3 tools/sparsegpt_ref.py --out tests/fixtures/sparsegpt
"""
import argparse
import math
import os

import torch
from safetensors.torch import save_file

F64 = torch.float64


def sparsegpt_24(W, H, blocksize=128, percdamp=0.01):
    W = W.clone()
    H = H.clone()
    N, K = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    H += damp * torch.eye(K, dtype=H.dtype)
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(Hinv, upper=True)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        pruned = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            if i % 4 == 0:
                sal = W1[:, i:i + 4] ** 2 / torch.diag(U1)[i:i + 4].reshape(1, -1) ** 2
                drop = torch.topk(sal, 2, dim=1, largest=False).indices
                m4 = torch.zeros(N, 4, dtype=torch.bool)
                m4.scatter_(1, drop, True)
                pruned[:, i:i + 4] = m4
            w = W1[:, i]
            q = w.clone()
            q[pruned[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(U[i1:i2, i2:])
    return W


def make_case(N, K, n, seed, dead=(), dup=()):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g, dtype=F64) * 0.05
    # Correlated inputs: Z A with A = I + 0.5 G / sqrt(K), plus a few outlier channels x10.
    Z = torch.randn(n, K, generator=g, dtype=F64)
    A = torch.eye(K, dtype=F64) + 0.5 * torch.randn(K, K, generator=g, dtype=F64) / math.sqrt(K)
    X = Z @ A
    outliers = torch.randperm(K, generator=g)[: max(2, K // 32)]
    X[:, outliers] *= 10.0
    for j in dead:
        X[:, j] = 0
    for a, b in dup:  # column b duplicates column a: a singular H (damping makes it definite)
        X[:, b] = X[:, a]
    H = 2.0 / n * (X.T @ X)
    H = 0.5 * (H + H.T)  # exactly symmetric
    return W, H


CASES = [
    # name, N, K, n (rows of X), seed, blocksize, dead columns, duplicated column pairs
    ("sparsegpt_32x256", 32, 256, 512, 1, 128, (), ()),
    ("sparsegpt_32x160", 32, 160, 320, 2, 128, (), ()),  # K not a multiple of B
    ("sparsegpt_16x96_singular", 16, 96, 48, 3, 32, (3, 50), ((10, 11), (60, 70))),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/sparsegpt")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for name, N, K, n, seed, B, dead, dup in CASES:
        W, H = make_case(N, K, n, seed, dead, dup)
        Wp = sparsegpt_24(W, H, blocksize=B, percdamp=0.01)
        # Sanity: 2:4 along K.
        nz = (Wp != 0).reshape(N, K // 4, 4).sum(-1)
        assert int(nz.max()) <= 2, name
        err = torch.trace((W - Wp) @ H @ (W - Wp).T).item()
        meta = {
            "generator": "tools/sparsegpt_ref.py",
            "seed": str(seed),
            "blocksize": str(B),
            "percdamp": "0.01",
            "prune": "2:4",
            "n_rows": str(n),
            "dead_columns": ",".join(map(str, dead)),
            "duplicated_columns": ";".join(f"{a},{b}" for a, b in dup),
            "torch": torch.__version__,
            "error": repr(err),
        }
        path = os.path.join(args.out, name + ".safetensors")
        save_file({"W": W.contiguous(), "H": H.contiguous(), "W_pruned": Wp.contiguous()}, path,
                  metadata=meta)
        print(f"{path}: W [{N},{K}] B={B} error tr(E H E^T)={err:.6e} "
              f"nonzero={(Wp != 0).double().mean().item():.4f}")


if __name__ == "__main__":
    main()
