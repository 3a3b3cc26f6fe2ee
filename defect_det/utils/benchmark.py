"""Helpers shared by the ``tools/benchmark_*.py`` scripts (machine description for their headers)."""
import contextlib
import platform

import torch

__all__ = ["cpu_model", "torch_threads"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads (0: leave as is) and restore the previous count after,
    so that a benchmark's ``main()`` called in-process (tests) leaves no trace."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
