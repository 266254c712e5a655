#!/usr/bin/env python3
"""The PyTorch loop `slimscope bench --training` is measured against: one epoch of
forward + backward + Adam (batch 64) over 9,000 random samples for the anchors' MLP
784-512-256-10 and LeNet-5-like CNN, and one epoch of masked fine-tuning of the demo
CNN (90% magnitude, masks re-applied after each step) over 4,500 mnist_5k images.

    python benches/torch_train.py [assets/demo]
"""
import gzip
import sys
import time

import numpy as np
import torch
import torch.nn as nn

torch.manual_seed(0)


def epoch(model, x, y, masks=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n = len(x)
    order = torch.randperm(n)
    start = time.perf_counter()
    for i in range(0, n, 64):
        idx = order[i:i + 64]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if masks:
            with torch.no_grad():
                for p, m in masks:
                    p.mul_(m)
    return time.perf_counter() - start


mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
lenet = nn.Sequential(
    nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
x = torch.randn(9000, 784)
y = torch.arange(9000) % 10
for name, model, inputs in [("MLP 784-512-256-10", mlp, x), ("LeNet-5-like CNN", lenet, x.view(-1, 1, 28, 28))]:
    t = epoch(model, inputs, y)
    print(f"torch train: {name}, 9k samples, batch 64: {9000 / t:8.0f} samples/s ({t:.1f} s)")

demo = sys.argv[1] if len(sys.argv) > 1 else "assets/demo"
rows = np.loadtxt(gzip.open(f"{demo}/mnist_5k.csv.gz"), delimiter=",", dtype=np.float32)
images = torch.from_numpy((rows[:4500, :784] / 255 - 0.1307) / 0.3081).view(-1, 1, 28, 28)
labels = torch.from_numpy(rows[:4500, 784].astype(np.int64))
cnn = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(1152, 256), nn.ReLU(), nn.Linear(256, 10))
masks = []
for p in cnn.parameters():
    if p.dim() > 1:
        k = int(round(0.9 * p.numel()))
        threshold = p.detach().abs().flatten().kthvalue(k).values
        masks.append((p, (p.detach().abs() > threshold).float()))
t = epoch(cnn, images, labels, masks)
print(f"torch recover: digit CNN 90%, 1 epoch of 4.5k images:     {4500 / t:8.0f} samples/s ({t:.1f} s)")
