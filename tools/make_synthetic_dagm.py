#!/usr/bin/env python
"""
Generate the synthetic DAGM-2007-style dataset (see ``defect_det/data/synthetic/dagm.py``).

Writes ``<out>/ClassN/{Train,Test}/####.PNG`` with ``Label/Labels.txt``, weak elliptical labels
``Label/####_label.PNG`` and exact masks ``Label/####_mask.PNG`` (the latter not part of DAGM), and
``<out>/meta.json``. The builtin datasets ``synthetic_dagm_class{N}_{train,test}`` (weak labels) and
``synthetic_dagm_exact_class{N}_{train,test}`` (exact masks) read ``$DETECTRON2_DATASETS/synthetic_dagm``.

Examples::

    python tools/make_synthetic_dagm.py                              # classes 1, 2 at 128 px
    python tools/make_synthetic_dagm.py --classes 1 2 3 4 5 6 7 8 9 10 --size 256 --out /tmp/dagm
"""
import argparse
import json
import os
import sys

from defect_det.data.synthetic.dagm import SyntheticDAGMConfig, generate_dagm_dataset


def build_parser():
    d = SyntheticDAGMConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_dagm")
    p.add_argument("--out", default=default_out, help=f"dataset root (default: {default_out})")
    p.add_argument("--seed", type=int, default=d.seed, help="master seed (default: %(default)s)")
    p.add_argument("--classes", type=int, nargs="+", default=list(d.classes),
                   help="DAGM class numbers 1..10 (default: %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="image side, multiple of 8 (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=d.train_images, help="per class (default: %(default)s)")
    p.add_argument("--test-images", type=int, default=d.test_images, help="per class (default: %(default)s)")
    p.add_argument("--defect-fraction", type=float, default=d.defect_fraction,
                   help="share of defective images (default: %(default)s)")
    p.add_argument("--defect-contrast", type=float, default=d.defect_contrast,
                   help="defect intensity multiplier 0.2..4 (default: %(default)s)")
    p.add_argument("--noise-sigma", type=float, default=d.noise_sigma,
                   help="sensor noise in grey levels (default: %(default)s)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    cfg = SyntheticDAGMConfig(seed=a.seed, classes=tuple(a.classes), size=a.size,
                              train_images=a.train_images, test_images=a.test_images,
                              defect_fraction=a.defect_fraction, defect_contrast=a.defect_contrast,
                              noise_sigma=a.noise_sigma)
    try:
        summary = generate_dagm_dataset(a.out, cfg)
    except ValueError as e:
        sys.exit(f"make_synthetic_dagm: {e}")
    print(json.dumps(summary["classes"], indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
