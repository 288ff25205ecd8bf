"""The Gradio app: drop an X-ray, get a verdict where the model applies, a score scale and a Grad-CAM overlay.

The model runs once per upload or example click; the opacity slider and the heatmap and lung-outline switches
only re-draw the stored heatmap and lung map. A file that cannot be read gets its reason in the result area,
where it stays until the next upload, and one line in the server log (no traceback: it is the user's file).
"""

from __future__ import annotations

import html
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from ..config import CLASS_NAMES, ROOT, delete_after_seconds
from ..infer import gradcam, lung_fields, population
from ..infer.predictor import Prediction, Predictor
from ..io import DecodedImage, read_image
from .cache import Sweeper, cache_image, files_written_since

log = logging.getLogger("pneumo.app")
EXAMPLES = ROOT / "examples"
DISCLAIMER = ("**Research demo, not a medical device.** Trained on pediatric (1-5 years) frontal chest X-rays "
              "from one hospital; it does not diagnose and must not guide care. Upload the whole film as exported: "
              "a crop or added borders change its answer (docs/safety.md).")
ACCEPTED = "JPEG, PNG or DICOM (.dcm or no extension)"
PREVIEW_PX = 1024  # longest side of the "what was read" preview; the overlay keeps the original size
NOT_CHEST = "Not a frontal chest X-ray? This model reads children's chest films; its answer does not apply"
COLOURS = {CLASS_NAMES[0]: "#2f6db3", CLASS_NAMES[1]: "#c0392b"}
# System fonts only: web fonts are not reachable offline, and a half-loaded font changes letters mid-word.
THEME = gr.themes.Default(font=["system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])
CSS = """
#model-card table { font-size: 0.85em; }
#model-card th, #model-card td { word-break: keep-all; overflow-wrap: normal; }
#model-card th, #model-card td:not(:last-child) { white-space: nowrap; }
"""


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
        '<div class="score-scale" style="margin:10px 0 4px">'
        '<div style="position:relative;height:18px;font-size:0.8em;color:#333">'
        f'<span style="position:absolute;left:{pct(threshold)};transform:translateX(-50%);white-space:nowrap">'
        f'threshold {fmt(threshold)}</span></div>'
        '<div style="position:relative;height:16px;border-radius:3px;background:linear-gradient(90deg,'
        f'{COLOURS["NORMAL"]}33 0 {pct(threshold)},{COLOURS["PNEUMONIA"]}33 {pct(threshold)} 100%)">{band_div}'
        f'<div style="position:absolute;left:{pct(threshold)};top:-4px;height:24px;border-left:2px solid #222"></div>'
        f'<div class="score-marker" style="position:absolute;left:calc({pct(score)} - 7px);top:1px;width:14px;'
        'height:14px;border-radius:50%;background:#111;border:2px solid #fff"></div></div>'
        '<div style="display:flex;justify-content:space-between;font-size:0.8em;color:#555;margin-top:2px">'
        '<span>0 · NORMAL side</span><span>pneumonia score</span><span>PNEUMONIA side · 1</span></div></div>')


def decision_html(p: Prediction, band: tuple[float, float] | None) -> str:
    """The headline: the verdict where the model applies, else why it does not (the score small, secondary)."""
    if not p.assessed:
        headline = population.HEADLINE if not p.in_population else NOT_CHEST
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in p.population_reasons + p.chest_reasons)
        return (f'<div class="verdict not-assessed" style="font-size:1.5em;font-weight:700;color:#a04a00">'
                f'⚠️ Not assessed</div><div style="font-size:1.15em;font-weight:600">{html.escape(headline)}.</div>'
                f'<ul style="margin:6px 0">{reasons}</ul><div style="color:#666;font-size:0.85em">The model\'s '
                f'pneumonia score would be {fmt(p.probability)} (threshold {fmt(p.threshold)}); it is not '
                f'meaningful for this image.</div>')
    near = band is not None and band[0] <= p.probability <= band[1]
    side = "above" if p.label == CLASS_NAMES[1] else "below"
    note = (f"Borderline: the score {fmt(p.probability)} is inside the band where validation patients of both "
            f"classes fall ({fmt(band[0])}-{fmt(band[1])}); read with care." if near else
            f"Pneumonia score {fmt(p.probability)}, {side} the threshold {fmt(p.threshold)}"
            + ("" if band is None else f" and outside the borderline band ({fmt(band[0])}-{fmt(band[1])})") + ".")
    return (f'<div class="verdict" style="font-size:2em;font-weight:700;color:{COLOURS[p.label]}">{p.label}'
            f'{" <span style=font-size:0.5em>(borderline)</span>" if near else ""}</div>'
            f'<div>{note}</div>{scale_html(p.probability, p.threshold, band)}')


def error_html(message: str) -> str:
    return (f'<div class="verdict upload-error" style="font-size:1.5em;font-weight:700;color:#a00">'
            f'Could not read this file</div><div>{html.escape(message)}</div>')


@dataclass
class Analysis:
    name: str  # the file name the user knows (Gradio stores uploads under a random folder)
    image: DecodedImage
    prediction: Prediction
    seconds: float


