"""The Gradio app: drop an X-ray, get a verdict where the model applies, a score scale and a Grad-CAM overlay.

The model runs once per upload or example click; the opacity slider and the heatmap and lung-outline switches
only re-draw the stored heatmap and lung map. A file that cannot be read gets its reason in the result area,
where it stays until the next upload, and one line in the server log (no traceback: it is the user's file).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import gradio as gr

from ..config import ROOT, delete_after_seconds
from ..infer.predictor import Predictor
from ..io.image import MAX_BYTES
from .cache import Sweeper, default_folder, files_written_since, remove_stale_folders
from .service import ACCEPTED, MODEL_REQUESTS, Service

log = logging.getLogger("pneumo.app")
EXAMPLES = ROOT / "examples"
DISCLAIMER = ("**Research demo, not a medical device.** Trained on pediatric (1-5 years) frontal chest X-rays "
              "from one hospital; it does not diagnose and must not guide care. Upload the whole film as exported: "
              "a crop or added borders change its answer ([what it refuses, and how well]({safety})).")
DOCS = ROOT / "docs"


def safety_link() -> str:
    """docs/safety.md: on a Hugging Face Space its page in the Space's files, else the file this app serves."""
    space = os.environ.get("SPACE_ID")  # set by Spaces: USER/NAME
    if space:
        return f"https://huggingface.co/spaces/{space}/blob/main/docs/safety.md"
    return f"/gradio_api/file={DOCS / 'safety.md'}"


