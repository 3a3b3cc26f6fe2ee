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
import argparse
import sys

from defect_det.data.tianchi_convert import convert_aluminum, convert_fabric


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    for kind in ("fabric", "aluminum"):
        p = sub.add_parser(kind, help=f"Tianchi {kind} release")
        p.add_argument("--root", action="append", required=True, metavar="DIR",
                       help="release root (repeatable)" + (
                           "; holds defect/, normal/ and/or Annotations/" if kind == "fabric" else
                           "; walked recursively for images + LabelMe JSONs"))
        if kind == "fabric":
            p.add_argument("--anno", action="append", default=None, metavar="FILE",
                           help="annotation JSON list (repeatable); default every <root>/Annotations/*.json")
        p.add_argument("--out-dir", required=True, metavar="DIR")
        p.add_argument("--prefix", default=kind, help="output file prefix (default: %(default)s)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--test-size", type=int, default=500,
                       help="images (defect + normal) in the test split (default: %(default)s)")
        g.add_argument("--no-split", action="store_true", help="write everything to <prefix>.json")
        p.add_argument("--val-size", type=int, default=0,
                       help="images carved from the training part into <prefix>_val.json, for choosing "
                            "settings without touching the test split (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
        p.add_argument("--image-root", default=None, metavar="DIR",
                       help="file names are written relative to it (default: common parent of the roots)")
        m = p.add_mutually_exclusive_group()
        m.add_argument("--strict", dest="strict", action="store_true", default=True,
                       help="stop at the first bad entry/image (default)")
        m.add_argument("--lenient", dest="strict", action="store_false",
                       help="skip and count bad entries/images")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    kwargs = dict(prefix=args.prefix, test_size=args.test_size, val_size=args.val_size, split=not args.no_split, seed=args.seed,
                  image_root=args.image_root, strict=args.strict, verbose=True)
    try:
        if args.dataset == "fabric":
            convert_fabric(args.root, args.out_dir, anno_files=args.anno, **kwargs)
        else:
            convert_aluminum(args.root, args.out_dir, **kwargs)
    except ValueError as e:  # TianchiFormatError (bad input) or a bad option value
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
