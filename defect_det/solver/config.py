"""defect_det's optimizer keys (``SOLVER.OPTIMIZER``, ``SOLVER.BETAS``, ``SOLVER.SWA``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_solver_config"]


def add_solver_config(cfg):
    """Optimizer keys (``cfg.SOLVER.*``), read by :func:`defect_det.solver.build_optimizer` (which
    ``DefectTrainer.build_optimizer`` calls) and ``DefectTrainer.build_hooks``."""
    # "SGD" (Detectron2's default optimizer, SOLVER.MOMENTUM/NESTEROV) or "AdamW"
    # (SOLVER.BETAS, SOLVER.WEIGHT_DECAY as decoupled decay). AdamW trains from-scratch models
    # on small data (the CPU synthetic baseline) far more reliably than SGD. Detectron2's own
    # DefaultTrainer ignores this key (always SGD): a host trainer must return
    # defect_det.solver.build_optimizer(cfg, model) from its build_optimizer.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Stochastic weight averaging (defect_det/engine/weight_averaging.py; DefectTrainer adds the
    # hook): the mean of the parameters over iterations [START * MAX_ITER, MAX_ITER), one sample
    # every PERIOD iterations and the last one, replaces the model before model_final.pth is
    # written and the final evaluation runs. For constant-lr schedules; not for BatchNorm models.
    cfg.SOLVER.SWA = CN()
    cfg.SOLVER.SWA.ENABLED = False
    cfg.SOLVER.SWA.START = 0.75
    cfg.SOLVER.SWA.PERIOD = 10
