"""An `Evaluation` as one self-contained HTML page for a QA committee.

Everything is inside the file: the style sheet, and plots drawn here as inline SVG (ROC
curve with the operating point, score histograms by label, sensitivity and specificity
per scanner model with interval whiskers), so the page opens anywhere, offline, without
JavaScript, and can be archived with the minutes. Every value from the evaluation is
HTML-escaped: study UIDs, stratum values and card texts come from outside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

from radbridge.qa.evaluate import (
    AucEstimate,
    Breakdown,
    Evaluation,
    FindingResult,
    GroupResult,
    ModelResult,
)
from radbridge.qa.metrics import Agreement, Rate

POSITIVE_COLOUR, NEGATIVE_COLOUR = "#D55E00", "#0072B2"
SENSITIVITY_COLOUR, SPECIFICITY_COLOUR = "#0072B2", "#E69F00"
HISTOGRAM_BINS = 20
WIDTH, HEIGHT = 380, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 48
"""Margins around the plotting area: the legend and threshold label sit in the top one."""
STRATUM_TITLES = {"manufacturer": "Manufacturer", "model": "Scanner model",
                  "station": "Station", "sex": "Sex", "age_band": "Age band"}
"""Headings of the built-in strata; a labels column is shown under its own name."""
SCANNER_STRATUM = "model"
"""The breakdown the bar chart draws: ManufacturerModelName."""

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.small{background:#fff4d6}.flag{color:#8a5a00;font-weight:600}
.demo{background:#fde8e8;border:1px solid #d55;padding:.6em 1em;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;max-width:400px}figcaption{font-size:.9em;color:#444}
"""


def render_html(evaluation: Evaluation) -> str:
    """The whole report (see the module docstring)."""
    title = "Model evaluation on a held-out set"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>", _overview(evaluation), _reading_guide(evaluation),
        _summary(evaluation.models)]
    parts += [_model_section(model, evaluation.min_group) for model in evaluation.models]
    parts.append("</body></html>")
    return "\n".join(parts)


def _overview(evaluation: Evaluation) -> str:
    generated = evaluation.generated_at.strftime("%Y-%m-%d %H:%M %Z").strip()
    rows = [("Date", generated), ("Studies folder", evaluation.folder),
            ("Labels file", evaluation.labels_file),
            ("DICOM studies in the folder", str(evaluation.studies)),
            ("Studies with labels", str(evaluation.labelled_studies)),
            ("Confidence level of intervals", f"{evaluation.confidence:.0%}"),
            ("Small group: fewer studies than", str(evaluation.min_group))]
    return _table(None, rows)


def _reading_guide(evaluation: Evaluation) -> str:
    level = f"{evaluation.confidence:.0%}"
    return (
        "<p>Each model version was run on the held-out studies the way the engine runs "
        "it (same routing, preprocessing and model), and its call at the model card's "
        "threshold was compared with the label. Sensitivity: the share of labelled "
        "positives the model called positive; specificity: the share of labelled negatives "
        f"it called negative. Ranges in brackets are {escape(level)} confidence intervals "
        "(Wilson for rates, Hanley-McNeil for the AUC). Rows marked "
        f"<span class=\"flag\">small</span> hold fewer than {evaluation.min_group} "
        "studies: their numbers are shown but are too uncertain to act on alone.</p>")


def _summary(models: Sequence[ModelResult]) -> str:
    rows = [(m.name, m.version, f"{f.display} ({f.code})", str(len(f.records)),
             _auc(f.auc), _rate(f.agreement.sensitivity), _rate(f.agreement.specificity),
             _flag(f.agreement.small))
            for m in models for f in m.findings]
    return "<h2>Summary</h2>" + _table(
        ("Model", "Version", "Finding", "Studies", "AUC", "Sensitivity", "Specificity",
         "Flag"),
        rows, small=[f.agreement.small for m in models for f in m.findings])


def _model_section(model: ModelResult, min_group: int) -> str:
    parts = [f'<section><h2>{escape(model.name)} {escape(model.version)}</h2>']
    if model.demonstration:
        parts.append('<p class="demo">Demonstration model: trained on synthetic data, '
                     "not for clinical use.</p>")
    parts.append(_table(None, [
        ("Model", model.name), ("Version", model.version), ("Card SHA-256", model.card_sha256),
        ("Device identifier", model.device_identifier), ("Use case", model.use_case),
        ("Intended use", model.intended_use),
        ("Demonstration model", "yes" if model.demonstration else "no"),
        ("Run on", model.backend)]))
    parts += [_finding_section(finding, min_group) for finding in model.findings]
    if model.skipped:
        parts.append("<h3>Labelled studies the model did not run on</h3>"
                     "<p>Not counted above: the model does not take these studies, or "
                     "could not read them.</p>")
        parts.append(_table(("Study UID", "Reason"),
                            [(s.study_uid, s.reason) for s in model.skipped]))
    parts.append("</section>")
    return "\n".join(parts)


