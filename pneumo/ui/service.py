"""What the page and the /predict API do with a film: analyse it once, then answer and redraw from what is kept.

`Service` holds the model (one pass at a time, under a lock) and the handlers the page's events call; `Analysis`
is one film's result, kept in the page's state so the switches redraw without a new model pass.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np

from ..config import CLASS_NAMES
from ..infer import age as ages
from ..infer import gradcam, lung_fields
from ..infer.predictor import Prediction, Predictor
from ..io import DecodedImage, read_image
from .cache import cache_image, display_film
from .result import decision_html, error_html, reading_guide

log = logging.getLogger("pneumo.app")
ACCEPTED = "JPEG, PNG or DICOM (.dcm or no extension)"
# Requests analysed at once. The model pass itself runs one at a time (Service.model_lock: it already uses both
# cores); a second request decodes its film, draws its overlay and goes through Gradio meanwhile.
MODEL_REQUESTS = 2


@dataclass
class Analysis:
    name: str  # the file name the user knows (Gradio stores uploads under a random folder), or "Example 3"
    image: DecodedImage
    prediction: Prediction
    seconds: float
    truth: str | None = None  # an example's dataset label, shown only with its result
    film: np.ndarray | None = None  # the film as drawn (cache.display_film): made once, redrawn on each switch

    def __post_init__(self):
        if self.film is None:
            self.film = display_film(self.image.gray)


class Service:
    """The app's logic and its event handlers: analyse a file, render an overlay, describe a result."""

    def __init__(self, predictor: Predictor, cache_dir: str, examples: list[Path]):
        self.predictor = predictor
        self.cache_dir = cache_dir  # Gradio's cache: files there are served as they are and deleted on schedule
        self.examples = examples
        self.model_lock = threading.Lock()  # one model pass at a time: it already uses both cores
        block = predictor.bundle.config.calibration
        split = block.split_estimate if block else {}
        self.band_accuracy = split.get("borderline", {}).get("accuracy_inside")  # measured on new children

    def analyze(self, path: str | None, name: str | None = None, truth: str | None = None,
                age: float | str | None = None) -> Analysis:
        """Raises ValueError with the reader's plain message for files that cannot be read (or a bad age)."""
        if not path:
            raise ValueError(f"Drop a chest X-ray first ({ACCEPTED}).")
        started, name = time.perf_counter(), name or Path(path).name
        declared = ages.parse_age(age)
        image = read_image(path, name=name)
        with self.model_lock:
            prediction = self.predictor.analyze(image, declared_age=declared)
        return Analysis(name, image, prediction, time.perf_counter() - started, truth)

    @staticmethod
    def render(analysis: Analysis | None, opacity: float, show_heatmap: bool,
               show_lungs: bool = False) -> np.ndarray | None:
        if analysis is None:
            return None
        p, film = analysis.prediction, analysis.film
        if not p.assessed:  # nothing of the model's answer applies: the film alone, no heat, no outline
            return np.repeat(film[..., None], 3, axis=-1)
        if not show_heatmap or p.heatmap is None:
            rgb = np.repeat(film[..., None], 3, axis=-1)
        else:
            rgb = gradcam.overlay(film, p.heatmap, float(opacity))
        return lung_fields.outline(rgb, p.lung_fields) if show_lungs and p.lung_fields is not None else rgb

    def headline(self, analysis: Analysis) -> str:
        return decision_html(analysis.prediction, analysis.name, analysis.truth, self.band_accuracy)

    @staticmethod
    def guide(analysis: Analysis) -> str:
        width, height = analysis.image.size
        return reading_guide(analysis.prediction, f"<small>{analysis.name}: {analysis.image.format}, {width}x{height} "
                                                  f"px; analysed in {analysis.seconds * 1000:.0f} ms.</small>")

    def api(self, path: str | None, age: float | None = None) -> tuple[dict, np.ndarray]:
        """The /predict endpoint: the result JSON (the film's own `width` and `height`) and the overlay as drawn."""
        try:
            analysis = self.analyze(path, age=age)
        except ValueError as err:
            log.warning("rejected upload: %s", err)
            raise gr.Error(str(err), print_exception=False) from None
        p = analysis.prediction
        result = {**p.to_json(), "width": analysis.image.size[0], "height": analysis.image.size[1]}
        return result, self.render(analysis, 0.5, True)

    # --- event handlers: each analysis replaces everything of the one before ------------------------------------

    def shown(self, analysis: Analysis | None, opacity: float, show_heatmap: bool,
              show_lungs: bool = False) -> str | None:
        """The overlay as a JPEG: fast to encode, and only for display."""
        return cache_image(self.render(analysis, opacity, show_heatmap, show_lungs), self.cache_dir, ".jpg")

    def result(self, path, age, opacity, show_heatmap, show_lungs, name=None, truth=None) -> tuple:
        """(state, headline, guide, overlay) for a file; a file that cannot be read keeps its reason on screen."""
        try:
            analysis = self.analyze(path, name, truth, age)
        except ValueError as err:
            log.warning("rejected upload: %s", err)
            return None, error_html(str(err)), "", None
        return (analysis, self.headline(analysis), self.guide(analysis),
                self.shown(analysis, opacity, show_heatmap, show_lungs))

    def on_upload(self, path: str | None, age: str | None, opacity: float, show_heatmap: bool,
                  show_lungs: bool = False):
        """A dropped file: its result, and no example left selected."""
        return (*self.result(path, age, opacity, show_heatmap, show_lungs), gr.Gallery(selected_index=None))

    def on_example(self, age: str | None, opacity: float, show_heatmap: bool, show_lungs: bool,
                   evt: gr.SelectData):
        """A clicked example: its result, and the upload box empty (ready for a film of the user's own)."""
        path = self.examples[evt.index]
        found = self.result(str(path), age, opacity, show_heatmap, show_lungs, f"Example {evt.index + 1}",
                            example_truth(path))
        return (*found, None)

    def on_age(self, analysis: Analysis | None, age: str | None) -> tuple:
        """A changed age: the film on screen answered again (the age changes only the population answer: no model
        pass, the overlay stays); with no film on screen, nothing to do."""
        if analysis is None:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            declared = ages.parse_age(age)
        except ValueError as err:  # the film stays: a corrected age answers it again
            return analysis, error_html(str(err), "Check the patient's age"), ""
        again = replace(analysis, prediction=analysis.prediction.with_age(declared))
        return again, self.headline(again), self.guide(again)

    def on_api(self, path: str | None, age: float | None = None) -> tuple[dict, str | None]:
        """The /predict API: the overlay as the page shows it, a JPEG (PNG took longer than the model)."""
        result, rgb = self.api(path, age)
        return result, cache_image(rgb, self.cache_dir, ".jpg")

    @staticmethod
    def on_clear():
        return None, None, "", None, gr.Gallery(selected_index=None)


def example_truth(path: Path) -> str:
    """The dataset's label of an example: Kermany names pneumonia films person<N>_bacteria|virus_<K>."""
    return CLASS_NAMES[1] if re.match(r"person\d+_(bacteria|virus)", path.name) else CLASS_NAMES[0]
