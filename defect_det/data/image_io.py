"""Reading images so that a bad file is reported by name, once, as early as possible.

- :func:`image_size`: ``(width, height)`` from the header only, EXIF rotations applied as Detectron2's
  ``read_image`` applies them (cheap: used for checks over whole datasets when a loader is built);
- :func:`check_decodes`: the size after decoding every pixel (PIL ``load()``, the decoder Detectron2
  trains with): a truncated or corrupt file raises here, in the converter, not in a data-loader worker;
- :func:`read_image`: Detectron2's ``detection_utils.read_image`` whose errors name the file
  (:class:`UnreadableImageError`), used by every defect_det mapper;
- :func:`raise_if_unreadable`: after a mapper failed, name the file if it is the cause (for
  Detectron2's ``DatasetMapper``, whose reads are not ours: ``DefectDatasetMapper``).

Only PIL is needed for the first two (the converter uses them without torch).
"""
import os

__all__ = ["UnreadableImageError", "check_decodes", "image_size", "raise_if_unreadable", "read_image"]

_EXIF_ORIENTATION = 274


class UnreadableImageError(OSError):
    """
    An image (or template, or label image) that cannot be read or decoded. ``str(e)`` starts with the
    file and says what to do; attributes ``path`` (the file) and ``cause`` (the original error).

    Built with :meth:`of`. The constructor takes the message alone, as every exception must for
    PyTorch's DataLoader to re-raise it in the main process with its type.
    """

    def __init__(self, message, path=None, cause=None):
        super().__init__(message)
        self.path, self.cause = path, cause

    @classmethod
    def of(cls, path, cause, what="image"):
        """The error for ``path`` (a ``what``: "image", "template", ...) that raised ``cause``."""
        return cls(
            f"{path}: cannot read this {what} ({type(cause).__name__}: {cause}). Replace the file, or "
            "re-run tools/convert_tianchi.py, which decodes every image and template and stops at "
            "(--strict) or drops (--lenient) unreadable ones",
            path, cause,
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
    """
    Detectron2's ``detection_utils.read_image``, raising :class:`UnreadableImageError` (naming
    ``path``, a ``what``) instead of PIL's bare ``OSError: image file is truncated`` and the like.
    """
    from detectron2.data import detection_utils as utils

    try:
        return utils.read_image(path, format=format)
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
        raise _unreadable(path, e, what) from e


def _unreadable(path, error, what):
    if isinstance(error, UnreadableImageError):
        return error
    if isinstance(error, FileNotFoundError) or not os.path.exists(path):
        error = FileNotFoundError(f"no such file: {path}")
    return UnreadableImageError.of(path, error, what)


def raise_if_unreadable(path, error, what="image"):
    """
    After ``error`` was raised while a sample was mapped, find out whether ``path`` is the reason:
    if it does not decode in full, raise :class:`UnreadableImageError` naming it (chained to
    ``error``); otherwise return, and the caller re-raises ``error``. Decodes only on this error
    path, so a mapper whose reads are not its own (Detectron2's ``DatasetMapper``) costs nothing
    extra per sample.
    """
    if not path:
        return
    if isinstance(error, UnreadableImageError):
        raise error
    try:
        check_decodes(path)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e, what) from error
