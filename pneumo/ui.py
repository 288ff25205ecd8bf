"""The Gradio app: drop an X-ray, get a label, calibrated numbers and a Grad-CAM overlay.

The model runs once per upload; the opacity slider and the heatmap switch only
re-blend the stored heatmap (no model call). User mistakes become `gr.Error`
with the reader's plain message; nothing else reaches the page.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from . import gradcam
from .constants import CLASS_NAMES
from .images import DecodedImage, read_image
from .predictor import Prediction, Predictor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DISCLAIMER = ("**Research demo, not a medical device.** Trained on pediatric (1-5 years) frontal chest X-rays "
              "from one hospital; it does not diagnose and must not guide care.")
ACCEPTED = "JPEG, PNG or DICOM (.dcm or no extension)"
PREVIEW_PX = 1024  # longest side of the "what was read" preview; the overlay keeps the original size


def decision_html(prediction: Prediction) -> str:
    """The thresholded decision as the headline, then both class probabilities as bars.

    (gr.Label would headline the larger probability, which is not the decision when the
    threshold is not 0.5.)
    """
    rows = "".join(
        f'<div style="margin:4px 0"><span style="display:inline-block;width:110px">{name}</span>'
        f'<span style="display:inline-block;width:{max(1, round(200 * p))}px;height:10px;'
        f'background:{"#d9534f" if name == CLASS_NAMES[1] else "#5b9bd5"}"></span> {p:.1%}</div>'
        for name, p in prediction.class_probabilities.items())
    caution = "" if prediction.looks_like_chest_xray else '<div style="color:#b94a00">⚠️ not a chest X-ray?</div>'
    return f'<div style="font-size:2em;font-weight:700;margin-bottom:6px">{prediction.label}</div>{caution}{rows}'


@dataclass
class Analysis:
    image: DecodedImage
    prediction: Prediction
    seconds: float


class Service:
    """The app's logic without widgets: analyse a file, render an overlay, describe a result."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def analyze(self, path: str | None) -> Analysis:
        if not path:
            raise gr.Error(f"Drop a chest X-ray first ({ACCEPTED}).")
        started = time.perf_counter()
        try:
            image = read_image(path, name=_display_name(path))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        prediction = self.predictor.analyze(image)
        return Analysis(image, prediction, time.perf_counter() - started)

    @staticmethod
    def render(analysis: Analysis | None, opacity: float, show_heatmap: bool) -> np.ndarray | None:
        if analysis is None:
            return None
        if not show_heatmap or analysis.prediction.heatmap is None:
            return np.repeat(analysis.image.gray[..., None], 3, axis=-1)
        return gradcam.overlay(analysis.image.gray, analysis.prediction.heatmap, float(opacity))

    @staticmethod
    def describe(analysis: Analysis) -> str:
        p = analysis.prediction
        width, height = analysis.image.size
        warning = ""
        if not p.looks_like_chest_xray:
            warning = ("⚠️ **This does not look like a frontal pediatric chest X-ray** (" + "; ".join(p.warnings) +
                       "). The number below is meaningless for such images.\n\n")
        return (f"{warning}Probability of pneumonia **{p.probability:.3f}**; operating threshold **{p.threshold:.3f}**: "
                f"above this, the model calls pneumonia.\n\n"
                f"The heatmap marks the regions that pushed the model towards **{p.label}** "
                f"(Grad-CAM, `block5_conv3`); it is not a segmentation of disease. The outer 10% of each side "
                f"is not used by the model (markers and text sit there).\n\n"
                f"<small>{analysis.image.format}, {width}x{height} px; analysed in {analysis.seconds * 1000:.0f} ms."
                f"</small>")

    def api(self, path: str | None) -> tuple[dict, np.ndarray]:
        """The /predict endpoint: label, probabilities, threshold and the overlay at the original size."""
        analysis = self.analyze(path)
        p = analysis.prediction
        result = {**p.to_json(), "probabilities": p.class_probabilities,
                  "width": analysis.image.size[0], "height": analysis.image.size[1]}
        return result, self.render(analysis, 0.5, True)


