"""Publishing: package contents and checksums, immutability, tamper detection, ONNX check."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from tests.cli import fails, ok
from tests.cli import run as run_cli
from tests.registry.pkgfix import Published

from echoscreen.dicom.preprocess import PreprocessSpec
from echoscreen.errors import RegistryError
from echoscreen.registry import (
    MANIFEST,
    PublishConfig,
    load_package,
    publish,
    sha256_file,
    verify_manifest,
)

EXPECTED = {"package.json", "model_card.md", "view/weights.pt", "view/model.onnx",
            "view/train_config.json", "view/metrics.json", "rhd/weights.pt", "rhd/model.onnx",
            "rhd/train_config.json", "rhd/metrics.json"}  # fmt: skip


def _sums(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}  # fmt: skip


def test_package_holds_every_part_with_checksums(published: Published) -> None:
    pkg = load_package(published.registry, published.ref)
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0]
              for line in (pkg.root / MANIFEST).read_text().splitlines()}  # fmt: skip
    assert set(listed) == EXPECTED
    for rel, digest in listed.items():
        assert sha256_file(pkg.root / rel) == digest
        assert not (pkg.root / rel).stat().st_mode & stat.S_IWUSR  # read-only
    # operating point: the one evaluate chooses on the rhd run's validation predictions
    from echoscreen.evaluate.predictions import load_records, parse_rhd
    from echoscreen.evaluate.summary import EvalConfig, operating_point

    val = published.rhd_run / "predictions_val.json"
    op = operating_point(parse_rhd(val, load_records(val)), EvalConfig())
    assert pkg.threshold == op["threshold"]
    assert pkg.spec.frames == 16 and pkg.spec.size == 64
    # the reader of the training clips, recorded by ingest, the runs and the package
    from echoscreen.data import LocalSite
    from echoscreen.deid import READER

    assert {c.reader for c in LocalSite(published.site).clips("ph", None)} == {READER}
    for run in (published.view_run, published.rhd_run):
        rec = json.loads((run / "clips.json").read_text())
        assert rec["reader"] == READER and rec["shape"] == [3, 16, 64, 64]
        assert sum(rec["readers"].values()) == len(LocalSite(published.site).clips("ph", None))
    assert pkg.reader == READER
    assert pkg.input_shape("view") == (8, 32) and pkg.input_shape("rhd") == (16, 64)
    assert pkg.decision["max_clips"] == 4
    card = (pkg.root / "model_card.md").read_text()
    for phrase in ("screening aid", "not a diagnosis", "phantom", "95% CI", "FNR gap",
                   "Limitations", f"clip reader `{READER}`"):
        assert phrase in card
    for task in ("view", "rhd"):  # ONNX agreed with torch at publish time
        entry = pkg.meta["models"][task]
        assert entry["onnx_max_abs_diff"] <= entry["onnx_tolerance"] == 1e-4
    assert not list(published.registry.glob("tiny/.publish-*"))  # no temp folder left


def test_publishing_over_a_version_is_refused_and_leaves_it_intact(published: Published) -> None:
    root = published.registry / "tiny" / "1"
    before = _sums(root)
    out = fails("publish", str(published.rhd_run), "--view-run", str(published.view_run),
                "--registry", str(published.registry), "--name", "tiny", "--version", "1",
                match="already published")  # fmt: skip
    assert "new --version" in out
    with pytest.raises(RegistryError, match="immutable"):
        publish(PublishConfig(rhd_run=published.rhd_run, view_run=published.view_run,
                              registry=published.registry, name="tiny", version="1"))  # fmt: skip
    assert _sums(root) == before
    assert sorted(p.name for p in (published.registry / "tiny").iterdir()) == ["1"]


def test_cli_publishes_a_new_version(published: Published, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    text = ok("publish", str(published.rhd_run), "--view-run", str(published.view_run),
              "--registry", str(reg), "--name", "tiny", "--version", "2.0")  # fmt: skip
    assert "published tiny:2.0" in text
    pkg = load_package(reg, "tiny:2.0")
    assert pkg.decision["min_view_confidence"] == 0.5  # the CLI default
    fresh = json.loads((pkg.root / "package.json").read_text())
    assert fresh["models"]["rhd"]["weights"] == "rhd/weights.pt"


@pytest.mark.parametrize("damage", ["flip", "add", "remove"])
def test_tampering_is_detected(published: Published, tmp_path: Path, damage: str) -> None:
    reg = tmp_path / "reg"
    shutil.copytree(published.registry, reg)
    root = reg / "tiny" / "1"
    target = root / "rhd" / "weights.pt"
    target.chmod(0o644)
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
        why = "changed: rhd/weights.pt"
    elif damage == "add":
        (root / "rhd" / "extra.onnx").write_bytes(b"x")
        why = "not in the manifest: rhd/extra.onnx"
    else:
        target.unlink()
        why = "missing: rhd/weights.pt"
    with pytest.raises(RegistryError, match=why):
        load_package(reg, "tiny:1")
    with pytest.raises(RegistryError, match="altered"):
        verify_manifest(root)
    if damage == "flip":  # one CLI run is enough to show screen refuses the package
        fails("screen", str(published.cohort), "--registry", str(reg), "--model", "tiny:1",
              match="fails its checksums")  # fmt: skip


def _writable_copy(published: Published, reg: Path) -> Path:
    """A copy of the shared registry under ``reg`` whose package files may be rewritten."""
    shutil.copytree(published.registry, reg)
    root = reg / "tiny" / "1"
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


@pytest.mark.parametrize("name", [MANIFEST, "package.json"])
def test_a_package_file_of_non_utf8_bytes_is_a_clear_error(
    published: Published, tmp_path: Path, name: str
) -> None:
    from echoscreen.registry import write_manifest

    root = _writable_copy(published, tmp_path / "reg")
    (root / name).write_bytes(b"\xff\xfe not text\n")
    if name != MANIFEST:
        write_manifest(root)  # consistent checksums: only the file's content is bad
    with pytest.raises(RegistryError, match=r"malformed|unreadable"):
        load_package(tmp_path / "reg", "tiny:1")
    fails("screen", str(published.cohort), "--registry", str(tmp_path / "reg"), "--model",
          "tiny:1", match=name)  # fmt: skip


def test_a_registry_folder_that_is_not_there_is_named(published: Published,
                                                      tmp_path: Path) -> None:  # fmt: skip
    (tmp_path / "file").write_text("x")
    for registry, what in ((tmp_path / "absent", "does not exist"),
                           (tmp_path / "file", "is not a folder")):  # fmt: skip
        with pytest.raises(RegistryError, match=f"registry {registry} {what}"):
            load_package(registry, "tiny:1")
        fails("screen", str(published.cohort), "--registry", str(registry), "--model", "tiny:1",
              match="--registry")  # fmt: skip


def test_model_files_that_do_not_load_are_a_clear_error(published: Published,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """Checksums that match a damaged model.onnx or weights.pt (rewritten by hand) still
    give one line, for either backend."""
    from echoscreen.registry import write_manifest

    root = _writable_copy(published, tmp_path / "reg")
    for rel in ("view/model.onnx", "view/weights.pt"):
        (root / rel).write_bytes((root / rel).read_bytes()[:1000])
    write_manifest(root)
    reg = ("--registry", str(tmp_path / "reg"), "--model", "tiny:1")
    fails("screen", str(published.cohort), *reg, match="view/model.onnx")
    fails("screen", str(published.cohort), *reg, "--backend", "torch", match="view/weights.pt")


def test_publish_refuses_unusable_input(published: Published, tmp_path: Path) -> None:
    base = {"registry": tmp_path / "reg", "name": "x", "version": "1"}
    with pytest.raises(RegistryError, match="'view' run but a 'rhd' run"):
        publish(PublishConfig(rhd_run=published.view_run, view_run=published.view_run, **base))  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="not a training run folder"):
        publish(PublishConfig(rhd_run=tmp_path, view_run=published.view_run, **base))  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="not allowed"):
        publish(PublishConfig(rhd_run=published.rhd_run, view_run=published.view_run,
                              registry=tmp_path / "reg", name="../up", version="1"))  # fmt: skip
    with pytest.raises(RegistryError, match="lacks a version"):
        load_package(published.registry, "tiny")
    with pytest.raises(RegistryError, match="versions of tiny: 1"):
        load_package(published.registry, "tiny:9")
    assert not (tmp_path / "reg").exists()  # neither the temporary folder nor REGISTRY/NAME


def test_a_damaged_best_pt_is_a_clear_error_and_leaves_no_folders(
    published: Published, tmp_path: Path
) -> None:
    import torch

    rhd = tmp_path / "rhd-run"
    shutil.copytree(published.rhd_run, rhd)
    best = rhd / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # truncated
    reg = tmp_path / "reg"
    res = run_cli("publish", str(rhd), "--view-run", str(published.view_run), "--registry",
                  str(reg), "--name", "new", "--version", "1")  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "best.pt is damaged or not a checkpoint" in " ".join(res.stderr.split())
    assert not reg.exists()  # it left an empty REGISTRY/NAME behind
    torch.save({"epoch": 3}, best)  # a readable file, but no model in it
    shutil.copytree(published.registry, reg)
    with pytest.raises(RegistryError, match="holds no model state"):
        publish(PublishConfig(rhd_run=rhd, view_run=published.view_run, registry=reg,
                              name="new", version="1"))  # fmt: skip
    with pytest.raises(RegistryError, match="holds no model state"):  # into an existing NAME
        publish(PublishConfig(rhd_run=rhd, view_run=published.view_run, registry=reg,
                              name="tiny", version="2"))  # fmt: skip
    assert sorted(p.name for p in reg.iterdir()) == ["tiny"]  # only what publish made is gone
    assert sorted(p.name for p in (reg / "tiny").iterdir()) == ["1"]
    load_package(reg, "tiny:1")


def test_weights_of_other_model_code_are_a_clear_error(published: Published,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """A package whose weights no longer fit the network (older model code) says so."""
    import torch

    from echoscreen.registry import write_manifest

    reg = tmp_path / "reg"
    shutil.copytree(published.registry, reg)
    root = reg / "tiny" / "1"
    weights = root / "rhd" / "weights.pt"
    state = torch.load(weights, weights_only=True)
    renamed = {k.replace("encoder.", "old_encoder.", 1): v for k, v in state.items()}
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    root.chmod(0o755)
    torch.save(renamed, weights)
    write_manifest(root)  # consistent checksums: only the network differs
    package = load_package(reg, "tiny:1")
    with pytest.raises(RegistryError, match="do not fit this echoscreen's rhd network"):
        package.load_torch("rhd")


def _runs_with_reader(published: Published, root: Path, readers: tuple[str, str]) -> list[Path]:
    """Copies of the view and rhd runs whose clips.json name other readers."""
    runs = []
    for run, reader in zip((published.view_run, published.rhd_run), readers, strict=True):
        copy = root / run.name
        shutil.copytree(run, copy)
        rec = json.loads((copy / "clips.json").read_text())
        (copy / "clips.json").write_text(json.dumps({**rec, "reader": reader}))
        runs.append(copy)
    return runs


def test_a_package_of_another_clip_reader_is_refused_for_screening(
    published: Published, tmp_path: Path
) -> None:
    """Clips made by another reader differ (decode, cleaning, resize): the models would
    not see what they were validated on, so screening refuses such a package."""
    from echoscreen.screen import Screener

    view, rhd = _runs_with_reader(published, tmp_path, ("full-decode/0", "full-decode/0"))
    reg = tmp_path / "reg"
    ok("publish", str(rhd), "--view-run", str(view), "--registry", str(reg), "--name", "old",
       "--version", "1")  # fmt: skip
    pkg = load_package(reg, "old:1")
    assert pkg.reader == "full-decode/0"  # publishing it is fine: it says what it is
    with pytest.raises(RegistryError, match="clip reader 'full-decode/0'"):
        Screener.open(reg, "old:1")
    out = fails("screen", str(published.train_study_folders()[0]), "--registry", str(reg),
                "--model", "old:1", match="clip reader 'full-decode/0'")  # fmt: skip
    assert "re-ingest" in out


def test_runs_on_clips_of_different_readers_are_not_published_together(
    published: Published, tmp_path: Path
) -> None:
    view, rhd = _runs_with_reader(published, tmp_path, ("full-decode/0", "dct-scaled/1"))
    with pytest.raises(RegistryError, match="different stored clips"):
        publish(PublishConfig(rhd_run=rhd, view_run=view, registry=tmp_path / "reg",
                              name="mixed", version="1"))  # fmt: skip
    assert not (tmp_path / "reg" / "mixed" / "1").exists()


def test_runs_from_before_clips_json_take_shape_and_reader_from_their_site(
    published: Published, tmp_path: Path
) -> None:
    from echoscreen.deid import READER

    view, rhd = _runs_with_reader(published, tmp_path, ("x", "x"))
    for run in (view, rhd):
        (run / "clips.json").unlink()
    publish(PublishConfig(rhd_run=rhd, view_run=view, registry=tmp_path / "reg", name="old",
                          version="1"))  # fmt: skip
    pkg = load_package(tmp_path / "reg", "old:1")
    assert (pkg.spec.frames, pkg.spec.size, pkg.reader) == (16, 64, READER)
    with pytest.raises(RegistryError, match="not the --clip-frames 8 --clip-size 64"):
        publish(PublishConfig(rhd_run=rhd, view_run=view, registry=tmp_path / "reg",
                              name="old", version="2", spec=PreprocessSpec(size=64, frames=8)))


def test_a_package_without_a_reader_screens_with_one_warning(
    published: Published, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    from echoscreen.screen.screener import check_reader

    pkg = load_package(published.registry, published.ref)
    meta = {**pkg.meta, "preprocess": {k: v for k, v in pkg.meta["preprocess"].items()
                                       if k != "reader"}}  # fmt: skip
    unrecorded = dataclasses.replace(pkg, root=pkg.root / "as-if-older", meta=meta)
    assert unrecorded.reader is None
    with caplog.at_level("WARNING", logger="echoscreen.screen.screener"):
        assert check_reader(unrecorded) is unrecorded
        assert check_reader(unrecorded) is unrecorded
    assert [r.getMessage().split(" ", 1)[1] for r in caplog.records] == [
        "does not record the clip reader of its training clips; if they were ingested by "
        "another echoscreen version, decisions near the threshold may differ from the "
        "validated ones"
    ]


@pytest.mark.parametrize(("name", "content"), [
    ("clips.json", b"{"), ("clips.json", b"[1]"), ("clips.json", b'{"shape": 7}'),
    ("metrics.json", b"{"), ("metrics.json", b"[]"), ("metrics.json", b"\xff\xfe"),
    ("config.json", b"[1]"), ("config.json", b"\xff\xfe"),
])  # fmt: skip
def test_a_damaged_run_file_is_a_clear_error_and_leaves_no_folders(
    published: Published, tmp_path: Path, name: str, content: bytes
) -> None:
    rhd = tmp_path / "rhd-run"
    shutil.copytree(published.rhd_run, rhd)
    (rhd / name).write_bytes(content)
    reg = tmp_path / "reg"
    out = fails("publish", str(rhd), "--view-run", str(published.view_run), "--registry",
                str(reg), "--name", "new", "--version", "1", match=str(rhd / name))  # fmt: skip
    hint = {"clips.json": "delete it", "metrics.json": "echoscreen evaluate",
            "config.json": "train the run again"}[name]  # fmt: skip
    assert hint in out, out
    assert not reg.exists()


_DELETE = object()


@pytest.mark.parametrize(("keys", "value"), [
    (("operating_point", "threshold"), "x"), (("operating_point",), None),
    (("operating_point", "threshold"), 7.5), (("preprocess",), None),
    (("decision", "min_view_confidence"), "a"), (("decision", "require"), _DELETE),
    (("models", "rhd", "input"), [16, 64]), (("models", "view", "onnx"), None),
])  # fmt: skip
def test_a_package_json_rewritten_with_unusable_fields_is_refused(
    published: Published, tmp_path: Path, keys: tuple[str, ...], value: object
) -> None:
    """Checksums rewritten after the edit: only the fields are wrong (it was a traceback)."""
    from echoscreen.registry import write_manifest

    reg = tmp_path / "reg"
    shutil.copytree(published.registry, reg)
    root = reg / "tiny" / "1"
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    meta = json.loads((root / "package.json").read_text())
    inner = meta
    for k in keys[:-1]:
        inner = inner[k]
    if value is _DELETE:
        del inner[keys[-1]]
    else:
        inner[keys[-1]] = value
    (root / "package.json").write_text(json.dumps(meta))
    write_manifest(root)
    with pytest.raises(RegistryError, match=r"package\.json"):
        load_package(reg, "tiny:1")
    if keys == ("operating_point",):
        fails("screen", str(published.cohort), "--registry", str(reg), "--model", "tiny:1",
              match=f"{root / 'package.json'}")  # fmt: skip
