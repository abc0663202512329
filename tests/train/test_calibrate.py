"""Temperature scaling after training, and the rhd checkpoint choice by validation loss."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from echoscreen.models import ModelConfig, create_model
from echoscreen.models.onnx import check_onnx, example_inputs, export_onnx, run_onnx
from echoscreen.train import TrainConfig, fit
from echoscreen.train.calibrate import (
    TEMPERATURE_MAX,
    class3_nll,
    fit_temperature,
    screen_nll,
    study_logits,
)
from echoscreen.train.checkpoint import load
from echoscreen.train.data import build_loaders
from echoscreen.train.dist import read_env


def test_overconfident_logits_get_a_temperature_above_one() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=g)
    honest = (2 * y - 1) * 1.0 + torch.randn(200, generator=g)  # noisy, roughly calibrated
    loud = 8 * honest
    t = fit_temperature(lambda t: screen_nll(loud, y, t), len(y))
    assert 4 < t < 16  # about the factor the logits were blown up by
    assert screen_nll(loud, y, t) < 0.5 * screen_nll(loud, y, 1.0)


def test_separable_validation_stays_bounded_and_never_worse() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    logits = torch.tensor([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3])  # perfectly ranked, timid
    t = fit_temperature(lambda t: screen_nll(logits, y, t), len(y))
    assert 1 / TEMPERATURE_MAX <= t < 1  # sharpened, but the prior keeps it off the bound
    assert t > 1 / TEMPERATURE_MAX
    assert screen_nll(logits, y, t) <= screen_nll(logits, y, 1.0)
    three = torch.tensor([[2.0, 0.0, -2.0], [0.0, 3.0, 0.0], [-1.0, 0.0, 4.0]])
    labels = torch.tensor([0, 1, 2])
    t3 = fit_temperature(lambda t: class3_nll(three, labels, t), 3)
    assert class3_nll(three, labels, t3) <= class3_nll(three, labels, 1.0)
    assert fit_temperature(lambda t: 0.0, 0) == 1.0


def _rhd_run(tiny_cfg: TrainConfig, epochs: int) -> TrainConfig:
    cfg = replace(tiny_cfg, task="rhd", batch_size=2, epochs=epochs)
    fit(cfg, progress=False)
    return cfg


def test_fit_calibrates_on_validation_and_best_carries_it(tiny_cfg: TrainConfig,
                                                         tmp_path: Path) -> None:  # fmt: skip
    cfg = _rhd_run(tiny_cfg, 3)
    fitted = json.loads((cfg.run / "calibration.json").read_text())
    assert fitted["split"] == "val" and fitted["n"] >= 2
    for part in ("screen", "class3"):
        assert fitted[part]["nll_after"] <= fitted[part]["nll_before"] + 1e-9
    best = load(cfg.run / "best.pt")
    temps = [fitted["screen"]["temperature"], fitted["class3"]["temperature"]]
    assert best["model"]["temperature"].tolist() == torch.tensor(temps).tolist()
    assert best["calibration"] == fitted
    # best.pt's epoch has the lowest validation loss of the run
    rows = [json.loads(r) for r in (cfg.run / "metrics.jsonl").read_text().splitlines()]
    assert best["epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]
    # reloaded weights reproduce the calibrated validation NLL (the buffer survives save/load)
    mcfg = ModelConfig(frames=cfg.frames, image=cfg.size)
    model = create_model("rhd", mcfg)
    model.load_state_dict(best["model"])
    device = read_env().device  # where fit calibrated (bf16 autocast on a GPU)
    loaders = build_loaders(cfg)
    try:
        screen, _, y = study_logits(model.to(device), loaders.val, cfg, device)
    finally:
        loaders.close()
    screen, y, model = screen.cpu(), y.cpu(), model.cpu()
    assert math.isclose(screen_nll(screen, (y > 0).long(), 1.0), fitted["screen"]["nll_after"],
                        rel_tol=1e-4, abs_tol=1e-6)  # fmt: skip
    preds = json.loads((cfg.run / "predictions_val.json").read_text())
    p = torch.tensor([r["p_screen"] for r in preds])
    assert torch.allclose(p, screen.sigmoid(), atol=1e-5)
    # the ONNX export divides by the same temperatures
    model.get_buffer("temperature").copy_(torch.tensor([0.5, 2.0]))
    inputs = example_inputs("rhd", mcfg, batch=2, clips=2)
    path = export_onnx(model, "rhd", mcfg, tmp_path / "rhd.onnx")
    assert check_onnx(model, "rhd", path, inputs) < 1e-4
    model.get_buffer("temperature").fill_(1.0)
    with torch.no_grad():
        model.eval()
        raw = model(*inputs)
    got = run_onnx(path, inputs, "rhd")
    assert torch.allclose(torch.from_numpy(got["screen"]), raw["screen"] / 0.5, atol=1e-4)
    assert torch.allclose(torch.from_numpy(got["class3"]), raw["class3"] / 2.0, atol=1e-4)


def test_weights_without_the_buffer_load_uncalibrated() -> None:
    model = create_model("rhd", ModelConfig(frames=4, image=16))
    state = {k: v for k, v in model.state_dict().items() if k != "temperature"}
    fresh = create_model("rhd", ModelConfig(frames=4, image=16))
    fresh.get_buffer("temperature").fill_(3.0)
    fresh.load_state_dict(state)
    assert fresh.get_buffer("temperature").tolist() == [1.0, 1.0]