def cache_image(rgb: np.ndarray | None, cache_dir: str, ext: str) -> str | None:
    """Encode `rgb` (or a gray image) into a new, uniquely named file inside Gradio's cache; return its path.

    Gradio would name the image by a hash of its bytes and rewrite that file in place, so two
    users who get the same overlay at once share one file and a download can read it half
    rewritten (the load test saw truncated bodies). A file of our own per request cannot be
    touched by another request; being inside the cache, Gradio serves it as it is and deletes
    it on the `delete_cache` schedule. OpenCV also encodes several times faster than Pillow.
    """
    if rgb is None:
        return None
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb, params)
    if not ok:
        raise ValueError(f"could not encode the image as {ext}")
    os.makedirs(cache_dir, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="overlay-", suffix=ext, dir=cache_dir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(encoded.tobytes())
    return path


def preview_size(gray: np.ndarray, longest: int = PREVIEW_PX) -> np.ndarray:
    """The preview is shown 320 px high: a film of 2-3k px is cut to `longest` px (less to encode and send)."""
    scale = longest / max(gray.shape[:2])
    if scale >= 1:
        return gray
    return cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def _display_name(path: str) -> str:
    # Gradio stores uploads under a random folder; the file name alone is what the user recognises.
    return Path(path).name


def model_card_markdown(predictor: Predictor) -> str:
    """The bundle's model card without YAML front matter or image links (shown as images instead)."""
    card = (predictor.bundle.path / "README.md").read_text()
    card = re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.DOTALL)
    return re.sub(r"!\[[^\]]*\]\([^)]*\)\s*", "", card)


def build_demo(predictor: Predictor) -> gr.Blocks:
    service = Service(predictor)
    examples = sorted(str(p) for p in EXAMPLES.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm"))
    # Gradio keeps uploads and rendered overlays in its cache; delete them soon after each request
    # (not in the handler: concurrent uploads of the same file share one cached copy).
    keep = int(os.environ.get("PNEUMO_DELETE_AFTER_S", "60"))
    with gr.Blocks(title="Pneumonia chest X-ray demo", delete_cache=(keep, keep)) as demo:
        gr.Markdown(f"# Pneumonia on pediatric chest X-rays\n{DISCLAIMER}")
        with gr.Tab("Analyse"):
            state = gr.State(None)
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label=f"Drop a chest X-ray: {ACCEPTED}", type="filepath",
                                     elem_id="upload")
                    preview = gr.Image(label="What was read (DICOM shown with its window)", type="filepath",
                                       interactive=False, height=320)
                with gr.Column():
                    label = gr.HTML(label="Decision", elem_id="result-label")
                    summary = gr.Markdown(elem_id="summary")
                    overlay = gr.Image(label="Grad-CAM overlay", type="filepath", interactive=False,
                                       elem_id="overlay", height=420)
                    with gr.Row():
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                        show = gr.Checkbox(value=True, label="Show heatmap")
            if examples:
                gr.Examples(examples, inputs=upload, label="Example X-rays (Kermany et al. 2018, CC BY 4.0)")
        with gr.Tab("Model"):
            gr.Markdown(model_card_markdown(predictor))
            with gr.Row():
                for name in ("roc.png", "confusion.png"):
                    if (predictor.bundle.path / name).is_file():
                        gr.Image(str(predictor.bundle.path / name), show_label=False, interactive=False)

        def shown(analysis, opacity_value, show_value):  # JPEG: fast to encode, and only for display
            return cache_image(service.render(analysis, opacity_value, show_value), overlay.GRADIO_CACHE, ".jpg")

        def on_upload(path, opacity_value, show_value):
            analysis = service.analyze(path)
            p = analysis.prediction
            return (analysis, cache_image(preview_size(analysis.image.gray), preview.GRADIO_CACHE, ".jpg"),
                    decision_html(p),
                    service.describe(analysis),
                    shown(analysis, opacity_value, show_value))

        def on_api(path):  # PNG: lossless, for programs
            result, rgb = service.api(path)
            return result, cache_image(rgb, api_overlay.GRADIO_CACHE, ".png")

        upload.upload(on_upload, [upload, opacity, show], [state, preview, label, summary, overlay],
                      api_visibility="private", concurrency_id="model")
        upload.clear(lambda: (None, None, None, "", None), None, [state, preview, label, summary, overlay],
                     api_visibility="private")
        for control in (opacity, show):
            control.change(shown, [state, opacity, show], overlay, api_visibility="private",
                           show_progress="hidden")
        # The programmatic endpoint, callable with gradio_client: client.predict(handle_file(p), api_name="/predict")
        api_file = gr.File(visible=False)
        api_result = gr.JSON(visible=False, label="result")
        api_overlay = gr.Image(visible=False, type="filepath", label="overlay")
        api_button = gr.Button(visible=False)
        api_button.click(on_api, api_file, [api_result, api_overlay], api_name="predict",
                         concurrency_id="model")
    # One model call at a time: TensorFlow already uses both cores for one image.
    demo.queue(max_size=64, default_concurrency_limit=1)
    return demo
