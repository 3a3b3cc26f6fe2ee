"""
Export a defect_det model to a file that runs without Python model code (issue 16): TorchScript (tracing or
scripting) or ONNX (tracing), after Detectron2's ``tools/deploy/export_model.py``.

**What the exported file computes.** One image (batch of 1), already resized to the test scale the caller
wants (the model itself does not resize); pixel values 0..255 in ``INPUT.FORMAT`` channel order, uint8 or float:

- R-CNN (``GeneralizedRCNN``, ``TemplateRCNN``; Standard or Cascade heads): inputs ``image`` (C, H, W), then
  ``template`` (C, H, W) for TemplateRCNN MODE pre / inter, with TR-Post (``MODEL.TEMPLATE.POST``) or with a
  mask refinement that reads the template; outputs
  ``pred_boxes`` (R, 4) XYXY in the input's pixels, ``scores`` (R,), ``pred_classes`` (R,) int64 and, with
  ``MODEL.MASK_ON``, ``pred_masks`` (R, 1, M, M) probabilities inside each box (not pasted).
- ``SegDecNet``: input ``image`` (C, H, W), H and W multiples of 8; outputs ``sem_seg`` (1, H, W) defect
  probability at the input size, ``score`` () image-level probability, ``seg_probs`` (1, H/8, W/8).

These are the outputs of the eager model before its last step (Detectron2's ``do_postprocess=False``): R-CNN
boxes are not rescaled to another output size and masks not pasted; :class:`~.runtime.ExportedModel` does both
exactly as the eager model (``detector_postprocess``), and resizes SegDecNet's ``seg_probs`` to a requested
``height`` / ``width`` as :meth:`SegDecNet.postprocess` does. The test-time steps of the mapper are not in the
file either: the resize to the test scale and, with ``INPUT.TEMPLATE.ALIGN``, the template's phase-correlation
alignment (``defect_det.data.template_ops.align_template``). ``export_info.json`` beside the file lists the
inputs, outputs, the test-time resize and whether the config aligns templates.

**Formats and methods** (:func:`check_export` refuses the rest with the reason):

- tracing (``torch.jit.trace`` through Detectron2's ``TracingAdapter``): every R-CNN with hard NMS and
  SegDecNet. The traced graph follows the input size and the number of detections (sizes are traced values;
  the few loops over detections, e.g. containment suppression, are scripted inside the trace).
- scripting (``torch.jit.script``): SegDecNet (its two subnets, through :class:`SegDecNetScriptable`). Not the
  R-CNNs: their ROI heads are Detectron2's heads extended by mixins that call ``super()`` and hold the box
  post-processor as a plain Python object, and TemplateRCNN reads optional input entries and applies its
  template reference through a forward hook; TorchScript compiles none of these.
- ONNX: tracing only, and only where the ``onnx`` package is installed (``torch.onnx.export`` needs it).
- ``MODEL.ROI_HEADS.NMS_TYPE`` "hard" only: Sinkhorn NMS is not exportable yet (issue 16, after issue 17);
  Soft-NMS and weighted box fusion loop in Python over the detections, which tracing would freeze.
"""
import importlib.util
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "EXPORT_FILE_NAMES",
    "EXPORT_INFO_FILE",
    "ONNX_OPSET",
    "ExportError",
    "SegDecNetScriptable",
    "check_export",
    "compare_outputs",
    "eager_outputs",
    "export_model",
    "export_signature",
    "onnx_available",
    "resized_inputs",
    "script_model",
    "trace_model",
]

EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_METHODS = ("tracing", "scripting")
EXPORT_FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
EXPORT_INFO_FILE = "export_info.json"
ONNX_OPSET = 16
_META_ARCHS = ("GeneralizedRCNN", "TemplateRCNN", "SegDecNet")


class ExportError(ValueError):
    """A model / format / method combination that cannot be exported; the message says why."""


def onnx_available() -> bool:
    """Whether the ``onnx`` package (which ``torch.onnx.export`` imports) is installed."""
    return importlib.util.find_spec("onnx") is not None


