"""Colour-Doppler flow of the phantom: forward flow, regurgitant jets, and the colour map.

Flows are evaluated in *image* centimetres (transducer at the origin, depth +z),
so a jet of ``length`` cm covers ``length / spacing`` pixels whatever the heart size.
Velocities are m/s; the colour shows the component towards the transducer
(red/yellow towards, blue/cyan away), aliased at the Nyquist velocity, with a
green variance tag in turbulent jets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoscreen.synth.anatomy import Valve
from echoscreen.synth.motion import CardiacState

MR_SPEED = 4.5
AR_SPEED = 3.8


@dataclass(frozen=True)
class Plume:
    """A flow along ``(dx, dz)`` from ``(ox, oz)``: ``length`` cm, half-width ``w0`` -> ``w1``."""

    ox: float
    oz: float
    dx: float
    dz: float
    length: float
    w0: float
    w1: float
    speed: float
    turbulent: bool = False
    jet: bool = False


@dataclass(frozen=True)
class Disk:
    """Out-of-plane flow seen en face: a disc with a fixed velocity towards the probe."""

    ox: float
    oz: float
    radius: float
    v_toward: float
    turbulent: bool = False
    jet: bool = False


Flow = Plume | Disk


@dataclass(frozen=True)
class ClipJets:
    """The regurgitant jets one colour clip shows (lengths in cm, 0 = none).

    ``*_duration`` is the fraction of systole (MR, TR) or diastole (AR) the jet lasts;
    ``*_severe`` draws a significant jet (broad turbulent mosaic with a convergence zone),
    otherwise a trivial one (narrow, smooth colour below the aliasing velocity).
    Tricuspid jets are always trivial.
    """

    mr_cm: float = 0.0
    mr_duration: float = 1.0
    mr_ecc_deg: float = 0.0
    ar_cm: float = 0.0
    ar_duration: float = 1.0
    ar_ecc_deg: float = 0.0
    mr_severe: bool = True
    ar_severe: bool = True
    tr_cm: float = 0.0
    tr_duration: float = 1.0


def _rot(dx: float, dz: float, deg: float) -> tuple[float, float]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return c * dx - s * dz, s * dx + c * dz


def _active(pos: float, duration: float) -> bool:
    return 0.0 <= pos <= duration


#: speed (m/s) of a trivial jet: below every phantom Nyquist velocity, so it shows smooth colour
TRIVIAL_SPEED = 0.45


def _jet(v: Valve, length: float, ecc: float, speed: float, severe: bool = True) -> list[Flow]:
    """A regurgitant jet.

    A severe (WHF-pathological) jet is a proximal convergence zone (PISA) and a widening
    turbulent plume, both growing with the jet: a longer jet comes from a larger
    regurgitant orifice, so its convergence zone is larger and its plume broader
    (half-width 0.12 cm at the vena contracta to ``0.15 + 0.22 * length`` cm at its end,
    about 1.2 cm wide for a 2 cm jet), as colour Doppler shows moderate and severe
    regurgitation. A trivial (physiological) jet is a narrow laminar plume (half-width
    0.06 to ``0.08 + 0.03 * length`` cm) in smooth colour, without a convergence zone.
    """
    jx, jz = _rot(-v.dx, -v.dz, ecc)
    if not severe:
        return [Plume(v.x, v.z, jx, jz, length, 0.06, 0.08 + 0.03 * length, TRIVIAL_SPEED,
                      False, True)]  # fmt: skip
    r = 0.3 + 0.1 * min(length, 3.0)
    convergence = Plume(v.x + r * v.dx, v.z + r * v.dz, -v.dx, -v.dz, r, r, 0.1, 1.0)
    jet = Plume(v.x, v.z, jx, jz, length, 0.12, 0.15 + 0.22 * length, speed, True, True)
    return [convergence, jet]


def valve_flows(v: Valve, st: CardiacState, jets: ClipJets) -> list[Flow]:
    """Flows through valve ``v`` (image coordinates) at instant ``st``."""
    flows: list[Flow] = []
    if v.name in ("mv", "tv") and not v.en_face:
        speed = (0.85 if v.name == "mv" else 0.6) * st.mitral_open
        if speed > 0.02:
            ox, oz = v.x - 0.3 * v.dx, v.z - 0.3 * v.dz
            flows.append(Plume(ox, oz, v.dx, v.dz, 3.6, 0.45, 0.85, speed))
        cm, dur, severe = (
            (jets.mr_cm, jets.mr_duration, jets.mr_severe)
            if v.name == "mv"
            else (jets.tr_cm, jets.tr_duration, False)
        )
        if cm > 0 and st.systole and _active(st.sys_pos, dur):
            ecc = jets.mr_ecc_deg if v.name == "mv" else 0.0
            flows += _jet(v, cm, ecc, MR_SPEED if v.name == "mv" else 2.6, severe)
    elif v.name == "av" and not v.en_face:
        if st.aortic_open > 0.02:
            ox, oz = v.x - 1.8 * v.dx, v.z - 1.8 * v.dz
            flows.append(Plume(ox, oz, v.dx, v.dz, 4.2, 0.45, 0.55, 1.1 * st.aortic_open))
        if jets.ar_cm > 0 and not st.systole and _active(st.dia_pos, jets.ar_duration):
            flows += _jet(v, jets.ar_cm, jets.ar_ecc_deg, AR_SPEED, jets.ar_severe)
    elif v.name == "av":
        if st.aortic_open > 0.02:
            flows.append(Disk(v.x, v.z, 0.85 * st.aortic_open, -0.45 * st.aortic_open))
        if jets.ar_cm > 0 and not st.systole and _active(st.dia_pos, jets.ar_duration):
            if jets.ar_severe:
                flows.append(Disk(v.x, v.z, 0.12 + 0.15 * jets.ar_cm, AR_SPEED, True, True))
            else:
                flows.append(Disk(v.x, v.z, 0.08, TRIVIAL_SPEED, False, True))
    return flows


def velocity_field(
    flows: list[Flow], x: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity towards the probe (m/s), turbulence (0..1) and jet mask on grid ``(x, z)`` cm.

    Returns:
        ``(v_toward, turbulence, jet_mask)``, each shaped like ``x``; later flows
        overwrite earlier ones where they overlap.
    """
    r = np.sqrt(x * x + z * z) + 1e-6
    rx, rz = x / r, z / r
    v = np.zeros_like(x)
    turb = np.zeros_like(x)
    jet = np.zeros(x.shape, dtype=bool)
    for f in flows:
        ux, uz = x - f.ox, z - f.oz
        if isinstance(f, Disk):
            inside = ux * ux + uz * uz <= f.radius * f.radius
            prof = np.ones_like(x)
            vt = np.full_like(x, f.v_toward)
        else:
            s = ux * f.dx + uz * f.dz
            t = -ux * f.dz + uz * f.dx
            w = f.w0 + (f.w1 - f.w0) * np.clip(s / f.length, 0.0, 1.0)
            inside = (s >= 0) & (s <= f.length) & (np.abs(t) < w)
            prof = (1.0 - (t / w) ** 2) * np.clip((f.length - s) / (0.2 * f.length), 0.15, 1.0)
            vt = -f.speed * prof * (f.dx * rx + f.dz * rz)
        v = np.where(inside, vt, v)
        turb = np.where(inside, prof if f.turbulent else 0.0, turb)
        if f.jet:
            jet |= inside
    return v, turb, jet


