#!/usr/bin/env python
"""
The end of ``make demo``: box AP50 with its 95% bootstrap interval on the seen-texture test split and
the unseen-texture split for the model just trained, next to rows of the benchmark table
(``projects/Benchmark/results/final/<row>_s<seed>.json``, written by ``tools/recipe_search.py
--final``) for comparison.

    python tools/demo_report.py --results output/demo/results.json --compare base pre_pt

Rows whose result file is missing are listed as "not measured yet" (nothing is made up).
"""
import sys

from defect_det.utils.demo_report import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
