"""The model card (``model_card.md``) of a package, written from its metrics at publish time."""

from __future__ import annotations

from typing import Any


def _est(e: dict[str, Any] | None) -> str:
    """``0.912 (95% CI 0.85-0.96)``, or ``not computable (reason)``."""
    if not e or e.get("value") is None:
        return f"not computable ({(e or {}).get('reason') or 'not evaluated'})"
    ci = e.get("ci")
    extra = f", {e['k']}/{e['n']}" if "k" in e else ""
    return f"{e['value']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}{extra})" if ci else extra)


def _gaps(rhd: dict[str, Any]) -> list[str]:
    rows = ["| attribute | FNR gap | FPR gap | groups (n) |", "|---|---|---|---|"]
    for attr, table in (rhd.get("subgroups") or {}).items():
        gap = {r: table["parity"][r].get("gap") for r in ("fnr", "fpr")}
        fmt = {r: "n/a" if g is None else f"{g:.3f}" for r, g in gap.items()}
        groups = ", ".join(f"{g} ({m.get('n', '?')})" for g, m in table["groups"].items())
        rows.append(f"| {attr} | {fmt['fnr']} | {fmt['fpr']} | {groups} |")
    return rows


def model_card(meta: dict[str, Any], rhd: dict[str, Any], view: dict[str, Any]) -> str:
    """Markdown model card: intended use, data, metrics with CIs, subgroup gaps, limitations.

    Args:
        meta: the package.json content.
        rhd: metrics of the rhd run (``echoscreen evaluate`` format, test split).
        view: metrics of the view run.
    """
    op = meta["operating_point"]
    m = meta["models"]
    prev = rhd.get("prevalence")
    lines = [
        f"# Model card: {meta['name']}:{meta['version']}", "",
        f"Published {meta['created_at']} with echoscreen {meta['echoscreen_version']}.", "",
        "## Intended use", "",
        "A **screening aid** for Rheumatic Heart Disease in children and young people: it "
        "flags echocardiogram studies that should get a confirmatory echocardiogram and an "
        "expert reading. It is **not a diagnosis**, not a replacement for a cardiologist, "
        "and not validated for treatment decisions. A study without a mitral-valve and an "
        "aortic-valve view is reported as inconclusive, never guessed.", "",
        "## Data", "",
        "Trained and evaluated on the **echoscreen phantom** (synthetic echocardiograms "
        "with simulated RHD findings; enriched prevalence), patient-level train/val/test "
        "splits. No real patient data: performance on real echocardiograms is unknown.", "",
        f"- RHD model: run `{meta['sources']['rhd_run']}`, best epoch "
        f"{m['rhd']['best_epoch']}, input {m['rhd']['input']['frames']} frames x "
        f"{m['rhd']['input']['size']} px, size `{m['rhd']['model_config']['size']}`.",
        f"- View model: run `{meta['sources']['view_run']}`, best epoch "
        f"{m['view']['best_epoch']}, input {m['view']['input']['frames']} frames x "
        f"{m['view']['input']['size']} px.",
        f"- Stored clips: {meta['preprocess']['frames']} frames x {meta['preprocess']['size']} "
        f"px, made by clip reader `{meta['preprocess'].get('reader') or 'not recorded'}`; "
        "screening refuses this package under an echoscreen whose reader differs.",
        f"- Test split: {rhd.get('n_studies', '?')} studies, prevalence "
        f"{'n/a' if prev is None else f'{prev:.3f}'}; view test clips: {view.get('n_clips', '?')}.",
        "",
        "## Operating point", "",
        f"p(screen-positive) >= **{op['threshold']:.4f}** means screen-positive; chosen on the "
        f"{op.get('source', 'validation')} split ({op.get('n_val', '?')} studies): "
        f"{op.get('rule', '')}.", "",
        "## Metrics (test split, 95% CIs)", "",
        "| metric | value |", "|---|---|",
        f"| AUROC (screen-positive) | {_est(rhd.get('auroc'))} |",
        f"| average precision | {_est(rhd.get('average_precision'))} |",
        f"| sensitivity at the operating point | {_est(rhd.get('sensitivity'))} |",
        f"| specificity at the operating point | {_est(rhd.get('specificity'))} |",
        f"| three-class accuracy | {_est(rhd.get('accuracy_3class'))} |",
        f"| calibration ECE | {_est((rhd.get('calibration') or {}).get('ece'))} |",
        f"| view accuracy | {_est(view.get('view_accuracy'))} |",
        f"| colour Doppler accuracy | {_est(view.get('doppler_accuracy'))} |", "",
        "## Subgroup gaps (test split)", "",
        "False-negative-rate and false-positive-rate parity gaps (largest minus smallest "
        "group rate; 0 is parity). Small groups give noisy rates.", "",
        *_gaps(rhd), "",
        "## Limitations", "",
        "- Synthetic training data; expect a drop on real scanners, operators and "
        "populations until validated on them.",
        "- Small test sets give wide intervals; read every number with its CI.",
        "- Views are predicted by the package's view model; a misclassified view can "
        "bring the wrong clips into the decision or make a study inconclusive.",
        "- Only the clip types it was trained on (B-mode and colour Doppler cine of the "
        "phantom's views); spectral Doppler, M-mode and stills are not understood.", "",
    ]  # fmt: skip
    return "\n".join(lines)