# ---------------------------------------------------------------------------------------------- checks
def check_export(cfg, fmt: str = "torchscript", method: str = "tracing") -> None:
    """
    Refuse, before anything is built, a combination that cannot work (module doc).

    Args:
        cfg: the model's config (defect_det keys added).
        fmt: "torchscript" | "onnx".
        method: "tracing" | "scripting".
    Raises:
        ExportError: naming the option and the reason.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if method not in EXPORT_METHODS:
        raise ExportError(f"--export-method must be one of {EXPORT_METHODS}, got {method!r}")
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in _META_ARCHS:
        raise ExportError(f"MODEL.META_ARCHITECTURE {arch!r} is not exportable by defect_det (supported: "
                          f"{', '.join(_META_ARCHS)}); for Detectron2's own models use Detectron2's "
                          "tools/deploy/export_model.py")
    if arch != "SegDecNet":
        nms = cfg.MODEL.ROI_HEADS.NMS_TYPE
        if nms == "sinkhorn":
            raise ExportError(
                "MODEL.ROI_HEADS.NMS_TYPE 'sinkhorn': exporting Sinkhorn NMS is not supported yet (issue 16, after "
                "the Sinkhorn NMS rewrite of issue 17); export the model with MODEL.ROI_HEADS.NMS_TYPE hard "
                "(and MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT 0) to deploy it with hard NMS")
        if nms != "hard":
            raise ExportError(
                f"MODEL.ROI_HEADS.NMS_TYPE {nms!r} is not exportable: its post-processing loops in Python over the "
                "detections, and a traced model would keep the number of iterations of the tracing example; "
                "export with MODEL.ROI_HEADS.NMS_TYPE hard")
    if method == "scripting":
        if fmt != "torchscript":
            raise ExportError(f"--export-method scripting writes TorchScript only; --format {fmt} needs "
                              "--export-method tracing")
        if arch != "SegDecNet":
            raise ExportError(
                f"--export-method scripting: {arch} cannot be compiled by TorchScript: defect_det's ROI heads "
                f"({cfg.MODEL.ROI_HEADS.NAME}) are Detectron2's heads extended by mixins that call super() "
                "(containment, jittered proposals, images for mask heads) and keep the box post-processor "
                "(MODEL.ROI_HEADS.NMS_TYPE) as a plain Python object"
                + (", and TemplateRCNN reads optional 'template' entries of its inputs and applies the template "
                   "reference through a forward hook on the backbone" if arch == "TemplateRCNN" else "")
                + "; use --export-method tracing")
    if fmt == "onnx" and not onnx_available():
        raise ExportError("--format onnx needs the 'onnx' package (torch.onnx.export imports it), which is not "
                          "installed here: pip install onnx (and onnxruntime to run the file or --run-eval it)")


# ---------------------------------------------------------------------------------------------- signature
def _is_segdec(model) -> bool:
    from ..segdec.model import SegDecNet

    return isinstance(model, SegDecNet)


def _needs_template(model) -> bool:
    """Whether the exported ``model`` takes a template: TemplateRCNN MODE pre / inter, TR-Post, or a mask head
    whose inference reads templates (e.g. ``BoxSupervisedMaskHead``'s refinement with ``WEAK.USE_TEMPLATE``)."""
    from ..rddn.meta_arch import TemplateRCNN

    if not isinstance(model, TemplateRCNN):
        return False
    heads = model.roi_heads
    mask_reads = bool(getattr(heads, "mask_on", False) and not heads.training
                      and getattr(heads.mask_head, "needs_templates", False))
    return model.template_mode in ("pre", "inter") or model.template_post or mask_reads


def _mask_on(model) -> bool:
    return bool(getattr(getattr(model, "roi_heads", None), "mask_on", False))


def export_signature(model) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(input names, output names) of the exported ``model``, in the order of the file's arguments and
    results (module doc)."""
    if _is_segdec(model):
        return ("image",), ("sem_seg", "score", "seg_probs")
    inputs = ("image", "template") if _needs_template(model) else ("image",)
    outputs = ("pred_boxes", "scores", "pred_classes") + (("pred_masks",) if _mask_on(model) else ())
    return inputs, outputs


def _rcnn_outputs(model, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, ...]:
    """The R-CNN outputs of the module doc for a batch of one."""
    inst = model.inference(batched_inputs, do_postprocess=False)[0]
    out = (inst.pred_boxes.tensor, inst.scores, inst.pred_classes)
    return out + ((inst.pred_masks,) if inst.has("pred_masks") else ())


def _segdec_outputs(model, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, ...]:
    """The SegDecNet outputs of the module doc for a batch of one (``batched_inputs`` without height/width:
    the map is upsampled to the input size, which a traced model follows)."""
    raw = model.inference(batched_inputs, do_postprocess=False)[0]
    size = batched_inputs[0]["image"].shape[-2:]
    full = model.postprocess(batched_inputs, raw["seg_probs"][None], raw["score"][None], size)[0]
    return full["sem_seg"], full["score"], raw["seg_probs"]


def _inference_func(model) -> Callable:
    return _segdec_outputs if _is_segdec(model) else _rcnn_outputs


def _model_inputs(model, sample: Dict) -> Dict[str, torch.Tensor]:
    """The tensors of ``sample`` the exported model takes (others, e.g. height / width / file_name, dropped)."""
    names, _ = export_signature(model)
    missing = [k for k in names if sample.get(k) is None]
    if missing:
        raise ExportError(f"the sample input has no {missing}: {type(model).__name__} is exported with inputs "
                          f"{list(names)} (a template model needs a sample template: --sample-template)")
    return {k: sample[k] for k in names}


@torch.no_grad()
def eager_outputs(model, sample: Dict) -> Dict[str, torch.Tensor]:
    """The eager ``model``'s outputs (names of :func:`export_signature`) on one input dict."""
    _, names = export_signature(model)
    return dict(zip(names, _inference_func(model)(model, [_model_inputs(model, sample)])))


# ---------------------------------------------------------------------------------------------- scripting
class SegDecNetScriptable(nn.Module):
    """
    The inference of a :class:`~defect_det.segdec.SegDecNet` as a TorchScript-compilable module (its
    ``forward`` takes dicts and its training step reads Detectron2's event storage; this one takes the image
    tensor). Same subnets and parameters, same result as ``SegDecNet.inference``.

    forward(image (C, H, W), 0..255) -> (sem_seg (1, H, W), score (), seg_probs (1, H/8, W/8)).
    """

    def __init__(self, model):
        super().__init__()
        self.segmentation = model.segmentation
        self.decision = model.decision
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), False)
        self.in_channels = int(model.in_channels)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.dim() != 3 or image.shape[0] != self.in_channels:
            raise RuntimeError("SegDecNet: expected an image (C, H, W) with C = MODEL.SEGDEC.IN_CHANNELS")
        if image.shape[1] % 8 != 0 or image.shape[2] % 8 != 0:
            raise RuntimeError("SegDecNet: image height and width must be multiples of 8")
        x = (image[None].float() - self.pixel_mean) / self.pixel_std
        features, seg_logits = self.segmentation(x)
        probs = torch.sigmoid(seg_logits)
        score = torch.sigmoid(self.decision(features, seg_logits))
        sem_seg = F.interpolate(probs, size=[image.shape[1], image.shape[2]], mode="bilinear", align_corners=False)
        return sem_seg[0], score[0], probs[0]


