"""The HTML report: one self-contained page (inline CSS) linking the PNGs beside it."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{margin:4px;border:1px solid #eee;vertical-align:top}.na{color:#999}"""


def fmt(e: dict[str, Any] | None) -> str:
    """An estimate as ``0.912 (0.850-0.960)`` or its reason when not computable."""
    if e is None:
        return '<span class="na">n/a</span>'
    if e.get("value") is None:
        return f'<span class="na">not computable: {escape(str(e.get("reason")))}</span>'
    ci = e.get("ci")
    text = f"{e['value']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    if "k" in e:
        text += f" [{e['k']}/{e['n']}]"
    return text


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else ('<span class="na">-</span>' if x is None
                                                     else escape(str(x)))  # fmt: skip


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(m: dict[str, Any], *keys: str) -> str:
    return "".join(f'<img src="{escape(m["plots"][k])}" alt="{k}">' for k in keys
                   if k in m["plots"])  # fmt: skip


def _operating_point(op: dict[str, Any]) -> str:
    if op.get("threshold") is None:
        return f'<p class="na">No operating point: {escape(str(op.get("reason")))}.</p>'
    return (f"<p>Threshold <b>{op['threshold']:.4f}</b> on P(screen-positive), chosen on the "
            f"<b>{escape(op['source'])}</b> split ({op['n_val']} studies) as the "
            f"{escape(op['rule'])}; there it gave sensitivity {_num(op['val_sensitivity'])} and "
            f"specificity {_num(op['val_specificity'])}.</p>")  # fmt: skip


def _subgroups(m: dict[str, Any]) -> str:
    parts = []
    for attr, table in m["subgroups"].items():
        rows = [[escape(g), str(r["n"]), str(r["n_pos"]), _num(r["auroc"]), _num(r["sensitivity"]),
                 _num(r["specificity"]), _num(r["fnr"]), _num(r["fpr"])]
                for g, r in table["groups"].items()]  # fmt: skip
        parts.append(
            f"<h3>{escape(attr)}</h3>"
            + _table(
                ["group", "n", "positives", "AUROC", "sensitivity", "specificity", "FNR", "FPR"],
                rows,
            )
        )
        for rate, gap in table["parity"].items():
            if gap["gap"] is None:
                text = f'<span class="na">{escape(gap["reason"])}</span>'
            else:
                pair = f"{escape(gap['max_group'])} vs {escape(gap['min_group'])}"
                text = f"{gap['gap']:.3f} ({pair})"
            parts.append(f"<p>{rate.upper()} parity gap (max - min): {text}</p>")
    return "".join(parts)


def _rhd_body(m: dict[str, Any]) -> str:
    names = {"auroc": "AUROC", "average_precision": "average precision",
             "sensitivity": "sensitivity at the operating point",
             "specificity": "specificity at the operating point",
             "accuracy_3class": "three-class accuracy"}  # fmt: skip
    rows = [[v, fmt(m[k])] for k, v in names.items()]
    for key, what in (("calibration", "ECE, P(screen-positive)"),
                      ("calibration_3class", "ECE, three-class top label")):  # fmt: skip
        cal = m[key]
        t = cal.get("temperature")
        how = "uncalibrated" if t is None else f"temperature-scaled on validation, T = {t:.2f}"
        null = cal.get("ece_if_calibrated")
        noise = "" if not null else (f" (a calibrated model would show {null['mean']:.3f} on "
                                     f"these cases, 95% up to {null['p95']:.3f})")  # fmt: skip
        rows.append([f"{what} ({how})", fmt(cal["ece"]) + escape(noise)])
    agg = [
        [
            escape(n),
            fmt(e["auroc"]),
            fmt(e["average_precision"]),
            fmt(e.get("auroc_attention_minus_this")),
        ]
        for n, e in m["aggregation"].items()
    ]
    return (
        f"<p>{m['n_studies']} studies with a label ({m['n_unlabelled_excluded']} unlabelled "
        f"excluded), {m['n_positive']} screen-positive (borderline or definite), prevalence "
        f"{_num(m['prevalence'])}.</p><h2>Operating point</h2>"
        + _operating_point(m["operating_point"]) +
        "<h2>Screening metrics (95 % CI)</h2>" + _table(["metric", "value"], rows)
        + _img(m, "roc", "pr", "calibration", "confusion_screen", "confusion_3class")
        + "<h2>Subgroups at the operating point</h2>" + _subgroups(m) + _img(m, "subgroups")
        + "<h2>Study-level aggregation</h2>"
        + _table(["method", "AUROC", "AP", "AUROC(attention) - AUROC(this)"], agg)
        + _img(m, "aggregation")
    )  # fmt: skip


def _view_body(m: dict[str, Any]) -> str:
    rows = [["view accuracy", fmt(m["view_accuracy"])],
            ["view top-label ECE", fmt(m["view_calibration"]["ece"])],
            ["Doppler accuracy (p >= 0.5)", fmt(m["doppler_accuracy"])],
            ["Doppler AUROC", fmt(m["doppler"]["auroc"])]]  # fmt: skip
    recall = [[escape(v), fmt(e)] for v, e in m["view_recall"].items()]
    return (
        f"<p>{m['n_clips']} clips ({m['n_view_known']} with a known view, "
        f"{m['n_doppler_known']} with a known mode).</p><h2>Metrics (95 % CI)</h2>"
        + _table(["metric", "value"], rows) + "<h3>Recall per view</h3>"
        + _table(["view", "recall"], recall)
        + _img(m, "confusion_view", "confusion_doppler", "calibration", "roc")
    )  # fmt: skip


def write_report(m: dict[str, Any], path: Path) -> None:
    """Write the report for the metrics ``m`` (as ``evaluate_run`` returns them) to ``path``."""
    boot = m["bootstrap"]
    body = _rhd_body(m) if m["task"] == "rhd" else _view_body(m)
    title = f"echoscreen evaluation: {m['task']} model, {m['split']} split"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>Run: <code>{escape(m['run'])}</code>. Split evaluated: <b>{escape(m['split'])}</b>. "
        f"AUROC/AP intervals: {escape(boot['method'])} ({boot['n']} replicates, seed "
        f"{boot['seed']}); proportions: Wilson score intervals.</p>{body}</body></html>\n"
    )
