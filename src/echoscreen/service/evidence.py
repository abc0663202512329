"""What the decision looked at: every clip's role in the evidence, and why a clip was not used.

The screener's ``evidence`` object lists only the clips given to the rhd model, so an
inconclusive result (no rhd run) listed none and said nothing of the clips behind it.
:func:`considered` adds, for every result, one entry per readable clip (its view and view
confidence, whether it was used, and if not, why) and one per file that gave no clip (its
reason), by index only: clips by their result index and upload ``file_index``, never by
a file name or a header value.
"""

from __future__ import annotations

from typing import Any

from echoscreen.models import RHD_VIEWS
from echoscreen.screen.screener import ScreenResult


def clip_reason(view: str, confidence: float, *, chosen: bool, used: bool,
                rules: dict[str, Any]) -> str | None:  # fmt: skip
    """Why a readable clip is not screening evidence (None when it is).

    Args:
        view: the predicted view; confidence: its probability.
        chosen: the clip was chosen as evidence (``Screener.choose_evidence``).
        used: the rhd model read it.
        rules: the package's decision rules (``min_view_confidence``, ``max_clips``).
    """
    low = float(rules["min_view_confidence"])
    if used:
        return None
    if view not in RHD_VIEWS:
        return f"view {view} is not an RHD view ({', '.join(RHD_VIEWS)})"
    if confidence < low:
        return f"view confidence {confidence:.2f} is below {low:.2f}"
    if not chosen:
        return f"not chosen: at most {int(rules['max_clips'])} evidence clips are read"
    return "chosen, but not read: the evidence lacks a required valve view"


def considered(result: ScreenResult, chosen: set[int], skipped: list[dict[str, Any]],
               rules: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Every clip and unusable file the decision looked at, clips first (result order).

    Args:
        result: the screener's result (clips with ``file`` = the upload index as text).
        chosen: result indexes of the clips chosen as evidence.
        skipped: ``{"file_index", "reason"}`` of the files that gave no clip.
        rules: the package's decision rules.

    Returns:
        ``[{"clip", "file_index", "view", "confidence", "used", "reason"}]``; a file that
        gave no clip has ``clip``, ``view`` and ``confidence`` None and ``used`` False.
    """
    out: list[dict[str, Any]] = []
    for c in result.clips:
        reason = clip_reason(c.view, c.confidence, chosen=c.index in chosen, used=c.evidence,
                             rules=rules)  # fmt: skip
        out.append({"clip": c.index, "file_index": int(c.file), "view": c.view,
                    "confidence": c.confidence, "used": c.evidence, "reason": reason})  # fmt: skip
    for s in skipped:
        out.append({"clip": None, "file_index": int(s["file_index"]), "view": None,
                    "confidence": None, "used": False, "reason": str(s["reason"])})  # fmt: skip
    return out
