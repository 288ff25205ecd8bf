"""The app's process, set up before Gradio is imported: what app.py needs besides the demo itself.

Gradio reads its cache folder (GRADIO_TEMP_DIR) when it is imported, so importing this module first gives the app
a cache folder of its own (its sweeper deletes every upload in it after PNEUMO_DELETE_AFTER_S) and runs it with no
network at all (analytics off). Nothing is overridden that the environment already says.
"""

from __future__ import annotations

import logging
import os
import sys

from .. import import_tensorflow_quietly
from ..infer.predictor import Predictor
from .cache import default_folder

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_TEMP_DIR", str(default_folder()))


def load_predictor():
    """The model, loaded once at start-up; a wrong setting ends the process with one sentence, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):  # one line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import_tensorflow_quietly()  # no CUDA chatter on CPU machines and Spaces
    try:
        return Predictor.load()
    except ValueError as err:
        sys.exit(f"error: {err}")
