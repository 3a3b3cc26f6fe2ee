#!/usr/bin/env python
"""defect_det: a Detectron2 extension for industrial surface and fabric defect detection.

Builds the compiled kernels ``defect_det._C`` (the batched Sinkhorn-Knopp op):
  * the CPU kernel always;
  * the CUDA kernel when ``FORCE_CUDA=1``, or when a GPU is visible and the toolkit at ``CUDA_HOME``
    has the same major.minor version as the CUDA torch was built with (``torch.version.cuda``).
Install with ``pip install -e . --no-build-isolation`` (the build needs the installed torch).
"""
import glob
import os
import re
import subprocess

from setuptools import find_packages, setup

CSRC = os.path.join("defect_det", "csrc")
# No -ffast-math: the kernels rely on IEEE rounding (exp range reduction) and on -inf (masks); the
# reductions are written with explicit lanes so that GCC vectorises them without reassociation.
# -fno-trapping-math (no numeric change) lets GCC if-convert the branch-free exp's final select:
# without it the exp loops stay scalar ("control flow in loop") and the op runs ~4x slower.
CXX_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
# torch's CPU build parallelises with OpenMP, and at::parallel_for is an inline template that only
# runs in parallel in code compiled with -fopenmp (without it every kernel silently runs on 1 thread).
OMP_FLAGS = ["-fopenmp"]


def _cpu_flags():
    """-mavx2 -mfma when the building CPU has them (the extension is built where it runs: editable
    install); DEFECT_DET_NO_AVX2=1 turns this off for a portable build."""
    if os.environ.get("DEFECT_DET_NO_AVX2", "0") == "1":
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(re.findall(r"\b(avx2|fma)\b", f.read()))
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if flags == {"avx2", "fma"} else []


def _nvcc_version(cuda_home):
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    try:
        out = subprocess.check_output([nvcc, "--version"], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _want_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    if not (torch.cuda.is_available() and CUDA_HOME and torch.version.cuda):
        return False
    torch_cuda = tuple(int(x) for x in torch.version.cuda.split(".")[:2])
    found = _nvcc_version(CUDA_HOME)
    if found != torch_cuda:
        print(f"[defect_det] not building CUDA kernels: nvcc {found} at {CUDA_HOME} != torch's CUDA {torch_cuda}")
        return False
    return True


def get_extensions():
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:  # metadata-only invocations without torch
        return [], {}
    sources = [os.path.join(CSRC, "vision.cpp")] + sorted(glob.glob(os.path.join(CSRC, "sinkhorn", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "sinkhorn", "*.cu")))
    if _want_cuda():
        ext = CUDAExtension(
            "defect_det._C",
            sources + cuda_sources,
            include_dirs=[os.path.abspath(CSRC)],
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": CXX_FLAGS + OMP_FLAGS + _cpu_flags(), "nvcc": ["-O3", "--use_fast_math"]},
            extra_link_args=OMP_FLAGS,
        )
    else:
        ext = CppExtension(
            "defect_det._C",
            sources,
            include_dirs=[os.path.abspath(CSRC)],
            extra_compile_args={"cxx": CXX_FLAGS + OMP_FLAGS + _cpu_flags()},
            extra_link_args=OMP_FLAGS,
        )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = get_extensions()

setup(
    name="defect_det",
    version="0.1.0",
    description="Detectron2 extension for industrial defect detection (RDDN, Sinkhorn NMS, SegDecNet)",
    packages=find_packages(exclude=("tests", "tools", "configs", "projects")),
    python_requires=">=3.8",
    install_requires=["fvcore", "pycocotools", "numpy"],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
