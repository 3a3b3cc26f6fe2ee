"""
``FilledBoxMaskHead``: the trivial mask predictor "the defect is its whole box", the lower bound of
the box-supervised mask table (projects/WeakMask/README.md).

It has no parameters: every detection gets a constant, class-agnostic logit map (R, 1, M, M) of
+``FILL_LOGIT``, which Detectron2's ``mask_rcnn_inference`` + ``paste_masks_in_image`` turn into the
filled box. Evaluate any trained detector with it (the checkpoint's own mask-head weights, if any,
are ignored with Detectron2's "unexpected keys" note):

    python tools/train_net.py --config-file <mask config> --eval-only MODEL.WEIGHTS <model.pth> \
        MODEL.ROI_MASK_HEAD.NAME FilledBoxMaskHead

In training it contributes a zero ``loss_mask`` (kept in the graph so that DDP sees every output).
"""
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, BaseMaskRCNNHead

__all__ = ["FilledBoxMaskHead"]

FILL_LOGIT = 20.0  # sigmoid(20) = 1 - 2e-9: the pasted mask is the box at any threshold in (0, 1)


@ROI_MASK_HEAD_REGISTRY.register()
class FilledBoxMaskHead(BaseMaskRCNNHead):
    """Predicts the filled box for every instance. Input (R, C, P, P) pooled features; mask logits
    (R, 1, 2P, 2P), the resolution of Detectron2's mask heads."""

    @configurable
    def __init__(self, *, input_shape: ShapeSpec, **kwargs):
        super().__init__(**kwargs)
        self.input_shape = input_shape

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["input_shape"] = input_shape
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        r, _, h, w = x.shape
        return x.new_full((r, 1, 2 * h, 2 * w), FILL_LOGIT)

    def forward(self, x, instances):
        if self.training:
            return {"loss_mask": x.sum() * 0.0}
        return super().forward(x, instances)
