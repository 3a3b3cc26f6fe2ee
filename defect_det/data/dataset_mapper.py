"""``DefectDatasetMapper``: Detectron2's ``DatasetMapper`` whose read errors name the file.

Detectron2's mapper reads the image with PIL inside a data-loader worker; a truncated or corrupt file
then ends training with ``OSError: image file is truncated`` and no file name anywhere in the log.
This subclass maps exactly as ``DatasetMapper`` does; only when mapping a sample raises does it check
(decoding once more) whether the sample's image or semantic-segmentation label is the cause, and if
so raises :class:`~defect_det.data.image_io.UnreadableImageError` naming that file. The mappers of
our own (``PairedDatasetMapper``, ``SegDecDatasetMapper``) read through
:func:`~defect_det.data.image_io.read_image` directly.
"""
from detectron2.data import DatasetMapper

from .image_io import raise_if_unreadable

__all__ = ["DefectDatasetMapper"]


class DefectDatasetMapper(DatasetMapper):
    """``DatasetMapper`` (same constructor, ``from_config`` and output) whose read errors name the file."""

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): a Detectron2 dataset dict.
        Returns:
            dict: ``DatasetMapper``'s output.
        Raises:
            UnreadableImageError: the image (or ``sem_seg_file_name``) does not decode; names it.
        """
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            raise_if_unreadable(dataset_dict.get("file_name"), e, "image")
            raise_if_unreadable(dataset_dict.get("sem_seg_file_name"), e, "semantic segmentation label")
            raise
