"""Differentiable layers: the batched Sinkhorn-Knopp op and what is built on it."""
from .sinkhorn import sinkhorn
from .sinkhorn_reference import SinkhornResult, sinkhorn_reference, validate_sinkhorn_inputs

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_reference", "validate_sinkhorn_inputs"]
