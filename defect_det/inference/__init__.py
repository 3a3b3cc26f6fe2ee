"""From a trained model to decisions on new images (issue 15): :class:`DefectPredictor` (one image or a batch),
:class:`TiledPredictor` (large images by windows), ``folder`` (``tools/predict.py``), ``calibrate``
(``tools/calibrate.py``)."""
from .predictor import DefectPredictor
from .tiling import TiledPredictor

__all__ = ["DefectPredictor", "TiledPredictor"]