class Service:
    """The app's logic and its event handlers: analyse a file, render an overlay, describe a result."""

    def __init__(self, predictor: Predictor, cache_dir: str, examples: list[Path]):
        self.predictor = predictor
        self.cache_dir = cache_dir  # Gradio's cache: files there are served as they are and deleted on schedule
        self.examples = examples

    def analyze(self, path: str | None) -> Analysis:
        """Raises ValueError with the reader's plain message for files that cannot be read."""
        if not path:
            raise ValueError(f"Drop a chest X-ray first ({ACCEPTED}).")
        started, name = time.perf_counter(), Path(path).name
        image = read_image(path, name=name)
        prediction = self.predictor.analyze(image)
        return Analysis(name, image, prediction, time.perf_counter() - started)

    @staticmethod
    def render(analysis: Analysis | None, opacity: float, show_heatmap: bool,
               show_lungs: bool = False) -> np.ndarray | None:
        if analysis is None:
            return None
        p = analysis.prediction
        if not show_heatmap or p.heatmap is None:
            rgb = np.repeat(analysis.image.gray[..., None], 3, axis=-1)
        else:
            rgb = gradcam.overlay(analysis.image.gray, p.heatmap, float(opacity))
        return lung_fields.outline(rgb, p.lung_fields) if show_lungs and p.lung_fields is not None else rgb

    @staticmethod
    def describe(analysis: Analysis) -> str:
        p = analysis.prediction
        width, height = analysis.image.size
        return (f"Operating threshold **{fmt(p.threshold)}** on the pneumonia score, {threshold_origin(p)}; at or "
                f"above it the model says PNEUMONIA.\n\n"
                + (f"The heatmap marks the regions that pushed the score towards **{p.label}** " if p.assessed else
                   "Not assessed, so the heatmap only shows what moved a score that does not apply here "
                   "") +
                ("(Grad-CAM in its gradient × activation form, HiResCAM, at `block5_conv3`)" if p.reads_lungs_only
                 else "(Grad-CAM, `block5_conv3`)") +
                "; it is not a segmentation of disease. The outer 10% of each side "
                "is not used by the model (markers and text sit there).\n\n"
                + ("" if p.heat_in_lungs is None else
                   f"**{p.heat_in_lungs:.0%}** of the heat falls inside the lung fields the lung head outlines "
                   f"(they cover {float(p.lung_fields.mean()):.0%} of what the model sees).\n\n") +
                ("The score is read from the lung fields only: the model averages its features over them, so "
                 "places outside the lungs add nothing to it and get no heat (each place the model reads still "
                 "sees some of its surroundings).\n\n" if p.reads_lungs_only else "") +
                f"<small>{html.escape(analysis.name)}: {analysis.image.format}, {width}x{height} px; "
                f"analysed in {analysis.seconds * 1000:.0f} ms."
                f"</small>")

    def api(self, path: str | None) -> tuple[dict, np.ndarray]:
        """The /predict endpoint: the result JSON and the overlay at the original size."""
        try:
            analysis = self.analyze(path)
        except ValueError as err:
            log.warning("rejected upload: %s", err)
            raise gr.Error(str(err), print_exception=False) from None
        p = analysis.prediction
        result = {**p.to_json(), "probabilities": p.class_probabilities,
                  "width": analysis.image.size[0], "height": analysis.image.size[1]}
        return result, self.render(analysis, 0.5, True)

    # --- event handlers -------------------------------------------------------------------------------------

    def shown(self, analysis: Analysis | None, opacity: float, show_heatmap: bool,
              show_lungs: bool = False) -> str | None:
        """The overlay as a JPEG: fast to encode, and only for display."""
        return cache_image(self.render(analysis, opacity, show_heatmap, show_lungs), self.cache_dir, ".jpg")

    def on_upload(self, path: str | None, opacity: float, show_heatmap: bool, show_lungs: bool = False):
        try:
            analysis = self.analyze(path)
        except ValueError as err:  # the reason stays in the result area until the next upload
            log.warning("rejected upload: %s", err)
            return None, None, error_html(str(err)), "", None
        return (analysis, cache_image(preview_size(analysis.image.gray), self.cache_dir, ".jpg"),
                decision_html(analysis.prediction, self.predictor.borderline), self.describe(analysis),
                self.shown(analysis, opacity, show_heatmap, show_lungs))

    def on_example(self, opacity: float, show_heatmap: bool, show_lungs: bool, evt: gr.SelectData):
        return self.on_upload(str(self.examples[evt.index]), opacity, show_heatmap, show_lungs)

    def on_api(self, path: str | None) -> tuple[dict, str | None]:
        """The /predict API: the overlay as a PNG (lossless, for programs)."""
        result, rgb = self.api(path)
        return result, cache_image(rgb, self.cache_dir, ".png")

    @staticmethod
    def on_clear():
        return None, None, None, "", None


def threshold_origin(p: Prediction) -> str:
    """Where the threshold in use came from, in words (the model card has the figures)."""
    if p.threshold_source == "validation":
        return "chosen on validation patients (sensitivity ≥ 0.95)"
    folder, films = p.threshold_source.removeprefix("calibrated: ").rsplit(", ", 1)
    return (f"set on {films} of {html.escape(folder)} by `pneumo calibrate` (the Model tab says how, with its "
            "figures)")


