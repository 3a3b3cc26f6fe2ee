"""Geometric operations on template images: misalignment (augmentation) and registration (alignment).

The RDDN paper (section V-B) shows TR-Pre collapsing when templates are off by 5-10 px. These
functions let the input pipeline simulate that "pixel gap" (:func:`sample_misalignment`,
:func:`warp_template`) and undo it (:func:`estimate_translation`, :func:`align_template`: phase
correlation, sub-pixel, on a Hann-windowed grey image). All images are HxWxC (or HxW) numpy arrays
in the 0-255 range; the output has the input's shape and dtype.
"""
import math

import cv2
import numpy as np

__all__ = ["align_template", "estimate_translation", "sample_misalignment", "warp_template"]


def warp_template(template, dx=0.0, dy=0.0, angle=0.0):
    """
    Move ``template`` by (dx, dy) pixels and rotate it by ``angle`` degrees (counter-clockwise,
    about the image centre); borders are filled by reflection so no black band looks like a defect.

    Args:
        template (ndarray): HxWxC or HxW, any dtype cv2 accepts (uint8 / float32).
    Returns:
        ndarray: same shape and dtype.
    """
    if dx == 0 and dy == 0 and angle == 0:
        return template
    h, w = template.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), 1.0)
    m[0, 2] += float(dx)
    m[1, 2] += float(dy)
    out = cv2.warpAffine(template, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(template.shape)


def sample_misalignment(rng, shift_range=(0.0, 0.0), max_rotation=0.0):
    """
    Draw a misalignment: translation of magnitude uniform in ``shift_range`` (px) in a uniformly
    random direction, rotation uniform in [-max_rotation, max_rotation] degrees.

    Args:
        rng (numpy.random.Generator or RandomState-like with ``uniform``).
    Returns:
        tuple(float, float, float): dx, dy, angle.
    """
    lo, hi = float(shift_range[0]), float(shift_range[1])
    if lo < 0 or hi < lo:
        raise ValueError(f"shift_range must satisfy 0 <= min <= max, got {tuple(shift_range)}")
    if max_rotation < 0:
        raise ValueError(f"max_rotation must be >= 0, got {max_rotation}")
    mag = rng.uniform(lo, hi) if hi > 0 else 0.0
    theta = rng.uniform(0.0, 2 * math.pi)
    angle = rng.uniform(-max_rotation, max_rotation) if max_rotation > 0 else 0.0
    return mag * math.cos(theta), mag * math.sin(theta), angle


def _grey(img):
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2)
    return img


def estimate_translation(image, template):
    """
    Sub-pixel translation (dx, dy) such that ``warp_template(template, dx, dy)`` lines up with
    ``image`` (phase correlation of the grey images under a Hann window).

    Returns:
        tuple(float, float, float): dx, dy and the correlation peak response (0..1; low values
        mean the estimate is unreliable, e.g. on a textureless image).
    """
    a, b = _grey(image), _grey(template)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and template {b.shape} must have the same size")
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    # phaseCorrelate(src1, src2) returns the shift that moves src1 onto src2
    (sx, sy), response = cv2.phaseCorrelate(b, a, window)
    return float(sx), float(sy), float(response)


def align_template(image, template, max_shift=None, min_response=0.0):
    """
    Register ``template`` to ``image`` by translation (see :func:`estimate_translation`).

    Args:
        max_shift (float or None): estimates larger than this (px, per axis) are rejected and
            the template is returned unchanged (periodic textures can alias by one period).
        min_response (float): estimates with a weaker correlation peak are rejected likewise.
    Returns:
        tuple(ndarray, tuple): the aligned template (same shape/dtype) and (dx, dy) applied.
    """
    dx, dy, response = estimate_translation(image, template)
    too_far = max_shift is not None and (abs(dx) > max_shift or abs(dy) > max_shift)
    if too_far or response < min_response:
        return template, (0.0, 0.0)
    return warp_template(template, dx, dy), (dx, dy)
