"""Gradio demo: drag a chest X-ray, get NORMAL/PNEUMONIA where the model applies, and a Grad-CAM overlay.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change)

Model: env PNEUMO_MODEL (a bundle folder or hf://USER/REPO), default weights/.
Backbone: env PNEUMO_BACKBONE_WEIGHTS (a VGG16 no-top .weights.h5), default Keras' ImageNet download.
"""

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # runs with no network at all
from pneumo.ui.cache import default_folder  # noqa: E402

# A cache folder of the app's own: its sweeper deletes every upload in it after PNEUMO_DELETE_AFTER_S.
os.environ.setdefault("GRADIO_TEMP_DIR", str(default_folder()))
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for noisy in ("httpx", "httpcore", "urllib3"):  # one line per request otherwise
    logging.getLogger(noisy).setLevel(logging.WARNING)

from pneumo import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # no CUDA chatter on CPU machines and Spaces
from pneumo.infer.predictor import Predictor  # noqa: E402
from pneumo.ui.web import build_demo, launch  # noqa: E402

try:
    predictor = Predictor.load()  # once, at start-up
except ValueError as err:  # a wrong setting, said in one sentence: no traceback to read through
    sys.exit(f"error: {err}")
demo = build_demo(predictor)

if __name__ == "__main__":
    launch(demo)
