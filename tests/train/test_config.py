"""TrainConfig: JSON round trip and clear errors for unusable settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from echoscreen.errors import ConfigError
from echoscreen.train import TrainConfig


def test_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(task="rhd", data="https://site.example:8443", identity=tmp_path / "id",
                      dataset="ph", run=tmp_path / "run", epochs=3, lr=3e-4,
                      max_clips=5)  # fmt: skip
    cfg.save(tmp_path / "config.json")
    back = TrainConfig.load(tmp_path / "config.json")
    assert back == cfg
    assert back.remote and isinstance(back.run, Path) and back.identity == tmp_path / "id"
    assert back.with_resume().identity_dict() == cfg.identity_dict()
    assert replace(cfg, lr=1e-3).identity_dict() != cfg.identity_dict()


@pytest.mark.parametrize(("change", "match"), [
    ({"task": "segment"}, "unknown task 'segment'"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"seed": -1}, "seed must be >= 0"),  # numpy's generators refuse it later, mid-run
    ({"lr": -1.0}, "learning rate"),
    ({"model_size": "huge"}, "unknown model size"),
    ({"data": "https://h:1", "identity": None}, "--identity"),
    ({"dataset": ""}, "--dataset"),
])  # fmt: skip
def test_bad_settings(tmp_path: Path, change: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"task": "view", "data": str(tmp_path), "dataset": "ph",
                               "run": tmp_path / "run"}  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{**base, **change})  # type: ignore[arg-type]


def test_missing_site_is_checked_apart(tmp_path: Path) -> None:
    cfg = TrainConfig(task="view", data="/no/such/site", dataset="ph", run=tmp_path / "run")
    with pytest.raises(ConfigError, match="neither a site folder"):
        cfg.check_data()  # a saved config stays readable where its site is not


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is this a run folder"):
        TrainConfig.load(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.load(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainConfig.from_json({"task": "view", "colour": "red"})
