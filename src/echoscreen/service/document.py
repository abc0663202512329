"""The result document a job stores: the screener's JSON as the API and the SR read it.

File names are replaced by upload indexes (``file_index``: names are never stored), the
evidence gains its reason and every clip's role (:func:`~.evidence.considered`), and the
job fields are added (``job``, ``model_version``, ``skipped``, ``explanations``).
"""

from __future__ import annotations

from typing import Any

from echoscreen.registry.package import ModelPackage
from echoscreen.screen.screener import Screener, ScreenResult
from echoscreen.service.evidence import considered


def result_document(job_id: str, result: ScreenResult, skipped: list[dict[str, Any]],
                    screener: Screener, package: ModelPackage) -> dict[str, Any]:  # fmt: skip
    """The document of a finished job (``explanations`` empty: see :func:`link_explanations`).

    Args:
        job_id: the job.
        result: what the screener decided, files named by their upload index.
        skipped: ``{"file_index", "reason"}`` of every file that gave no clip, in order.
        screener: the engine's screener (its evidence choice); package: the model package.
    """
    doc = result.to_json()
    chosen = {c.index for c in screener.choose_evidence(result.clips)}
    doc["evidence"]["reason"] = result.reason
    doc["evidence"]["considered"] = considered(result, chosen, skipped, package.decision)
    for c in doc["clips"]:
        c["file_index"] = int(c.pop("file"))
    doc["skipped"] = skipped
    doc["job"] = job_id
    doc["model_version"] = str(package.meta["version"])
    doc["explanations"] = []
    return doc


def link_explanations(doc: dict[str, Any], frames: list[Any]) -> None:
    """List the key frames of ``doc`` (``.clip``, ``.frame``) with their PNG URLs."""
    doc["explanations"] = [
        {"clip": e.clip, "frame": e.frame, "url": f"/v1/jobs/{doc['job']}/explanations/{k}.png"}
        for k, e in enumerate(frames)
    ]  # fmt: skip