def _finding_section(finding: FindingResult, min_group: int) -> str:
    name = f"{finding.display} ({finding.system} {finding.code})"
    parts = [f"<h3>{escape(name)}</h3>",
             f"<p>{len(finding.records)} studies; the card calls a study positive at a "
             f"score of {finding.threshold:g} or more.</p>",
             '<div class="plots">', _roc_figure(finding), _histogram_figure(finding),
             _scanner_figure(finding.breakdown(SCANNER_STRATUM), min_group), "</div>",
             "<h4>At the card's threshold</h4>", _metrics_table(finding.agreement, finding.auc),
             _counts_table(finding.agreement)]
    for breakdown in finding.breakdowns:
        parts.append(f"<h4>By {escape(_title(breakdown.stratum).lower())}</h4>")
        parts.append(_breakdown_table(breakdown))
    return "\n".join(parts)


# ---- tables -----------------------------------------------------------------------------


def _table(columns: Sequence[str] | None, rows: Iterable[Sequence[str]],
           small: Sequence[bool] = ()) -> str:
    """Rows of text (escaped here); `columns` None: a two-column field/value table."""
    lines = ["<table>"]
    if columns is not None:
        lines.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>")
    for index, row in enumerate(rows):
        cells = [f"<th>{escape(row[0])}</th>" if columns is None
                 else f"<td>{escape(row[0])}</td>"]
        cells += [f'<td class="num">{escape(cell)}</td>' if columns and _numeric(cell)
                  else f'<td class="flag">{escape(cell)}</td>' if cell == "small"
                  else f"<td>{escape(cell)}</td>" for cell in row[1:]]
        marked = index < len(small) and small[index]
        lines.append(('<tr class="small">' if marked else "<tr>") + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell.startswith("-") or cell == "n/a")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _rate(rate: Rate) -> str:
    if rate.value is None:
        return "n/a (0/0)"
    return (f"{_percent(rate.value)} [{_percent(rate.low)}-{_percent(rate.high)}] "
            f"{rate.numerator}/{rate.denominator}")


def _auc(estimate: AucEstimate | None) -> str:
    if estimate is None:
        return "n/a"
    return f"{estimate.value:.3f} [{estimate.low:.3f}-{estimate.high:.3f}]"


def _flag(small: bool) -> str:
    return "small" if small else ""


def _title(stratum: str) -> str:
    return STRATUM_TITLES.get(stratum, stratum)


def _metrics_table(agreement: Agreement, estimate: AucEstimate | None) -> str:
    kappa = "n/a" if agreement.kappa is None else f"{agreement.kappa:.3f}"
    rows = [("AUC (area under the ROC curve)", _auc(estimate)),
            ("Sensitivity (positives called positive)", _rate(agreement.sensitivity)),
            ("Specificity (negatives called negative)", _rate(agreement.specificity)),
            ("Positive predictive value", _rate(agreement.ppv)),
            ("Negative predictive value", _rate(agreement.npv)),
            ("Agreement (all calls)", _rate(agreement.agreement)),
            ("AI positive rate", _rate(agreement.ai_positive_rate)),
            ("Label positive rate", _rate(agreement.radiologist_positive_rate)),
            ("Cohen's kappa", kappa)]
    if agreement.small:
        rows.append(("Group size", "small"))
    return _table(("Measure", "Value [interval] count"), rows)


def _counts_table(agreement: Agreement) -> str:
    c = agreement.counts
    return _table(("", "Label positive", "Label negative"),
                  [("AI positive", f"{c.tp} (true positive)", f"{c.fp} (false positive)"),
                   ("AI negative", f"{c.fn} (false negative)", f"{c.tn} (true negative)")])


def _breakdown_table(breakdown: Breakdown) -> str:
    rows = [(g.value, str(g.studies), str(g.agreement.counts.tp), str(g.agreement.counts.fp),
             str(g.agreement.counts.tn), str(g.agreement.counts.fn),
             _rate(g.agreement.sensitivity), _rate(g.agreement.specificity), _auc(g.auc),
             _flag(g.small)) for g in breakdown.groups]
    return _table((_title(breakdown.stratum), "Studies", "TP", "FP", "TN", "FN",
                   "Sensitivity", "Specificity", "AUC", "Flag"),
                  rows, small=[g.small for g in breakdown.groups])