#: side, in polar samples, of a turbulence mosaic tile (a colour-Doppler sample volume)
MOSAIC_TILE = 4


def _mosaic(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal noise constant over ``MOSAIC_TILE`` x ``MOSAIC_TILE`` tiles.

    Colour Doppler estimates velocity and variance per sample volume, several B-mode
    samples wide, so a turbulent jet shows a mosaic of tiles, not pixel noise; the tiles
    also keep the mosaic visible after the image is shrunk for a model.
    """
    k = MOSAIC_TILE
    coarse = rng.standard_normal((-(-shape[0] // k), -(-shape[1] // k))).astype(np.float32)
    return np.asarray(np.repeat(np.repeat(coarse, k, 0), k, 1)[: shape[0], : shape[1]])


def colorize(
    v: np.ndarray, turb: np.ndarray, nyquist: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Map velocity to colour with aliasing and a variance tag.

    Args:
        v: velocity towards the probe (m/s), any 2-D shape.
        turb: turbulence 0..1 (same shape); turbulent pixels get mosaic and green.
        nyquist: aliasing velocity (m/s).
        rng: generator for the Doppler noise.

    Returns:
        ``(rgb, alpha)``: float32 colour in [0, 255] shaped ``v.shape + (3,)`` and the
        float32 weight of colour over B-mode (0 where no flow is shown).
    """
    noise = rng.standard_normal(v.shape).astype(np.float32)
    mosaic = _mosaic(rng, v.shape)
    vn = v / nyquist + noise * 0.06 + mosaic * 1.2 * turb
    w = np.mod(vn + 1.0, 2.0) - 1.0
    a = np.abs(w)
    hi = np.clip((a - 0.55) / 0.45, 0.0, 1.0)
    red = np.where(w > 0, 70 + 185 * np.minimum(a * 1.6, 1.0), 0.0)
    blue = np.where(w < 0, 80 + 175 * np.minimum(a * 1.6, 1.0), 0.0)
    green = 210 * hi + 230 * turb * (_mosaic(rng, v.shape) > -0.3)
    rgb = np.stack([red, np.minimum(green, 255), blue], axis=-1).astype(np.float32)
    shown = (np.abs(v) > 0.06 * nyquist) & (rng.random(v.shape) > 0.06)
    return rgb, shown.astype(np.float32)
