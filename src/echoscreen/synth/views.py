"""The views of the WHF screening protocol as scenes of primitives at one cardiac instant.

Each ``scene_*`` function returns the primitives (painted in order) and the valves
whose flow colour Doppler can show. Coordinates are scene centimetres for a
reference child heart (see :mod:`echoscreen.synth.anatomy`); the renderer scales,
rotates and shifts them per clip.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from echoscreen.synth.anatomy import (
    BLOOD,
    MYO,
    PERICARDIUM,
    WALL,
    Capsule,
    Ellipse,
    Morphology,
    Prim,
    Valve,
    leaflet,
    tip_of,
    transform_prims,
)
from echoscreen.synth.motion import CardiacState

Scene = tuple[list[Prim], list[Valve]]


def _ring(
    cx: float, cz: float, rx: float, rz: float, wall: float, angle: float = 0.0
) -> list[Prim]:
    """A chamber: bright wall ellipse with a blood-filled cavity."""
    return [
        Ellipse(cx, cz, rx + wall, rz + wall, WALL, angle),
        Ellipse(cx, cz, rx, rz, BLOOD, angle),
    ]


def _mitral(
    st: CardiacState,
    m: Morphology,
    ant: tuple[tuple[float, float], float, float, float],
    post: tuple[tuple[float, float], float, float, float],
    atrial: tuple[float, float],
    papillary: tuple[float, float],
) -> list[Prim]:
    """Anterior and posterior mitral leaflets with chordae to a papillary muscle.

    ``ant``/``post`` are ``(hinge, length, closed_deg, open_deg)``.
    """
    push = m.mv_tip_excess * (math.sin(math.pi * st.sys_pos) if st.systole else 0.0)
    over = (atrial[0] * push, atrial[1] * push)
    o = st.mitral_open
    a = leaflet(ant[0], ant[1], ant[2], ant[3], o, m.mv_thick, m.leaflet_value, m.mv_restrict, over)
    p = leaflet(post[0], post[1], post[2], post[3], o, m.pmv_thick, m.leaflet_value, m.mv_restrict)
    chords: list[Prim] = []
    for tip in (tip_of(a), tip_of(p)):
        chords.append(Capsule(*tip, *papillary, m.chord_radius, m.chord_value, "chord"))
    muscle = Ellipse(papillary[0], papillary[1], 0.32, 0.45, MYO, 0.0)
    return [*chords, muscle, *a, *p]


def _aortic_cusps(
    st: CardiacState,
    m: Morphology,
    hinges: tuple[tuple[float, float], tuple[float, float]],
    closed: tuple[float, float],
    opened: tuple[float, float],
    length: float,
    lvot_dir: tuple[float, float],
) -> list[Prim]:
    """Two aortic cusps (long-axis views); a coaptation defect shortens them when closed."""
    o = st.aortic_open * m.av_restrict
    prolapse = m.av_prolapse * (math.sin(math.pi * st.dia_pos) if not st.systole else 0.0)
    over = (lvot_dir[0] * prolapse, lvot_dir[1] * prolapse)
    short = length - m.av_gap * (1.0 - st.aortic_open)
    out: list[Prim] = []
    for hinge, c, op in zip(hinges, closed, opened, strict=True):
        out += leaflet(hinge, short, c, op, o, m.av_thick, m.leaflet_value, 1.0, over)
    return out


def scene_plax(st: CardiacState, m: Morphology) -> Scene:
    """Parasternal long axis: RV on top, LV left, aortic root right, LA below it."""
    c = st.contraction
    la = m.la_scale * (1 + 0.1 * c)
    prims: list[Prim] = [
        Ellipse(-1.5, 4.9, 4.6 * (1 - 0.03 * c), 2.5 * (1 - 0.04 * c), MYO, -4),
        Ellipse(0.0, 1.8, 4.0, 1.0, MYO),
        *_ring(3.4, 5.9, 1.5 * la, 1.2 * la, 0.25),
        Capsule(0.8, 3.6, 5.8, 3.2, 1.05, WALL),
        Ellipse(0.0, 1.85, 3.5 * (1 - 0.08 * c), 0.55 * (1 - 0.15 * c), BLOOD),
        Ellipse(-1.4, 4.85, 3.9 * (1 - 0.1 * c), 1.75 * (1 - 0.3 * c), BLOOD, -4),
        Capsule(0.2, 5.5, 2.4, 5.9, 0.75, BLOOD),
        Capsule(-0.8, 3.7, 1.0, 3.7, 0.6, BLOOD),
        Capsule(0.8, 3.6, 5.8, 3.2, 0.82 * (1 + 0.06 * st.aortic_open), BLOOD),
        Capsule(-5.5, 7.55, 5.0, 7.6, 0.17, PERICARDIUM),
        *_ring(2.4, 8.4, 0.55, 0.55, 0.15),
    ]
    prims += _mitral(
        st, m, ((1.25, 4.5), 1.5, 104, 195), ((1.5, 6.75), 1.05, 235, 165), (0.6, 0.8), (-1.0, 6.2)
    )
    prims += _aortic_cusps(st, m, ((1.5, 2.74), (1.5, 4.36)), (97, -97), (6, -6), 0.8, (-1, 0.1))
    valves = [Valve("mv", 0.95, 5.9, -0.97, -0.22), Valve("av", 1.45, 3.55, 0.99, -0.08)]
    return prims, valves


def scene_psax_av(st: CardiacState, m: Morphology) -> Scene:
    """Parasternal short axis at the aortic valve: the 'Mercedes' valve, RVOT, atria, PA."""
    prims: list[Prim] = [
        Ellipse(0.2, 3.6, 3.4, 2.0, MYO),
        Ellipse(0.2, 3.6, 3.0, 1.55, BLOOD),
        *_ring(0.6, 7.3, 2.0 * m.la_scale, 1.0 * m.la_scale, 0.25),
        *_ring(-2.6, 6.4, 1.15, 1.05, 0.25),
        Capsule(2.6, 3.2, 3.5, 6.4, 0.8, WALL),
        Capsule(2.6, 3.2, 3.5, 6.4, 0.58, BLOOD),
        Ellipse(0.0, 4.9, 1.3, 1.3, 0.6),
        Ellipse(0.0, 4.9, 1.0 * (1 + 0.05 * st.aortic_open), 1.0, BLOOD),
        Capsule(-3.4, 8.6, 3.8, 8.75, 0.16, PERICARDIUM),
    ]
    o = st.aortic_open * m.av_restrict
    inner = m.av_gap + (0.8 - m.av_gap) * o
    for ang in (90.0, 210.0, 330.0):
        ux, uz = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        prims.append(
            Capsule(
                ux * inner, 4.9 + uz * inner, ux, 4.9 + uz, m.av_thick, m.leaflet_value, "leaflet"
            )
        )
    prims += leaflet((-2.3, 5.6), 1.0, -60, -140, st.mitral_open, 0.07, m.leaflet_value)
    valves = [Valve("av", 0.0, 4.9, 0.0, 0.0, en_face=True), Valve("tv", -2.0, 5.2, 0.5, -0.86)]
    return prims, valves


def scene_psax_mv(st: CardiacState, m: Morphology) -> Scene:
    """Parasternal short axis at mitral level: round LV, RV crescent, 'fish-mouth' mitral."""
    c = st.contraction
    o = st.mitral_open * (0.35 + 0.65 * m.mv_restrict)
    ry = 0.12 + 0.85 * o
    th = 2 * m.mv_thick
    prims: list[Prim] = [
        Ellipse(-0.4, 2.3, 3.3, 1.25, MYO),
        Ellipse(-0.4, 2.4, 2.8, 0.75 * (1 - 0.15 * c), BLOOD),
        Ellipse(0.0, 5.6, 2.75 * (1 - 0.06 * c), 2.7 * (1 - 0.06 * c), MYO),
        Ellipse(0.0, 5.6, 2.05 * (1 - 0.25 * c), 2.0 * (1 - 0.25 * c), BLOOD),
        Ellipse(-1.2, 6.9, 0.38, 0.32, MYO),
        Ellipse(1.25, 6.8, 0.38, 0.32, MYO),
        Ellipse(0.0, 5.5, 1.55, ry + th, m.leaflet_value, 0.0, "leaflet"),
        Ellipse(0.0, 5.5, 1.55 - th, max(ry - 0.05, 0.02), BLOOD),
        Capsule(-4.0, 8.65, 4.0, 8.5, 0.17, PERICARDIUM),
    ]
    return prims, [Valve("mv", 0.0, 5.5, 0.0, 0.0, en_face=True)]


def _apical_base(st: CardiacState, m: Morphology, la: tuple[float, float]) -> list[Prim]:
    c = st.contraction
    s = m.la_scale * (1 + 0.1 * c)
    return [
        Ellipse(-0.2, 10.0, 3.6, 2.1, WALL),
        Ellipse(-0.2, 5.3, 3.6 * (1 - 0.05 * c), 3.9 * (1 - 0.04 * c), MYO),
        Ellipse(la[0], la[1], 1.5 * s, 1.55 * s, BLOOD),
        Ellipse(-1.8, 9.9, 1.4, 1.45, BLOOD),
        Ellipse(1.2, 5.4, 1.55 * (1 - 0.22 * c), 3.0 * (1 - 0.12 * c), BLOOD, -8),
        Ellipse(-1.8, 5.9, 1.2 * (1 - 0.2 * c), 2.5 * (1 - 0.1 * c), BLOOD, 10),
        Capsule(-1.6, 8.0, -1.6, 7.3, 0.7, BLOOD),
        Capsule(3.6, 3.5, 2.9, 9.0, 0.15, PERICARDIUM),
    ]


def _tricuspid(st: CardiacState, m: Morphology, z: float) -> list[Prim]:
    o = st.mitral_open
    return [
        *leaflet((-0.4, z), 1.25, 187, 265, o, 0.08, m.leaflet_value),
        *leaflet((-2.9, z), 1.25, -7, -85, o, 0.08, m.leaflet_value),
    ]


def scene_a4c(st: CardiacState, m: Morphology) -> Scene:
    """Apical 4-chamber: apex on top, LV right, RV left, atria at the bottom."""
    prims = _apical_base(st, m, (1.4, 9.9))
    prims.append(Capsule(1.4, 8.2, 1.4, 7.2, 0.8, BLOOD))
    prims += _mitral(
        st, m, ((0.3, 8.3), 1.3, -9, -75), ((2.6, 8.3), 1.1, 190, 260), (0.0, 1.0), (1.9, 6.0)
    )
    prims += _tricuspid(st, m, 8.0)
    valves = [Valve("mv", 1.5, 8.1, 0.05, -1.0), Valve("tv", -1.65, 7.85, 0.0, -1.0)]
    return prims, valves


def scene_a5c(st: CardiacState, m: Morphology) -> Scene:
    """Apical 5-chamber: the 4-chamber view tilted to open the LVOT and aortic root."""
    prims = _apical_base(st, m, (2.2, 10.0))
    prims += [
        Capsule(0.35, 7.6, 0.1, 11.2, 0.95, 0.55),
        Capsule(0.6, 6.6, 0.1, 11.2, 0.72 * (1 + 0.05 * st.aortic_open), BLOOD),
        Capsule(2.1, 8.3, 2.1, 7.2, 0.75, BLOOD),
    ]
    prims += _mitral(
        st, m, ((1.15, 8.4), 1.2, -10, -80), ((3.0, 8.4), 1.0, 192, 262), (0.0, 1.0), (2.3, 6.1)
    )
    prims += _aortic_cusps(st, m, ((-0.34, 8.0), (1.1, 8.0)), (-12, 192), (80, 100), 0.75, (0, -1))
    prims += _tricuspid(st, m, 8.1)
    valves = [Valve("mv", 2.05, 8.25, 0.0, -1.0), Valve("av", 0.38, 7.85, -0.05, 1.0)]
    return prims, valves


def scene_rvin(st: CardiacState, m: Morphology) -> Scene:
    """RV inflow: RV on top, tricuspid valve, RA below with the IVC and coronary sinus."""
    c = st.contraction
    prims: list[Prim] = [
        Ellipse(0.0, 4.0, 2.9, 2.9, MYO),
        *_ring(0.3, 8.3, 1.95, 1.6, 0.3),
        Ellipse(0.0, 4.2, 2.2 * (1 - 0.15 * c), 2.1 * (1 - 0.1 * c), BLOOD),
        Capsule(0.1, 6.7, 0.1, 5.6, 0.9, BLOOD),
        Capsule(1.8, 9.5, 3.6, 12.5, 0.55, BLOOD),
        Ellipse(-1.6, 7.3, 0.35, 0.3, BLOOD),
        Capsule(3.2, 1.5, 3.4, 7.0, 0.16, PERICARDIUM),
        *leaflet((-1.7, 6.3), 1.8, -9.5, -80, st.mitral_open, 0.08, m.leaflet_value),
        *leaflet((1.9, 6.1), 1.8, 183, 260, st.mitral_open, 0.08, m.leaflet_value),
    ]
    return prims, [Valve("tv", 0.1, 6.0, 0.0, -1.0)]


def scene_subcostal(st: CardiacState, m: Morphology) -> Scene:
    """Off-protocol subcostal view: liver in the near field, a rotated 4-chamber heart deep."""
    heart, _ = scene_a4c(st, m)
    liver: list[Prim] = [
        Ellipse(-1.0, 2.6, 6.0, 3.6, 0.36),
        Capsule(-3.0, 3.0, -1.0, 5.5, 0.35, 0.02),
    ]
    return liver + transform_prims(heart, 38.0, 2.2, 2.6), []


def scene_suprasternal(st: CardiacState, m: Morphology) -> Scene:
    """Off-protocol suprasternal view: the aortic arch with its branches over the RPA and LA."""
    prims: list[Prim] = [*_ring(0.0, 9.2, 2.0, 1.1, 0.3), *_ring(0.0, 6.9, 1.0, 0.75, 0.25)]
    pts = [
        (3.0 * math.cos(math.radians(a)), 6.6 + 2.9 * math.sin(math.radians(a)))
        for a in range(160, 385, 25)
    ]
    for width, value in ((0.95, 0.55), (0.68 * (1 + 0.05 * st.aortic_open), BLOOD)):
        for (x0, z0), (x1, z1) in itertools.pairwise(pts):
            prims.append(Capsule(x0, z0, x1, z1, width, value))
    for bx in (-0.9, 0.2, 1.2):
        prims += [
            Capsule(bx, 3.9, bx * 1.3, 1.2, 0.38, 0.5),
            Capsule(bx, 3.9, bx * 1.3, 1.2, 0.22, BLOOD),
        ]
    return prims, []


SCENES: dict[str, Callable[[CardiacState, Morphology], Scene]] = {
    "plax": scene_plax,
    "rvin": scene_rvin,
    "psax_av": scene_psax_av,
    "psax_mv": scene_psax_mv,
    "a4c": scene_a4c,
    "a5c": scene_a5c,
    "subcostal": scene_subcostal,
    "suprasternal": scene_suprasternal,
}
