"""The data path: whole splits as tensors (randperm + slicing) against torchvision's
FashionMNIST dataset behind a DataLoader, on the same 5,000-image split."""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data import DEBIAN_FASHION, balanced_indices, find_idx, read_idx


def _tensor_epoch(x: torch.Tensor, y: torch.Tensor, b: int, g: torch.Generator) -> int:
    n = 0
    perm = torch.randperm(len(y), generator=g)
    for i in range(0, len(y), b):
        idx = perm[i:i + b]
        xb, yb = x[idx], y[idx]
        n += len(yb) if xb.shape[0] == len(yb) else 0
    return n


def run(batch: int = 256, epochs: int = 3) -> list[dict[str, Any]]:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    files = find_idx(DEBIAN_FASHION)
    assert files, "needs Debian's dataset-fashion-mnist"
    labels = read_idx(files["train_y"])
    idx = balanced_indices(labels, 500, np.random.default_rng(0))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for p in files.values():  # torchvision reads the uncompressed files
            data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            (raw / p.name.removesuffix(".gz")).write_bytes(data)
        ds = datasets.FashionMNIST(d, train=True, transform=transforms.ToTensor())
        sub = Subset(ds, idx.tolist())
        x = torch.stack([sub[i][0] for i in range(len(sub))])  # converted once
        y = torch.tensor([sub[i][1] for i in range(len(sub))])
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        n = sum(_tensor_epoch(x, y, batch, g) for _ in range(epochs))
        rows.append({"path": "tensors (randperm + slicing)",
                     "images_per_s": n / (time.perf_counter() - t0)})
        for workers in (0, 2):
            loader = DataLoader(sub, batch_size=batch, shuffle=True, num_workers=workers)
            t0 = time.perf_counter()
            n = sum(len(yb) for _ in range(epochs) for _, yb in loader)
            rows.append({"path": f"DataLoader(num_workers={workers})",
                         "images_per_s": n / (time.perf_counter() - t0)})
    return rows
