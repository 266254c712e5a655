#!/usr/bin/env python3
"""The PyTorch loop `slimscope sweep` is compared with (issue: trade-off curves).

Same work as `slimscope sweep assets/demo/digit_cnn.pth --data assets/demo/mnist_5k.toml
--bits 8,6,4,3,2`: the digit CNN pruned with torch.nn.utils.prune — global L1
magnitude, per-layer L1 magnitude, random, L2 structured rows — at 0, 5, …, 95 %, plus
2:4, plus int8…int2 per-channel fake quantization, each evaluated on the 5,000 mnist_5k
images (inference_mode, batch 256). Also the per-layer sensitivity sweep (each weight
alone, L1 magnitude, 10 %…100 %). Needs `pip install torch numpy` (not a test
dependency: the PyPI wheel is ~5 GB with its CUDA libraries; it runs on the CPU).

    python3 benches/torch_sweep.py [--threads 2]
"""
import argparse
import copy
import gzip
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

ROOT = Path(__file__).resolve().parents[1]


class DigitCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc_layers = nn.Sequential(nn.Linear(1152, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.fc_layers(self.conv_layers(x).flatten(1))


def weights(m):
    return [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]


def accuracy(m, x, y):
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            correct += (m(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum().item()
    return correct / len(x)


def two_four(w):
    g = w.detach().reshape(-1, 4).abs()
    keep = torch.zeros_like(g, dtype=torch.bool)
    keep.scatter_(1, g.topk(2, dim=1).indices, True)
    return keep.reshape(w.shape)


def fake_quant(w, bits):
    q = 2 ** (bits - 1) - 1
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / q
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (w / scale.view(shape)).round().clamp(-q, q) * scale.view(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = DigitCNN()
    base.load_state_dict(torch.load(ROOT / "assets/demo/digit_cnn.pth", map_location="cpu"))
    base.eval()
    with gzip.open(ROOT / "assets/demo/mnist_5k.csv.gz", "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(((rows[:, :-1] / 255 - 0.1307) / 0.3081).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(rows[:, -1].astype(np.int64))
    print(f"baseline top-1 {accuracy(base, x, y):.4f}")

    levels = [i * 0.05 for i in range(20)]
    start = time.perf_counter()
    points = 0
    for method in ("global", "l1", "random", "structured"):
        for s in levels:
            m = copy.deepcopy(base)
            if s > 0:
                if method == "global":
                    prune.global_unstructured(weights(m), pruning_method=prune.L1Unstructured, amount=s)
                for mod, name in weights(m):
                    if method == "l1":
                        prune.l1_unstructured(mod, name, amount=s)
                    elif method == "random":
                        prune.random_unstructured(mod, name, amount=s)
                    elif method == "structured":
                        prune.ln_structured(mod, name, amount=s, n=2, dim=0)
            accuracy(m, x, y)
            points += 1
    m = copy.deepcopy(base)
    for mod, name in weights(m):
        if mod.weight[0].numel() % 4 == 0:
            prune.custom_from_mask(mod, name, two_four(mod.weight))
    accuracy(m, x, y)
    points += 1
    for bits in (8, 6, 4, 3, 2):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for mod, _ in weights(m):
                mod.weight.copy_(fake_quant(mod.weight, bits))
        accuracy(m, x, y)
        points += 1
    t = time.perf_counter() - start
    print(f"global sweep: {points} points in {t:.1f} s ({t / points:.2f} s/point)")

    start = time.perf_counter()
    points = 0
    for layer in range(len(weights(base))):
        for s in [i * 0.1 for i in range(1, 11)]:
            m = copy.deepcopy(base)
            mod, name = weights(m)[layer]
            prune.l1_unstructured(mod, name, amount=min(s, 0.99))
            accuracy(m, x, y)
            points += 1
    t = time.perf_counter() - start
    print(f"per-layer sensitivity: {points} points in {t:.1f} s ({t / points:.2f} s/point)")


if __name__ == "__main__":
    main()
