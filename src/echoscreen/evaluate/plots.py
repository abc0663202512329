"""PNG plots for the report (matplotlib, Agg backend; nothing is shown on screen).

Each function draws one figure and writes it to ``path`` (PNG, 100 dpi).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on the compute site; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from echoscreen.evaluate import metrics as m


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def roc_plot(
    curves: dict[str, tuple[m.IntArray, m.FloatArray]],
    point: tuple[float, float] | None,
    path: Path,
) -> str:
    """ROC curves (one per score), with the operating point as ``(fpr, tpr)`` if given."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = m.roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {m.auroc(y, s):.3f})")
    if point is not None:
        ax.plot([point[0]], [point[1]], "ko", label="operating point")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="ROC")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def pr_plot(y: m.IntArray, s: m.FloatArray, path: Path) -> str:
    """Precision-recall curve with the prevalence as the chance line."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    precision, recall, _ = m.pr_curve(y, s)
    ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre",
            label=f"AP {m.average_precision(y, s):.3f}")  # fmt: skip
    ax.axhline(float(y.mean()), ls=":", color="grey", label="prevalence")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall",
           xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)


def reliability_plot(curve: list[dict[str, Any]], ece: float | None, path: Path, what: str) -> str:
    """Reliability diagram: observed frequency against mean predicted probability per bin."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pts = [(b["mean_prob"], b["frac_pos"], b["n"]) for b in curve if b["n"]]
    if pts:
        xs, ys, _ = zip(*pts, strict=True)
        ax.plot(xs, ys, "o-", label=f"ECE {ece:.3f}" if ece is not None else "")
        for x, yv, n in pts:
            ax.annotate(str(n), (x, yv), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set(xlabel=f"mean predicted {what}", ylabel="observed frequency", title="Reliability",
           xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def confusion_plot(labels: list[str], matrix: list[list[int]], title: str, path: Path) -> str:
    """Confusion matrix as a heat map with counts (rows true, columns predicted)."""
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(3.2, 1.4 + 0.65 * k), max(3.0, 1.2 + 0.6 * k)))
    a = np.array(matrix)
    ax.imshow(a, cmap="Blues")
    for i in range(k):
        for j in range(k):
            color = "white" if a[i, j] > a.max() / 2 else "black"
            ax.text(j, i, str(a[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def subgroup_plot(subgroups: dict[str, Any], path: Path) -> str:
    """Grouped bars of FNR and FPR per subgroup (sex, then age band)."""
    names, fnr, fpr = [], [], []
    for attr, table in subgroups.items():
        for g, row in table["groups"].items():
            names.append(f"{attr}={g}\n(n={row['n']})")
            fnr.append(row["fnr"] if row["fnr"] is not None else np.nan)
            fpr.append(row["fpr"] if row["fpr"] is not None else np.nan)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names)), 3.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, fnr, 0.4, label="false-negative rate")
    ax.bar(x + 0.2, fpr, 0.4, label="false-positive rate")
    ax.set_xticks(x, names, fontsize=7)
    ax.set(ylim=(0, 1), ylabel="rate at the operating point", title="Subgroups")
    ax.legend(fontsize=7)
    return _save(fig, path)


def aggregation_plot(agg: dict[str, Any], path: Path) -> str:
    """AUROC with its 95 % CI for each study-level aggregation method."""
    names = [n for n, e in agg.items() if e["auroc"]["value"] is not None]
    vals = np.array([agg[n]["auroc"]["value"] for n in names])
    cis = [agg[n]["auroc"]["ci"] or [v, v] for n, v in zip(names, vals, strict=True)]
    err = np.array([[v - c[0] for v, c in zip(vals, cis, strict=True)],
                    [c[1] - v for v, c in zip(vals, cis, strict=True)]])  # fmt: skip
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.bar(names, vals, yerr=err if names else None, capsize=4, color="tab:green")
    ax.set(ylim=(0, 1.05), ylabel="AUROC (95 % CI)", title="Study aggregation")
    return _save(fig, path)
