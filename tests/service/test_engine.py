"""ScreeningEngine on real phantom studies: batching, door check, overload, drain, privacy."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import UID
from tests.identity import header_identity, leaks_in
from tests.registry.pkgfix import Published

from echoscreen.errors import BadStudyError, OverloadedError, ServiceError
from echoscreen.screen import Screener
from echoscreen.service.config import ServiceConfig
from echoscreen.service.engine import ScreeningEngine
from echoscreen.service.jobs import JobStore
from echoscreen.service.metrics import Metrics

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")


def files_of(folder: Path) -> list[tuple[str, bytes]]:
    """The upload of a study folder: (relative name, bytes), in name order."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in paths]


def _cfg(published: Published, state: Path, **kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {"registry": published.registry, "model": published.ref,
                            "state_dir": state, "cpu_workers": 1, "backend": "onnx",
                            "explain_clips": 2}  # fmt: skip
    return ServiceConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def engine(
    published: Published, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScreeningEngine]:
    # a long batching window and room for 3 studies per batch: concurrent jobs must merge
    cfg = _cfg(published, tmp_path_factory.mktemp("state"), job_threads=4, max_batch=64,
               max_wait_ms=1000.0, queue_size=8, max_files=30)  # fmt: skip
    eng = ScreeningEngine(cfg, Metrics())
    eng.start()
    yield eng
    eng.close(drain=True, timeout=30)


def _concurrently(engine: ScreeningEngine, studies: list[list[tuple[str, bytes]]]) -> list[Any]:
    barrier = threading.Barrier(len(studies))
    out: list[Any] = [None] * len(studies)

    def go(i: int) -> None:
        barrier.wait()
        out[i] = engine.screen(studies[i], client="test", timeout=300)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(studies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _same(doc: dict, ref: dict, names: list[str]) -> None:
    """The engine's document against the unbatched Screener's for the same files."""
    assert doc["decision"] == ref["decision"] and doc["reason"] == ref["reason"]
    assert (doc["p_screen"] is None) == (ref["p_screen"] is None)
    if ref["p_screen"] is not None:
        assert doc["p_screen"] == pytest.approx(ref["p_screen"], abs=1e-4)
    assert doc["evidence"]["clips"] == ref["evidence"]["clips"]
    assert len(doc["clips"]) == len(ref["clips"])
    for c, r in zip(doc["clips"], ref["clips"], strict=True):
        assert "file" not in c and names[c["file_index"]] == r["file"]
        assert c["view"] == r["view"] and c["confidence"] == pytest.approx(
            r["confidence"], abs=1e-4
        )
        if r["attention"] is not None:
            assert c["attention"] == pytest.approx(r["attention"], abs=1e-4)


def test_concurrent_studies_are_batched_and_match_the_unbatched_screener(
    published: Published, engine: ScreeningEngine
) -> None:
    folders = published.train_study_folders()[:3]
    studies = [files_of(f) for f in folders]
    docs = _concurrently(engine, studies)
    m = engine.metrics
    n_clips = sum(len(d["clips"]) for d in docs)
    assert m.sample("echoscreen_batch_size_sum", {"model": "view"}) == n_clips
    assert (m.sample("echoscreen_batch_size_count", {"model": "view"}) or 99) < len(docs)  # merged
    reference = Screener.open(published.registry, published.ref)
    for doc, folder, files in zip(docs, folders, studies, strict=True):
        _same(doc, reference.screen_path(folder).to_json(), [n for n, _ in files])
        assert doc["job"] and doc["model_version"] == "1" and doc["model"] == "tiny:1"
        row = engine.job(doc["job"])
        assert row is not None and row["status"] == "done" and row["result"] == doc
    decided = [d for d in docs if d["p_screen"] is not None]
    assert decided, "the tiny package decides some training studies"
    for doc in decided:
        assert 1 <= len(doc["explanations"]) <= 2
        for k, e in enumerate(doc["explanations"]):
            assert e["url"] == f"/v1/jobs/{doc['job']}/explanations/{k}.png"
            assert e["clip"] in doc["evidence"]["clips"]
            png = engine.explanation(doc["job"], k)
            assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
        assert engine.explanation(doc["job"], len(doc["explanations"])) is None
    assert (m.sample("echoscreen_jobs_total", {"status": "done"}) or 0) >= 3
    assert m.sample("echoscreen_model_info", {"model": "tiny:1", "backend": "onnx"}) == 1


def _ct(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_the_door_rejects_bad_studies_with_reasons(published: Published,
                                                   engine: ScreeningEngine) -> None:  # fmt: skip
    study = files_of(published.train_study_folders()[0])
    with pytest.raises(BadStudyError) as bad:
        engine.submit([("notes.txt", b"hello"), ("ct.dcm", _ct(study[0][1]))], client="t")
    msg = str(bad.value)
    assert bad.value.status == 422 and "file 0: not a DICOM file" in msg
    assert "file 1: modality CT, not ultrasound" in msg and "ct.dcm" not in msg
    with pytest.raises(BadStudyError, match="too many files: 31") as many:
        engine.submit((study * 31)[:31], client="t")
    assert many.value.status == 413
    with pytest.raises(BadStudyError, match="no files") as empty:
        engine.submit([], client="t")
    assert empty.value.status == 400
    truncated = [(n, d[: len(d) // 2]) for n, d in study[:2]]  # headers parse, pixels do not
    with pytest.raises(BadStudyError, match="no clip in the study could be read: file 0"):
        engine.screen(truncated, client="t")
    assert (engine.metrics.sample("echoscreen_jobs_total", {"status": "failed"}) or 0) >= 1


def test_unusable_files_of_a_study_are_skipped_by_index(
    published: Published, engine: ScreeningEngine
) -> None:
    study = files_of(published.train_study_folders()[1])
    name, data = study[0]
    upload = [("readme.txt", b"not dicom"), *study[1:], (name, data[: len(data) // 2])]
    doc = engine.screen(upload, client="t")
    assert [s["file_index"] for s in doc["skipped"]] == [0, len(upload) - 1]
    assert all(set(s) == {"file_index", "reason"} and s["reason"] for s in doc["skipped"])
    assert len(doc["clips"]) == len(study) - 1
    assert sorted(c["file_index"] for c in doc["clips"]) == list(range(1, len(study)))


def test_jobs_db_holds_nothing_identifying(published: Published, engine: ScreeningEngine) -> None:
    folder = published.train_study_folders()[2]
    study = files_of(folder)
    engine.screen(study, client="t")
    # files whose headers read but whose image does not: their reasons are stored too
    no_frames = pydicom.dcmread(io.BytesIO(study[0][1]))
    no_frames.NumberOfFrames = 0
    buf = io.BytesIO()
    no_frames.save_as(buf)
    unreadable = [(n, d[: len(d) // 2]) for n, d in study[:2]] + [("0.dcm", buf.getvalue())]
    with pytest.raises(BadStudyError) as failed:
        engine.screen(unreadable, client="t")
    assert "file 2: DICOM" in str(failed.value)
    engine.screen(study[1:] + unreadable, client="t")  # skipped, in the result
    values: set[str] = set()
    for _, data in study:
        values |= header_identity(pydicom.dcmread(io.BytesIO(data)))
    values |= {n for n, _ in study} | {
        p.name for p in folder.parents if p.name.startswith(("P", "ST"))
    }
    values.add(folder.name)
    state = engine.cfg.state_dir
    dbs = sorted(state.glob("jobs.db*"))
    assert dbs
    assert leaks_in(str(failed.value).encode(), values, "reason") == []
    for db in dbs:
        assert leaks_in(db.read_bytes(), values, db.name) == []


def test_full_queue_overloads_and_close_drains(published: Published, tmp_path: Path) -> None:
    eng = ScreeningEngine(_cfg(published, tmp_path, job_threads=1, queue_size=1, explain=False))
    eng.start()
    study = files_of(published.train_study_folders()[0])
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def hold(job_id: str, result: dict, files: list[tuple[str, bytes]]) -> None:
        seen.append(job_id)
        entered.set()
        release.wait(60)

    def broken(job_id: str, result: dict, files: list[tuple[str, bytes]]) -> None:
        seen.append(job_id)
        raise RuntimeError("the SR sender is down")

    first = eng.submit(study, client="t", on_done=hold)
    assert entered.wait(120)  # the only job thread is busy with the first job
    second = eng.submit(study, client="t", on_done=broken)
    assert eng.queue_depth() == 1
    with pytest.raises(OverloadedError, match="queue is full") as full:
        eng.submit(study, client="t")
    assert full.value.status == 503 and full.value.retry_after > 0
    with pytest.raises(ServiceError) as late:
        eng.screen(study[:1], client="t", timeout=0.0)  # queue full: refused, not timed out
    assert late.value.status == 503
    release.set()
    eng.close(drain=True, timeout=120)
    assert seen == [first, second]  # the queued job ran before close returned
    with pytest.raises(OverloadedError, match="stopped"):
        eng.submit(study, client="t")
    with pytest.raises(OverloadedError, match="stopped"):
        eng.job(first)
    store = JobStore(tmp_path / "jobs.db")
    for job in (first, second):
        row = store.get(job)
        assert row is not None and row["status"] == "done"  # the broken callback lost nothing
    store.close()


def test_screen_times_out_with_504_and_the_job_goes_on(
    published: Published, engine: ScreeningEngine
) -> None:
    study = files_of(published.train_study_folders()[0])
    with pytest.raises(ServiceError, match="goes on as job") as slow:
        engine.screen(study, client="t", timeout=0.0)
    assert slow.value.status == 504


def test_config_validation_says_what_to_fix(published: Published, tmp_path: Path) -> None:
    from echoscreen.errors import ConfigError

    with pytest.raises(ConfigError, match="NAME:VERSION"):
        _cfg(published, tmp_path, model="tiny").validate()
    with pytest.raises(ConfigError, match="backend"):
        _cfg(published, tmp_path, backend="tpu").validate()
    with pytest.raises(ConfigError, match="--max-batch is 0"):  # the flag, not the field
        _cfg(published, tmp_path, max_batch=0).validate()
    assert _cfg(published, tmp_path).validate().workers == 1


def test_auto_backend_is_torch_on_cuda_else_onnx(published: Published) -> None:
    import torch

    from echoscreen.registry import load_package
    from echoscreen.screen import OnnxBackend, TorchBackend, make_backend

    package = load_package(published.registry, published.ref)
    auto = make_backend(package, "auto")
    if not torch.cuda.is_available():
        assert isinstance(auto, OnnxBackend) and auto.name == "onnx"
        assert make_backend(package, "torch").name == "torch"
        return
    assert isinstance(auto, TorchBackend) and auto.name == "torch-cuda"
    frames, size = package.input_shape("view")
    x = {"clips": torch.rand(2, 3, frames, size, size).numpy()}
    want = OnnxBackend.from_package(package).run("view", x)
    got = auto.run("view", x)
    for k, v in want.items():  # TF32 convolutions on the GPU: ~1e-4 relative to the logits
        assert (abs(got[k] - v) <= 1e-3 + 1e-3 * abs(v)).all(), k
