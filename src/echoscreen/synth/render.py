"""Rendering one phantom clip: sector geometry, painted anatomy, speckle, colour Doppler.

The anatomy is painted on a polar grid (``n_samples`` depths x ``n_beams`` angles),
where speckle is generated the way a scanner forms it (elongated along the beam
width), then scan-converted to the Cartesian sector with one ``cv2.remap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoscreen.synth.anatomy import Morphology, Valve
from echoscreen.synth.canvas import Canvas, paint
from echoscreen.synth.doppler import ClipJets, colorize, valve_flows, velocity_field
from echoscreen.synth.motion import cardiac_state, frame_phases
from echoscreen.synth.views import SCENES


@dataclass(frozen=True)
class ScanGeometry:
    """Where the sector lies in the image and its physical scale.

    Attributes:
        rows, cols: image size in pixels.
        top, bottom, left, right: imaging region bounds (pixels, inclusive).
        apex_x, apex_y: sector apex (pixels).
        radius_px: sector radius (pixels) = depth.
        half_angle: half the sector angle (radians).
        depth_cm: imaging depth (cm).
        spacing_cm: cm per pixel, both directions.
        n_beams, n_samples: polar grid size.
    """

    rows: int
    cols: int
    top: int
    bottom: int
    left: int
    right: int
    apex_x: float
    apex_y: float
    radius_px: float
    half_angle: float
    depth_cm: float
    spacing_cm: float
    n_beams: int
    n_samples: int


def scan_geometry(rows: int, cols: int, depth_cm: float, sector_deg: float) -> ScanGeometry:
    """Fit a sector of ``sector_deg`` and ``depth_cm`` between a text band and an ECG band."""
    top = max(5, round(0.085 * rows))
    ecg = max(8, round(0.13 * rows))
    half = math.radians(sector_deg / 2.0)
    radius = min(rows - top - ecg - 1.0, (cols - 4) / (2.0 * math.sin(half)))
    apex_x = (cols - 1) / 2.0
    span = radius * math.sin(half)
    return ScanGeometry(
        rows=rows,
        cols=cols,
        top=top,
        bottom=top + math.ceil(radius),
        left=max(0, math.floor(apex_x - span)),
        right=min(cols - 1, math.ceil(apex_x + span)),
        apex_x=apex_x,
        apex_y=float(top),
        radius_px=radius,
        half_angle=half,
        depth_cm=depth_cm,
        spacing_cm=depth_cm / radius,
        n_beams=int(np.clip(radius * 2 * half * 0.42, 32, 112)),
        n_samples=int(np.clip(radius * 0.62, 32, 168)),
    )


def polar_grid(g: ScanGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Image-cm coordinates ``(x, z)`` of the polar samples, each ``(n_samples, n_beams)``."""
    r = np.linspace(0.0, g.depth_cm, g.n_samples, dtype=np.float32)[:, None]
    th = np.linspace(-g.half_angle, g.half_angle, g.n_beams, dtype=np.float32)[None, :]
    return r * np.sin(th), r * np.cos(th)


