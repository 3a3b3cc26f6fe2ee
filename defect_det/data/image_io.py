"""Reading images so that a bad file is reported by name, once, as early as possible.

- :func:`image_size`: ``(width, height)`` from the header only, EXIF rotations applied as Detectron2's
  ``read_image`` applies them (cheap: used for checks over whole datasets when a loader is built);
- :func:`check_decodes`: the size after decoding every pixel (PIL ``load()``, the decoder Detectron2
  trains with): a truncated or corrupt file raises here, in the converter, not in a data-loader worker;
- :func:`read_image`: Detectron2's ``detection_utils.read_image`` whose errors name the file
  (:class:`UnreadableImageError`), used by every defect_det mapper.

Only PIL is needed for the first two (the converter uses them without torch).
"""
import os

__all__ = ["UnreadableImageError", "check_decodes", "image_size", "read_image"]

_EXIF_ORIENTATION = 274


class UnreadableImageError(OSError):
    """An image (or template) that cannot be read or decoded. ``str(e)`` starts with the file; the
    attribute ``path`` is the file, ``cause`` the original error."""

    def __init__(self, path, cause, what="image"):
        self.path, self.cause = path, cause
        super().__init__(
            f"{path}: cannot read this {what} ({type(cause).__name__}: {cause}). Replace the file, or "
            "re-run tools/convert_tianchi.py, which decodes every image and drops (--lenient) or "
            "reports (--strict) unreadable ones"
        )


def _oriented(im):
    w, h = im.size
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001  (broken EXIF: Detectron2 ignores it too)
        orientation = None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if w <= 0 or h <= 0:
        raise OSError(f"invalid image size {w}x{h}")
    return int(w), int(h)


def image_size(path):
    """(width, height) from the header only (EXIF rotations 5-8 swap them, as Detectron2 does)."""
    from PIL import Image

    with Image.open(path) as im:
        return _oriented(im)


def check_decodes(path):
    """
    Decode every pixel of ``path`` (PIL, as Detectron2 reads images for training).

    Returns:
        (width, height) after EXIF orientation.
    Raises:
        OSError (e.g. ``image file is truncated``), ``PIL.UnidentifiedImageError`` (an OSError), or
        another exception of PIL's decoders, for a file that training could not read.
    """
    from PIL import Image

    with Image.open(path) as im:
        size = _oriented(im)
        im.load()
    return size


def read_image(path, format=None, what="image"):
    """Detectron2's ``detection_utils.read_image``, raising :class:`UnreadableImageError` (naming
    ``path``) instead of PIL's bare ``OSError: image file is truncated`` and the like."""
    from detectron2.data import detection_utils as utils

    try:
        return utils.read_image(path, format=format)
    except UnreadableImageError:
        raise
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
        if isinstance(e, FileNotFoundError) or not os.path.exists(path):
            e = FileNotFoundError(f"no such file: {path}")
        raise UnreadableImageError(path, e, what) from e
