"""The screening result as DICOM: a Comprehensive SR (highdicom) filed with the study.

Content tree (concept names in brackets; ``99ECHOSCREEN`` is this project's private
coding scheme, declared in the document's Coding Scheme Identification):

```
CONTAINER [LN 18748-4 Diagnostic Imaging Report]
  CONTAINS CODE [DCM 121071 Finding] = 99ECHOSCREEN screen-positive | normal | inconclusive
    HAS CONCEPT MOD  TEXT [DCM 111001 Algorithm Name] / [DCM 111003 Algorithm Version]
    HAS PROPERTIES   NUM  [99ECHOSCREEN p-screen] p(screen-positive), UCUM "1"
    HAS PROPERTIES   NUM  [99ECHOSCREEN threshold] the package's operating point, UCUM "1"
    HAS PROPERTIES   TEXT [DCM 121106 Comment] the reason (inconclusive studies)
  CONTAINS CONTAINER [99ECHOSCREEN clip] (one per screened clip)
    CONTAINS IMAGE [DCM 121324 Source image] -> the original instance (SOP class/instance)
    CONTAINS CODE  [DCM 111031 Image View] = 99ECHOSCREEN plax | psax_av | ...
    CONTAINS NUM   [99ECHOSCREEN view-confidence], UCUM "1"
    CONTAINS CODE  [99ECHOSCREEN evidence] = SCT Yes | No (given to the rhd model)
    CONTAINS NUM   [99ECHOSCREEN p-clip-screen] (evidence clips only), UCUM "1"
    CONTAINS TEXT  [DCM 121106 Comment] why the clip was not used (``evidence.considered``)
```

Patient and study attributes are copied from the first referenced original, so a
PACS files the SR with the study it screens; the screened instances are listed in
the Current Requested Procedure Evidence Sequence. The SR's series and instance UIDs
are derived from the job id when the result has one, so sending the same job twice
stores one document, not two.
"""

from __future__ import annotations

from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from echoscreen.errors import ServiceError

SCHEME = "99ECHOSCREEN"
SCHEME_NAME = "echoscreen RHD screening codes"
DECISIONS = {
    "screen-positive": "Screen-positive for rheumatic heart disease",
    "normal": "Normal (screen-negative) for rheumatic heart disease",
    "inconclusive": "Rheumatic heart disease screening inconclusive",
}
SERIES_DESCRIPTION = "echoscreen RHD screening result"
#: Type 2 patient/study attributes highdicom reads from the first original
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
          "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")  # fmt: skip
_KEEP = (*_TYPE2, "SpecificCharacterSet", "StudyInstanceUID", "SeriesInstanceUID",
         "SOPClassUID", "SOPInstanceUID", "IssuerOfPatientID", "StudyDescription",
         "PatientAge", "PatientWeight", "PatientSize")  # fmt: skip


def code(value: str, meaning: str) -> Any:
    """A concept of the private ``99ECHOSCREEN`` scheme (code values are <= 16 chars)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def _header(ds: Dataset) -> Dataset:
    """The attributes the SR needs from one original, Type 2 ones filled when absent."""
    out = Dataset()
    for keyword in _KEEP:
        if keyword in ds:
            setattr(out, keyword, ds.data_element(keyword).value)  # type: ignore[union-attr]
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


def _referenced(result: dict[str, Any], originals: list[Dataset]) -> dict[int, Dataset]:
    """Headers of the originals the result's clips came from, by file index."""
    usable = {i: d for i, d in enumerate(originals) if "SOPInstanceUID" in d and "SOPClassUID" in d
              and "StudyInstanceUID" in d}  # fmt: skip
    wanted = [c["file_index"] for c in result.get("clips", []) if "file_index" in c]
    chosen = [i for i in wanted if i in usable] or sorted(usable)
    if not chosen:
        raise ServiceError(
            "cannot build the SR: none of the original files has SOP class, SOP instance "
            "and study instance UIDs to reference; send the study as DICOM Part 10 files"
        )
    return {i: _header(usable[i]) for i in chosen}


def _num(name: Any, value: float, relationship: str) -> Any:
    from highdicom.sr import NumContentItem

    return NumContentItem(name=name, value=float(value), unit=codes.UCUM.NoUnits,
                          relationship_type=relationship)  # fmt: skip


