"""The 14 defect painters of the synthetic fabric generator (one ``_d_<type>`` per entry of
:data:`~.config.DEFECT_TYPES`), the measurement of what a painted defect changed (its box and mask,
:func:`_diff_region`), and :func:`_paint_defects`, which paints the defects of one image.

Every painter takes ``(img, ctx, rng)`` (img HxWx3 float32 BGR in [0, 1], ctx a :class:`_Ctx`) and returns a
new image; the input is left untouched.
"""
import math
from collections import OrderedDict

import cv2
import numpy as np

from .config import _REGION_DEFECTS, DEFECT_TYPES, _applicable_types
from .textures import _aa, _fabric_color, _grid, _hsv_color, _smooth_noise

__all__ = []  # internal to the generator


# ----------------------------------------------------------------------------------------------
# defects: each paints on an HxWx3 float32 image and returns the new image (input untouched)
# ----------------------------------------------------------------------------------------------
class _Ctx:
    """What a defect painter may use: image size, scale, texture layers aligned with the image."""

    def __init__(self, h, w, thread_angle, layers, motif_period, contrast_scale):
        self.h, self.w = h, w
        self.S = min(h, w)
        self.k = self.S / 256.0
        self.kp = max(self.k, 0.5)               # pixel-size scale with a floor for tiny images
        self.thread_angle = thread_angle
        self.layers = layers                     # None or dict ground / print_premul / print_alpha
        self.motif_period = motif_period
        self.cs = contrast_scale


def _loguniform(rng, lo, hi):
    lo = max(lo, 1e-3)
    hi = max(hi, lo * 1.0001)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _roi(cx, cy, rad, h, w):
    return (max(0, int(math.floor(cx - rad))), min(w, int(math.ceil(cx + rad)) + 1),
            max(0, int(math.floor(cy - rad))), min(h, int(math.ceil(cy + rad)) + 1))


def _blob(h, w, cx, cy, rx, ry, ang, rng, rough=0.3, edge=1.0):
    """Irregular soft blob mask, HxW float32 in [0, 1] (1 inside)."""
    m = np.zeros((h, w), np.float32)
    rad = max(rx, ry) * (1.0 + 2.5 * rough) + 3 * edge + 2
    x0, x1, y0, y1 = _roi(cx, cy, rad, h, w)
    ks = np.arange(2, 7)
    amps = rough * rng.standard_normal(5) / ks
    ph = rng.uniform(0, 2 * np.pi, 5)
    if x1 <= x0 or y1 <= y0:
        return m
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(ang), math.sin(ang)
    px = (c * dx + s * dy) / rx
    py = (-s * dx + c * dy) / ry
    rr = np.hypot(px, py)
    th = np.arctan2(py, px)
    radius = 1.0 + sum(amps[n] * np.cos(ks[n] * th + ph[n]) for n in range(5))
    m[y0:y1, x0:x1] = _aa((radius - rr) * 0.5 * (rx + ry), edge)
    return m


def _rand_center(rng, h, w, margin=0.0):
    return rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)


def _contrast_color(rng, bg):
    """A stain / fluff colour that contrasts with the local background colour ``bg`` (3,)."""
    if float(bg.mean()) > 0.45:
        return _hsv_color(rng, (10, 50), (0.2, 0.8), (0.05, 0.45))
    return _hsv_color(rng, (20, 60), (0.0, 0.4), (0.65, 0.95))


def _local_mean(img, cx, cy, rad):
    h, w = img.shape[:2]
    x0, x1, y0, y1 = _roi(cx, cy, max(rad, 3), h, w)
    return img[y0:y1, x0:x1].reshape(-1, 3).mean(0)


def _lerp(img, target, alpha):
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    return (img * (1 - a) + target * a).astype(np.float32)


