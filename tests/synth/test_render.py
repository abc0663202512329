"""Rendering: jets measured in centimetres whatever the depth, jets only in their phase."""

from __future__ import annotations

import numpy as np
import pytest

from echoscreen.synth.anatomy import Morphology
from echoscreen.synth.doppler import ClipJets
from echoscreen.synth.motion import cardiac_state, systolic_fraction
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

LOOK = Look(gain=1.0, gamma=0.7, tint=(1.0, 1.0, 1.0), nyquist=0.6, chest_wall_cm=0.6)


def _spec(
    view: str, valve: str, jets: ClipJets, depth: float, phase0: float
) -> tuple[ClipSpec, ScanGeometry]:
    g = scan_geometry(240, 320, depth, 80.0)
    sf = systolic_fraction(60.0)
    box = snap_box(g, (2.0, depth - 0.2, -0.6, 0.6))
    spec = ClipSpec(
        view,
        valve,
        4,
        100.0,
        60.0,
        sf,
        phase0,
        Pose(1.0, 0.0, 0.0, 0.0),
        Morphology(),
        jets,
        LOOK,
        box,
        seed=3,
    )
    return spec, g


@pytest.mark.parametrize("depth", [12.0, 17.0])
def test_mr_jet_length_follows_physical_spacing(depth: float) -> None:
    spec, g = _spec("a4c", "mv", ClipJets(mr_cm=2.5), depth, phase0=0.1)
    out = render_clip(spec, g, masks=True)
    assert out.jet is not None and out.jet.any(axis=(1, 2)).all()  # every frame is systolic
    valve = next(
        v for v in SCENES["a4c"](cardiac_state(0.0, spec.sf), spec.morph)[1] if v.name == "mv"
    )
    ax = g.apex_x + valve.x / g.spacing_cm - g.left
    ay = g.apex_y + valve.z / g.spacing_cm - g.top
    ys, xs = np.nonzero(out.jet[0])
    length_px = np.hypot(xs - ax, ys - ay).max()
    assert length_px * g.spacing_cm == pytest.approx(2.5, abs=2.5 * g.spacing_cm + 0.1)
    # the jet is shown in colour where the mask says
    sector = out.sector[0].astype(int)
    chroma = sector.max(axis=-1) - sector.min(axis=-1) > 60
    assert chroma[out.jet[0] > 0].mean() > 0.5


def test_jets_only_in_their_phase() -> None:
    sf = systolic_fraction(60.0)
    late_diastole = sf + 0.6 * (1 - sf)
    spec, g = _spec("a4c", "mv", ClipJets(mr_cm=3.0), 14.0, phase0=late_diastole)
    assert not np.any(render_clip(spec, g, masks=True).jet)
    spec, g = _spec("a5c", "av", ClipJets(ar_cm=1.5), 14.0, phase0=0.1)  # systole: no AR
    assert not np.any(render_clip(spec, g, masks=True).jet)
    spec, g = _spec("a5c", "av", ClipJets(ar_cm=1.5), 14.0, phase0=late_diastole)
    assert np.any(render_clip(spec, g, masks=True).jet)


def test_early_systolic_jet_ends_before_systole_does() -> None:
    sf = systolic_fraction(60.0)
    spec, g = _spec("a4c", "mv", ClipJets(mr_cm=2.5, mr_duration=0.4), 14.0, phase0=0.7 * sf)
    assert not np.any(render_clip(spec, g, masks=True).jet)
    spec, g = _spec("a4c", "mv", ClipJets(mr_cm=2.5, mr_duration=1.0), 14.0, phase0=0.7 * sf)
    assert np.any(render_clip(spec, g, masks=True).jet)


def test_leaflets_move_over_the_cycle() -> None:
    sf = systolic_fraction(60.0)
    systole, _ = _spec("a4c", "mv", ClipJets(), 14.0, phase0=0.5 * sf)
    diastole, g = _spec("a4c", "mv", ClipJets(), 14.0, phase0=sf + 0.2 * (1 - sf))
    closed = render_clip(systole, g, masks=True).leaflets
    opened = render_clip(diastole, g, masks=True).leaflets
    assert closed is not None and opened is not None and closed[0].any() and opened[0].any()
    assert (closed[0] != opened[0]).mean() > 0.001
    # open leaflets reach further towards the apex (the top of the image)
    assert np.nonzero(opened[0])[0].min() < np.nonzero(closed[0])[0].min()