def script_model(model) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``model`` (SegDecNet only; see :func:`check_export`)."""
    if not _is_segdec(model):
        raise ExportError(f"scripting supports SegDecNet only, got {type(model).__name__} (use tracing)")
    return torch.jit.script(SegDecNetScriptable(model).eval())


# ---------------------------------------------------------------------------------------------- tracing
def trace_model(model, sample: Dict):
    """
    Trace ``model`` (eval mode) on one input dict with Detectron2's ``TracingAdapter``.

    Args:
        model: a defect_det model (GeneralizedRCNN / TemplateRCNN / SegDecNet).
        sample: one input dict as the test loader gives it (``image``, and ``template`` when the model takes it).
    Returns:
        (traced ScriptModule taking the tensors of :func:`export_signature` positionally, the adapter).
    """
    from detectron2.export import TracingAdapter

    model.eval()
    adapter = TracingAdapter(model, [_model_inputs(model, sample)], _inference_func(model))
    with torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    return traced, adapter


# ---------------------------------------------------------------------------------------------- parity
def _canonical_order(outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """R-CNN outputs with the detections in decreasing score, ties by class then box (x0, y0, x1, y1): eager and
    traced models may order detections of exactly equal score differently (torchvision's ``batched_nms`` takes
    another code path when traced), which is the same result."""
    if "scores" not in outputs or "pred_boxes" not in outputs:
        return outputs
    order = torch.arange(len(outputs["scores"]))
    keys = [outputs["pred_boxes"][:, j] for j in (3, 2, 1, 0)] + [outputs["pred_classes"], -outputs["scores"]]
    for key in keys:  # least significant first; stable sorts
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: (v[order] if v.dim() > 0 and v.shape[0] == len(order) else v) for k, v in outputs.items()}


def compare_outputs(reference: Dict[str, torch.Tensor], other: Dict[str, torch.Tensor],
                    relative: bool = False) -> Dict[str, float]:
    """Max |reference - other| per output name (``inf`` where the shapes differ, e.g. another number of
    detections; 0 for two empty tensors). Detections are compared in a canonical order
    (:func:`_canonical_order`: only detections of equal score may swap). ``relative``: the difference is
    divided by max(1, |reference|), i.e. relative for values above 1 (box coordinates in pixels) and absolute
    below (scores, probabilities): for ONNX Runtime, whose float32 kernels round differently from PyTorch's
    (a 1e-6 relative difference in the features moves a 100-px box coordinate by ~1e-4 px)."""
    if reference.get("scores") is not None and other.get("scores") is not None and \
            reference["scores"].shape == other["scores"].shape:
        reference, other = _canonical_order(reference), _canonical_order(other)
    diffs = {}
    for k, a in reference.items():
        b = other.get(k)
        if b is None or tuple(a.shape) != tuple(b.shape):
            diffs[k] = float("inf")
        elif a.numel() == 0:
            diffs[k] = 0.0
        else:
            d = (a.double() - b.double()).abs()
            diffs[k] = float((d / a.double().abs().clamp(min=1.0)).max() if relative else d.max())
    return diffs


def resized_inputs(sample: Dict, size: Tuple[int, int]) -> Dict:
    """``sample`` with its ``image`` (and ``template``) resized (bilinear) to ``size`` = (H, W), same dtype;
    other entries dropped. Used to check an exported model at sizes other than the tracing size."""
    out = {}
    for k in ("image", "template"):
        t = sample.get(k)
        if t is None:
            continue
        r = F.interpolate(t[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
        out[k] = r.round().clamp(0, 255).to(t.dtype) if not t.is_floating_point() else r.to(t.dtype)
    return out


def _check_sizes(model, sample: Dict) -> List[Tuple[int, int]]:
    """Two sizes other than the sample's for the parity check (multiples of 8 for SegDecNet)."""
    h, w = sample["image"].shape[-2:]
    s = 16 if _is_segdec(model) else 24
    return [(int(h) + 2 * s, int(w) + s), (int(h) + s, int(w) + 3 * s)]


