#!/usr/bin/env python
"""
Generate the synthetic Tianchi-fabric dataset (see ``defect_det/data/synthetic/fabric/``).

Writes ``<out>/seen/``, ``<out>/unseen_texture/`` (each in the real round-2 layout: ``defect/<stem>/``,
``normal/<stem>/`` with ``template_<prefix>.jpg``, ``Annotations/anno_train.json``) and
``<out>/meta.json``, then prints images per release, boxes per class and families per release.

Examples::

    # the default set, in $DETECTRON2_DATASETS/synthetic_fabric (./datasets/synthetic_fabric)
    python tools/make_synthetic_fabric.py
    python tools/make_synthetic_fabric.py --out /tmp/fab --seed 1 --max-shift 8 --max-rotation 1 \\
        --unseen-families knit satin --preview /tmp/fab/preview.png

Convert it to COCO like the real release::

    python tools/convert_tianchi.py fabric --root <out>/seen --image-root <out> --out-dir <out>/annotations
"""
import argparse
import os
import sys

from defect_det.data.synthetic.fabric import (
    DEFECT_TYPES,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
    format_summary,
    generate_fabric_dataset,
    make_preview,
)


def _names(values):
    """Accept space- and/or comma-separated names: ``a b``, ``a,b``."""
    out = []
    for v in values:
        out += [x for x in v.split(",") if x]
    return tuple(out)


def build_parser():
    d = SyntheticFabricConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_fabric")
    p.add_argument("--out", default=default_out, help=f"dataset root (default: {default_out})")
    p.add_argument("--seed", type=int, default=d.seed, help="master seed (default: %(default)s)")
    p.add_argument("--width", type=int, default=d.width, help="image width W (default: %(default)s)")
    p.add_argument("--height", type=int, default=d.height, help="image height H (default: %(default)s)")
    p.add_argument("--seen-pieces", type=int, default=d.seen_pieces,
                   help="defect pieces (one template each) in seen/ (default: %(default)s)")
    p.add_argument("--seen-normal-pieces", type=int, default=d.seen_normal_pieces,
                   help="defect-free pieces in seen/ (default: %(default)s)")
    p.add_argument("--unseen-pieces", type=int, default=d.unseen_pieces,
                   help="defect pieces in unseen_texture/ (default: %(default)s)")
    p.add_argument("--unseen-normal-pieces", type=int, default=d.unseen_normal_pieces,
                   help="defect-free pieces in unseen_texture/ (default: %(default)s)")
    p.add_argument("--images-per-piece", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(d.images_per_piece),
                   help="images sharing one template, inclusive range (default: %(default)s)")
    p.add_argument("--families", nargs="+", default=None,
                   help=f"texture families to use (default: all: {' '.join(TEXTURE_FAMILIES)})")
    p.add_argument("--unseen-families", nargs="+", default=None,
                   help=f"families held out of seen/ (default: {' '.join(d.unseen_families)})")
    p.add_argument("--defect-types", nargs="+", default=None,
                   help=f"defect types to use (default: all: {' '.join(DEFECT_TYPES)})")
    p.add_argument("--max-defects-per-image", type=int, default=d.max_defects_per_image,
                   help="default: %(default)s")
    p.add_argument("--max-shift", type=float, default=d.max_shift,
                   help="template misalignment per axis, px, uniform in [-s, s] (default: %(default)s)")
    p.add_argument("--integer-shift", action="store_true", help="whole-pixel shifts only (default: sub-pixel)")
    p.add_argument("--max-rotation", type=float, default=d.max_rotation,
                   help="template misalignment rotation, degrees (default: %(default)s)")
    p.add_argument("--illumination-gain", type=float, default=d.illumination_gain, help="default: %(default)s")
    p.add_argument("--illumination-offset", type=float, default=d.illumination_offset, help="default: %(default)s")
    p.add_argument("--illumination-gradient", type=float, default=d.illumination_gradient,
                   help="default: %(default)s")
    p.add_argument("--noise-sigma", type=float, default=d.noise_sigma,
                   help="sensor noise, grey levels (default: %(default)s)")
    p.add_argument("--contrast-scale", type=float, default=d.contrast_scale,
                   help="multiplies every defect's contrast (default: %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="default: %(default)s")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a contact sheet (defect + boxes | template | aligned difference)")
    p.add_argument("--preview-n", type=int, default=8, help="rows of the contact sheet (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def config_from_args(args):
    """SyntheticFabricConfig from parsed arguments (not validated yet)."""
    d = SyntheticFabricConfig()
    return SyntheticFabricConfig(
        seed=args.seed, width=args.width, height=args.height,
        seen_pieces=args.seen_pieces, seen_normal_pieces=args.seen_normal_pieces,
        unseen_pieces=args.unseen_pieces, unseen_normal_pieces=args.unseen_normal_pieces,
        images_per_piece=tuple(args.images_per_piece),
        families=_names(args.families) if args.families else d.families,
        unseen_families=_names(args.unseen_families) if args.unseen_families is not None else d.unseen_families,
        defect_types=_names(args.defect_types) if args.defect_types else d.defect_types,
        max_defects_per_image=args.max_defects_per_image,
        max_shift=args.max_shift, subpixel_shift=not args.integer_shift, max_rotation=args.max_rotation,
        illumination_gain=args.illumination_gain, illumination_offset=args.illumination_offset,
        illumination_gradient=args.illumination_gradient, noise_sigma=args.noise_sigma,
        contrast_scale=args.contrast_scale, jpeg_quality=args.jpeg_quality,
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    try:
        summary = generate_fabric_dataset(args.out, cfg, verbose=not args.quiet)
    except FileExistsError as e:
        parser.error(str(e))
    print(format_summary(summary))
    if args.preview:
        make_preview(args.out, args.preview, n=args.preview_n)
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
