"""Capture of one image from a texture canvas: the known template misalignment (translation and
rotation, :func:`_capture`, :func:`misalign_template`) and the photometric changes of each capture
(illumination, sensor noise, :func:`_photometric`)."""
import math

import cv2
import numpy as np

from .textures import _grid

__all__ = ["misalign_template"]


# ----------------------------------------------------------------------------------------------
# geometry + photometry of one capture
# ----------------------------------------------------------------------------------------------
def _capture(canvas, pad, w, h, dx, dy, rot_deg):
    """
    Crop an image from a texture canvas. The result (HxW[x3] float32) is the template (centre crop)
    rotated by ``rot_deg`` (cv2.getRotationMatrix2D convention, about the image centre) and then
    translated by ``(dx, dy)`` px, i.e. for rot 0: ``out(x, y) = template(x - dx, y - dy)``.
    """
    if rot_deg == 0 and float(dx).is_integer() and float(dy).is_integer():
        x0, y0 = pad - int(dx), pad - int(dy)
        return canvas[y0:y0 + h, x0:x0 + w].copy()
    inv = _inverse_map(w, h, dx, dy, rot_deg)
    inv[0, 2] += pad
    inv[1, 2] += pad
    return cv2.warpAffine(canvas, inv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _inverse_map(w, h, dx, dy, rot_deg):
    """2x3 float64 map from defect-image pixel to template pixel (for ``cv2.WARP_INVERSE_MAP``)."""
    fwd = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(rot_deg), 1.0)
    fwd[0, 2] += dx
    fwd[1, 2] += dy
    return cv2.invertAffineTransform(fwd)


def misalign_template(template, shift_dx, shift_dy, rotation=0.0):
    """
    Warp a template (HxW[x3] uint8 or float32) onto its defect image using the misalignment recorded
    in ``meta.json`` (``shift_dx``, ``shift_dy``, ``rotation``); borders are reflected. The result
    (same shape and dtype as ``template``) lines up with the defect image: the known misalignment is
    applied, nothing is estimated (for registration by phase correlation see
    :func:`defect_det.data.template_ops.align_template`).
    """
    h, w = template.shape[:2]
    return cv2.warpAffine(template, _inverse_map(w, h, shift_dx, shift_dy, rotation), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def _photometric(img, rng, cfg):
    """Illumination change + sensor noise; float32 HxWx3 in [0, 1] -> uint8 HxWx3 BGR."""
    h, w = img.shape[:2]
    g = 1.0 + rng.uniform(-1, 1) * cfg.illumination_gain
    o = rng.uniform(-1, 1) * cfg.illumination_offset
    phi = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(-1, 1) * cfg.illumination_gradient
    noise = rng.standard_normal(img.shape).astype(np.float32)
    out = img * g + o
    if amp != 0:
        x, y = _grid(h, w)
        ramp = ((x - w / 2) * math.cos(phi) + (y - h / 2) * math.sin(phi)) / (0.5 * math.hypot(w, h))
        out = out * (1.0 + amp * ramp)[..., None]
    out = out * 255.0 + noise * cfg.noise_sigma
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
