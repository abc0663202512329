"""The cardiac cycle of the phantom: phase, contraction, valve opening and the ECG.

Phase ``phi`` runs over ``[0, 1)`` per beat with 0 at end-diastole (the R wave).
Systole occupies ``[0, sf)``, diastole ``[sf, 1)``, where the systolic fraction
``sf`` grows with heart rate (diastole shortens in tachycardia).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def systolic_fraction(heart_rate_bpm: float) -> float:
    """Fraction of the beat spent in systole (about 0.33 at 60 bpm, 0.45 at 140 bpm)."""
    return float(np.clip(0.33 + 0.0015 * (heart_rate_bpm - 60.0), 0.3, 0.48))


@dataclass(frozen=True)
class CardiacState:
    """Mechanical state of the heart at one instant (all values in [0, 1]).

    Attributes:
        phase: beat phase, 0 = end-diastole (R wave).
        systole: True during ventricular systole.
        sys_pos: position within systole (0..1), or -1 in diastole.
        dia_pos: position within diastole (0..1), or -1 in systole.
        contraction: 0 at end-diastole, 1 at end-systole (ventricles smallest).
        mitral_open: mitral (and tricuspid) opening, 0 closed.
        aortic_open: aortic (and pulmonary) opening, 0 closed.
    """

    phase: float
    systole: bool
    sys_pos: float
    dia_pos: float
    contraction: float
    mitral_open: float
    aortic_open: float


def _gauss(x: float, mu: float, sigma: float) -> float:
    return float(np.exp(-(((x - mu) / sigma) ** 2)))


def cardiac_state(phase: float, sf: float) -> CardiacState:
    """Mechanical state at beat phase ``phase`` for systolic fraction ``sf``."""
    phi = float(phase % 1.0)
    if phi < sf:
        u = phi / sf
        contraction = 0.5 - 0.5 * np.cos(np.pi * u)
        aortic = float(np.sin(np.pi * np.clip((u - 0.1) / 0.85, 0.0, 1.0)) ** 0.5)
        return CardiacState(phi, True, u, -1.0, float(contraction), 0.0, aortic)
    u = (phi - sf) / (1.0 - sf)
    contraction = 0.5 + 0.5 * np.cos(np.pi * min(u / 0.45, 1.0))
    contraction += 0.08 * _gauss(u, 0.88, 0.07)  # atrial kick filling is small
    e_wave = _gauss(u, 0.2, 0.14)
    a_wave = 0.8 * _gauss(u, 0.86, 0.09)
    mitral = max(e_wave, a_wave, 0.35 if 0.2 < u < 0.86 else 0.0)
    mitral *= float(np.clip(u / 0.05, 0.0, 1.0) * np.clip((1.0 - u) / 0.04, 0.0, 1.0))
    return CardiacState(phi, False, -1.0, u, float(np.clip(contraction, 0, 1)), mitral, 0.0)


def frame_phases(n_frames: int, fps: float, heart_rate_bpm: float, phase0: float) -> np.ndarray:
    """Beat phase of each frame, shape ``(n_frames,)``, for a clip starting at ``phase0``."""
    t = np.arange(n_frames, dtype=np.float64) / fps
    return np.asarray((phase0 + t * heart_rate_bpm / 60.0) % 1.0)


def ecg_wave(phase: np.ndarray, sf: float) -> np.ndarray:
    """Lead-II-like ECG amplitude (R peak = 1) at beat phases ``phase`` (any shape)."""
    p = np.mod(phase, 1.0)
    d = np.minimum(p, 1.0 - p)  # distance to the R wave
    signed = np.where(p < 0.5, p, p - 1.0)
    qrs = np.exp(-((d / 0.012) ** 2)) - 0.18 * np.exp(-(((signed + 0.03) / 0.012) ** 2))
    qrs -= 0.25 * np.exp(-(((signed - 0.03) / 0.012) ** 2))
    t_wave = 0.28 * np.exp(-(((p - 0.75 * sf) / (0.09 * sf + 0.02)) ** 2))
    p_wave = 0.12 * np.exp(-(((p - 0.9) / 0.025) ** 2))
    return np.asarray(qrs + t_wave + p_wave)
