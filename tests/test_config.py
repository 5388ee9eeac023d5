from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from imgsynth.config import (
    ConfigBase,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
    parse_override,
    register_config,
)
from imgsynth.errors import ConfigError


class _Optim(ConfigBase):
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


class _Model(ConfigBase):
    channels: list[int] = [32, 64]
    attention: bool = False
    family: Literal["ldm", "stylegan2"] = "ldm"


@register_config("_test")
class _TestConfig(ConfigBase):
    name: str = "x"
    seed: int = 0
    optim: _Optim = _Optim()
    model: _Model = _Model()


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_defaults_and_file_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", "kind: _test\nseed: 7\noptim:\n  learning_rate: 0.01\n")
    cfg = load_config(path)
    assert isinstance(cfg, _TestConfig)
    assert cfg.seed == 7 and cfg.optim.learning_rate == 0.01 and cfg.model.channels == [32, 64]


def test_overrides_are_coerced(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", "kind: _test\n")
    cfg = load_config(path, ["seed=3", "optim.learning_rate=2e-3", "model.channels=[8, 16, 32]", "model.attention=true"])
    assert cfg.seed == 3 and isinstance(cfg.seed, int)
    assert cfg.optim.learning_rate == pytest.approx(2e-3)
    assert cfg.model.channels == [8, 16, 32]
    assert cfg.model.attention is True


def test_base_chain_merges(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "kind: _test\nseed: 1\noptim:\n  learning_rate: 0.5\n")
    child = _write(tmp_path, "child.yaml", "base: base.yaml\noptim:\n  betas: [0.0, 0.99]\n")
    cfg = load_config(child)
    assert cfg.seed == 1 and cfg.optim.learning_rate == 0.5 and cfg.optim.betas == (0.0, 0.99)


def test_misspelt_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, "typo.yaml", "kind: _test\noptim:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and "optim.lerning_rate" in msg and "did you mean 'optim.learning_rate'" in msg
    assert err.value.exit_code == 2


def test_misspelt_override_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", "kind: _test\n")
    with pytest.raises(ConfigError, match="did you mean 'model.attention'"):
        load_config(path, ["model.atention=true"])


def test_wrong_type_names_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", "kind: _test\nseed: many\n")
    with pytest.raises(ConfigError, match="'seed'"):
        load_config(path)
    path = _write(tmp_path, "b.yaml", "kind: _test\nmodel:\n  family: vae\n")
    with pytest.raises(ConfigError, match="model.family"):
        load_config(path)


def test_unknown_kind_and_missing_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean '_test'"):
        load_config(_write(tmp_path, "a.yaml", "kind: _tset\n"))
    with pytest.raises(ConfigError, match="missing 'kind'"):
        load_config(_write(tmp_path, "b.yaml", "seed: 1\n"))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML line"):
        load_config(_write(tmp_path, "a.yaml", "kind: _test\nseed: [1, 2\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config 'no_such_builtin'"):
        load_config("no_such_builtin")
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00kind: _test\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)


def test_base_loop_is_detected(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "base: b.yaml\nkind: _test\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_parse_override_errors() -> None:
    assert parse_override("a.b=") == (["a", "b"], "")
    assert parse_override("x=[1,2]") == (["x"], [1, 2])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="key.sub=value"):
            parse_override(bad)
    assert apply_overrides({"a": 1}, ["b.c=2"]) == {"a": 1, "b": {"c": 2}}


def test_round_trip_through_dict(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "a.yaml", "kind: _test\nseed: 9\n"))
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_to_dict(cfg)["kind"] == "_test"


def test_an_override_error_names_the_override_not_the_file() -> None:
    from imgsynth.config import load_config
    from imgsynth.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config("ldm_2d_tiny", ["stages.diffusion.lrr=1"])
    text = str(info.value)
    assert text.startswith("--set stages.diffusion.lrr=1: ") and "did you mean 'stages.diffusion.lr'?" in text
    with pytest.raises(ConfigError, match=r"^--set train.batch_size=32: unknown key 'train'"):
        load_config("ldm_2d_tiny", ["train.batch_size=32"])
