"""
Run an exported model (:mod:`.deploy`) from Python as the eager model runs: :class:`ExportedModel` takes the
test loader's input dicts and returns what the eager model returns (``{"instances": Instances}`` rescaled to
each input's ``height`` / ``width`` with masks pasted, or SegDecNet's ``{"sem_seg", "score"}``), so Detectron2's
``inference_on_dataset`` and our evaluators score it unchanged (``tools/export_model.py --run-eval``).

A deployment that does not want Detectron2 at all needs only ``torch`` + ``torchvision`` (whose import
registers the ``roi_align`` / ``nms`` ops the file calls) and ``export_info.json``: see README, "Deployable
models".
"""
import importlib.util
import json
import os
from typing import Dict, List

import torch
import torch.nn.functional as F

from .deploy import EXPORT_INFO_FILE, ExportError

__all__ = ["ExportedModel", "onnxruntime_available"]


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` (needed to run an ONNX file from Python) is installed."""
    return importlib.util.find_spec("onnxruntime") is not None


class ExportedModel:
    """
    An exported model file with its ``export_info.json``::

        model = ExportedModel("output/export/model.ts")
        outputs = model.run({"image": image, "template": template})   # {name: tensor}, module doc of .deploy
        results = model(batched_inputs)                               # like the eager model's outputs
    """

    def __init__(self, path: str):
        """
        Args:
            path: ``model.ts`` (TorchScript) or ``model.onnx`` (needs ``onnxruntime``); ``export_info.json``
                must be in the same folder.
        """
        info_path = os.path.join(os.path.dirname(os.path.abspath(path)), EXPORT_INFO_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"exported model {path!r} does not exist")
        if not os.path.isfile(info_path):
            raise FileNotFoundError(f"{info_path!r} (written by tools/export_model.py beside the model) does not exist")
        with open(info_path) as f:
            self.info = json.load(f)
        self.path = path
        self.inputs: List[str] = list(self.info["inputs"])
        self.outputs: List[str] = list(self.info["outputs"])
        self.is_segdec = self.info["meta_architecture"] == "SegDecNet"
        if path.endswith(".onnx"):
            if not onnxruntime_available():
                raise ExportError(f"{path}: running an ONNX file needs onnxruntime, which is not installed")
            import onnxruntime

            self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            self._module = None
        else:
            import torchvision  # noqa: F401  (registers torchvision::roi_align / nms, which the file calls)

            self._module = torch.jit.load(path, map_location="cpu")
            self._session = None

    def run(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The file on one image: ``inputs`` holds a (C, H, W) tensor per name of ``self.inputs`` (others are
        ignored); returns {output name: tensor} (module doc of :mod:`.deploy`)."""
        missing = [k for k in self.inputs if inputs.get(k) is None]
        if missing:
            name = inputs.get("file_name", "an input")
            raise ValueError(f"{name}: the exported model ({self.path}) takes {self.inputs}; missing {missing}")
        args = [inputs[k] for k in self.inputs]
        if self._module is not None:
            with torch.no_grad():
                out = self._module(*args)
        else:
            feeds = {k: a.numpy() for k, a in zip(self.inputs, args)}
            out = [torch.from_numpy(x) for x in self._session.run(self.outputs, feeds)]
        if len(out) != len(self.outputs):
            raise ExportError(f"{self.path} returned {len(out)} tensors, export_info.json lists {self.outputs}")
        return dict(zip(self.outputs, out))

    def _postprocess(self, d: Dict, out: Dict[str, torch.Tensor]) -> Dict:
        """One input's eager-style result from the raw outputs."""
        h, w = (int(x) for x in d["image"].shape[-2:])
        if self.is_segdec:
            if "height" not in d and "width" not in d:
                return {"sem_seg": out["sem_seg"], "score": out["score"]}
            size = (int(d.get("height", h)), int(d.get("width", w)))  # as SegDecNet.postprocess
            prob = F.interpolate(out["seg_probs"][None], size=size, mode="bilinear", align_corners=False)[0]
            return {"sem_seg": prob, "score": out["score"]}
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        inst = Instances((h, w))
        inst.pred_boxes = Boxes(out["pred_boxes"])
        inst.scores = out["scores"]
        inst.pred_classes = out["pred_classes"]
        if "pred_masks" in out:
            inst.pred_masks = out["pred_masks"]
        return {"instances": detector_postprocess(inst, d.get("height", h), d.get("width", w))}

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict]:
        """The eager model's contract at inference (one file call per input dict)."""
        return [self._postprocess(d, self.run(d)) for d in batched_inputs]
