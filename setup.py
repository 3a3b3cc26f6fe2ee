#!/usr/bin/env python
"""defect_det: a Detectron2 extension for industrial surface and fabric defect detection."""
from setuptools import find_packages, setup

setup(
    name="defect_det",
    version="0.1.0",
    description="Detectron2 extension for industrial defect detection (RDDN, Sinkhorn NMS, SegDecNet)",
    packages=find_packages(exclude=("tests", "tools", "configs", "projects")),
    python_requires=">=3.8",
    install_requires=["fvcore", "pycocotools", "numpy"],
)