# ---- plots ------------------------------------------------------------------------------


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _svg(label: str, body: Sequence[str], width: int = WIDTH) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
            f'viewBox="0 0 {width} {HEIGHT}" role="img" aria-label="{escape(label)}" '
            'font-family="Helvetica, Arial, sans-serif" font-size="11">'
            f"<title>{escape(label)}</title>" + "".join(body) + "</svg>")


def _x(value: float, width: int = WIDTH) -> float:
    return LEFT + value * (width - LEFT - RIGHT)


def _y(value: float) -> float:
    return HEIGHT - BOTTOM - value * (HEIGHT - TOP - BOTTOM)


def _text(x: float, y: float, content: str, anchor: str = "middle", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>'
            f"{escape(content)}</text>")


def _line(x1: float, y1: float, x2: float, y2: float, style: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {style}/>'


def _axes(x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]],
          y_ticks: Sequence[tuple[float, str]], width: int = WIDTH) -> list[str]:
    """Frame, grid, ticks and axis titles; tick positions are fractions of the axis."""
    body = []
    for at, label in y_ticks:
        body.append(_line(_x(0, width), _y(at), _x(1, width), _y(at), 'stroke="#e5e5e5"'))
        body.append(_text(LEFT - 6, _y(at) + 4, label, "end"))
    for at, label in x_ticks:
        body.append(_text(_x(at, width), HEIGHT - BOTTOM + 16, label))
    body.append(_line(_x(0, width), _y(0), _x(1, width), _y(0), 'stroke="#333"'))
    body.append(_line(_x(0, width), _y(0), _x(0, width), _y(1), 'stroke="#333"'))
    if x_label:
        body.append(_text(_x(0.5, width), HEIGHT - 10, x_label))
    middle = (_y(0) + _y(1)) / 2
    body.append(_text(14, middle, y_label, extra=f' transform="rotate(-90 14 {middle:.1f})"'))
    return body