# System fonts only: web fonts are not reachable offline, and a half-loaded font changes letters mid-word.
THEME = gr.themes.Default(font=["system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])
CSS = """
#model-card table { font-size: 0.85em; }
#model-card th, #model-card td { word-break: keep-all; overflow-wrap: normal; }
#model-card th, #model-card td:not(:last-child) { white-space: nowrap; }
#title h1 { margin: 0 0 4px; font-size: 1.6em; }
#examples .caption-label { font-size: 0.75em; }
#examples-label p { margin: 0; }
/* Five thumbnails share the column's width (Gradio sizes them at 100 px and scrolls sideways otherwise). */
#examples .grid-container { grid-template-columns: repeat(5, minmax(0, 1fr)) !important; }
#examples .thumbnail-item { width: 100% !important; height: auto !important; min-width: 0; aspect-ratio: 1; }
"""
# On a phone the columns stack and the result sits below the upload box and the examples: bring it into view.
SHOW_RESULT = """() => { if (window.innerWidth < 700) {
    document.getElementById('result-label')?.scrollIntoView({block: 'start'}); } }"""
METHOD = """### How the page is made
- **Verdict.** A frozen ImageNet VGG16; its `block5_conv3` features are averaged over the lung fields (each lung's
  upper and lower half apart, found by a small lung-field decoder on the same pass), then a linear head gives the
  pneumonia score. The film is resized to 224x224 as a whole and the outer 10% of each side is cut off (markers and
  text sit there).
- **Heatmap.** Grad-CAM in its gradient x activation form (HiResCAM) at `block5_conv3`, for the side of the
  threshold the score falls on. Positions outside the lung zones add nothing to the score; most of the heat falls
  inside the lung fields, and the rest on positions that straddle their edge.
- **Checks.** "Is this a frontal chest X-ray?" (image statistics, a plausible pair of lungs, and how unlike chest
  films of several hospitals the content is) and "is this a child aged 1-5?" (the age you give or the DICOM header's;
  without one, a classifier on pooled features that can only tell "unlike the training children"). Either failing
  means *Not assessed*.
"""


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
        gr.Markdown(f"# Pneumonia on pediatric chest X-rays\n{DISCLAIMER.format(safety=safety_link())}",
                    elem_id="title")
        with gr.Tab("Analyse"):
            state = gr.State(None)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    upload = gr.File(label=f"Drop a chest X-ray: {ACCEPTED}", type="filepath", elem_id="upload",
                                     height=150)
                    # The age decides where the pixels cannot: a film that looks unlike the training children is
                    # assessed for a child aged 1-5 (with a caution), and never for anyone else.
                    # A textbox, not gr.Number: an empty Number shows and sends 0, an age that refuses every film.
                    age = gr.Textbox(label="Patient age (years, optional)", elem_id="age", max_lines=1,
                                     placeholder="e.g. 3 or 2.5; empty if unknown",
                                     info="1-5 years is the intended use")
                    # Neutral captions: the dataset's label is shown with the result, not before.
                    gr.Markdown("Or click an example:", elem_id="examples-label")  # credited with its result
                    gallery = gr.Gallery([(str(p), str(k + 1)) for k, p in enumerate(examples)],
                                         elem_id="examples", columns=5, height=104, allow_preview=False,
                                         interactive=False, object_fit="cover", show_label=False)
                with gr.Column(scale=3, min_width=320):
                    label = gr.HTML(elem_id="result-label")
                    overlay = gr.Image(label="Grad-CAM overlay on the film as read", type="filepath",
                                       interactive=False, elem_id="overlay", height=440)
                    with gr.Row():
                        opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity", min_width=160)
                        show = gr.Checkbox(value=True, label="Show heatmap (off: the film alone)", min_width=120)
                        # Absent without a lung head (older bundles): nothing to outline.
                        show_lungs = gr.Checkbox(value=True, label="Show lung outline", elem_id="show-lungs",
                                                 visible=predictor.decoder is not None, min_width=120)
                    with gr.Accordion("How to read this", open=False, elem_id="how-to-read"):
                        summary = gr.Markdown(elem_id="summary")
        with gr.Tab("Model"):
            gr.Markdown(METHOD + "\n" + model_card_markdown(predictor), elem_id="model-card")
            for name in ("calibration.png", "roc.png", "confusion.png"):  # one per row: readable at the default width
                if (predictor.bundle.path / name).is_file():
                    gr.Image(str(predictor.bundle.path / name), show_label=False, interactive=False, height=420)

        service = Service(predictor, overlay.GRADIO_CACHE, examples)
        # Registered first, as event 0: Gradio's page (6.x) checks event 0's inputs against the first named
        # endpoint's parameters and logged "Too many arguments provided for the endpoint." on every upload.
        # The programmatic endpoint: client.predict(handle_file(p), api_name="/predict"). Hidden components, not
        # gr.api: gr.api copies a returned file into a content-hash folder that identical concurrent requests
        # share, and leaves our per-request file outside delete_cache's reach (measured: tests/test_app.py).
        api_file = gr.File(visible=False)
        api_age = gr.Number(None, visible=False, label="age")  # optional: one-argument calls keep working
        api_result = gr.JSON(visible=False, label="result")
        api_overlay = gr.Image(visible=False, type="filepath", label="overlay")
        api_button = gr.Button(visible=False)
        # The three events that run the model share one limit: Gradio takes a group's lowest, so one left out
        # would quietly hold the group to one request at a time.
        model_pass = {"concurrency_id": "model", "concurrency_limit": MODEL_REQUESTS}
        api_button.click(service.on_api, [api_file, api_age], [api_result, api_overlay], api_name="predict",
                         **model_pass)
        shown = [state, label, summary, overlay]
        controls = [opacity, show, show_lungs]
        # always_last: Gradio's default ("once") drops a file dropped while the previous one is still being
        # analysed, leaving the new film on screen under the old film's verdict; this analyses it next instead.
        # A box holding a file ignores a drop: the dropped film is taken out of the box at once (no queue), so the
        # next film dropped on it replaces this one, then analysed. The progress shows on the overlay, not the box.
        dropped = gr.State(None)
        upload.upload(lambda path: (path, None), upload, [dropped, upload], queue=False, api_visibility="private",
                      trigger_mode="multiple",
                      ).then(service.on_upload, [dropped, age, *controls], [*shown, gallery], api_visibility="private",
                             **model_pass, show_progress_on=overlay, trigger_mode="always_last",
                             ).then(None, js=SHOW_RESULT)
        gallery.select(service.on_example, [age, *controls], [*shown, upload], api_visibility="private",
                       **model_pass, trigger_mode="always_last", show_progress_on=overlay
                       ).then(None, js=SHOW_RESULT)
        age.change(service.on_age, [state, age], [state, label, summary], api_visibility="private",
                   trigger_mode="always_last", show_progress="hidden")
        upload.clear(service.on_clear, None, [*shown, gallery], api_visibility="private")
        for control in controls:
            control.change(service.shown, [state, *controls], overlay, api_visibility="private",
                           show_progress="hidden")
    demo.queue(max_size=64, default_concurrency_limit=1)
    # Uploads and rendered images are deleted soon after each request (not in the handler: concurrent uploads
    # of the same file share one cached copy); the example images and plots cached just now stay.
    cache = Path(overlay.GRADIO_CACHE)
    demo.sweeper = Sweeper(cache, delete_after_seconds(), keep=files_written_since(cache, started))
    return demo


def launch(demo: gr.Blocks) -> None:
    """Serve on loopback (GRADIO_SERVER_* to change) and say where, without Gradio's share-link hint."""
    removed = remove_stale_folders(default_folder().parent)  # what killed earlier copies left
    if removed:
        log.info("deleted %d cache folder(s) of app processes that no longer run", removed)
    demo.sweeper.start()
    # SIGTERM (docker stop, a Space restarting) ends the app as quietly as Ctrl-C: the server closes, and the
    # sweeper's exit sweep deletes the last uploads instead of leaving them on disk.
    signal.signal(signal.SIGTERM, _exit_quietly)
    demo.launch(share=False, quiet=True, theme=THEME, css=CSS, prevent_thread_lock=True,
                allowed_paths=[str(EXAMPLES), str(DOCS / "safety.md")],  # the examples; the disclaimer's link
                # Gradio stops reading a larger upload here, before it is stored whole: the decoder's own limit.
                max_file_size=MAX_BYTES)
    print(f"Running on {demo.local_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:  # not demo.block_thread(): it prints "Keyboard interruption in main thread..." on the way out
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        print("Stopped.", flush=True)


def _exit_quietly(*_) -> None:
    raise SystemExit(0)
