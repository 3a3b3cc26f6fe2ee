"""SegDecNet (projects/SegDecNet): segmentation + decision network for surface defects, end to end, with
its training extensions (dynamic loss balancing, gradient-flow adjustment, distance-weighted
segmentation loss, frequency-of-use sampling) and mixed supervision.

- :mod:`.model`: ``SegDecNet`` (registered meta-architecture);
- :mod:`.tta`: ``SegDecNetWithTTA`` (flip / transpose test-time augmentation);
- :mod:`.mapper`: ``SegDecDatasetMapper`` (resize, pixel targets, loss weights);
- :mod:`.sampler`: ``FrequencyOfUseSampler`` (``DATALOADER.SAMPLER_TRAIN: "FrequencyOfUseSampler"``);
- :mod:`.config`: ``add_segdec_config``.
The image- and pixel-level evaluators are shared (``defect_det.evaluation``).
"""
from .config import add_segdec_config
from .mapper import SegDecDatasetMapper, distance_transform_weights, load_mask, segdec_targets, select_segmented_files
from .model import SEGDEC_STRIDE, ChannelNorm, DecisionSubnet, SegDecNet, SegmentationSubnet, conv_norm_relu
from .sampler import FREQUENCY_MODES, FrequencyOfUseSampler, frequency_of_use_probabilities
from .tta import SegDecNetWithTTA, apply_transform, flip_transforms, invert_transform

__all__ = [
    "ChannelNorm",
    "DecisionSubnet",
    "FREQUENCY_MODES",
    "FrequencyOfUseSampler",
    "SEGDEC_STRIDE",
    "SegDecDatasetMapper",
    "SegDecNet",
    "SegDecNetWithTTA",
    "SegmentationSubnet",
    "add_segdec_config",
    "apply_transform",
    "conv_norm_relu",
    "distance_transform_weights",
    "flip_transforms",
    "frequency_of_use_probabilities",
    "invert_transform",
    "load_mask",
    "segdec_targets",
    "select_segmented_files",
]
