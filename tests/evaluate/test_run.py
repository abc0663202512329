"""evaluate_run end to end on prediction files in the contract format, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.cli import fails, ok
from tests.evaluate.synthetic import rhd_records, write_run

from echoscreen.errors import EchoscreenError, EvaluateError
from echoscreen.evaluate import EvalConfig, evaluate_run

FAST = EvalConfig(n_boot=200)


def _check_pngs(run: Path, m: dict) -> None:
    html = (run / "report.html").read_text()
    for rel in m["plots"].values():
        assert f'src="{rel}"' in html  # relative link next to the report
        with Image.open(run / rel) as im:
            im.verify()
        with Image.open(run / rel) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150
            assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn
        assert (run / rel).stat().st_size > 5000


def test_rhd_run_writes_metrics_report_and_plots(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd")
    m = evaluate_run(run, "test", FAST)
    assert json.loads((run / "metrics.json").read_text()) == m
    assert m["task"] == "rhd" and m["split"] == "test"
    assert m["n_studies"] + m["n_unlabelled_excluded"] == 120 and m["n_unlabelled_excluded"] == 12
    lo, hi = m["auroc"]["ci"]
    assert lo <= m["auroc"]["value"] <= hi and m["auroc"]["value"] > 0.8
    op = m["operating_point"]
    assert op["source"] == "validation" and op["val_sensitivity"] >= 0.90
    assert sum(map(sum, m["confusion_screen"]["matrix"])) == m["n_studies"]
    assert sum(map(sum, m["confusion_3class"]["matrix"])) == m["n_studies"]
    assert m["sensitivity"]["k"] == m["confusion_screen"]["matrix"][1][1]
    assert set(m["subgroups"]["sex"]["groups"]) == {"F", "M"}
    assert list(m["subgroups"]["age_band"]["groups"]) == ["5-9", "10-14", "15-20"]
    assert m["subgroups"]["sex"]["parity"]["fnr"]["gap"] is not None
    assert set(m["aggregation"]) == {"attention", "mean", "vote", "max"}
    assert m["aggregation"]["mean"]["auroc_attention_minus_this"]["ci"] is not None
    assert 0 <= m["calibration"]["ece"]["value"] <= 1 and len(m["calibration"]["curve"]) == 10
    assert set(m["plots"]) >= {"roc", "pr", "calibration", "confusion_3class", "subgroups"}
    html = (run / "report.html").read_text()
    for text in ("test split", f"{m['n_studies']} studies", "prevalence", "validation",
                 f"{m['operating_point']['threshold']:.4f}", "FNR parity gap"):  # fmt: skip
        assert text in html
    _check_pngs(run, m)
    assert evaluate_run(run, "test", FAST) == m  # deterministic for the seed


def test_fitted_temperatures_are_reported(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd")
    plain = evaluate_run(run, "test", FAST)
    assert plain["calibration"]["post_calibration"] is False
    assert "uncalibrated" in (run / "report.html").read_text()
    fitted = {"method": "temperature scaling", "split": "val", "n": 30,
              "screen": {"temperature": 0.5, "nll_before": 0.6, "nll_after": 0.4},
              "class3": {"temperature": 1.5, "nll_before": 1.0, "nll_after": 0.9}}  # fmt: skip
    (run / "calibration.json").write_text(json.dumps(fitted))
    m = evaluate_run(run, "test", FAST)
    assert m["calibration"]["post_calibration"] and m["calibration"]["temperature"] == 0.5
    assert m["calibration_3class"]["temperature"] == 1.5 and m["calibration_fit"] == fitted
    assert 0 <= m["calibration_3class"]["ece"]["value"] <= 1
    assert "temperature-scaled on validation, T = 0.50" in (run / "report.html").read_text()
    (run / "calibration.json").write_text("{")
    with pytest.raises(EvaluateError, match="not a calibration file"):
        evaluate_run(run, "test", FAST)


def test_view_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "view")
    m = evaluate_run(run, "test", FAST)
    assert m["task"] == "view" and m["n_clips"] == 120 and m["n_view_known"] < 120
    cm = np.array(m["confusion_view"]["matrix"])
    assert cm.shape == (7, 7) and cm.sum() == m["n_view_known"]
    assert m["view_accuracy"]["value"] == pytest.approx(np.trace(cm) / cm.sum())
    assert np.array(m["confusion_doppler"]["matrix"]).shape == (2, 2)
    assert m["doppler"]["auroc"]["value"] > 0.8
    assert set(m["plots"]) >= {"confusion_view", "confusion_doppler", "calibration", "roc"}
    _check_pngs(run, m)


def test_one_class_split_reports_not_computable(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd", test_positives=False)
    m = evaluate_run(run, "test", FAST)
    assert m["n_positive"] == 0
    for key in ("auroc", "average_precision", "sensitivity"):
        assert m[key]["value"] is None and m[key]["reason"]
    assert m["specificity"]["value"] is not None
    assert m["aggregation"]["attention"]["auroc"]["value"] is None
    assert "not computable" in (run / "report.html").read_text()


def test_no_positive_in_validation_means_no_operating_point(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd")
    (run / "predictions_val.json").write_text(json.dumps(rhd_records(30, 1, positives=False)))
    m = evaluate_run(run, "test", FAST)
    assert m["operating_point"]["threshold"] is None
    assert m["sensitivity"]["value"] is None and "validation" in m["sensitivity"]["reason"]
    assert m["auroc"]["value"] is not None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ("[]", "is empty: the test split had no studies"),
        ('[{"study": "a", "label_index": 0, "p_screen": 1.5, "p3": [1, 0, 0]}]', "probability"),
        ('[{"study": "a", "label_index": 0, "p_screen": 0.5}]', "lacks p3"),
        ('[{"study": "a", "label_index": 7, "p_screen": 0.5, "p3": [1, 0, 0]}]', "label_index"),
    ],
)
def test_bad_prediction_files_raise_evaluate_error(
    tmp_path: Path, content: str | None, match: str
) -> None:
    run = write_run(tmp_path / "run", "rhd")
    test = run / "predictions_test.json"
    test.unlink()
    if content is not None:
        test.write_text(content)
    with pytest.raises(EvaluateError, match=match):
        evaluate_run(run, "test", FAST)
    assert issubclass(EvaluateError, EchoscreenError)


def test_bad_view_record_and_missing_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "view")
    recs = json.loads((run / "predictions_test.json").read_text())
    recs[3]["view_pred"] = "apical9"
    (run / "predictions_test.json").write_text(json.dumps(recs))
    with pytest.raises(EvaluateError, match="record 3"):
        evaluate_run(run, "test", FAST)
    with pytest.raises(EvaluateError, match="does not exist"):
        evaluate_run(tmp_path / "nope", "test", FAST)


def test_cli_prints_summary_and_report_path(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd")
    stdout = ok("evaluate", str(run), "--split", "test", "--bootstrap", "200")
    assert "AUROC" in stdout and "sensitivity" in stdout and str(run / "report.html") in stdout
    text = fails("evaluate", str(run), "--split", "train",
                 match="predictions_train.json does not exist")  # fmt: skip
    # the run is trained: the message names the splits it has, not `echoscreen train`
    assert "split(s) test, val: pass --split" in text and "train the run" not in text
    assert json.loads((run / "metrics.json").read_text())["split"] == "test"  # as it was


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--seed", "-1"), "Invalid value for '--seed'"),  # was numpy's ValueError traceback
        (("--bootstrap", "100001"), "Invalid value for '--bootstrap'"),  # had no upper bound
        (("--bootstrap", "9"), "Invalid value for '--bootstrap'"),
    ],
)
def test_cli_bounds_seed_and_bootstrap(tmp_path: Path, args: tuple[str, ...], match: str) -> None:
    run = write_run(tmp_path / "run", "rhd")
    fails("evaluate", str(run), *args, match=match)
    assert not (run / "metrics.json").exists()


def _split_of_outputs(run: Path) -> tuple[str, str]:
    html = (run / "report.html").read_text()
    reported = html.split("Split evaluated: <b>")[1].split("<")[0]
    return json.loads((run / "metrics.json").read_text())["split"], reported


def test_evaluate_replaces_its_outputs_together_or_not_at_all(tmp_path: Path) -> None:
    """metrics.json was written before report.html: a report that could not be rewritten
    (read-only) left metrics.json of the new split beside the report of the old one."""
    from tests.cli import run as run_cli

    run = write_run(tmp_path / "run", "rhd")
    ok("evaluate", str(run), "--bootstrap", "10")
    assert _split_of_outputs(run) == ("test", "test")
    (run / "report.html").chmod(0o444)
    res = run_cli("evaluate", str(run), "--split", "val", "--bootstrap", "10", permissions=True)
    assert res.returncode == 0, res.stderr
    assert _split_of_outputs(run) == ("val", "val")
    files = [p for p in run.rglob("*") if p.is_file()]
    before = {p: p.read_bytes() for p in files}
    try:  # a read-only run folder: a clear error, nothing changed, no staging left
        for p in [*files, *run.rglob("*"), run]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        res = run_cli("evaluate", str(run), "--bootstrap", "10", permissions=True)
    finally:
        for p in [run, *run.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cannot write into the run folder" in res.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_that_is_a_file_is_not_called_missing(tmp_path: Path) -> None:
    afile = tmp_path / "predictions_test.json"
    afile.write_text("[]")
    fails("evaluate", str(afile), match=f"{afile} is a file, not a run folder")
    fails("evaluate", str(tmp_path / "nope"), match="run folder")
    assert afile.read_text() == "[]"


def test_a_split_without_studies_is_named_as_such(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "rhd")
    (run / "predictions_test.json").write_text("[]")  # what train writes for an empty split
    out = fails("evaluate", str(run), "--bootstrap", "10",
                match="the test split had no studies or clips")  # fmt: skip
    assert "re-create it with `echoscreen train`" not in out  # it would write [] again
    assert "--split val" in out
