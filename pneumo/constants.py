"""Constants shared by training, evaluation and serving: defined here once."""

IMG_SIZE = 224  # VGG16's native input; the shared train images are 224x224.
CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # index 1 is the positive class.

# Bump when to_model_input() changes: it is part of the feature-cache key and of
# every bundle's config, so stale features or mismatched bundles are detected.
PREPROCESSING_VERSION = "gray-bicubic224-crop10-caffe-v2"

# The outer 10% of every side is cut off after the 224x224 resize: side markers ("R"), text, tubes and
# film edges live there, and the frozen features latch onto them (docs/experiments.md).
CROP_MARGIN = 0.10

# Keras' VGG16 was trained with "caffe" preprocessing: BGR order, ImageNet mean
# subtracted, no scaling. Kept here so importing images.py does not import Keras.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

BACKBONE = "vgg16"
FEATURE_LAYER = "block5_pool"  # the head sits on base.output
CAM_LAYER = "block5_conv3"
BACKBONE_ENV = "PNEUMO_BACKBONE_WEIGHTS"
MODEL_ENV = "PNEUMO_MODEL"
