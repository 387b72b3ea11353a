"""One epoch of the reference CNN on MNIST in PyTorch, the same settings as
`strata train cnn` (Adam lr 1e-3, batch 64, seeded shuffle, MNIST normalisation), for the
side-by-side comparison quoted in the README. Usage:

    python bench/torch_mnist_cnn.py [--threads 2] [--batch-size 64] [--epochs 1]
"""

import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist")


def idx(name):
    with gzip.open(os.path.join(ROOT, name + ".gz"), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 14 * 14, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    norm = lambda x: (torch.from_numpy(x.astype(np.float32) / 255.0) - 0.1307) / 0.3081
    xtr = norm(idx("train-images-idx3-ubyte")).unsqueeze(1)
    ytr = torch.from_numpy(idx("train-labels-idx1-ubyte").astype(np.int64))
    xte = norm(idx("t10k-images-idx3-ubyte")).unsqueeze(1)
    yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte").astype(np.int64))
    model = Cnn()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    for epoch in range(a.epochs):
        perm = torch.randperm(len(xtr))
        start = time.perf_counter()
        for i in range(0, len(xtr), a.batch_size):
            idx_b = perm[i : i + a.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(xtr[idx_b]), ytr[idx_b])
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: {seconds:.2f} s ({len(xtr) / seconds:.0f} samples/s), test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
