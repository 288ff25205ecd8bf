"""File in: decoding (rasters and DICOM) and data folders (the Kaggle layout, patient ids, the patient split)."""

from .decode import read_image
from .image import DecodedImage

__all__ = ["DecodedImage", "read_image"]
