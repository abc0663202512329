"""One phantom study: its protocol, findings, clips, DICOM files, masks and CSV rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from echoscreen.synth.anatomy import Morphology, morphology
from echoscreen.synth.doppler import ClipJets
from echoscreen.synth.findings import (
    StudyFindings,
    pathological_ar,
    pathological_mr,
    sample_findings,
)
from echoscreen.synth.header import (
    SCANNERS,
    ClipHeader,
    Identity,
    Scanner,
    box_pixels,
    build_dataset,
    make_identity,
)
from echoscreen.synth.motion import cardiac_state, systolic_fraction
from echoscreen.synth.overlay import Annotation, base_canvas, compose
from echoscreen.synth.render import (
    ClipSpec,
    Look,
    Pose,
    ScanGeometry,
    render_clip,
    scan_geometry,
    snap_box,
)
from echoscreen.synth.views import SCENES

#: (view, colour-Doppler valve or None, probability the clip is in a study)
PROTOCOL: tuple[tuple[str, str | None, float], ...] = (
    ("plax", None, 1.0),
    ("plax", "mv", 1.0),
    ("plax", "av", 1.0),
    ("rvin", None, 0.7),
    ("rvin", "tv", 0.3),
    ("psax_av", None, 1.0),
    ("psax_av", "av", 0.5),
    ("psax_mv", None, 1.0),
    ("a4c", None, 1.0),
    ("a4c", "mv", 1.0),
    ("a4c", "tv", 0.25),
    ("a5c", None, 0.5),
    ("a5c", "av", 1.0),
    ("a5c", "mv", 0.3),
)
MAX_CLIPS = 12
BASE_DEPTH_CM = {
    "plax": 10.0,
    "rvin": 12.0,
    "psax_av": 10.5,
    "psax_mv": 10.5,
    "a4c": 14.0,
    "a5c": 14.5,
    "subcostal": 15.0,
    "suprasternal": 12.5,
}
LONG_AXIS = {"mv": ("plax", "a4c", "a5c"), "av": ("plax", "a5c")}
#: beat phase at which a clip starts: scanners store ECG-triggered cine loops that begin
#: just before the R wave, so every clip shows systole first, whatever its length
ECG_TRIGGER = (-0.12, 0.0)


@dataclass(frozen=True)
class PlannedClip:
    """A clip of the study: protocol view (``other`` for off-axis) and render settings."""

    number: int
    view: str
    scene: str
    doppler: str | None
    spec: ClipSpec
    geometry: ScanGeometry


@dataclass(frozen=True)
class StudyPlan:
    """Everything drawn for one study before any pixel is rendered."""

    index: int
    label: str
    identity: Identity
    scanner: Scanner
    findings: StudyFindings
    heart_rate: float
    clips: tuple[PlannedClip, ...]


def _protocol(rng: np.random.Generator) -> list[tuple[str, str, str | None]]:
    clips = [(v, v, d) for v, d, p in PROTOCOL if p >= 1.0 or rng.random() < p]
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        scene = "subcostal" if rng.random() < 0.5 else "suprasternal"
        clips.insert(int(rng.integers(3, len(clips) + 1)), ("other", scene, None))
    while len(clips) > MAX_CLIPS:  # drop optional clips, never a required one
        optional = [
            i
            for i, (v, s, d) in enumerate(clips)
            if v == "other" or dict(((a, b), p) for a, b, p in PROTOCOL)[(v, d)] < 1.0
        ]
        clips.pop(optional[int(rng.integers(len(optional)))])
    return clips


def _clip_jets(
    f: StudyFindings, view: str, doppler: str | None, rng: np.random.Generator
) -> ClipJets:
    mr, ar = f.mr, f.ar
    if doppler == "mv" and mr is not None and mr.length_in(view) > 0:
        return ClipJets(
            mr_cm=mr.length_in(view),
            mr_duration=mr.duration,
            mr_ecc_deg=mr.eccentricity_deg + float(rng.normal(0, 5)),
            mr_severe=pathological_mr(mr),
        )
    if doppler == "av" and ar is not None:
        length = ar.max_cm if view == "psax_av" else ar.length_in(view)
        if length > 0:
            return ClipJets(
                ar_cm=length,
                ar_duration=ar.duration,
                ar_ecc_deg=ar.eccentricity_deg + float(rng.normal(0, 5)),
                ar_severe=pathological_ar(ar),
            )
    if doppler == "tv" and rng.random() < 0.5:
        return ClipJets(tr_cm=float(rng.uniform(0.4, 1.8)), tr_duration=float(rng.uniform(0.4, 1)))
    return ClipJets()


def _colour_box(
    scene: str, doppler: str, pose: Pose, morph: Morphology, sf: float, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    valves = SCENES[scene](cardiac_state(0.0, sf), morph)[1]
    v = pose.valve_to_image(next(x for x in valves if x.name == doppler))
    back, front = (1.2, 1.2) if v.en_face else (4.2 + rng.uniform(0, 0.6), 2.0)
    pts = []
    for along, side in (
        (-back, 0.0),
        (front, 0.0),
        (0.0, 1.1),
        (0.0, -1.1),
        (-back, 1.0),
        (-back, -1.0),
    ):
        dx, dz = (v.dx, v.dz) if not v.en_face else (0.0, 1.0)
        pts.append((v.x + along * dx - side * dz, v.z + along * dz + side * dx))
    r = [math.hypot(x, z) for x, z in pts]
    a = [math.atan2(x, z) for x, z in pts]
    return min(r) - 0.3, max(r) + 0.3, min(a) - 0.04, max(a) + 0.04


@dataclass(frozen=True)
class _Context:
    scanner: Scanner
    findings: StudyFindings
    morph: Morphology
    size: tuple[int, int]
    scale: float
    hr: float
    frames: int


def _clip(
    number: int, view: str, scene: str, doppler: str | None, ctx: _Context, rng: np.random.Generator
) -> PlannedClip:
    scanner, f, morph, scale, hr = ctx.scanner, ctx.findings, ctx.morph, ctx.scale, ctx.hr
    depth = BASE_DEPTH_CM[scene] * (0.55 + 0.45 * scale) * float(rng.uniform(0.93, 1.1))
    g = scan_geometry(ctx.size[0], ctx.size[1], depth, float(rng.uniform(*scanner.sector_deg)))
    spread = 14.0 if view == "other" else 7.0
    pose = Pose(
        scale,
        float(rng.uniform(-spread, spread)),
        float(rng.uniform(-0.5, 0.5)) * scale,
        float(rng.uniform(-0.4, 0.4)),
    )
    sf = systolic_fraction(hr)
    box = None
    if doppler is not None:
        box = snap_box(g, _colour_box(scene, doppler, pose, morph, sf, rng))
    look = Look(
        gain=scanner.gain * float(rng.uniform(0.85, 1.2)),
        gamma=float(rng.uniform(0.62, 0.8)),
        tint=scanner.tint,
        nyquist=float(rng.uniform(0.5, 0.75)),
        chest_wall_cm=float(rng.uniform(0.4, 1.0)),
    )
    spec = ClipSpec(
        view=scene,
        doppler=doppler,
        frames=ctx.frames,
        fps=round(float(rng.uniform(*scanner.fps)), 1),
        heart_rate=hr,
        sf=sf,
        phase0=float(rng.uniform(ECG_TRIGGER[0], ECG_TRIGGER[1])) % 1.0,
        pose=pose,
        morph=morph,
        jets=_clip_jets(f, view, doppler, rng),
        look=look,
        box=box,
        seed=int(rng.integers(2**63)),
    )
    return PlannedClip(number, view, scene, doppler, spec, g)


def plan_study(
    index: int, label: str, seed: int, frames: int, size: tuple[int, int] | None
) -> StudyPlan:
    """Draw identity, protocol, findings and clip settings for study ``index`` (deterministic)."""
    rng = np.random.default_rng([seed, index, 0x5EED])
    scanner = SCANNERS[int(rng.integers(len(SCANNERS)))]
    ident = make_identity(rng, seed, index, scanner)
    protocol = _protocol(rng)
    present = {(v, d) for v, _, d in protocol}
    mv_views = tuple(v for v in LONG_AXIS["mv"] if (v, "mv") in present)
    av_views = tuple(v for v in LONG_AXIS["av"] if (v, "av") in present)
    findings = sample_findings(label, rng, mv_views, av_views)
    hr = float(np.clip(128 - 3.6 * ident.age_years + rng.normal(0, 10), 60, 140))
    ctx = _Context(
        scanner,
        findings,
        morphology(findings, rng),
        size or scanner.size,
        0.72 + 0.02 * ident.age_years,
        round(hr, 1),
        frames,
    )
    clips = tuple(_clip(i + 1, v, s, d, ctx, rng) for i, (v, s, d) in enumerate(protocol))
    return StudyPlan(index, label, ident, scanner, findings, round(hr, 1), clips)


MV_SHOWN = ("plax", "psax_mv", "a4c", "a5c")
AV_SHOWN = ("plax", "psax_av", "a5c")


def clip_findings(f: StudyFindings, clip: PlannedClip) -> list[str]:
    """What the clip shows, e.g. ``["mr_jet=2.4cm", "almv_thickness=4.1mm"]``."""
    j = clip.spec.jets
    out: list[str] = []
    if j.mr_cm > 0:
        out.append(f"mr_jet={j.mr_cm:.2f}cm")
        out += [] if j.mr_duration >= 1.0 else ["mr_not_pansystolic"]
    if j.ar_cm > 0:
        out.append("ar_jet_en_face" if clip.view == "psax_av" else f"ar_jet={j.ar_cm:.2f}cm")
        out += [] if j.ar_duration >= 1.0 else ["ar_not_pandiastolic"]
    if j.tr_cm > 0:
        out.append(f"tr_jet={j.tr_cm:.2f}cm")
    if clip.view in MV_SHOWN:
        for feat in sorted(f.mv_features):
            if feat == "almv_thickening":
                out.append(f"almv_thickness={f.almv_thickness_mm:.1f}mm")
            elif not (feat == "chordal_thickening" and clip.view == "psax_mv"):
                out.append(feat)
    if clip.view in AV_SHOWN:
        out += sorted(f.av_features)
    return out


def _annotation(plan: StudyPlan, clip: PlannedClip) -> Annotation:
    ident = plan.identity
    date = f"{ident.study_date[6:]}/{ident.study_date[4:6]}/{ident.study_date[:4]}"
    return Annotation(
        left=(ident.patient_name.replace("^", " "), f"ID {ident.patient_id}"),
        right=(ident.institution, f"{date} {ident.study_time[:2]}:{ident.study_time[2:4]}"),
        side=(
            plan.scanner.probe,
            f"{plan.scanner.probe_mhz:.1f}MHz",
            "MI 0.9",
            "TIS 0.4",
            f"{clip.geometry.depth_cm:.0f}cm",
            f"{clip.spec.fps:.0f}Hz",
        ),
    )


def _save_masks(path: Path, g: ScanGeometry, jet: np.ndarray, leaflets: np.ndarray) -> None:
    full = np.zeros((2, jet.shape[0], g.rows, g.cols), dtype=np.uint8)
    full[0, :, g.top : g.bottom + 1, g.left : g.right + 1] = jet
    full[1, :, g.top : g.bottom + 1, g.left : g.right + 1] = leaflets
    np.savez_compressed(path, jet=full[0], leaflets=full[1])


def write_study(
    plan: StudyPlan, out: Path, transfer_syntax: str, masks: bool
) -> list[dict[str, str]]:
    """Render and write every clip of ``plan`` under ``out``; returns one clips.csv row each."""
    from echoscreen.dicom.write import set_pixel_data

    ident = plan.identity
    folder = Path(ident.patient_id) / f"ST{ident.accession[3:]}"
    (out / folder).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for clip in plan.clips:
        g, spec = clip.geometry, clip.spec
        rendered = render_clip(spec, g, masks)
        base = base_canvas(g, _annotation(plan, clip), clip.doppler is not None)
        frames = compose(g, base, rendered.sector, spec.fps, spec.heart_rate, spec.phase0, spec.sf)
        sop = generate_uid(entropy_srcs=[ident.study_uid, str(clip.number), "sop"])
        colour = box_pixels(g, spec.box) if spec.box is not None else None
        header = ClipHeader(
            clip.number, sop, spec.fps, spec.heart_rate, colour, plan.scanner.probe_mhz
        )
        ds = build_dataset(ident, plan.scanner, g, header)
        set_pixel_data(ds, frames, transfer_syntax)
        rel = folder / f"IM{clip.number:04d}.dcm"
        ds.save_as(out / rel, enforce_file_format=True)
        mask_rel = ""
        if masks and rendered.jet is not None and rendered.leaflets is not None:
            mask_rel = str(folder / f"IM{clip.number:04d}.mask.npz")
            _save_masks(out / mask_rel, g, rendered.jet, rendered.leaflets)
        rows.append(
            {
                "study_instance_uid": ident.study_uid,
                "series_instance_uid": ident.series_uid,
                "sop_instance_uid": sop,
                "path": rel.as_posix(),
                "view": clip.view,
                "doppler": "1" if clip.doppler else "0",
                "findings": ";".join(clip_findings(plan.findings, clip)),
                "mr_jet_cm": f"{spec.jets.mr_cm:.2f}",
                "ar_jet_cm": f"{spec.jets.ar_cm if clip.view != 'psax_av' else 0.0:.2f}",
                "mask": mask_rel,
            }
        )
    return rows
