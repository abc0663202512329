"""``echoscreen train``: a tiny run end to end, clean errors for bad input, elastic restart.

(Setting-by-setting validation is in test_config; these check that the CLI surfaces it.)
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from tests.cli import fails, ok

from echoscreen.train import TrainConfig, fit

FAST = ["--frames", "8", "--size", "32", "--batch-size", "4", "--no-progress"]


def test_train_and_resume(tiny_site: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = json.loads(ok("train", "view", "--data", str(tiny_site), "--dataset", "ph",
                           "--run", str(run), "--epochs", "1", *FAST,
                           env={"OMP_NUM_THREADS": "1"}))  # fmt: skip
    assert result["epochs"] == 1 and "view_acc" in result["test"]
    assert TrainConfig.load(run / "config.json").frames == 8
    fails("train", "rhd", "--run", str(run), "--resume", match="is a 'view' run")
    fails("train", "view", "--run", str(run), "--resume", "--lr", "0.1", match="drop --lr")
    fails("train", "view", "--data", str(tiny_site), "--dataset", "ph", "--run", str(run),
          "--epochs", "1", *FAST, match="already holds a trained run")  # fmt: skip


@pytest.mark.parametrize(("args", "match"), [
    (["--dataset", "ph"], "give --data"),
    (["--data", "/no/such/site", "--dataset", "ph"], "neither a site folder"),
    (["--data", "", "--dataset", "ph"], "--data is empty: give a site folder or an https://"),
    (["--data", "{site}", "--dataset", "nope"], "no dataset 'nope'"),
    (["--data", "{site}", "--dataset", "ph", "--model-size", "huge"], "unknown model size"),
    (["--data", "{site}", "--dataset", "ph", "--seed", "-1"], "Invalid value for '--seed'"),
    (["--resume"], "is this a run folder"),
    (["--data", "{site}", "--dataset", "ph", "--epochs", "1", *FAST, "--cluster", ""],
     "give a cluster profile"),  # it trained here instead, as if --cluster were not given
    (["--data", "{site}", "--dataset", "ph", "--epochs", "1", "--frames", "17"],
     "--frames 17 is more than the stored clips' 16 frames"),
    (["--data", "{site}", "--dataset", "ph", "--epochs", "1", "--frames", "8", "--size", "65"],
     "--size 65 is more than the stored clips' 64 px"),
])  # fmt: skip
def test_bad_input(tiny_site: Path, tmp_path: Path, args: list[str], match: str) -> None:
    args = [a.replace("{site}", str(tiny_site)) for a in args]
    fails("train", "view", "--run", str(tmp_path / "run"), *args, match=match)


def test_unsplit_dataset_hint_is_a_command_that_works(tiny_site: Path, tmp_path: Path) -> None:
    from echoscreen.store.catalog import add_to_dataset
    from echoscreen.store.schema import Study
    from echoscreen.store.site import Site

    site = tmp_path / "site"
    shutil.copytree(tiny_site, site)
    with Site.open(site) as s, s.catalog.session() as db:
        for sid in [row.id for row in db.query(Study)]:
            add_to_dataset(db, "raw", sid)  # a dataset with no split yet
    args = ["--data", str(site), "--dataset", "raw", "--run", str(tmp_path / "run"), *FAST]
    text = " ".join(fails("train", "view", *args, match="no usable train clips").split())
    hint = re.search(r"`echoscreen (site split [^`]*)`", text)
    assert hint, text  # it said `site split --dataset raw`, which site split refuses
    assert "split raw" in ok(*shlex.split(hint.group(1)))


def test_unknown_task(tmp_path: Path) -> None:
    fails("train", "segment", "--run", str(tmp_path), match="No such command")


def test_elastic_restart_resumes(tiny_cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = replace(tiny_cfg, epochs=2)
    fit(cfg, progress=False, stop_after=1)  # the worker group died after epoch 1
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "restarted")  # what torchrun sets on a restart
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert fit(cfg, progress=False)["epochs"] == 2  # same command line, no --resume
    lines = (cfg.run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in lines] == [1, 2]


def test_resume_reads_the_folder_given_not_the_one_it_was_copied_from(
        tiny_cfg: TrainConfig, tmp_path: Path) -> None:  # fmt: skip
    fit(tiny_cfg, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_cfg.run, moved)  # config.json still names the original folder
    (moved / "checkpoint.pt").write_bytes(b"damaged")
    before = {p.name: p.stat().st_mtime_ns for p in tiny_cfg.run.iterdir()}
    # it resumed (and rewrote the predictions of) the original run instead, and exited 0
    fails("train", "view", "--run", str(moved), "--resume", match=f"checkpoint {moved}")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_cfg.run.iterdir()} == before


@pytest.mark.parametrize("foreign", [{"epoch": 1}, [1, 2], "rhd"])
def test_resume_of_a_foreign_checkpoint_is_refused(tiny_cfg: TrainConfig, foreign: object) -> None:
    import torch

    fit(tiny_cfg, progress=False)
    ckpt = tiny_cfg.run / "checkpoint.pt"
    if foreign == "rhd":  # a whole checkpoint, of a model of the other task
        from echoscreen.models import ModelConfig, create_model

        foreign = {**torch.load(ckpt, weights_only=False),
                   "model": create_model("rhd", ModelConfig(frames=8, image=32)).state_dict()}
    torch.save(foreign, ckpt)
    fails("train", "view", "--run", str(tiny_cfg.run), "--resume",
          match=f"{ckpt} is not a checkpoint of this run")  # fmt: skip


@pytest.mark.parametrize("under", [False, True])
def test_a_run_path_that_is_a_file_is_named(tiny_site: Path, tmp_path: Path, under: bool) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("kept")
    run = afile / "run" if under else afile
    fails("train", "view", "--data", str(tiny_site), "--dataset", "ph", "--run", str(run),
          "--epochs", "1", *FAST,
          match=f"--run {run}: {afile} is a file, not a folder")  # fmt: skip
    fails("sweep", "view", "--grid", "lr=1e-3", "--data", str(tiny_site), "--dataset", "ph",
          "--runs", str(run), match=f"--runs {run}: {afile} is a file, not a folder")  # fmt: skip
    assert afile.read_text() == "kept"
