"""Geometric primitives of the phantom heart and the per-study morphology that shapes them.

Scenes are drawn in *scene* coordinates, centimetres with the transducer at the
origin, ``x`` lateral (image right positive) and ``z`` depth (down positive).
Angles are degrees with ``0`` pointing to +x and ``90`` pointing deeper (+z).
Primitives carry an echogenicity ``value`` in [0, 1] (blood ~0.02, myocardium
~0.55, valve leaflets ~0.85, pericardium ~0.95) and are painted in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from echoscreen.synth.findings import StudyFindings

BLOOD = 0.015
MYO = 0.45
WALL = 0.4
LEAFLET = 0.85
PERICARDIUM = 0.95


@dataclass(frozen=True)
class Ellipse:
    """Filled ellipse at ``(cx, cz)``, semi-axes ``rx, rz`` (cm), rotated by ``angle`` (deg)."""

    cx: float
    cz: float
    rx: float
    rz: float
    value: float
    angle: float = 0.0
    tag: str = ""


@dataclass(frozen=True)
class Capsule:
    """Segment ``(x0, z0)-(x1, z1)`` thickened to ``radius`` cm (a wall, leaflet, vessel)."""

    x0: float
    z0: float
    x1: float
    z1: float
    radius: float
    value: float
    tag: str = ""


Prim = Ellipse | Capsule


@dataclass(frozen=True)
class Valve:
    """Where a valve's flow goes, for colour Doppler.

    Attributes:
        name: ``"mv"``, ``"av"`` or ``"tv"``.
        x, z: coaptation point (cm, scene coordinates).
        dx, dz: unit direction of normal forward flow through the valve.
        en_face: the valve is seen en face (short axis); flow is out of plane.
    """

    name: str
    x: float
    z: float
    dx: float
    dz: float
    en_face: bool = False


@dataclass(frozen=True)
class Morphology:
    """Per-study valve morphology derived from the findings (lengths in cm).

    Attributes:
        mv_thick: anterior mitral leaflet half-thickness (capsule radius).
        pmv_thick: posterior leaflet half-thickness.
        chord_radius, chord_value: chordae tendineae radius and brightness.
        mv_restrict: fraction of the normal opening the leaflet tips reach (1 normal).
        mv_tip_excess: systolic overshoot of the tips into the atrium.
        av_thick: aortic cusp half-thickness.
        av_gap: coaptation defect (gap between closed cusps).
        av_restrict: fraction of the normal cusp opening.
        av_prolapse: diastolic overshoot of the cusps into the LVOT.
        la_scale: left atrial size factor (dilated with pathological MR).
        leaflet_value: leaflet brightness (thickened leaflets are brighter).
    """

    mv_thick: float = 0.1
    pmv_thick: float = 0.08
    chord_radius: float = 0.025
    chord_value: float = 0.35
    mv_restrict: float = 1.0
    mv_tip_excess: float = 0.0
    av_thick: float = 0.06
    av_gap: float = 0.0
    av_restrict: float = 1.0
    av_prolapse: float = 0.0
    la_scale: float = 1.0
    leaflet_value: float = LEAFLET


def leaflet_echogenicity(f: StudyFindings) -> float:
    """Leaflet brightness: fibrosed rheumatic valves are brighter the more features they show.

    ``LEAFLET - 0.25`` for a valve without RHD features, plus 0.12 per feature of the
    more affected valve (at most 3 counted), plus 0.05 for a thickened anterior mitral leaflet.
    """
    n = min(3, max(len(f.mv_features), len(f.av_features)))
    thick = 0.05 if "almv_thickening" in f.mv_features else 0.0
    return min(1.0, LEAFLET - 0.25 + 0.12 * n + thick)


def morphology(f: StudyFindings, rng: np.random.Generator) -> Morphology:
    """Turn WHF findings into geometry, with normal variation for everything else."""
    from echoscreen.synth.findings import pathological_mr

    m = Morphology(
        mv_thick=f.almv_thickness_mm / 20.0,
        pmv_thick=float(rng.uniform(0.07, 0.1)),
        av_thick=f.av_thickness_mm / 20.0,
        la_scale=float(rng.uniform(0.95, 1.05)) * (1.2 if pathological_mr(f.mr) else 1.0),
        leaflet_value=leaflet_echogenicity(f),
    )
    if "chordal_thickening" in f.mv_features:
        m = replace(m, chord_radius=float(rng.uniform(0.08, 0.12)), chord_value=0.85)
        m = replace(m, pmv_thick=m.pmv_thick * 1.6)
    if "restricted_mv" in f.mv_features:
        m = replace(m, mv_restrict=float(rng.uniform(0.25, 0.45)))
    if "excessive_tip_motion" in f.mv_features:
        m = replace(m, mv_tip_excess=float(rng.uniform(0.4, 0.7)))
    if "av_coaptation_defect" in f.av_features:
        m = replace(m, av_gap=float(rng.uniform(0.12, 0.22)))
    if "restricted_av" in f.av_features:
        m = replace(m, av_restrict=float(rng.uniform(0.35, 0.55)))
    if "av_prolapse" in f.av_features:
        m = replace(m, av_prolapse=float(rng.uniform(0.25, 0.4)))
    return m


def _unit(angle_deg: float) -> tuple[float, float]:
    a = math.radians(angle_deg)
    return math.cos(a), math.sin(a)


def leaflet(
    hinge: tuple[float, float],
    length: float,
    closed: float,
    opened: float,
    opening: float,
    thick: float,
    value: float,
    restrict: float = 1.0,
    overshoot: tuple[float, float] = (0.0, 0.0),
) -> list[Prim]:
    """A valve leaflet as two hinged segments (base and tip), tagged ``"leaflet"``.

    Args:
        hinge: annular insertion point (cm).
        length: leaflet length (cm).
        closed, opened: leaflet angle when closed and fully open (degrees).
        opening: current opening in [0, 1].
        thick: capsule radius (cm), half the leaflet thickness.
        value: echogenicity.
        restrict: fraction of the opening the tip reaches (< 1 gives rheumatic doming).
        overshoot: extra tip displacement (cm) beyond the closure line (prolapse).
    """
    base_ang = closed + (opened - closed) * opening
    tip_ang = closed + (opened - closed) * opening * restrict
    bx, bz = _unit(base_ang)
    tx, tz = _unit(tip_ang)
    mid = (hinge[0] + 0.55 * length * bx, hinge[1] + 0.55 * length * bz)
    tip = (
        mid[0] + 0.45 * length * tx + overshoot[0],
        mid[1] + 0.45 * length * tz + overshoot[1],
    )
    tip_thick = thick * (1.15 if restrict < 1.0 else 0.9)
    return [
        Capsule(hinge[0], hinge[1], mid[0], mid[1], thick, value, "leaflet"),
        Capsule(mid[0], mid[1], tip[0], tip[1], tip_thick, value, "leaflet"),
    ]


def tip_of(prims: list[Prim]) -> tuple[float, float]:
    """End point of the last capsule in ``prims`` (a leaflet's tip)."""
    last = prims[-1]
    assert isinstance(last, Capsule)
    return last.x1, last.z1


def transform_prims(prims: list[Prim], rot_deg: float, tx: float, tz: float) -> list[Prim]:
    """Rotate primitives about the origin by ``rot_deg`` then shift by ``(tx, tz)`` cm."""
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))

    def pt(x: float, z: float) -> tuple[float, float]:
        return c * x - s * z + tx, s * x + c * z + tz

    out: list[Prim] = []
    for p in prims:
        if isinstance(p, Ellipse):
            x, z = pt(p.cx, p.cz)
            out.append(replace(p, cx=x, cz=z, angle=p.angle + rot_deg))
        else:
            x0, z0 = pt(p.x0, p.z0)
            x1, z1 = pt(p.x1, p.z1)
            out.append(replace(p, x0=x0, z0=z0, x1=x1, z1=z1))
    return out
