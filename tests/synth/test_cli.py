"""`echoscreen synth`: runs, prints a summary, refuses bad arguments cleanly."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from echoscreen.cli import app


def test_synth_command_writes_a_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = CliRunner().invoke(
        app,
        [
            "synth",
            str(out),
            "--studies",
            "2",
            "--seed",
            "4",
            "--frames",
            "16",
            "--size",
            "64x64",
            "--transfer-syntax",
            "rle",
            "--prevalence",
            "normal=.5,definite=.5",
            "--workers",
            "1",
            "--masks",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "studies definite" in result.output and "clips with colour Doppler" in result.output
    with (out / "labels.csv").open() as fh:
        assert sorted(r["label"] for r in csv.DictReader(fh)) == ["definite", "normal"]
    assert len(list(out.rglob("*.dcm"))) == len(list(out.rglob("*.mask.npz"))) >= 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--studies", "2", "--prevalence", "normal=.9"], "sum to 1"),
        (["--studies", "2", "--size", "64by64"], "ROWSxCOLS"),
        (["--studies", "2", "--transfer-syntax", "jpeg2000"], "transfer syntax"),
        (["--studies", "0"], "studies"),
        (["--studies", "2", "--frames", "1"], "frames"),
        (["--studies", "2", "--seed", "-1"], "Invalid value for '--seed'"),  # was a traceback
        # had no bound: planned a billion studies in memory (GBs, minutes) before writing any
        (["--studies", "1000000000"], "between 1 and 100000"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path: Path, args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "echoscreen", "synth", str(tmp_path / "c"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "c").exists()


def test_an_output_path_that_is_a_file_is_named_as_a_file(tmp_path: Path) -> None:
    # a long path with brackets: the error once wrapped it at 80 columns in a captured
    # stderr (so CI's longer temp paths broke the message apart) and read "[bold]" as markup
    target = tmp_path / ("scans-" * 12) / "[bold]c"
    target.parent.mkdir()
    target.write_text("keep me")
    command = [sys.executable, "-m", "echoscreen", "synth", str(target), "--studies", "1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    # said "is not empty"; the whole message on one line, the path as given
    assert f"error: output folder {target} is a file, not a folder" in run.stderr
    assert target.read_text() == "keep me"
