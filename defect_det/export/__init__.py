"""Deployable models (issue 16): TorchScript / ONNX export of every defect_det architecture with parity checks
against the eager model (:mod:`.deploy`), running an exported file as the eager model runs (:mod:`.runtime`),
and the command line of ``tools/export_model.py`` (:mod:`.cli`)."""
from .deploy import (
    EXPORT_FILE_NAMES,
    EXPORT_FORMATS,
    EXPORT_INFO_FILE,
    EXPORT_METHODS,
    ExportError,
    SegDecNetScriptable,
    check_export,
    compare_outputs,
    eager_outputs,
    export_model,
    export_signature,
    onnx_available,
    resized_inputs,
    script_model,
    trace_model,
)
from .runtime import ExportedModel, onnxruntime_available

__all__ = [
    "EXPORT_FILE_NAMES",
    "EXPORT_FORMATS",
    "EXPORT_INFO_FILE",
    "EXPORT_METHODS",
    "ExportError",
    "ExportedModel",
    "SegDecNetScriptable",
    "check_export",
    "compare_outputs",
    "eager_outputs",
    "export_model",
    "export_signature",
    "onnx_available",
    "onnxruntime_available",
    "resized_inputs",
    "script_model",
    "trace_model",
]
