"""
Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", 2018) as a Detectron2 training hook, for constant-learning-rate schedules such as
SegDecNet's plain SGD.

From iteration ``s = round(SOLVER.SWA.START * MAX_ITER)`` on, every ``SOLVER.SWA.PERIOD``
iterations (and always at the last one) the running mean of the model's parameters is updated:
``w̄ ← w̄ + (w − w̄) / (n + 1)``, ``n ← n + 1``. After the last iteration the mean replaces the
model's parameters, before Detectron2's PeriodicCheckpointer writes ``model_final.pth`` and before
the final evaluation, so both see the averaged model. Buffers (e.g. BatchNorm running statistics)
are not averaged and not recomputed: the hook is meant for models without batch statistics
(SegDecNet's ChannelNorm has none); DefectTrainer refuses it for models with BatchNorm layers.

The running mean and ``n`` are a checkpointable (``weight_averaging``) of the trainer's
checkpointer, so ``--resume`` continues the same average.
"""
from typing import Dict

import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["WeightAverage", "WeightAveragingHook"]


class WeightAverage(nn.Module):
    """The running mean of a model's parameters, held as buffers (so ``state_dict`` saves it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._names: Dict[str, str] = {}
        for name, p in model.named_parameters():
            key = name.replace(".", "__")
            self._names[name] = key
            self.register_buffer(key, torch.zeros_like(p, dtype=torch.float32))
        self.register_buffer("num_averaged", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module):
        """Add the current parameters of ``model`` to the mean."""
        n = int(self.num_averaged)
        for name, p in model.named_parameters():
            avg = getattr(self, self._names[name])
            avg.add_((p.detach().float() - avg) / (n + 1))  # n = 0: avg becomes p
        self.num_averaged += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module):
        """Replace the parameters of ``model`` by the mean (needs at least one update)."""
        if int(self.num_averaged) == 0:
            raise RuntimeError("WeightAverage.copy_to: nothing has been averaged yet")
        for name, p in model.named_parameters():
            p.copy_(getattr(self, self._names[name]).to(p.dtype))


class WeightAveragingHook(HookBase):
    """Detectron2 hook running :class:`WeightAverage` (module doc). Place it before the
    PeriodicCheckpointer and the EvalHook (``DefectTrainer.build_hooks`` does)."""

    def __init__(self, model: nn.Module, start_iter: int, period: int, max_iter: int):
        """
        Args:
            model: the trained model (a DDP wrapper is unwrapped).
            start_iter: first averaged iteration, in [0, max_iter - 1].
            period: iterations between two averaged ones (>= 1); the last iteration always counts.
            max_iter: the trainer's MAX_ITER.
        """
        if period < 1:
            raise ValueError(f"SOLVER.SWA.PERIOD must be >= 1, got {period}")
        if not 0 <= start_iter <= max_iter - 1:
            raise ValueError(f"SOLVER.SWA.START gives iteration {start_iter}, outside [0, {max_iter - 1}]")
        self.model = getattr(model, "module", model)
        self.start_iter, self.period, self.max_iter = int(start_iter), int(period), int(max_iter)
        self.average = WeightAverage(self.model)

    @classmethod
    def from_config(cls, cfg, model):
        start = cfg.SOLVER.SWA.START
        if not 0.0 <= start < 1.0:
            raise ValueError(f"SOLVER.SWA.START is a fraction of SOLVER.MAX_ITER in [0, 1), got {start}")
        max_iter = cfg.SOLVER.MAX_ITER
        return cls(model, min(int(round(start * max_iter)), max_iter - 1), cfg.SOLVER.SWA.PERIOD, max_iter)

    def averaged_iteration(self, it: int) -> bool:
        """Whether iteration ``it`` (0-based) enters the mean."""
        if it < self.start_iter:
            return False
        return (it - self.start_iter) % self.period == 0 or it == self.max_iter - 1

    def after_step(self):
        it = self.trainer.iter
        if self.averaged_iteration(it):
            self.average.update(self.model)
            if hasattr(self.trainer, "storage"):
                self.trainer.storage.put_scalar("swa/num_averaged", int(self.average.num_averaged),
                                                smoothing_hint=False)
        if it == self.max_iter - 1:
            self.average.copy_to(self.model)
