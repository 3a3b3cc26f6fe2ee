#!/usr/bin/env python
"""
The RDDN table on the synthetic fabric benchmark (projects/RDDN/README.md).

Every row trains one config of ``configs/RDDN/synthetic/`` (the CPU recipe) for the same schedule with one
intra-op thread, ``--jobs`` rows at a time, and is scored by box AP50 on the validation split
``synthetic_fabric_val``; TR-Post rows only evaluate the baseline's weights with templates. One JSON record
per row and seed goes to ``projects/RDDN/results/``; rows already there are never recomputed (an
interrupted run continues). ``--final`` evaluates chosen rows ONCE on the seen-texture test split and the
unseen textures (``projects/RDDN/results/final/``). The tables (mean ± std over seeds, difference to the
baseline and whether it exceeds both standard deviations) are rendered from the records into
``projects/RDDN/rddn_table.md`` and the README.

    python tools/rddn_table.py --list
    python tools/rddn_table.py --rows baseline pre pre_align --seeds 0 1 2 --jobs 2
    python tools/rddn_table.py --render
    python tools/rddn_table.py --final --rows baseline pre_align --seeds 0 1 2
"""
from defect_det.rddn.table import main

if __name__ == "__main__":
    main(description=__doc__)
