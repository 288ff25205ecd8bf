"""Gradio demo: drag a chest X-ray, get NORMAL/PNEUMONIA where the model applies, and a Grad-CAM overlay.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change)

Model: env PNEUMO_MODEL (a bundle folder or hf://USER/REPO), default weights/.
Backbone: env PNEUMO_BACKBONE_WEIGHTS (a VGG16 no-top .weights.h5), default Keras' ImageNet download.
"""

from pneumo.ui.serve import load_predictor  # first: it sets what Gradio reads when imported
from pneumo.ui.web import build_demo, launch

demo = build_demo(load_predictor())

if __name__ == "__main__":
    launch(demo)