def remap_maps(g: ScanGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps from the region's pixels to polar grid indices (outside: -5)."""
    ys, xs = np.mgrid[g.top : g.bottom + 1, g.left : g.right + 1].astype(np.float32)
    dx, dy = xs - g.apex_x, ys - g.apex_y
    r = np.sqrt(dx * dx + dy * dy) * g.spacing_cm
    th = np.arctan2(dx, dy)
    mx = (th + g.half_angle) / (2 * g.half_angle) * (g.n_beams - 1)
    my = r / g.depth_cm * (g.n_samples - 1)
    outside = (np.abs(th) > g.half_angle + 0.01) | (r > g.depth_cm * 1.005) | (dy < 0)
    mx[outside] = -5.0
    my[outside] = -5.0
    return mx.astype(np.float32), my.astype(np.float32)


@dataclass(frozen=True)
class Pose:
    """Scene-to-image transform: image = scale * R(rot) * scene + (tx, tz), in cm/degrees."""

    scale: float
    rot_deg: float
    tx: float
    tz: float

    def to_scene(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image cm -> scene cm."""
        c, s = math.cos(math.radians(self.rot_deg)), math.sin(math.radians(self.rot_deg))
        ux, uz = (x - self.tx) / self.scale, (z - self.tz) / self.scale
        return (c * ux + s * uz).astype(np.float32), (-s * ux + c * uz).astype(np.float32)

    def valve_to_image(self, v: Valve) -> Valve:
        """The valve's anchor and flow direction in image coordinates."""
        c, s = math.cos(math.radians(self.rot_deg)), math.sin(math.radians(self.rot_deg))
        x = self.scale * (c * v.x - s * v.z) + self.tx
        z = self.scale * (s * v.x + c * v.z) + self.tz
        return Valve(v.name, x, z, c * v.dx - s * v.dz, s * v.dx + c * v.dz, v.en_face)


@dataclass(frozen=True)
class Look:
    """Scanner display settings of one clip."""

    gain: float
    gamma: float
    tint: tuple[float, float, float]
    nyquist: float
    chest_wall_cm: float
    speckle_corr: float = 0.75


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip (no identity, no ground-truth labels).

    Attributes:
        view: scene name (a protocol view or ``subcostal``/``suprasternal``).
        doppler: valve under the colour box (``mv``/``av``/``tv``) or None for B-mode.
        frames, fps, heart_rate, sf, phase0: cine timing and the cardiac cycle.
        pose: scene placement; morph: valve morphology; jets: jets the clip shows.
        look: display settings; box: colour box as (depth_lo, depth_hi, angle_lo, angle_hi)
            in cm/radians, or None.
        seed: seed of the clip's noise generator.
    """

    view: str
    doppler: str | None
    frames: int
    fps: float
    heart_rate: float
    sf: float
    phase0: float
    pose: Pose
    morph: Morphology
    jets: ClipJets
    look: Look
    box: tuple[float, float, float, float] | None
    seed: int


SPECKLE_BANK = 4
SPECKLE_PAD = 9


def _speckle(
    rng: np.random.Generator, bank: np.ndarray, prev: np.ndarray | None, rho: float
) -> np.ndarray:
    """Next complex speckle field (re, im stacked): AR(1) in time, fresh part from a bank.

    Drawing a random window of a small bank of Gaussian fields is much cheaper than
    drawing a new field per frame and looks the same after the AR(1) blending.
    """
    k = int(rng.integers(bank.shape[0]))
    oy, ox = (int(v) for v in rng.integers(0, SPECKLE_PAD, 2))
    h, w = bank.shape[2] - SPECKLE_PAD, bank.shape[3] - SPECKLE_PAD
    fresh = bank[k, :, oy : oy + h, ox : ox + w]
    if prev is None:
        return np.array(fresh)
    return np.asarray(rho * prev + math.sqrt(1 - rho * rho) * fresh)


def _speckle_amp(c: np.ndarray) -> np.ndarray:
    import cv2

    re = cv2.GaussianBlur(c[0], (0, 0), sigmaX=1.1, sigmaY=0.7)
    im = cv2.GaussianBlur(c[1], (0, 0), sigmaX=1.1, sigmaY=0.7)
    return np.asarray(np.sqrt(re * re + im * im) * 1.6)


def _fields(
    r: np.ndarray, th: np.ndarray, g: ScanGeometry, look: Look
) -> tuple[np.ndarray, np.ndarray]:
    """Near-field clutter floor and depth/lateral gain of the polar grid (static per clip)."""
    near = np.where(r < look.chest_wall_cm, 0.55, 0.0) + 0.25 * np.exp(-r / 0.8)
    falloff = (1.0 - 0.3 * (r / g.depth_cm)) * (1.0 - 0.4 * (np.abs(th) / g.half_angle) ** 6)
    return near.astype(np.float32), (falloff * 255.0 ** (1 / look.gamma)).astype(np.float32)


def _bmode(
    e: np.ndarray, amp: np.ndarray, near: np.ndarray, falloff: np.ndarray, look: Look
) -> np.ndarray:
    x = np.maximum(e, near)
    x *= amp
    x *= falloff
    np.power(x, np.float32(look.gamma), out=x)
    x *= np.float32(look.gain)
    return np.asarray(np.minimum(x, 255.0))


def _box_slices(g: ScanGeometry, box: tuple[float, float, float, float]) -> tuple[slice, slice]:
    d0, d1, a0, a1 = box
    s0 = int(np.clip(math.floor(d0 / g.depth_cm * (g.n_samples - 1)), 0, g.n_samples - 2))
    s1 = int(np.clip(math.ceil(d1 / g.depth_cm * (g.n_samples - 1)) + 1, s0 + 2, g.n_samples))
    span = 2 * g.half_angle
    b0 = int(np.clip(math.floor((a0 + g.half_angle) / span * (g.n_beams - 1)), 0, g.n_beams - 2))
    b1 = int(
        np.clip(math.ceil((a1 + g.half_angle) / span * (g.n_beams - 1)) + 1, b0 + 2, g.n_beams)
    )
    return slice(s0, s1), slice(b0, b1)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    n = np.asarray(cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), 2.5))
    k = 0.3 / (float(n.std()) + 1e-6)
    return np.asarray(np.clip(1.0 + k * n, 0.5, 1.6), dtype=np.float32)


@dataclass
class Rendered:
    """A rendered clip before overlays.

    Attributes:
        sector: ``(T, h, w, 3)`` uint8 RGB of the region box ``[top..bottom, left..right]``.
        jet: ``(T, h, w)`` uint8 regurgitant-jet mask, or None.
        leaflets: ``(T, h, w)`` uint8 valve-leaflet mask, or None.
        phases: ``(T,)`` beat phase of each frame.
    """

    sector: np.ndarray
    jet: np.ndarray | None
    leaflets: np.ndarray | None
    phases: np.ndarray


def _doppler_frame(
    spec: ClipSpec,
    valves: list[Valve],
    st: object,
    x: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from echoscreen.synth.motion import CardiacState

    assert isinstance(st, CardiacState)
    flows = []
    for v in valves:
        if v.name == spec.doppler:
            flows += valve_flows(spec.pose.valve_to_image(v), st, spec.jets)
    vel, turb, jet = velocity_field(flows, x, z)
    rgb, alpha = colorize(vel, turb, spec.look.nyquist, rng)
    alpha *= np.where(turb > 0, 1.0, (e < 0.3).astype(np.float32))
    return rgb, alpha, jet


def _outline(polar: np.ndarray, rows: slice, cols: slice) -> None:
    """Draw the colour box edges (grey) on the polar RGB image, as scanners do."""
    edge = np.float32(150.0)
    polar[rows.start, cols] = edge
    polar[rows.stop - 1, cols] = edge
    polar[rows, cols.start] = edge
    polar[rows, cols.stop - 1] = edge


def _to_sector(img: np.ndarray, mx: np.ndarray, my: np.ndarray, interp: int) -> np.ndarray:
    """Resample a beam-grid image onto the screen (black outside the beam grid)."""
    import cv2

    return cv2.remap(img, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def render_clip(spec: ClipSpec, g: ScanGeometry, masks: bool = False) -> Rendered:
    """Render the sector of every frame of ``spec`` (the region box, RGB uint8)."""
    import cv2

    rng = np.random.default_rng(spec.seed)
    x, z = polar_grid(g)
    xs, zs = spec.pose.to_scene(x, z)
    near, falloff = _fields(np.sqrt(x * x + z * z), np.arctan2(x, z), g, spec.look)
    canvas = Canvas.for_grid(xs, zs)
    mx, my = remap_maps(g)
    box = _box_slices(g, spec.box) if spec.box is not None and spec.doppler else None
    texture = _texture(rng, x.shape)
    phases = frame_phases(spec.frames, spec.fps, spec.heart_rate, spec.phase0)
    tint = np.asarray(spec.look.tint, dtype=np.float32)
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * tint, 0, 255)
    lut = lut.astype(np.uint8).reshape(256, 1, 3)
    shape = (SPECKLE_BANK, 2, x.shape[0] + SPECKLE_PAD, x.shape[1] + SPECKLE_PAD)
    bank = rng.standard_normal(shape, dtype=np.float32)
    sector = np.empty((spec.frames, *mx.shape, 3), dtype=np.uint8)
    jet_out = np.zeros((spec.frames, *mx.shape), np.uint8) if masks else None
    leaf_out = np.zeros((spec.frames, *mx.shape), np.uint8) if masks else None
    c: np.ndarray | None = None
    for i, ph in enumerate(phases):
        st = cardiac_state(float(ph), spec.sf)
        prims, valves = SCENES[spec.view](st, spec.morph)
        e, leaf = paint(prims, canvas, masks)
        c = _speckle(rng, bank, c, spec.look.speckle_corr)
        gray = _bmode(e * texture, _speckle_amp(c), near, falloff, spec.look)
        jet = np.zeros(x.shape, dtype=bool)
        if box is None:
            gray8 = _to_sector(gray.astype(np.uint8), mx, my, cv2.INTER_LINEAR)
            sector[i] = cv2.LUT(cv2.cvtColor(gray8, cv2.COLOR_GRAY2RGB), lut)
        else:
            polar = gray[..., None] * tint
            rows, cols = box
            rgb, alpha, jet_box = _doppler_frame(
                spec, valves, st, x[rows, cols], z[rows, cols], e[rows, cols], rng
            )
            sub = polar[rows, cols]
            polar[rows, cols] = sub + alpha[..., None] * (rgb - sub)
            jet[rows, cols] = jet_box
            _outline(polar, rows, cols)
            polar8 = np.clip(polar, 0, 255).astype(np.uint8)
            sector[i] = _to_sector(polar8, mx, my, cv2.INTER_LINEAR)
        if jet_out is not None and leaf_out is not None and leaf is not None:
            jet_out[i] = _to_sector(jet.astype(np.uint8), mx, my, cv2.INTER_NEAREST)
            leaf_out[i] = _to_sector(leaf.astype(np.uint8), mx, my, cv2.INTER_NEAREST)
    return Rendered(sector, jet_out, leaf_out, phases)


def snap_box(
    g: ScanGeometry, box: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """The colour box as the polar grid actually covers it (depths cm, angles rad)."""
    rows, cols = _box_slices(g, box)
    step_d = g.depth_cm / (g.n_samples - 1)
    step_a = 2 * g.half_angle / (g.n_beams - 1)
    return (
        rows.start * step_d,
        (rows.stop - 1) * step_d,
        -g.half_angle + cols.start * step_a,
        -g.half_angle + (cols.stop - 1) * step_a,
    )
