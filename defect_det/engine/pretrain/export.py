"""Export of a pre-trained backbone: its bottom-up weights as a Detectron2 checkpoint that
``DetectionCheckpointer`` loads into ``GeneralizedRCNN`` / ``TemplateRCNN`` (``MODEL.WEIGHTS``)."""
import hashlib
import os
from collections import OrderedDict

import torch

from .model import BackbonePretrainNet
from .settings import AUTHOR

__all__ = ["bottom_up_state_dict", "export_backbone", "sha256_file"]


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def bottom_up_state_dict(net: BackbonePretrainNet, dtype=torch.float32):
    """The bottom-up weights under their detector names (``backbone.bottom_up.<name>``), CPU copies;
    floating tensors cast to ``dtype`` (integer buffers such as ``num_batches_tracked`` kept)."""
    out = OrderedDict()
    for k, v in net.bottom_up.state_dict().items():
        v = v.detach().cpu().clone()
        out[net.key_prefix + k] = v.to(dtype) if v.is_floating_point() else v
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_backbone(net: BackbonePretrainNet, path, author=AUTHOR, dtype=torch.float32):
    """
    Write ``{"model": bottom_up_state_dict(net), "__author__": author, "matching_heuristics": False}``
    (atomically: temp file + rename) and return its sha256.
    """
    ckpt = {"model": bottom_up_state_dict(net, dtype), "__author__": author, "matching_heuristics": False}
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return sha256_file(path)
