"""From a trained model to predictions on new images (issue 15): :class:`DefectPredictor`."""
from .predictor import DefectPredictor

__all__ = ["DefectPredictor"]
