"""Shared modeling: backbones (``backbone/``) and the ROI heads every method builds on (``roi_heads/``)."""
