"""Writes the PyTorch checkpoint the `finetune_pytorch` example starts from.

Run from the repository root with a Python that has torch and safetensors:

    python examples/assets/pretrain_digits.py

An MLP 64 → 64 → 10 (nn.Sequential of Linear, ReLU, Linear) trained in PyTorch on the
bundled 8×8 digits of the classes 0 to 4 only (pixels / 16, the first 80 % of the rows),
saved with `torch.save(model.state_dict(), "digits_mlp.pt")`, and the first eight rows
with PyTorch's logits for them in `digits_mlp_io.safetensors`, which the example checks
strata reproduces. CI never runs this script.
"""

import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
torch.manual_seed(0)

rows = np.loadtxt(os.path.join(ROOT, "data", "uci-small", "digits.csv"), delimiter=",")
x = torch.tensor(rows[:, :64] / 16.0, dtype=torch.float32)
y = torch.tensor(rows[:, 64], dtype=torch.long)
cut = int(0.8 * len(rows))
keep = y[:cut] < 5
xt, yt = x[:cut][keep], y[:cut][keep]

model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(200):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(xt), yt)
    loss.backward()
    opt.step()
print(f"final training loss {loss.item():.4f} on {len(xt)} digits 0-4")

torch.save(model.state_dict(), os.path.join(HERE, "digits_mlp.pt"))
with torch.no_grad():
    save_file({"x": x[:8].contiguous(), "logits": model(x[:8]).contiguous()},
              os.path.join(HERE, "digits_mlp_io.safetensors"))
print("written to", HERE)
