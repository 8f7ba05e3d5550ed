#!/usr/bin/env python3
"""Host<->GPU copy rates on the GPU machine, for the pruning pipeline's transfers: pageable
host memory freshly allocated (its pages faulted in by the copy itself) and already touched,
and pinned memory, 1 GiB each way; plus the rate of first-touch page faults (np.ones on a
fresh allocation). Median of 5 timed copies after a warm-up.

    python3 tools/device/pcie_probe.py
"""
import time

import numpy as np
import torch

N = 1 << 28  # 2^28 fp32 = 1 GiB


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main():
    gib = N * 4 / 2**30
    dev = torch.empty(N, device="cuda")
    touched = torch.ones(N)
    pinned = torch.ones(N).pin_memory()
    rows = []
    rows.append(("H2D pageable (touched)", timed(lambda: dev.copy_(touched))))
    rows.append(("H2D pinned", timed(lambda: dev.copy_(pinned))))
    rows.append(("D2H pageable (touched)", timed(lambda: touched.copy_(dev))))
    rows.append(("D2H pinned", timed(lambda: pinned.copy_(dev))))
    rows.append(("D2H pageable (fresh allocation)", timed(lambda: torch.empty(N).copy_(dev))))
    rows.append(("first touch (np.ones, fresh)", timed(lambda: np.ones(N, dtype=np.float32))))
    rows.append(("memcpy touched -> touched", timed(lambda: np.copyto(touched.numpy(), pinned.numpy()))))
    for name, s in rows:
        print(f"{name:36s} {gib / s:7.1f} GiB/s")


if __name__ == "__main__":
    main()
