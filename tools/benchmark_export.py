#!/usr/bin/env python
"""The export table of README ("Deployable models"): every architecture x format x method -> works (parity with
the eager model at the tracing size and two others) / fails (why), with eager vs exported latency per image on
CPU at the config's test size (untrained seed-0 weights; defect_det/export/benchmark.py).

    python tools/benchmark_export.py                                   # all rows, 1 thread
    python tools/benchmark_export.py --architectures SegDecNet --runs 20 --json output/export_bench.json

Wall-clock numbers: measure on an idle machine, or say that it was not.
"""
from defect_det.export.benchmark import main

if __name__ == "__main__":
    main(description=__doc__)
