"""Helpers shared by the result-table scripts (``tools/*_table.py``)."""
from typing import List

__all__ = ["schedule_opts"]


def schedule_opts(iters: int) -> List[str]:
    """
    ``KEY VALUE`` overrides of a table row trained for ``iters`` iterations: the learning rate drops
    (x0.1) at 4/5 and 14/15 of the run, warm-up over min(100, iters / 10) iterations, and no
    intermediate checkpoint (only ``model_final.pth``).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({iters * 4 // 5},{iters * 14 // 15})",
            "SOLVER.WARMUP_ITERS", str(min(100, iters // 10)), "SOLVER.CHECKPOINT_PERIOD", str(10 * iters)]