FRACTION_TICKS = [(v, f"{v:g}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _roc_figure(finding: FindingResult) -> str:
    label = f"ROC curve of {finding.display}"
    body = _axes("False positive rate (1 - specificity)", "True positive rate (sensitivity)",
                 FRACTION_TICKS, FRACTION_TICKS)
    if not finding.roc:
        body.append(_text(_x(0.5), _y(0.5), "needs labelled positives and negatives"))
        return _figure(_svg(label, body), "No ROC curve: the labels hold one class only.")
    body.append(_line(_x(0), _y(0), _x(1), _y(1), 'stroke="#999" stroke-dasharray="4 4"'))
    points = " ".join(f"{_x(fpr):.1f},{_y(tpr):.1f}" for _, fpr, tpr in finding.roc)
    body.append(f'<polyline points="{points}" fill="none" stroke="{SENSITIVITY_COLOUR}" '
                'stroke-width="2"/>')
    sensitivity = finding.agreement.sensitivity.value
    specificity = finding.agreement.specificity.value
    if sensitivity is not None and specificity is not None:
        x, y = _x(1 - specificity), _y(sensitivity)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{POSITIVE_COLOUR}"/>')
        body.append(_text(x + 8, y + 14, f"threshold {finding.threshold:g}", "start"))
    if finding.auc is not None:
        body.append(_text(_x(0.95), _y(0.08), f"AUC {finding.auc.value:.3f}", "end"))
    caption = ("ROC curve: each point is one threshold, from calling nothing positive "
               "(bottom left) to calling everything positive (top right). The higher and "
               "further left the curve, the better; the dashed diagonal is chance, and the "
               "area under the curve is the AUC. The dot is the card's threshold, the "
               "operating point the engine uses.")
    return _figure(_svg(label, body), caption)


def _histogram_figure(finding: FindingResult) -> str:
    label = f"Score histogram of {finding.display} by label"
    bins = {True: [0] * HISTOGRAM_BINS, False: [0] * HISTOGRAM_BINS}
    for record in finding.records:
        index = min(int(record.score * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)
        bins[record.label][max(index, 0)] += 1
    top = max(1, *bins[True], *bins[False])
    step = max(1, math.ceil(top / 5))
    ceiling = step * math.ceil(top / step)
    y_ticks = [(v / ceiling, str(v)) for v in range(0, ceiling + 1, step)]
    body = _axes("Model score", "Studies", [(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)],
                 y_ticks)
    width = (_x(1) - _x(0)) / HISTOGRAM_BINS / 2
    for offset, (truth, colour) in enumerate(((True, POSITIVE_COLOUR),
                                              (False, NEGATIVE_COLOUR))):
        for index, count in enumerate(bins[truth]):
            if count:
                x = _x(index / HISTOGRAM_BINS) + offset * width
                body.append(f'<rect x="{x:.1f}" y="{_y(count / ceiling):.1f}" '
                            f'width="{width:.1f}" height="{_y(0) - _y(count / ceiling):.1f}" '
                            f'fill="{colour}"/>')
    x = _x(finding.threshold)
    body.append(_line(x, _y(0), x, _y(1), f'stroke="{POSITIVE_COLOUR}" stroke-dasharray="3 3"'))
    anchor = "end" if finding.threshold > 0.7 else "start" if finding.threshold < 0.3 else "middle"
    body.append(_text(x, TOP - 6, f"threshold {finding.threshold:g}", anchor))
    body += _legend([("labelled positive", POSITIVE_COLOUR),
                     ("labelled negative", NEGATIVE_COLOUR)])
    caption = ("Scores by label: orange bars count labelled positives, blue bars labelled "
               "negatives, per score interval of 0.05. The dashed line is the card's "
               "threshold: blue to its right are false positives, orange to its left false "
               "negatives. Well-separated colours mean the model tells the classes apart.")
    return _figure(_svg(label, body), caption)


def _legend(entries: Sequence[tuple[str, str]]) -> list[str]:
    """Colour keys in a row along the top margin, clear of the data."""
    body, x = [], float(LEFT)
    for name, colour in entries:
        body.append(f'<rect x="{x:.1f}" y="6" width="10" height="10" fill="{colour}"/>')
        body.append(_text(x + 14, 15, name, "start"))
        x += 24 + 6.5 * len(name)
    return body


def _scanner_figure(breakdown: Breakdown | None, min_group: int) -> str:
    label = "Sensitivity and specificity per scanner model"
    groups = breakdown.groups if breakdown is not None else ()
    width = max(WIDTH, LEFT + RIGHT + 96 * len(groups))
    body = _axes("", "Rate", [], FRACTION_TICKS, width)
    slot = (_x(1, width) - _x(0, width)) / max(len(groups), 1)
    for index, group in enumerate(groups):
        left = _x(0, width) + index * slot
        for offset, (rate, colour) in enumerate(((group.agreement.sensitivity,
                                                  SENSITIVITY_COLOUR),
                                                 (group.agreement.specificity,
                                                  SPECIFICITY_COLOUR))):
            body += _bar(left + slot * (0.15 + 0.35 * offset), slot * 0.3, rate, colour,
                         group.small)
        body += _slot_label(left + slot / 2, group)
    body += _legend([("sensitivity", SENSITIVITY_COLOUR), ("specificity", SPECIFICITY_COLOUR)])
    caption = ("Sensitivity (blue) and specificity (orange) at the card's threshold for each "
               "scanner model, with whiskers spanning the confidence interval. Pale bars "
               f"with a dashed outline are small groups (fewer than {min_group} studies): "
               "their whiskers are long, and a difference between them may be chance.")
    return _figure(_svg(label, body, width), caption)


def _bar(x: float, width: float, rate: Rate, colour: str, small: bool) -> list[str]:
    if rate.value is None:
        return [_text(x + width / 2, _y(0) - 4, "n/a")]
    look = ' fill-opacity="0.35" stroke-dasharray="3 2"' if small else ""
    body = [f'<rect x="{x:.1f}" y="{_y(rate.value):.1f}" width="{width:.1f}" '
            f'height="{_y(0) - _y(rate.value):.1f}" fill="{colour}" stroke="{colour}"{look}/>']
    if rate.low is not None and rate.high is not None:
        centre = x + width / 2
        body.append(_line(centre, _y(rate.low), centre, _y(rate.high), 'stroke="#222"'))
        for end in (rate.low, rate.high):
            body.append(_line(centre - 4, _y(end), centre + 4, _y(end), 'stroke="#222"'))
    return body


def _slot_label(centre: float, group: GroupResult) -> list[str]:
    words = group.value.split()
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + len(word) < 14:
            lines[-1] += f" {word}"
        else:
            lines.append(word[:16])
    lines = [*lines[:2], f"n={group.studies}" + (" small" if group.small else "")]
    return [_text(centre, HEIGHT - BOTTOM + 14 + 12 * row, line)
            for row, line in enumerate(lines)]
