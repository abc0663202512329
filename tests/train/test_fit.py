"""fit(): the run folder's files and their format, exact resume, refusing to mix runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from echoscreen.deid import READER
from echoscreen.errors import ConfigError
from echoscreen.models import LABELS, VIEWS
from echoscreen.train import TrainConfig, fit
from echoscreen.train.checkpoint import load

VIEW_KEYS = {"clip", "study", "view", "view_pred", "p_view", "doppler", "p_doppler"}
RHD_KEYS = {"study", "label_index", "p_screen", "p3", "sex", "age_years", "clips",
            "p_clip_mean", "p_clip_vote", "p_clip_max"}  # fmt: skip


def _files(cfg: TrainConfig) -> set[str]:
    return {p.name for p in cfg.run.iterdir()}


def test_view_run_files(tiny_cfg: TrainConfig) -> None:
    result = fit(tiny_cfg, progress=False)
    assert _files(tiny_cfg) == {"config.json", "clips.json", "metrics.jsonl", "checkpoint.pt",
                                "best.pt", "predictions_val.json",
                                "predictions_test.json"}  # fmt: skip
    assert TrainConfig.load(tiny_cfg.run / "config.json") == tiny_cfg
    stored = json.loads((tiny_cfg.run / "clips.json").read_text())
    assert stored["reader"] == READER and stored["shape"][0] == 3 and len(stored["shape"]) == 4
    assert list(stored["readers"]) == [READER] and stored["readers"][READER] > 0
    rows = [json.loads(line) for line in (tiny_cfg.run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert {"train_loss", "val_loss", "val_view_acc", "val_doppler_acc", "lr"} <= set(rows[0])
    ckpt = load(tiny_cfg.run / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "config", "rng"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"] == tiny_cfg.to_json()
    preds = json.loads((tiny_cfg.run / "predictions_test.json").read_text())
    assert preds and all(set(p) == VIEW_KEYS for p in preds)
    for p in preds:
        assert len(p["p_view"]) == len(VIEWS) and abs(sum(p["p_view"]) - 1) < 1e-4
        assert p["view_pred"] in VIEWS and p["doppler"] in (0, 1) and 0 <= p["p_doppler"] <= 1
    assert result["epochs"] == 1 and set(result["test"]) >= {"view_acc", "doppler_acc"}


def test_rhd_run_files(tiny_cfg: TrainConfig) -> None:
    cfg = replace(tiny_cfg, task="rhd", batch_size=2)
    result = fit(cfg, progress=False)
    row = json.loads((cfg.run / "metrics.jsonl").read_text())
    assert {"train_loss", "val_loss", "val_auroc", "val_acc3"} <= set(row)
    for split in ("val", "test"):
        preds = json.loads((cfg.run / f"predictions_{split}.json").read_text())
        assert preds and all(set(p) == RHD_KEYS for p in preds)
        for p in preds:
            assert p["label_index"] in range(len(LABELS)) and len(p["p3"]) == 3
            assert 1 <= len(p["clips"]) <= cfg.max_clips and p["sex"] in ("F", "M")
            assert isinstance(p["age_years"], float)
            assert 0 <= p["p_clip_vote"] <= 1 and p["p_clip_mean"] <= p["p_clip_max"] + 1e-6
    assert result["best_epoch"] == 1


def test_resume_is_exact(tiny_cfg: TrainConfig) -> None:
    straight = replace(tiny_cfg, epochs=2, run=tiny_cfg.run / "straight")
    fit(straight, progress=False)
    broken = replace(straight, run=tiny_cfg.run / "broken")
    assert fit(broken, progress=False, stop_after=1)["epochs"] == 1  # as if killed after epoch 1
    assert not (broken.run / "predictions_val.json").exists()
    assert fit(broken.with_resume(), progress=False)["epochs"] == 2
    a, b = load(straight.run / "checkpoint.pt"), load(broken.run / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    metrics = [(straight.run / "metrics.jsonl").read_text().splitlines(),
               (broken.run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    drop_time = [[{k: v for k, v in json.loads(r).items() if k != "time_s"} for r in m]
                 for m in metrics]  # fmt: skip
    assert drop_time[0] == drop_time[1]


def test_refuses_to_mix_runs(tiny_cfg: TrainConfig) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(tiny_cfg.with_resume(), progress=False)
    fit(tiny_cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a trained run"):
        fit(tiny_cfg, progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        fit(replace(tiny_cfg, lr=0.5), progress=False)


def test_best_epoch_is_the_lowest_validation_loss_for_both_tasks() -> None:
    """A view epoch two clips more right on ~90 but with a higher loss is not the best."""
    from echoscreen.train.fit import _score

    mid = {"loss": 0.204, "view_acc": 0.978}
    last = {"loss": 0.161, "view_acc": 0.956}
    assert _score(last) > _score(mid)
    assert _score({"loss": float("nan")}) < _score({"loss": 50.0})  # a NaN loss is worst