def _stroke_mask(h, w, polylines, thickness=1, circles=()):
    """Anti-aliased mask HxW float32 of polylines [(N,2) float px] and filled circles (cx, cy, r)."""
    m = np.zeros((h, w), np.uint8)
    sh = 4
    for pts in polylines:
        p = np.round(np.asarray(pts, np.float64) * (1 << sh)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(m, [p], False, 255, int(thickness), cv2.LINE_AA, sh)
    for cx, cy, r in circles:
        cv2.circle(m, (int(round(cx * 16)), int(round(cy * 16))), max(1, int(round(r * 16))), 255, -1,
                   cv2.LINE_AA, sh)
    return m.astype(np.float32) / 255.0


def _line_coords(h, w, cx, cy, ang):
    """Along (t) and across (d) coordinates (HxW float32) of a line through (cx, cy) at ``ang`` rad."""
    x, y = _grid(h, w)
    c, s = math.cos(ang), math.sin(ang)
    return (c * (x - cx) + s * (y - cy)), (-s * (x - cx) + c * (y - cy))


def _end_window(t, half_len, fade):
    return np.clip((half_len - np.abs(t)) / max(fade, 1e-3), 0.0, 1.0).astype(np.float32)


def _d_stained(img, ctx, rng):
    h, w, S = ctx.h, ctx.w, ctx.S
    size = _loguniform(rng, max(5.0, 0.025 * S), 0.8 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    m = _blob(h, w, cx, cy, rx, rx * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi), rng,
              rng.uniform(0.15, 0.45), rng.uniform(1.0, max(1.2, size * 0.08)))
    m *= (0.65 + 0.35 * np.clip(0.5 + 0.5 * _smooth_noise(rng, h, w, max(3.0, size / 4)), 0, 1))
    col = _contrast_color(rng, _local_mean(img, cx, cy, rx))
    a = min(0.95, rng.uniform(0.35, 0.75) * ctx.cs)
    target = col[None, None, :] * (0.75 + 0.25 * img / (img.mean() + 1e-3))
    return _lerp(img, target, a * m)


def _d_water_mark(img, ctx, rng):
    h, w, S = ctx.h, ctx.w, ctx.S
    size = _loguniform(rng, max(8.0, 0.07 * S), 0.8 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    ry = rx * rng.uniform(0.5, 1.0)
    ring_w = max(1.5, rx * rng.uniform(0.06, 0.18))
    outer = _blob(h, w, cx, cy, rx, ry, rng.uniform(0, np.pi), rng, rng.uniform(0.1, 0.3), ring_w)
    # ring = band of the blob's soft edge: outer - eroded copy
    k = max(1, int(round(ring_w * 1.5)))
    inner = cv2.erode(outer, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    ring = cv2.GaussianBlur(np.clip(outer - inner, 0, 1), (0, 0), max(0.7, ring_w * 0.3))
    field_ = ring + rng.uniform(0.0, 0.35) * inner
    c = min(0.8, rng.uniform(0.2, 0.4) * ctx.cs) * (1 if rng.random() < 0.3 else -1)
    tint = 1.0 + 0.3 * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.clip(img * (1.0 + c * field_[..., None] * tint), 0, 1).astype(np.float32)


def _d_knots(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    cx, cy = _rand_center(rng, h, w, 2)
    core = rng.uniform(0.8, 2.0) * kp
    lines = []
    for _ in range(int(rng.integers(4, 11))):
        a = rng.uniform(0, 2 * np.pi)
        p = np.array([cx + core * 0.6 * math.cos(a), cy + core * 0.6 * math.sin(a)])
        pts = [p.copy()]
        seg = rng.uniform(1.0, 2.5) * kp
        for _ in range(int(rng.integers(1, 4))):
            a += rng.uniform(-0.8, 0.8)
            p = p + seg * np.array([math.cos(a), math.sin(a)])
            pts.append(p.copy())
        lines.append(np.array(pts))
    m = np.maximum(_stroke_mask(h, w, lines, 1) * rng.uniform(0.6, 0.9),
                   _stroke_mask(h, w, [], 1, [(cx, cy, core)]))
    col = _contrast_color(rng, _local_mean(img, cx, cy, 6)) if rng.random() < 0.7 else _fabric_color(rng)
    return _lerp(img, np.broadcast_to(col, img.shape), min(1.0, rng.uniform(0.75, 1.0) * ctx.cs) * m)


def _d_seam_allowance(img, ctx, rng):
    vertical = rng.random() < 0.3
    im = img.transpose(1, 0, 2) if vertical else img
    h, w = im.shape[:2]
    kp = ctx.kp
    y0 = rng.uniform(0.08, 0.92) * h
    t = rng.uniform(4, 14) * kp
    slope = math.tan(math.radians(rng.uniform(-1.5, 1.5)))
    x, y = _grid(h, w)
    d = y - (y0 + slope * (x - w / 2))
    band = _aa(t / 2 - np.abs(d), 1.2)
    out = im.copy()
    # overlapping layer: darker or lighter, with a dark folded edge on one side
    g = 1.0 + min(0.5, rng.uniform(0.1, 0.3) * ctx.cs) * (-1 if rng.random() < 0.7 else 1)
    out = out * (1 + (g - 1) * band[..., None])
    edge_side = rng.choice([-1, 1])
    edge = np.exp(-0.5 * ((d - edge_side * t / 2) / (0.7 * kp)) ** 2)
    out = out * (1 - min(0.8, rng.uniform(0.25, 0.5) * ctx.cs) * edge[..., None])
    # stitches: dashes along the band
    per = rng.uniform(4, 10) * kp
    duty = rng.uniform(0.45, 0.75)
    phase = rng.uniform(0, per)
    dash = _aa((duty * per / 2 - np.abs(np.mod(x - phase, per) - per / 2)), 1.0)
    soff = rng.uniform(-0.25, 0.25) * t
    sth = rng.uniform(0.5, 0.9) * max(1.0, kp)
    stitch = dash * np.exp(-0.5 * ((d - soff) / sth) ** 2)
    scol = _contrast_color(rng, out[int(np.clip(y0, 0, h - 1))].mean(0)) if rng.random() < 0.6 \
        else _fabric_color(rng)
    out = _lerp(out, np.broadcast_to(scol, out.shape), 0.9 * stitch)
    out = np.clip(out, 0, 1).astype(np.float32)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if vertical else out


def _d_joining_stencil_mark(img, ctx, rng):
    vertical = rng.random() < 0.3
    im = img.transpose(1, 0, 2) if vertical else img
    h, w = im.shape[:2]
    kp = ctx.kp
    y0 = rng.uniform(0.05, 0.95) * h
    length = rng.uniform(0.2, 1.0) * w
    x0 = rng.uniform(-0.1 * w, w - 0.5 * length)
    x, y = _grid(h, w)
    d = y - y0
    per = rng.uniform(5, 14) * kp
    dl = per * rng.uniform(0.3, 0.7)
    th = rng.uniform(0.8, 2.5) * kp
    phase = rng.uniform(0, per)
    dash = _aa(dl / 2 - np.abs(np.mod(x - phase, per) - per / 2), 1.0)
    m = dash * _aa(th / 2 + 0.5 - np.abs(d), 1.0) * _end_window(x - (x0 + length / 2), length / 2, 2.0)
    m = m + 0.35 * np.exp(-0.5 * (d / (th * 1.5)) ** 2) * _end_window(x - (x0 + length / 2), length / 2, 3.0)
    c = min(0.7, rng.uniform(0.18, 0.4) * ctx.cs)
    out = np.clip(im * (1 - c * np.clip(m, 0, 1)[..., None]), 0, 1).astype(np.float32)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if vertical else out


def _d_insect(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    cx, cy = _rand_center(rng, h, w, 1)
    rx = rng.uniform(1.2, 4.0) * kp
    ry = rx * rng.uniform(0.45, 0.8)
    ang = rng.uniform(0, np.pi)
    m = _blob(h, w, cx, cy, rx, ry, ang, rng, 0.08, 0.7)
    if rx > 1.8 and rng.random() < 0.6:  # legs
        legs = []
        for side in (-1, 1):
            for f in (-0.5, 0.0, 0.5):
                a = ang + side * np.pi / 2 + rng.uniform(-0.4, 0.4)
                bx = cx + f * rx * math.cos(ang)
                by = cy + f * rx * math.sin(ang)
                ln = rng.uniform(0.8, 1.6) * ry + 1
                legs.append(np.array([[bx, by], [bx + ln * math.cos(a), by + ln * math.sin(a)]]))
        m = np.maximum(m, 0.6 * _stroke_mask(h, w, legs, 1))
    col = _hsv_color(rng, (0, 40), (0.2, 0.8), (0.02, 0.25))
    if float(_local_mean(img, cx, cy, 4).mean()) < 0.3:
        col = _hsv_color(rng, (30, 60), (0.1, 0.5), (0.6, 0.9))
    return _lerp(img, np.broadcast_to(col, img.shape), min(1.0, rng.uniform(0.8, 1.0) * ctx.cs) * m)


def _d_broken_hole(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    size = _loguniform(rng, 4.0 * kp, 0.3 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    ry = rx * rng.uniform(0.45, 1.0)
    ang = rng.uniform(0, np.pi)
    m = _blob(h, w, cx, cy, rx, ry, ang, rng, rng.uniform(0.25, 0.5), 0.8)
    yarn = _local_mean(img, cx, cy, rx * 2)
    bg = _hsv_color(rng, (0, 360), (0.0, 0.3), (0.02, 0.2)) if rng.random() < 0.8 else \
        _hsv_color(rng, (0, 360), (0.0, 0.1), (0.9, 1.0))
    # shadow ring around the hole
    shadow = cv2.GaussianBlur(m, (0, 0), 1.0 + 0.1 * rx)
    out = img * (1 - 0.25 * np.clip(shadow - m, 0, 1))[..., None]
    out = _lerp(out, np.broadcast_to(bg, img.shape), m)
    # frayed threads: short strands along the thread directions, crossing the hole edge
    strands = []
    n = int(rng.integers(4, 10 + int(size / 3)))
    for _ in range(n):
        phi = rng.uniform(0, 2 * np.pi)
        bx = cx + rx * math.cos(phi) * rng.uniform(0.7, 1.1)
        by = cy + ry * math.sin(phi) * rng.uniform(0.7, 1.1)
        a = math.radians(ctx.thread_angle + 90.0 * int(rng.integers(2)))
        # point into the hole
        if (cx - bx) * math.cos(a) + (cy - by) * math.sin(a) < 0:
            a += np.pi
        a += rng.uniform(-0.3, 0.3)
        ln = rng.uniform(0.2, 0.7) * min(rx, ry) + 1.5
        mid = np.array([bx + 0.5 * ln * math.cos(a) + rng.uniform(-1, 1), by + 0.5 * ln * math.sin(a)])
        strands.append(np.array([[bx - 1.5 * math.cos(a), by - 1.5 * math.sin(a)], mid,
                                 [bx + ln * math.cos(a), by + ln * math.sin(a)]]))
    sm = _stroke_mask(h, w, strands, 1)
    return _lerp(out, np.broadcast_to(yarn * 1.05, img.shape), 0.85 * sm)


def _d_pleats(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    diag = math.hypot(h, w)
    cx, cy = _rand_center(rng, h, w, 0.1 * ctx.S)
    if rng.random() < 0.5:
        ang = math.radians(90.0 * int(rng.integers(2)) + rng.uniform(-20, 20))
    else:
        ang = rng.uniform(0, np.pi)
    half = _loguniform(rng, 0.06, 0.65) * diag
    t, d = _line_coords(h, w, cx, cy, ang)
    d = d - rng.uniform(-0.6, 0.6) * t * t / max(half, 1.0) * 0.25
    sig = rng.uniform(1.5, 5.0) * kp
    amp = min(0.6, rng.uniform(0.15, 0.32) * ctx.cs)
    z = d / sig
    prof = amp * (z * np.exp(0.5 - 0.5 * z * z)) - 0.5 * amp * np.exp(-0.5 * (d / (2 * sig)) ** 2)
    if rng.random() < 0.35:  # a second parallel fold
        z2 = (d - rng.uniform(3, 6) * sig) / sig
        prof = prof + 0.7 * amp * (z2 * np.exp(0.5 - 0.5 * z2 * z2))
    win = _end_window(t, half, 0.1 * half + 2)
    return np.clip(img * (1 + (prof * win)[..., None]), 0, 1).astype(np.float32)


def _d_flaw(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    ang = math.radians(ctx.thread_angle + 90.0 * int(rng.integers(2)) + rng.uniform(-0.5, 0.5))
    cx, cy = _rand_center(rng, h, w, 1)
    span = abs(w * math.cos(ang)) + abs(h * math.sin(ang))
    half = _loguniform(rng, 0.1, 1.0) * span / 2
    t, d = _line_coords(h, w, cx, cy, ang)
    sig = rng.uniform(0.5, 1.2) * kp
    if rng.random() < 0.3:  # thick place / double pick: a wider band
        sig *= rng.uniform(1.5, 2.5)
    prof = np.exp(-0.5 * (d / sig) ** 2) * _end_window(t, half, 2.0)
    prof *= (1 + 0.25 * _smooth_noise(rng, h, w, 8.0))
    c = min(0.85, rng.uniform(0.3, 0.55) * ctx.cs)
    if rng.random() < 0.6:
        out = img * (1 - c * prof[..., None])
    else:
        out = img + c * prof[..., None] * (1 - img)
    return np.clip(out, 0, 1).astype(np.float32)


def _region_mask(rng, ctx, size_lo, size_hi):
    h, w = ctx.h, ctx.w
    size = rng.uniform(size_lo, size_hi) * ctx.S
    cx, cy = _rand_center(rng, h, w, 0.15 * ctx.S)
    if rng.random() < 0.5:
        x, y = _grid(h, w)
        rw, rh = size / 2, size / 2 * rng.uniform(0.5, 1.5)
        return _aa(np.minimum(rw - np.abs(x - cx), rh - np.abs(y - cy)), 2.0)
    return _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
                 0.3, 2.0)


def _d_misprinting(img, ctx, rng):
    L = ctx.layers
    m = _region_mask(rng, ctx, 0.15, 0.55)
    if rng.random() < 0.55:  # print missing
        target = L["ground"]
        f = rng.uniform(0.7, 1.0)
        return _lerp(img, target, f * m)
    # print misregistered (shifted) in the region
    p = ctx.motif_period or 20.0
    r = rng.uniform(0.12, 0.3) * p
    a = rng.uniform(0, 2 * np.pi)
    M = np.float32([[1, 0, r * math.cos(a)], [0, 1, r * math.sin(a)]])
    sh = lambda z: cv2.warpAffine(z, M, (ctx.w, ctx.h), flags=cv2.INTER_LINEAR,  # noqa: E731
                                  borderMode=cv2.BORDER_REFLECT)
    pa = sh(L["print_alpha"])
    target = L["ground"] * (1 - pa[..., None]) + sh(L["print_premul"])
    return _lerp(img, target, m)


def _d_broken_figures(img, ctx, rng):
    L = ctx.layers
    m = _region_mask(rng, ctx, 0.15, 0.5)
    pa = L["print_alpha"]
    prem = L["print_premul"]
    if rng.random() < 0.5:  # wrong colours
        perm = [[1, 2, 0], [2, 0, 1], [2, 1, 0]][int(rng.integers(3))]
        prem2 = prem[..., perm] * rng.uniform(0.6, 1.0)
        target = L["ground"] * (1 - pa[..., None]) + prem2
    else:  # figures out of place (half a motif period)
        p = ctx.motif_period or 20.0
        sx, sy = rng.uniform(0.35, 0.65) * p, rng.uniform(0.35, 0.65) * p
        M = np.float32([[1, 0, sx], [0, 1, sy]])
        pa2 = cv2.warpAffine(pa, M, (ctx.w, ctx.h), borderMode=cv2.BORDER_REFLECT)
        prem2 = cv2.warpAffine(prem, M, (ctx.w, ctx.h), borderMode=cv2.BORDER_REFLECT)
        # recolour a little so that the displaced figures are distinguishable
        target = L["ground"] * (1 - pa2[..., None]) + prem2 * rng.uniform(0.7, 1.0)
    return _lerp(img, target, m)


def _d_wax_spot(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    size = _loguniform(rng, 4.0 * kp, 0.35 * S)
    cx, cy = _rand_center(rng, h, w)
    m = _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
              rng.uniform(0.1, 0.3), 0.8)
    blur = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.0))
    gray = blur.mean(axis=2, keepdims=True)
    c = min(0.6, rng.uniform(0.12, 0.3) * ctx.cs)
    target = (0.6 * blur + 0.4 * gray) * (1 + c if rng.random() < 0.6 else 1 - c)
    return np.clip(_lerp(img, np.clip(target, 0, 1), m), 0, 1).astype(np.float32)


def _d_color_shade(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    x, y = _grid(h, w)
    soft = rng.uniform(2.0, 10.0) * kp
    r = rng.random()
    if r < 0.4:   # band across the image
        if rng.random() < 0.5:
            c0, t = rng.uniform(0, h), rng.uniform(0.1, 0.6) * h
            m = _aa(t / 2 - np.abs(y - c0), soft)
        else:
            c0, t = rng.uniform(0, w), rng.uniform(0.1, 0.6) * w
            m = _aa(t / 2 - np.abs(x - c0), soft)
    elif r < 0.75:  # large soft blob
        size = rng.uniform(0.15, 1.0) * S
        cx, cy = _rand_center(rng, h, w)
        m = _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
                  0.2, soft)
    else:  # one side of the image (different dye lot)
        ang = rng.uniform(0, 2 * np.pi)
        cx, cy = _rand_center(rng, h, w, 0.2 * S)
        t, d = _line_coords(h, w, cx, cy, ang)
        m = _aa(d, soft)
    g = min(0.45, rng.uniform(0.08, 0.16) * ctx.cs) * (1 if rng.random() < 0.4 else -1)
    tint = g + min(0.2, 0.06 * ctx.cs) * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.clip(img * (1 + m[..., None] * tint), 0, 1).astype(np.float32)


def _d_crease_mark(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    horiz = rng.random() < 0.5
    ang = math.radians((0.0 if horiz else 90.0) + rng.uniform(-10, 10))
    cx, cy = _rand_center(rng, h, w, 0.1 * ctx.S)
    span = w if horiz else h
    half = rng.uniform(0.3, 0.6) * span
    t, d = _line_coords(h, w, cx, cy, ang)
    d = d - rng.uniform(0.5, 3.0) * kp * np.sin(2 * np.pi * t / (rng.uniform(0.5, 2.0) * span))
    bw = rng.uniform(3, 14) * kp
    c = min(0.5, rng.uniform(0.14, 0.25) * ctx.cs)
    band = _aa(bw / 2 - np.abs(d), 1.5)
    lines = np.exp(-0.5 * ((np.abs(d) - bw / 2) / (0.6 * kp)) ** 2)
    sgn = 1 if rng.random() < 0.65 else -1
    f = (sgn * c * band - 1.3 * c * lines) * _end_window(t, half, 0.08 * half + 2)
    return np.clip(img * (1 + f[..., None]), 0, 1).astype(np.float32)


_DEFECT_FNS = {
    "stained": _d_stained,
    "broken_figures": _d_broken_figures,
    "water_mark": _d_water_mark,
    "knots": _d_knots,
    "seam_allowance": _d_seam_allowance,
    "joining_stencil_mark": _d_joining_stencil_mark,
    "insect": _d_insect,
    "broken_hole": _d_broken_hole,
    "pleats": _d_pleats,
    "flaw": _d_flaw,
    "misprinting": _d_misprinting,
    "wax_spot": _d_wax_spot,
    "color_shade": _d_color_shade,
    "crease_mark": _d_crease_mark,
}
assert set(_DEFECT_FNS) == set(DEFECT_TYPES)


def _diff_region(before, after, rel=0.25, abs_min=0.02):
    """
    The pixels visibly changed between two HxWx3 float32 images: those whose max-channel absolute
    change is ``>= max(abs_min, rel * peak)`` (``peak`` = 99th percentile of the changes above
    ``abs_min``).

    Returns:
        (box, mask): ``box`` = tight box ``[x0, y0, x1, y1]`` of those pixels (ints, x1/y1
        exclusive), ``mask`` = HxW bool array of exactly those pixels (so ``box`` is the tight box
        of ``mask``); ``(None, None)`` if the change is too small to see.
    """
    d = np.abs(after - before).max(axis=2)
    changed = d[d > abs_min]
    if changed.size < 2:
        return None, None
    peak = float(np.percentile(changed, 99))
    if peak < 1.5 * abs_min:
        return None, None
    mask = d >= max(abs_min, rel * peak)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, None
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return box, mask


def _encode_mask(mask):
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of an HxW bool mask (pycocotools)."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return OrderedDict([("size", [int(v) for v in rle["size"]]), ("counts", rle["counts"].decode("ascii"))])


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _paint_defects(img, ctx, rng, cfg, family, primary):
    """
    Paint the primary defect + 0..2 random extra ones.

    Returns:
        (image, boxes, masks): ``boxes`` a list of ``{"type", "defect_name", "bbox"}`` dicts,
        ``masks`` the parallel list of HxW bool masks: the pixels that defect changed *when it was
        painted* (:func:`_diff_region`; its box is the tight box of its mask). A later defect may
        paint over part of an earlier one; the earlier mask is not updated (boxes overlap by at most
        IoU 0.3), so masks of one image can overlap.
    """
    app = _applicable_types(family, cfg.defect_types)
    n_extra = int(rng.choice([0, 1, 2], p=[0.6, 0.28, 0.12]))
    n_extra = min(n_extra, cfg.max_defects_per_image - 1)
    types = [primary] + [app[int(rng.integers(len(app)))] for _ in range(n_extra)]
    types.sort(key=lambda t: 0 if t in _REGION_DEFECTS else 1)  # stable: region-replacing ones first
    boxes, masks = [], []
    for t in types:
        for attempt in range(8):
            cand = _DEFECT_FNS[t](img, ctx, rng)
            box, mask = _diff_region(img, cand)
            if box is None or any(_iou(box, b["bbox"]) > 0.3 for b in boxes):
                continue
            img = cand
            boxes.append({"type": t, "defect_name": DEFECT_TYPES[t], "bbox": box})
            masks.append(mask)
            break
    if not boxes:  # the primary never became visible (e.g. misprint over an empty area): fall back
        fallback = "stained" if "stained" in app else app[0]
        for attempt in range(20):
            cand = _DEFECT_FNS[fallback](img, ctx, rng)
            box, mask = _diff_region(img, cand)
            if box is not None:
                img = cand
                boxes.append({"type": fallback, "defect_name": DEFECT_TYPES[fallback], "bbox": box})
                masks.append(mask)
                break
    if not boxes:
        raise RuntimeError("synthetic fabric: could not paint a visible defect")  # pragma: no cover
    return img, boxes, masks
