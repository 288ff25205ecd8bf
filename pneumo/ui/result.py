"""What the page says about one analysed film: the headline, the score scale and "How to read this". No Gradio here.

The headline's order is the order of trust: an image that is not a frontal chest X-ray is said to be so first
(its population check means nothing: a photo has no age); then a film outside the population (by the patient's
age where known, else by its pixels); only then the verdict, with its score against the threshold and any caution.
"""

from __future__ import annotations

import html

from ..config import CLASS_NAMES
from ..infer.age import years
from ..infer.predictor import CROPPED, Prediction

NOT_CHEST = "Not a frontal chest X-ray? This model reads children's chest films; its answer does not apply"
COLOURS = {CLASS_NAMES[0]: "#2f6db3", CLASS_NAMES[1]: "#c0392b"}


def fmt(x: float) -> str:
    """Every score and threshold on the page is shown with this one rounding."""
    return f"{x:.3f}"


def scale_html(score: float, threshold: float, band: tuple[float, float] | None) -> str:
    """One pneumonia-score axis from 0 to 1: the threshold line, the borderline band, and this film's score."""
    pct = lambda x: f"{100 * min(max(x, 0.0), 1.0):.1f}%"  # noqa: E731
    band_div = "" if band is None else (
        f'<div title="borderline band" style="position:absolute;top:0;height:100%;left:{pct(band[0])};'
        f'width:calc({pct(band[1])} - {pct(band[0])});background:repeating-linear-gradient(45deg,#f3d36b55 0 4px,'
        f'#f3d36b99 4px 8px)"></div>')
    return (
        '<div class="score-scale" style="margin:8px 0 2px">'
        '<div style="position:relative;height:18px;font-size:0.8em;color:#333">'
        f'<span style="position:absolute;left:{pct(threshold)};transform:translateX(-50%);white-space:nowrap">'
        f'threshold {fmt(threshold)}</span></div>'
        '<div style="position:relative;height:16px;border-radius:3px;background:linear-gradient(90deg,'
        f'{COLOURS["NORMAL"]}33 0 {pct(threshold)},{COLOURS["PNEUMONIA"]}33 {pct(threshold)} 100%)">{band_div}'
        f'<div style="position:absolute;left:{pct(threshold)};top:-4px;height:24px;border-left:2px solid #222"></div>'
        f'<div class="score-marker" style="position:absolute;left:calc({pct(score)} - 7px);top:1px;width:14px;'
        'height:14px;border-radius:50%;background:#111;border:2px solid #fff"></div></div>'
        '<div style="display:flex;justify-content:space-between;gap:8px;font-size:0.8em;color:#555;margin-top:2px">'
        '<span>0 · normal</span><span>pneumonia score</span><span>pneumonia · 1</span></div></div>')


def file_line(name: str, truth: str | None = None) -> str:
    """The film this result belongs to (and, for an example, the dataset's own label, shown only now)."""
    known = "" if truth is None else (f" · dataset label: <b>{html.escape(truth)}</b> (Kermany et al. 2018, "
                                      "CC BY 4.0)")
    return (f'<div class="analysed-file" style="color:#555;font-size:0.9em">Result for '
            f'<b>{html.escape(name)}</b>{known}</div>')


def decision_html(p: Prediction, name: str, truth: str | None = None, band_accuracy: float | None = None) -> str:
    """The headline: why the answer does not apply, or the verdict with its score on the scale."""
    head = file_line(name, truth)
    if not p.assessed:
        title = {"chest": NOT_CHEST, "framing": CROPPED}.get(p.failed_check, p.population.headline)
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in p.reasons)
        return (f'{head}<div class="verdict not-assessed" style="font-size:1.5em;font-weight:700;color:#a04a00">'
                f'⚠️ Not assessed</div><div style="font-size:1.1em;font-weight:600">{html.escape(title)}.</div>'
                f'<ul style="margin:4px 0">{reasons}</ul><div style="color:#666;font-size:0.85em">No verdict, no score '
                f'and no heatmap: the film is shown as it is.</div>')
    band = p.band if p.borderline else None
    side = "at or above" if p.side == CLASS_NAMES[1] else "below"
    if band:
        odds = ("" if band_accuracy is None else
                f"; there, calls on new children were right {band_accuracy:.0%} of the time")
        note = (f"<b>Borderline</b>: the score {fmt(p.probability)} lies within {fmt(band[0])}-{fmt(band[1])}, where a "
                f"threshold set the same way on another sample of patients could fall on its other side{odds}. "
                "Read with care.")
    else:
        note = f"Pneumonia score {fmt(p.probability)}, {side} the threshold {fmt(p.threshold)}."
    cautions = "".join(f'<div class="caution" style="margin-top:4px;padding:4px 8px;background:#fff4d6;'
                       f'border-left:4px solid #d89b00">⚠️ {html.escape(c)}</div>' for c in p.warnings)
    return (f'{head}<div class="verdict" style="font-size:2em;font-weight:700;line-height:1.2;'
            f'color:{COLOURS[p.side]}">{p.side}{" <span style=font-size:0.5em>(borderline)</span>" if band else ""}'
            f'</div><div>{note}</div>{cautions}{scale_html(p.probability, p.threshold, p.band)}')


def error_html(message: str, title: str = "Could not read this file") -> str:
    return (f'<div class="verdict upload-error" style="font-size:1.5em;font-weight:700;color:#a00">'
            f'{html.escape(title)}</div><div>{html.escape(message)}</div>')


def threshold_origin(p: Prediction) -> str:
    """Where the threshold in use came from, in words (the Model tab has the figures)."""
    if p.threshold_source == "validation":
        return "chosen on validation patients so that sensitivity stays at or above 0.95"
    return (f"set by `pneumo calibrate` on a site's own films ({html.escape(p.threshold_source)}; the Model tab "
            "says how)")


def reading_guide(p: Prediction, details: str) -> str:
    """"How to read this": a few plain sentences for this result; the method's names live in the Model tab."""
    if not p.assessed:
        hint = ("" if p.failed_check != "population" or p.population.source else
                " If the patient is a child aged 1-5, enter the age beside the upload: the film is then assessed, "
                "with a caution.")
        return ("The model's answer does not apply to this image, so there is no verdict, no score and no heatmap "
                f"to read: the film is shown as it is.{hint}\n\n" + details)
    lungs = "" if p.heat_in_lungs is None else (
        f" **{p.heat_in_lungs:.0%}** of it falls inside the lung fields (the outline switch draws them).")
    reads = (" The model reads only the lung fields; the rest of the film adds nothing to the score."
             if p.reads_lungs_only else "")
    return (f"**The colours** mark the parts of the film that pushed the score towards **{p.side}**, red the "
            f"most. They are not an outline of disease.{lungs}{reads} The outer edge of the film is not used "
            "(markers and text sit there).\n\n"
            f"**The score** runs from 0 (normal) to 1 (pneumonia). The threshold {fmt(p.threshold)} was "
            f"{threshold_origin(p)}; at or above it the model says PNEUMONIA. The shaded part of the scale is the "
            "borderline band: scores a threshold set on other patients could put on either side.\n\n"
            "**Not a diagnosis.** The model knows children aged 1-5 from one hospital." + _age_line(p) + "\n\n"
            + details)


def _age_line(p: Prediction) -> str:
    if p.population.age is None:
        return " No age was given: the checks went by the pixels."
    where = "you gave" if p.population.source == "declared" else "the DICOM header gives"
    return f" The age {where}, {years(p.population.age)}, is in the intended range."
