"""Registry of the evaluators :class:`defect_det.engine.DefectTrainer` builds (``cfg.TEST.EVALUATOR``)."""
from detectron2.utils.registry import Registry

EVALUATOR_REGISTRY = Registry("DEFECT_EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluators for defect datasets. A registered class is called as
``cls(dataset_name, cfg=cfg, distributed=True, output_dir=output_dir)`` and must be a
Detectron2 ``DatasetEvaluator``.
"""


def build_defect_evaluator(cfg, dataset_name, output_dir=None, distributed=True):
    """Build ``cfg.TEST.EVALUATOR`` for ``dataset_name``."""
    name = cfg.TEST.EVALUATOR
    return EVALUATOR_REGISTRY.get(name)(
        dataset_name, cfg=cfg, distributed=distributed, output_dir=output_dir
    )