# ---------------------------------------------------------------------------------------------- export
def _info(cfg, model, fmt: str, method: str, sample: Dict) -> Dict:
    inputs, outputs = export_signature(model)
    info = {
        "format": fmt,
        "export_method": method,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "input_format": cfg.INPUT.FORMAT,
        "traced_size": [int(x) for x in sample["image"].shape[-2:]],
        "torch_version": torch.__version__,
    }
    if _is_segdec(model):
        info["input_size"] = [int(x) for x in cfg.MODEL.SEGDEC.INPUT_SIZE]
    else:
        info.update(min_size_test=int(cfg.INPUT.MIN_SIZE_TEST), max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
                    num_classes=int(cfg.MODEL.ROI_HEADS.NUM_CLASSES), roi_heads=cfg.MODEL.ROI_HEADS.NAME)
        if cfg.MODEL.META_ARCHITECTURE == "TemplateRCNN":
            # the alignment (INPUT.TEMPLATE.ALIGN) is a mapper step, not part of the exported model
            info.update(template_mode=cfg.MODEL.TEMPLATE.MODE, template_post=bool(cfg.MODEL.TEMPLATE.POST),
                        template_align=bool(cfg.INPUT.TEMPLATE.ALIGN))
    return info


def export_model(cfg, model, sample: Dict, output_dir: str, fmt: str = "torchscript", method: str = "tracing",
                 check_sizes: Optional[Sequence[Tuple[int, int]]] = None, atol: float = 1e-4) -> Dict:
    """
    Export ``model`` (built from ``cfg``, weights loaded) to ``output_dir`` and check it against the eager
    model.

    Args:
        cfg: the model's config.
        model: the eager model.
        sample: one input dict as the test loader gives it (the tracing example).
        output_dir: gets ``model.ts`` / ``model.onnx`` and ``export_info.json``.
        fmt, method: see :func:`check_export`.
        check_sizes: (H, W) sizes at which the exported model must reproduce the eager one besides the
            sample's own (default: two larger sizes); ONNX files are checked only with ``onnxruntime``.
        atol: largest allowed |exported - eager| of any output (ONNX: relative above 1, :func:`compare_outputs`).
    Returns:
        the ``export_info.json`` content, with ``path`` (the file) and ``parity`` (per checked size, the max
        difference per output; the TorchScript file is checked after saving and reloading).
    Raises:
        ExportError: a refused combination, or an exported model that differs from the eager one.
    """
    check_export(cfg, fmt, method)
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, EXPORT_FILE_NAMES[fmt])
    inputs, outputs = export_signature(model)
    sample = _model_inputs(model, sample)
    if method == "scripting":
        exported = script_model(model)
    else:
        exported, adapter = trace_model(model, sample)
    if fmt == "torchscript":
        torch.jit.save(exported, path)
    else:
        dynamic = {k: {1: "height", 2: "width"} for k in inputs}  # sizes that vary per call
        if _is_segdec(model):
            dynamic.update(sem_seg={1: "height", 2: "width"}, seg_probs={1: "map_height", 2: "map_width"})
        else:
            dynamic.update({k: {0: "detections"} for k in outputs})
        # torch.onnx.export restores the adapter's training flag afterwards, recursively: the adapter must be in
        # eval mode already, or the model comes back in training mode
        adapter.eval()
        with torch.no_grad():
            torch.onnx.export(adapter, adapter.flattened_inputs, path, opset_version=ONNX_OPSET,
                              input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic)
    info = _info(cfg, model, fmt, method, sample)
    with open(os.path.join(output_dir, EXPORT_INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
    info["path"] = path

    from .runtime import ExportedModel, onnxruntime_available

    if fmt == "onnx" and not onnxruntime_available():
        info["parity"] = "not checked: onnxruntime is not installed"
        return info
    loaded = ExportedModel(path)
    sizes = [tuple(int(x) for x in sample["image"].shape[-2:])]
    sizes += list(check_sizes) if check_sizes is not None else _check_sizes(model, sample)
    parity = {}
    for size in sizes:
        x = sample if size == sizes[0] else resized_inputs(sample, size)
        diff = compare_outputs(eager_outputs(model, x), loaded.run(x), relative=fmt == "onnx")
        parity[f"{size[0]}x{size[1]}"] = diff
        bad = {k: v for k, v in diff.items() if not v <= atol}
        if bad:
            raise ExportError(f"the exported model ({path}) does not reproduce the eager model at input size "
                              f"{size[0]}x{size[1]}: max |exported - eager| {bad} (> {atol}; inf: another number "
                              "of detections or another output shape)")
    info["parity"] = parity
    return info
