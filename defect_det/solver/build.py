"""The optimizer a defect_det config asks for, for any trainer.

``SOLVER.OPTIMIZER`` (added by :func:`defect_det.config.add_solver_config`) is read only here.
Detectron2's ``DefaultTrainer.build_optimizer`` knows nothing of it and always builds SGD, so a host
project that trains our configs with its own ``DefaultTrainer`` subclass must route the call::

    from defect_det.solver import build_optimizer

    class Trainer(DefaultTrainer):
        @classmethod
        def build_optimizer(cls, cfg, model):
            return build_optimizer(cfg, model)

(``DefectTrainer`` does exactly this.)
"""
import torch
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(cfg, model):
    """
    Build the optimizer of ``cfg.SOLVER.OPTIMIZER`` for ``model``.

    - "SGD": Detectron2's own ``detectron2.solver.build_optimizer`` (momentum, Nesterov, ...);
    - "AdamW": ``torch.optim.AdamW`` with Detectron2's per-parameter groups (``WEIGHT_DECAY_NORM``,
      ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``), ``SOLVER.BETAS``, ``SOLVER.WEIGHT_DECAY`` as the
      decoupled decay, and the same optional gradient clipping (``SOLVER.CLIP_GRADIENTS``).

    A config without the key (plain Detectron2) gets SGD.

    Args:
        cfg (CfgNode): a config with :func:`defect_det.config.add_defect_config` keys.
        model (nn.Module)
    Returns:
        torch.optim.Optimizer
    """
    kind = cfg.SOLVER.get("OPTIMIZER", "SGD")
    if kind not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {kind!r}")
    if kind == "SGD":
        return d2_build_optimizer(cfg, model)
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    optimizer = torch.optim.AdamW(
        params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
    return maybe_add_gradient_clipping(cfg, optimizer)
