from __future__ import annotations

from pathlib import Path

import pytest

from trainables.config import ConfigError, TrainConfig, apply_overrides, load_yaml


def test_round_trip_and_defaults() -> None:
    cfg = TrainConfig.from_dict({"transition": {"family": "power", "exponent": 0.5}})
    assert cfg.alpha == 1.01 and cfg.transition == {"family": "power", "exponent": 0.5}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_nest_and_parse_scalars() -> None:
    raw = apply_overrides({"transition": {"family": "power", "exponent": 0.5}},
                          ["transition.family=exponential", "transition.rate=0.2",
                           "kernel.horizon=3", "epochs=4", "data_dir=null", "device=cpu"])
    assert raw == {"transition": {"family": "exponential", "rate": 0.2},
                   "kernel": {"horizon": 3}, "epochs": 4, "data_dir": None, "device": "cpu"}
    cfg = TrainConfig.from_dict(raw)
    assert cfg.kernel.horizon == 3 and cfg.transition["rate"] == 0.2


@pytest.mark.parametrize("raw, fragment", [
    ({"alpha": 0}, "alpha=0"),
    ({"alpha": -1.5}, "alpha=-1.5"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": 0}, "lr=0"),
    ({"batch_size": 1}, "batch_size=1"),
    ({"batch_size": 9}, "batch_size=9"),
    ({"batch_size": 6000}, "batch_size=6000"),
    ({"model": "vgg"}, "model='vgg'"),
    ({"dataset": "cifar"}, "dataset='cifar'"),
    ({"transition": {"family": "zigzag"}}, "transition.family='zigzag'"),
    ({"transition": {"family": "power", "exponent": 7}}, "transition.exponent=7"),
    ({"bogus": 1}, "unknown config key 'bogus'"),
    ({"kernel": {"bogus": 1}}, "unknown config key kernel.'bogus'"),
    ({"kernel": {"x": "fixed"}}, "kernel.sigma_x=None"),
    ({"kernel": {"yhat": "magic"}}, "kernel.yhat='magic'"),
    ({"epochs": "ten"}, "epochs='ten'"),
    ({"epochs": True}, "epochs=True"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"train_size": 1005}, "train_size=1005"),
])
def test_bad_values_give_one_line_naming_key_and_allowed(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(raw)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg
    assert "allowed" in msg or "known keys" in msg


def test_unknown_key_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known keys: .*'alpha'.*'transition'"):
        TrainConfig.from_dict({"alpah": 1.01})


def test_load_yaml_is_safe_and_one_line(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid safe YAML"):
        load_yaml(str(evil))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("epochs: 2 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(str(latin))
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(str(tmp_path / "missing.yaml"))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(str(listy))


def test_the_trace_estimator_needs_an_integer_order() -> None:
    from trainables.config import ConfigError, TrainConfig

    assert TrainConfig.from_dict({"estimator": "trace", "alpha": 2.0}).alpha == 2.0
    with pytest.raises(ConfigError, match="alpha"):
        TrainConfig.from_dict({"estimator": "trace", "alpha": 2.5})
    with pytest.raises(ConfigError, match="estimator"):
        TrainConfig.from_dict({"estimator": "magic"})
