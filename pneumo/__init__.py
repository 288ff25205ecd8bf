"""pneumo: a pediatric pneumonia chest X-ray classifier (VGG16 + small head) with Grad-CAM."""

import os
import sys

# TensorFlow's C++ start-up messages (CUDA probing on CPU-only machines, oneDNN notes) are noise to a user;
# errors that matter still reach Python as exceptions. setdefault: a developer can still ask for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's native stderr silenced for the moment it loads.

    Its shared libraries print CUDA probing lines ("Could not find cuda drivers", absl's "All log messages
    before absl::InitializeLog()") from C++ before any setting is read; on a CPU machine or a Space they
    only alarm. Python errors are unaffected: stderr is restored before any exception propagates.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