def _finding(result: dict[str, Any]) -> Any:
    """The decision item with the algorithm, p(screen-positive), threshold and reason."""
    import highdicom.sr as hsr

    decision = result.get("decision")
    if decision not in DECISIONS:
        raise ServiceError(f"cannot build the SR: unknown decision {decision!r} in the result")
    item = hsr.CodeContentItem(name=codes.DCM.Finding, value=code(decision, DECISIONS[decision]),
                               relationship_type="CONTAINS")  # fmt: skip
    name, _, version = str(result.get("model", "")).partition(":")
    version = str(result.get("model_version") or version or "unknown")
    props: list[Any] = list(hsr.AlgorithmIdentification(name=name or "echoscreen", version=version))
    if result.get("p_screen") is not None:
        props.append(_num(code("p-screen", "Probability of screen-positive"),
                          result["p_screen"], "HAS PROPERTIES"))  # fmt: skip
    if result.get("threshold") is not None:
        props.append(_num(code("threshold", "Screen-positive threshold"),
                          result["threshold"], "HAS PROPERTIES"))  # fmt: skip
    if result.get("reason"):
        props.append(hsr.TextContentItem(name=codes.DCM.Comment, value=str(result["reason"])[:1024],
                                         relationship_type="HAS PROPERTIES"))  # fmt: skip
    item.ContentSequence = hsr.ContentSequence(props)
    return item


def _clip(clip: dict[str, Any], original: Dataset | None, reason: str | None = None) -> Any:
    """One clip's container: its instance, view, view confidence, evidence role, and why
    it was not used (``reason``, from ``evidence.considered``)."""
    import highdicom.sr as hsr

    items: list[Any] = []
    if original is not None:
        items.append(
            hsr.ImageContentItem(
                name=codes.DCM.SourceImage,
                referenced_sop_class_uid=original.SOPClassUID,
                referenced_sop_instance_uid=original.SOPInstanceUID,
                relationship_type="CONTAINS",
            )
        )
    view = str(clip.get("view") or "unknown")
    items.append(hsr.CodeContentItem(name=codes.DCM.ImageView, value=code(view, f"{view} view"),
                                     relationship_type="CONTAINS"))  # fmt: skip
    items.append(_num(code("view-confidence", "View confidence"), clip.get("confidence", 0.0),
                      "CONTAINS"))  # fmt: skip
    evidence = bool(clip.get("evidence"))
    items.append(hsr.CodeContentItem(name=code("evidence", "Used as screening evidence"),
                                     value=codes.SCT.Yes if evidence else codes.SCT.No,
                                     relationship_type="CONTAINS"))  # fmt: skip
    if evidence and clip.get("p_clip_screen") is not None:
        items.append(_num(code("p-clip-screen", "Clip probability of screen-positive"),
                          clip["p_clip_screen"], "CONTAINS"))  # fmt: skip
    if reason:
        items.append(hsr.TextContentItem(name=codes.DCM.Comment, value=reason[:1024],
                                         relationship_type="CONTAINS"))  # fmt: skip
    box = hsr.ContainerContentItem(name=code("clip", "Screened clip"),
                                   relationship_type="CONTAINS")  # fmt: skip
    box.ContentSequence = hsr.ContentSequence(items)
    return box


def _coding_scheme() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "echoscreen"
    return item


def sr_uids(job: str | None) -> tuple[str, str]:
    """Series and SOP instance UIDs of the SR of ``job`` (fresh random ones without a job).

    Derived from the job id, so an operator can find a job's SR in the PACS and a resent
    SR replaces the first instead of adding a second.
    """
    if not job:
        return generate_uid(), generate_uid()
    seed = f"echoscreen-sr:{job}"
    return generate_uid(entropy_srcs=[seed, "series"]), generate_uid(
        entropy_srcs=[seed, "instance"]
    )


