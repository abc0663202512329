"""RHD findings of a phantom study and the World Heart Federation 2012 rules that label them.

WHF 2012 criteria for people aged <= 20 years (Remenyi et al., Nat Rev Cardiol 2012):

Pathological MR: seen in 2 views, jet >= 2 cm in at least one view, pan-systolic
(velocity >= 3 m/s is assumed for every phantom regurgitant jet: colour only).
Pathological AR: seen in 2 views, jet >= 1 cm in at least one view, pan-diastolic.
Mitral RHD features: anterior leaflet thickening >= 3 mm, chordal thickening,
restricted leaflet motion, excessive leaflet tip motion during systole.
Aortic RHD features: irregular or focal thickening, coaptation defect, restricted
leaflet motion, prolapse.

Definite RHD: (A) pathological MR and >= 2 mitral features; (C) pathological AR and
>= 2 aortic features; (D) borderline disease of both the aortic and the mitral valve.
(Criterion B, mitral stenosis, is not simulated.)
Borderline RHD: (A) >= 2 mitral features without pathological MR; (B) pathological MR;
(C) pathological AR. Normal otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MV_FEATURES = ("almv_thickening", "chordal_thickening", "restricted_mv", "excessive_tip_motion")
AV_FEATURES = ("av_thickening", "av_coaptation_defect", "restricted_av", "av_prolapse")
MR_MIN_CM = 2.0
AR_MIN_CM = 1.0
ALMV_THICK_MM = 3.0


@dataclass(frozen=True)
class Jet:
    """A regurgitant jet as the study's colour clips show it.

    Attributes:
        lengths: ``(view, length_cm)`` for every view whose colour clip shows the jet.
        full_phase: pan-systolic (MR) or pan-diastolic (AR); otherwise the jet lasts
            only ``duration`` of the phase.
        duration: fraction of systole (MR) / diastole (AR) the jet lasts, 1 when full.
        eccentricity_deg: deviation of the jet axis from the valve axis.
    """

    lengths: tuple[tuple[str, float], ...]
    full_phase: bool
    duration: float = 1.0
    eccentricity_deg: float = 0.0

    @property
    def max_cm(self) -> float:
        """Longest jet length over the views, in cm."""
        return max((length for _, length in self.lengths), default=0.0)

    @property
    def n_views(self) -> int:
        """Number of distinct views in which the jet is seen."""
        return len({view for view, _ in self.lengths})

    def length_in(self, view: str) -> float:
        """Jet length in ``view`` (0 when the view does not show it)."""
        return max((length for v, length in self.lengths if v == view), default=0.0)


@dataclass(frozen=True)
class StudyFindings:
    """Everything abnormal (or physiological) about one phantom heart.

    Attributes:
        mr: mitral regurgitant jet, or None.
        ar: aortic regurgitant jet, or None.
        mv_features: subset of :data:`MV_FEATURES`.
        av_features: subset of :data:`AV_FEATURES`.
        almv_thickness_mm: anterior mitral leaflet thickness (>= 3 mm is a feature).
        av_thickness_mm: aortic cusp thickness.
    """

    mr: Jet | None = None
    ar: Jet | None = None
    mv_features: frozenset[str] = field(default_factory=frozenset)
    av_features: frozenset[str] = field(default_factory=frozenset)
    almv_thickness_mm: float = 2.0
    av_thickness_mm: float = 1.2


def pathological_mr(jet: Jet | None) -> bool:
    """WHF pathological MR: >= 2 views, >= 2 cm in one, pan-systolic."""
    return jet is not None and jet.n_views >= 2 and jet.max_cm >= MR_MIN_CM and jet.full_phase


def pathological_ar(jet: Jet | None) -> bool:
    """WHF pathological AR: >= 2 views, >= 1 cm in one, pan-diastolic."""
    return jet is not None and jet.n_views >= 2 and jet.max_cm >= AR_MIN_CM and jet.full_phase


def whf_criterion(f: StudyFindings) -> str:
    """The WHF 2012 category and criterion letter, e.g. ``"definite-A"`` or ``"normal"``."""
    mr, ar = pathological_mr(f.mr), pathological_ar(f.ar)
    n_mv, n_av = len(f.mv_features), len(f.av_features)
    if mr and n_mv >= 2:
        return "definite-A"
    if ar and n_av >= 2:
        return "definite-C"
    mitral_borderline = mr or n_mv >= 2
    if mitral_borderline and ar:
        return "definite-D"
    if n_mv >= 2:
        return "borderline-A"
    if mr:
        return "borderline-B"
    if ar:
        return "borderline-C"
    return "normal"


def whf_label(f: StudyFindings) -> str:
    """The study label: ``"normal"``, ``"borderline"`` or ``"definite"`` (WHF 2012)."""
    return whf_criterion(f).split("-")[0]


# ---- sampling findings for a target label -------------------------------------------------


def _jet(
    rng: np.random.Generator, views: tuple[str, ...], lo: float, hi: float, n: int, full: bool
) -> Jet:
    chosen = [str(v) for v in rng.permutation(np.array(views))[:n]]
    top = float(rng.uniform(lo, hi))
    lengths = [(chosen[0], round(top, 2))]
    lengths += [(v, round(top * float(rng.uniform(0.75, 1.0)), 2)) for v in chosen[1:]]
    duration = 1.0 if full else float(rng.uniform(0.3, 0.6))
    return Jet(tuple(lengths), full, duration, float(rng.uniform(-25, 25)))


def _path_mr(rng: np.random.Generator, views: tuple[str, ...]) -> Jet:
    return _jet(rng, views, MR_MIN_CM, 4.0, len(views), True)


def _path_ar(rng: np.random.Generator, views: tuple[str, ...]) -> Jet:
    return _jet(rng, views, AR_MIN_CM, 2.5, len(views), True)


def _physiological(
    rng: np.random.Generator, views: tuple[str, ...], limit: float, p_none: float
) -> Jet | None:
    """A jet that does not meet the WHF criteria: short, single-view, or not pan-phase."""
    kind = rng.random()
    if kind < p_none:
        return None
    kind = rng.random()
    if kind < 0.55:  # short, in one or two views
        return _jet(rng, views, 0.3 * limit, 0.95 * limit, int(rng.integers(1, 3)), True)
    if kind < 0.8:  # long enough but in one view only
        return _jet(rng, views, limit, 1.4 * limit, 1, True)
    return _jet(rng, views, 0.7 * limit, 1.4 * limit, 2, False)  # not pan-systolic/diastolic


def _features(rng: np.random.Generator, names: tuple[str, ...], lo: int, hi: int) -> frozenset[str]:
    n = int(rng.integers(lo, hi + 1))
    return frozenset(str(x) for x in rng.permutation(np.array(names))[:n])


def _candidate(
    label: str, rng: np.random.Generator, mv_views: tuple[str, ...], av_views: tuple[str, ...]
) -> StudyFindings:
    mv_few = _features(rng, MV_FEATURES, 0, 1) if rng.random() < 0.3 else frozenset()
    av_few = _features(rng, AV_FEATURES, 0, 1) if rng.random() < 0.2 else frozenset()
    mr_phys = _physiological(rng, mv_views, MR_MIN_CM, 0.45)
    ar_phys = _physiological(rng, av_views, AR_MIN_CM, 0.7)
    if label == "normal":
        return StudyFindings(mr_phys, ar_phys, mv_few, av_few)
    scenario = rng.random()
    if label == "borderline":
        if scenario < 0.35:
            return StudyFindings(mr_phys, ar_phys, _features(rng, MV_FEATURES, 2, 3), av_few)
        if scenario < 0.75:
            return StudyFindings(_path_mr(rng, mv_views), ar_phys, mv_few, av_few)
        return StudyFindings(mr_phys, _path_ar(rng, av_views), mv_few, av_few)
    mv_many = _features(rng, MV_FEATURES, 2, 4)
    if scenario < 0.55:
        return StudyFindings(_path_mr(rng, mv_views), ar_phys, mv_many, av_few)
    if scenario < 0.75:
        return StudyFindings(
            mr_phys, _path_ar(rng, av_views), mv_few, _features(rng, AV_FEATURES, 2, 3)
        )
    if scenario < 0.9:
        return StudyFindings(_path_mr(rng, mv_views), _path_ar(rng, av_views), mv_few, av_few)
    return StudyFindings(mr_phys, _path_ar(rng, av_views), mv_many, av_few)


def sample_findings(
    label: str, rng: np.random.Generator, mv_views: tuple[str, ...], av_views: tuple[str, ...]
) -> StudyFindings:
    """Draw findings whose WHF label is ``label``.

    Args:
        label: target label, one of normal/borderline/definite.
        rng: the study's generator.
        mv_views: views with a colour clip over the mitral valve (at least 2).
        av_views: views with a colour clip over the aortic valve (at least 2).
    """
    for _ in range(100):
        f = _candidate(label, rng, mv_views, av_views)
        if whf_label(f) == label:
            almv = rng.uniform(3.2, 6.0) if "almv_thickening" in f.mv_features else None
            avt = rng.uniform(2.5, 4.0) if "av_thickening" in f.av_features else None
            return StudyFindings(
                f.mr,
                f.ar,
                f.mv_features,
                f.av_features,
                round(float(almv if almv is not None else rng.uniform(1.5, 2.6)), 1),
                round(float(avt if avt is not None else rng.uniform(0.9, 1.5)), 1),
            )
    raise AssertionError(f"could not draw findings for label {label!r}")  # pragma: no cover
