"""Input helpers both Tianchi readers share: finding and decoding images, reading JSON, class lookup,
dataset roots and paths relative to the image root."""
import json
import os

from ..datasets.tianchi_categories import name_to_category_id
from ..image_io import check_decodes
from .report import TianchiFormatError

__all__ = []  # internal to the converter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _try_size(path, log, what="image", cache=None):
    """(width, height) of ``path`` after decoding it fully (a truncated / corrupt file is a problem,
    counted under ``unreadable_image``); ``cache`` (dict) remembers results of shared templates."""
    if cache is not None and path in cache:
        size, error = cache[path]
    else:
        try:
            size, error = check_decodes(path), None
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds)
            size, error = None, f"{type(e).__name__}: {e}"
        if cache is not None:
            cache[path] = (size, error)
    if error is not None:
        log.problem("unreadable_image", path, f"unreadable {what}, it does not decode ({error}); replace the "
                    "file, or --lenient drops the image")
    return size


def _is_image(fname):
    return os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS


def _walk_files(top, skip=()):
    """All files under ``top``, sorted, skipping directories in ``skip`` (absolute paths)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in skip)
        out.extend(os.path.join(dirpath, f) for f in filenames)
    return sorted(out)


def _load_json(path):
    with open(path, "r", encoding="utf-8-sig") as f:
        return json.load(f)


def _category_lookup(dataset):
    table = name_to_category_id(dataset)

    def lookup(name):
        if not isinstance(name, str):
            return None
        name = name.strip()
        return table.get(name, table.get(name.lower()))

    return lookup


def _relpath(path, image_root):
    rel = os.path.relpath(os.path.abspath(path), image_root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise TianchiFormatError(path, f"not under the image root {image_root} (set image_root)")
    return rel.replace(os.sep, "/")


def _prepare_roots(roots, image_root):
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    roots = sorted({os.path.abspath(os.fspath(r)) for r in roots})
    if not roots:
        raise ValueError("no dataset root given")
    for r in roots:
        if not os.path.isdir(r):
            raise TianchiFormatError(r, "dataset root is not a directory")
    image_root = os.path.abspath(os.fspath(image_root)) if image_root else os.path.commonpath(roots)
    return roots, image_root