def build_sr(result: dict[str, Any], originals: list[Dataset]) -> Dataset:
    """A Comprehensive SR of one screening result, filed with the screened study.

    Args:
        result: the result document (schema ``echoscreen.screen/1`` plus the engine's
            ``job``/``model_version``); clips point at originals by ``file_index``.
        originals: the study's files as datasets (headers suffice), in upload order, so
            ``originals[clip["file_index"]]`` is the clip's instance. When no clip has a
            ``file_index``, every original is referenced as evidence.

    Returns:
        The SR (a ``highdicom.sr.ComprehensiveSR``, a pydicom ``Dataset`` with file meta).

    Raises:
        ServiceError: the result has an unknown decision, or no original can be referenced.
    """
    import highdicom.sr as hsr

    refs = _referenced(result, originals)
    root = hsr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport)
    why = {e["clip"]: e.get("reason") for e in result.get("evidence", {}).get("considered", [])
           if e.get("clip") is not None}  # fmt: skip
    clips = [_clip(c, refs.get(c["file_index"]) if "file_index" in c else None,
                   why.get(c.get("index")))
             for c in result.get("clips", [])]  # fmt: skip
    root.ContentSequence = hsr.ContentSequence([_finding(result), *clips])
    series_uid, instance_uid = sr_uids(result.get("job"))
    sr = hsr.ComprehensiveSR(
        evidence=list(refs.values()), content=root,
        series_instance_uid=series_uid,
        series_number=9901, instance_number=1,
        sop_instance_uid=instance_uid,
        manufacturer="echoscreen", is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION,
    )  # fmt: skip
    sr.CodingSchemeIdentificationSequence = [_coding_scheme()]
    return sr


def read_sr(sr: Dataset) -> dict[str, Any]:
    """Read back what :func:`build_sr` wrote (decision, probabilities, model, clips).

    Returns:
        ``{"decision", "p_screen", "threshold", "reason", "algorithm": {"name", "version"},
        "clips": [{"sop_instance_uid", "view", "confidence", "evidence", "p_clip_screen",
        "reason"}]}`` (``reason``: why the clip was not used, None when it was).
    """
    root = pydicom.Dataset(sr)
    out: dict[str, Any] = {"p_screen": None, "threshold": None, "reason": None, "clips": []}
    algorithm: dict[str, str] = {}
    for item in root.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "CODE" and name == codes.DCM.Finding.value:
            out["decision"] = item.ConceptCodeSequence[0].CodeValue
            for prop in item.get("ContentSequence", []):
                _read_property(prop, out, algorithm)
        elif item.ValueType == "CONTAINER":
            out["clips"].append(_read_clip(item))
    out["algorithm"] = algorithm
    return out


def _read_property(prop: Dataset, out: dict[str, Any], algorithm: dict[str, str]) -> None:
    name = prop.ConceptNameCodeSequence[0].CodeValue
    if prop.ValueType == "TEXT":
        keys = {codes.DCM.AlgorithmName.value: "name", codes.DCM.AlgorithmVersion.value: "version"}
        if name in keys:
            algorithm[keys[name]] = str(prop.TextValue)
        elif name == codes.DCM.Comment.value:
            out["reason"] = str(prop.TextValue)
    elif prop.ValueType == "NUM" and name in ("p-screen", "threshold"):
        out["p_screen" if name == "p-screen" else "threshold"] = _value(prop)


def _value(item: Dataset) -> float:
    return float(item.MeasuredValueSequence[0].NumericValue)


def _read_clip(box: Dataset) -> dict[str, Any]:
    clip: dict[str, Any] = {"sop_instance_uid": None, "p_clip_screen": None, "reason": None}
    for item in box.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "IMAGE":
            clip["sop_instance_uid"] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        elif item.ValueType == "CODE" and name == codes.DCM.ImageView.value:
            clip["view"] = str(item.ConceptCodeSequence[0].CodeValue)
        elif item.ValueType == "CODE" and name == "evidence":
            clip["evidence"] = item.ConceptCodeSequence[0].CodeValue == codes.SCT.Yes.value
        elif item.ValueType == "NUM" and name == "view-confidence":
            clip["confidence"] = _value(item)
        elif item.ValueType == "NUM" and name == "p-clip-screen":
            clip["p_clip_screen"] = _value(item)
        elif item.ValueType == "TEXT" and name == codes.DCM.Comment.value:
            clip["reason"] = str(item.TextValue)
    return clip
