"""The decoded image every reader returns, and the limits every reader enforces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXPECTED = "Expected a chest X-ray as JPEG, PNG or DICOM."
MAX_PIXELS = 40_000_000  # ~6300x6300; real radiographs are at most ~4300x3500
MIN_SIDE = 32
MAX_BYTES = 200 * 1024 * 1024


@dataclass
class DecodedImage:
    """8-bit grayscale pixels plus what the checks downstream need to know."""

    gray: np.ndarray  # (H, W) uint8, original size and orientation
    format: str  # "JPEG", "PNG", "DICOM", ...
    colourfulness: float = 0.0  # Hasler-Suesstrunk metric; ~0 for radiographs
    info: dict = field(default_factory=dict)  # safe technical fields only, never patient data

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports sizes."""
        return int(self.gray.shape[1]), int(self.gray.shape[0])
