"""The command line of the Tianchi -> COCO converter: what ``tools/convert_tianchi.py`` runs.

``<fabric|aluminum> --root DIR [--root DIR ...] --out-dir DIR [options]``: :func:`get_parser` builds the
parser (one sub-command per dataset), :func:`main` runs :func:`~.convert_fabric` or
:func:`~.convert_aluminum` with ``verbose=True`` and turns bad input into ``error: <message>`` on
stderr and exit code 2. Standard library only, like the rest of this package.
"""
import argparse
import sys
from typing import Optional, Sequence

from .aluminum import convert_aluminum
from .fabric import convert_fabric

__all__ = ["get_parser", "main"]


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of ``tools/convert_tianchi.py`` (``description``: the text above its usage)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and convert; returns the exit code: 0, or 2 after
    printing ``error: ...`` to stderr for bad input (:class:`~.TianchiFormatError`) or a bad option
    value (any ``ValueError``)."""
    args = get_parser(description).parse_args(argv)
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
