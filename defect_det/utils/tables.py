"""Helpers shared by the result-table scripts (``tools/*_table.py``)."""
import os
import subprocess
from typing import List, Optional

__all__ = ["git_commit", "schedule_opts"]


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


def git_commit(repo: Optional[str] = None) -> Optional[str]:
    """Short hash of HEAD of the git checkout at ``repo`` (default: the one holding defect_det), or
    None outside a git checkout; recorded in every results JSON."""
    repo = repo or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None
