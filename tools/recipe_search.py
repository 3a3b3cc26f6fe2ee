#!/usr/bin/env python
"""
The recipe search of the CPU synthetic fabric benchmark (projects/Benchmark/README.md, issue 11).

Every row trains one config + overrides through ``tools/train_net.py`` and evaluates box AP50 on
the VALIDATION split ``synthetic_fabric_val`` (carved from the seen training release by
``tools/convert_tianchi.py --val-size``; the test splits are never looked at here). Rows run as
separate processes with ONE intra-op thread each (``OMP_NUM_THREADS=1``, no DataLoader workers),
``--jobs`` of them at a time (2 on a 2-core machine), so a row's time is comparable to another's only
within the same ``--jobs``.

    python tools/recipe_search.py --list
    python tools/recipe_search.py --rows pre pre_fast --jobs 2          # resumable: done rows are skipped
    python tools/recipe_search.py --render                              # table only, from the JSON results
    python tools/recipe_search.py --final --rows pre_fast               # ONCE, for the chosen rows: test splits

``--final`` evaluates a trained row's ``model_final.pth`` (no training) on the seen test split and the
unseen-texture split and writes ``results/final/<row>_s<seed>.json``: the numbers the READMEs report.
Use it only for rows already chosen on validation, once per row.

Each finished row writes ``projects/Benchmark/results/recipe/<row>_s<seed>.json`` (row, label,
config, overrides, seed, iterations, commit, command, metrics per validation set, wall time) and is
never recomputed (``--force`` reruns). The table (``--render``, also printed after every run) goes to
``projects/Benchmark/results/recipe_table.md``.
"""
from defect_det.utils.recipe_search import main

if __name__ == "__main__":
    main(description=__doc__)
