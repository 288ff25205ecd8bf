"""pneumo: a pediatric pneumonia chest X-ray classifier (VGG16 + small head) with Grad-CAM."""

__version__ = "0.1.0"
