#!/usr/bin/env python
"""
Convert a Tianchi defect release to COCO JSON (see ``defect_det/data/tianchi_convert/``).

Examples::

    python tools/convert_tianchi.py fabric \\
        --root datasets/tianchi_fabric/guangdong1_round2_train_part1_20190924 \\
        --root datasets/tianchi_fabric/guangdong1_round2_train2_20191004_images \\
        --anno datasets/tianchi_fabric/guangdong1_round2_train2_20191004_Annotations/Annotations/anno_train.json \\
        --image-root datasets/tianchi_fabric --out-dir datasets/tianchi_fabric/annotations

    python tools/convert_tianchi.py aluminum --root datasets/tianchi_aluminum/guangdong_round2_train_20181011 \\
        --image-root datasets/tianchi_aluminum --out-dir datasets/tianchi_aluminum/annotations

Writes ``<out-dir>/<prefix>_{train,test}.json`` (``--test-size`` images in test, default 500 as in the
RDDN paper) or ``<out-dir>/<prefix>.json`` with ``--no-split``, and prints what was read, written,
changed and dropped. Bad input: ``error: <file>: entry <i> (<name>): <problem>`` and exit code 2
(``--strict``, the default); ``--lenient`` skips and counts bad entries/images and exits 0. Every
image and template is decoded in full. An annotation file that cannot be read is an error in both
modes, and so is an output that cannot be written (outputs are all or nothing: the earlier ones stay
as they were). The checks and what each mode does: README.md, "Real Tianchi data".
Fabric entries may carry an optional ``"segmentation"`` (COCO RLE or polygons, e.g. the synthetic
data's exact masks): validated, written to the COCO annotation, and counted (``masks in``, masks
written, masks dropped by reason; a bad mask is an error with ``--strict``, a dropped mask with the
box kept with ``--lenient``).
"""
import sys

from defect_det.data.tianchi_convert.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__.split("\n\n")[0].strip()))
