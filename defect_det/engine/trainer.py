"""The trainer behind ``tools/train_net.py``: Detectron2's ``DefaultTrainer`` plus

- ``SOLVER.OPTIMIZER``: "SGD" (Detectron2's own optimizer) or "AdamW";
- data loaders whose mapper fits the model (``defect_det.data.build_defect_mapper``: the paired
  image/template mapper for ``TemplateRCNN``, with its dataset checks);
- evaluators from :data:`defect_det.evaluation.EVALUATOR_REGISTRY` (``cfg.TEST.EVALUATOR``);
- test-time augmentation (``TEST.AUG.ENABLED``, SegDecNet): :meth:`DefectTrainer.test_with_TTA`;
- stochastic weight averaging (``SOLVER.SWA.ENABLED``): :class:`.weight_averaging.WeightAveragingHook`
  before the checkpointer and the evaluation, its running mean a checkpointable (resumes);
- multi-process training on CPU (gloo): Detectron2's ``create_ddp_model`` always passes
  ``device_ids=[local_rank]``, which PyTorch's DDP rejects for CPU modules. ``DefectTrainer.__init__``
  builds the trainer as ``DefaultTrainer.__init__`` does, wrapping the model with our
  :func:`create_ddp_model` (CPU models without ``device_ids``; GPU models exactly as Detectron2).
"""
import logging
import os
import weakref

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine import create_ddp_model as d2_create_ddp_model
from detectron2.engine import hooks as d2_hooks
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel
from fvcore.nn.precise_bn import get_bn_modules

from ..data import build_defect_mapper
from ..segdec.sampler import FrequencyOfUseSampler
from ..evaluation import build_defect_evaluator, normalize_test_results
from ..solver import build_optimizer
from .weight_averaging import WeightAveragingHook

__all__ = ["DefectTrainer", "create_ddp_model"]


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model`` for GPU models; a CPU model is wrapped by PyTorch's DDP without
    ``device_ids`` (the only form it accepts for CPU modules; Detectron2 always passes
    ``device_ids=[local_rank]``). One process: the model itself."""
    first_param = next(model.parameters(), None)
    if comm.get_world_size() > 1 and first_param is not None and first_param.device.type == "cpu":
        return DistributedDataParallel(model, **kwargs)
    return d2_create_ddp_model(model, **kwargs)


class DefectTrainer(DefaultTrainer):
    """``DefaultTrainer`` for defect_det configs (see module docstring)."""

    def __init__(self, cfg):
        """Detectron2's ``DefaultTrainer.__init__`` step by step, with :func:`create_ddp_model` (CPU DDP)."""
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):  # setup_logger not called for d2
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """Detectron2's hooks, plus the weight-averaging hook with ``SOLVER.SWA.ENABLED``, placed
        before the checkpointer and the evaluation so that both see the averaged model."""
        ret = super().build_hooks()
        if not self.cfg.SOLVER.SWA.ENABLED:
            return ret
        model = getattr(self.model, "module", self.model)
        if get_bn_modules(model):
            raise ValueError("SOLVER.SWA.ENABLED: the model has BatchNorm layers in training mode; their "
                             "running statistics would not match the averaged weights (not supported)")
        swa = WeightAveragingHook.from_config(self.cfg, model)
        self.checkpointer.add_checkpointable("weight_averaging", swa.average)
        first = next(i for i, h in enumerate(ret)
                     if isinstance(h, (d2_hooks.PeriodicCheckpointer, d2_hooks.EvalHook)))
        ret.insert(first, swa)
        return ret

    @classmethod
    def build_optimizer(cls, cfg, model):
        """``SOLVER.OPTIMIZER``: :func:`defect_det.solver.build_optimizer` (Detectron2's SGD, or AdamW
        with the same parameter groups and gradient clipping)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = build_defect_mapper(cfg, True, cfg.DATASETS.TRAIN)
        if cfg.DATALOADER.SAMPLER_TRAIN == "FrequencyOfUseSampler":  # SegDecNet (defect_det/segdec/sampler.py)
            dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
            sampler = FrequencyOfUseSampler.from_dataset_dicts(
                dataset, seed=cfg.SEED if cfg.SEED >= 0 else None, mode=cfg.DATALOADER.FREQUENCY_OF_USE_MODE)
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = build_defect_mapper(cfg, False, [dataset_name])
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_defect_evaluator(cfg, dataset_name, output_dir=output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` under test-time augmentation (SegDecNet only:
        :class:`~defect_det.segdec.SegDecNetWithTTA`, ``MODEL.SEGDEC.TEST_AUG_*``) on
        every test dataset, as Detectron2's own ``test_with_TTA`` does for R-CNNs.

        Returns:
            ``{"<dataset>_TTA": {task: metrics}}``; evaluator outputs go to
            ``OUTPUT_DIR/inference_TTA/<dataset>``.
        """
        from ..segdec.tta import SegDecNetWithTTA

        tta = SegDecNetWithTTA.from_config(cfg, model)
        evaluators = [cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
                      for name in cfg.DATASETS.TEST]
        results = normalize_test_results(cls.test(cfg, tta, evaluators), list(cfg.DATASETS.TEST))
        return {name + "_TTA": res for name, res in results.items()}

    def train(self):
        """Train, then return the results of the final evaluation (``{}`` if none ran).
        ``DefaultTrainer.train`` returns them only when ``TEST.EXPECTED_RESULTS`` is set."""
        super().train()
        return getattr(self, "_last_eval_results", None) or {}