def preview_size(gray: np.ndarray, longest: int = PREVIEW_PX) -> np.ndarray:
    """The preview is shown 320 px high: a film of 2-3k px is cut to `longest` px (less to encode and send)."""
    scale = longest / max(gray.shape[:2])
    if scale >= 1:
        return gray
    return cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def model_card_markdown(predictor: Predictor) -> str:
    """The bundle's model card without YAML front matter or image links (shown as images instead)."""
    card = (predictor.bundle.path / "README.md").read_text()
    card = re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.DOTALL)
    return re.sub(r"!\[[^\]]*\]\([^)]*\)\s*", "", card)


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm"))


def build_demo(predictor: Predictor) -> gr.Blocks:
    examples = example_files()
    started = time.time() - 1.0  # a second's slack for file systems with coarse timestamps
    with gr.Blocks(title="Pneumonia chest X-ray demo") as demo:
        gr.Markdown(f"# Pneumonia on pediatric chest X-rays\n{DISCLAIMER}")
        with gr.Tab("Analyse"):
            state = gr.State(None)
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label=f"Drop a chest X-ray: {ACCEPTED}", type="filepath", elem_id="upload")
                    gallery = gr.Gallery([(str(p), p.name) for p in examples], elem_id="examples", columns=5,
                                         height=140, allow_preview=False, interactive=False, object_fit="cover",
                                         label="Or click an example (Kermany et al. 2018, CC BY 4.0)")
                    preview = gr.Image(label="What was read (DICOM shown with its window)", type="filepath",
                                       interactive=False, height=320)
                with gr.Column():
                    label = gr.HTML(elem_id="result-label")
                    summary = gr.Markdown(elem_id="summary")
                    overlay = gr.Image(label="Grad-CAM overlay", type="filepath", interactive=False,
                                       elem_id="overlay", height=420)
                    with gr.Row():
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                        show = gr.Checkbox(value=True, label="Show heatmap")
                        # Absent without a lung head (older bundles): nothing to outline.
                        show_lungs = gr.Checkbox(value=True, label="Show lung outline", elem_id="show-lungs",
                                                 visible=predictor.decoder is not None)
        with gr.Tab("Model"):
            gr.Markdown(model_card_markdown(predictor), elem_id="model-card")
            for name in ("roc.png", "confusion.png"):  # one per row: readable at the default width
                if (predictor.bundle.path / name).is_file():
                    gr.Image(str(predictor.bundle.path / name), show_label=False, interactive=False, height=420)

        service = Service(predictor, overlay.GRADIO_CACHE, examples)
        outputs = [state, preview, label, summary, overlay]
        controls = [opacity, show, show_lungs]
        # always_last: Gradio's default ("once") drops a file dropped while the previous one is still being
        # analysed, leaving the new film on screen under the old film's verdict; this analyses it next instead.
        upload.upload(service.on_upload, [upload, *controls], outputs, api_visibility="private",
                      concurrency_id="model", trigger_mode="always_last")
        gallery.select(service.on_example, controls, outputs, api_visibility="private", concurrency_id="model",
                       trigger_mode="always_last")
        upload.clear(service.on_clear, None, outputs, api_visibility="private")
        for control in controls:
            control.change(service.shown, [state, *controls], overlay, api_visibility="private",
                           show_progress="hidden")
        # The programmatic endpoint: client.predict(handle_file(p), api_name="/predict"). Hidden components, not
        # gr.api: gr.api copies a returned file into a content-hash folder that identical concurrent requests
        # share, and leaves our per-request file outside delete_cache's reach (measured: tests/test_app.py).
        api_file = gr.File(visible=False)
        api_result = gr.JSON(visible=False, label="result")
        api_overlay = gr.Image(visible=False, type="filepath", label="overlay")
        api_button = gr.Button(visible=False)
        api_button.click(service.on_api, api_file, [api_result, api_overlay], api_name="predict",
                         concurrency_id="model")
    # One model call at a time: TensorFlow already uses both cores for one image.
    demo.queue(max_size=64, default_concurrency_limit=1)
    # Uploads and rendered images are deleted soon after each request (not in the handler: concurrent uploads
    # of the same file share one cached copy); the example images and plots cached just now stay.
    cache = Path(overlay.GRADIO_CACHE)
    demo.sweeper = Sweeper(cache, delete_after_seconds(), keep=files_written_since(cache, started))
    return demo


def launch(demo: gr.Blocks) -> None:
    """Serve on loopback (GRADIO_SERVER_* to change) and say where, without Gradio's share-link hint."""
    demo.sweeper.start()
    # SIGTERM (docker stop, a Space restarting) ends the app as Ctrl-C does: the server closes, and the sweeper's
    # exit sweep deletes the last uploads instead of leaving them on disk.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo.launch(share=False, quiet=True, theme=THEME, css=CSS, prevent_thread_lock=True)
    print(f"Running on {demo.local_url} (Ctrl-C to stop)", flush=True)
    demo.block_thread()
