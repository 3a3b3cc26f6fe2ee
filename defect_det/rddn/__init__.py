"""RDDN (projects/RDDN): Faster / Cascade R-CNN + FPN with template reference (TR-Pre, TR-Inter, TR-Post,
PTG) and context reference (CR), fed by a paired image/template mapper.

- :mod:`.meta_arch`: ``TemplateRCNN`` (registered meta-architecture; the template modes);
- :mod:`.roi_heads`: ``RDDNStandardROIHeads`` / ``RDDNCascadeROIHeads`` (context reference, TR-Post);
- :mod:`.context`, :mod:`.template_post`, :mod:`.pseudo_template`: the three references' building blocks;
- :mod:`.mapper`: ``PairedDatasetMapper`` (image + template, alignment, misalignment augmentation);
- :mod:`.config`: ``add_rddn_config``.
"""
from .config import add_rddn_config
from .context import ContextROIPooler, context_boxes
from .mapper import PairedDatasetMapper, mask_loading_args, template_usage
from .meta_arch import TEMPLATE_MODES, TemplateRCNN
from .pseudo_template import PseudoTemplateGenerator
from .roi_heads import RDDNCascadeROIHeads, RDDNStandardROIHeads
from .template_post import (
    TEMPLATE_PREFIX,
    TEMPLATE_VALID_KEY,
    region_similarity,
    rescore_by_template,
    split_template_features,
)

__all__ = [
    "ContextROIPooler",
    "PairedDatasetMapper",
    "PseudoTemplateGenerator",
    "RDDNCascadeROIHeads",
    "RDDNStandardROIHeads",
    "TEMPLATE_MODES",
    "TEMPLATE_PREFIX",
    "TEMPLATE_VALID_KEY",
    "TemplateRCNN",
    "add_rddn_config",
    "context_boxes",
    "mask_loading_args",
    "region_similarity",
    "rescore_by_template",
    "split_template_features",
    "template_usage",
]
