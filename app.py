"""Gradio demo: drag a chest X-ray, get NORMAL/PNEUMONIA, the probability and a Grad-CAM overlay.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change)

Model: env PNEUMO_MODEL (a bundle folder or hf://USER/REPO), default weights/.
Backbone: env PNEUMO_BACKBONE_WEIGHTS (a VGG16 no-top .weights.h5), default Keras' ImageNet download.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # runs with no network at all
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pneumo.predictor import Predictor
from pneumo.ui import build_demo

predictor = Predictor.load()  # once, at start-up
demo = build_demo(predictor)

if __name__ == "__main__":
    demo.launch(share=False)
