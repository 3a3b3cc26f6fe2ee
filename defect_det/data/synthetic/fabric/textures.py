"""Procedural fabric textures of the synthetic fabric generator: woven (plain, twill, satin,
herringbone, denim), yarn-dyed (stripes, plaid), knit and printed (floral, geometric) families.

:func:`_render_texture` renders one texture instance (a *piece*) on a canvas; the small helpers
(:func:`_grid`, :func:`_smooth_noise`, :func:`_hsv_color`, :func:`_aa`, ...) are shared with the defect
painters (:mod:`.defects`). All images are float32 HxWx3 BGR in [0, 1] unless stated.
"""
import math

import cv2
import numpy as np

from .config import PRINTED_FAMILIES

__all__ = []  # internal to the generator

# ----------------------------------------------------------------------------------------------
# small numeric helpers (all images float32 HxWx3 BGR in [0, 1] unless stated)
# ----------------------------------------------------------------------------------------------
_TAB = 1024  # length of per-thread lookup tables


def _grid(h, w):
    """Pixel-centre coordinate grids ``(x, y)``, each HxW float32."""
    y, x = np.mgrid[0:h, 0:w]
    return x.astype(np.float32), y.astype(np.float32)


def _smooth_noise(rng, h, w, cell_y, cell_x=None):
    """Band-limited noise, HxW float32 with ~unit std; ``cell_*`` = feature size in px."""
    cell_x = cell_y if cell_x is None else cell_x
    gh = max(2, int(math.ceil(h / max(cell_y, 1.0))) + 1)
    gw = max(2, int(math.ceil(w / max(cell_x, 1.0))) + 1)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    n = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return n / (float(n.std()) + 1e-6)


def _hsv_color(rng, hue, sat, val):
    """A BGR float32 colour (3,) from HSV ranges (hue in degrees, sat/val in [0, 1])."""
    hsv = np.array([[[rng.uniform(*hue) % 360.0, rng.uniform(*sat), rng.uniform(*val)]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _fabric_color(rng, val=(0.3, 0.95)):
    """A plausible dyed-fabric colour: mostly low/medium saturation, some whites and darks."""
    r = rng.random()
    if r < 0.25:   # whites / greys / ecru
        return _hsv_color(rng, (20, 60), (0.0, 0.15), (max(val[0], 0.55), val[1]))
    if r < 0.4:    # darks (navy, black, brown, bottle green)
        return _hsv_color(rng, (0, 360), (0.2, 0.7), (0.18, 0.4))
    return _hsv_color(rng, (0, 360), (0.15, 0.75), val)


def _thread_table(rng, color, irregularity, chroma=0.02):
    """Per-thread colour table (_TAB, 3) float32: ``color`` with per-thread brightness jitter."""
    j = 1.0 + irregularity * rng.standard_normal((_TAB, 1)).astype(np.float32)
    c = 1.0 + chroma * rng.standard_normal((_TAB, 3)).astype(np.float32)
    return np.clip(color[None, :] * j * c, 0.0, 1.0).astype(np.float32)


def _sett_table(rng, colors, counts_range, irregularity, mirror=True):
    """Yarn-dyed colour sequence (stripes / tartan sett) per thread, (_TAB, 3) float32."""
    n = len(colors)
    seq = []
    order = list(range(n))
    for ci in order:
        seq += [ci] * int(rng.integers(counts_range[0], counts_range[1] + 1))
    if mirror:
        seq = seq + seq[::-1]
    seq = np.array(seq)
    idx = seq[np.arange(_TAB) % len(seq)]
    cols = np.stack(colors).astype(np.float32)[idx]
    j = 1.0 + irregularity * rng.standard_normal((_TAB, 1)).astype(np.float32)
    return np.clip(cols * j, 0, 1).astype(np.float32)


def _rot_uv(x, y, angle_deg, rng, warp_amp, warp_cell):
    """Rotated fabric coordinates ``(u, v)`` (HxW float32) with low-frequency yarn waviness."""
    h, w = x.shape
    if warp_amp > 0:
        x = x + warp_amp * _smooth_noise(rng, h, w, warp_cell)
        y = y + warp_amp * _smooth_noise(rng, h, w, warp_cell)
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return (c * x + s * y).astype(np.float32), (-s * x + c * y).astype(np.float32)


def _weave(u, v, pu, pv, up_fn, warp_tab, weft_tab, contrast, gamma=0.7, along=0.3):
    """
    Render a woven structure.

    Args:
        u, v: HxW float32 fabric coordinates (warp threads are lines of constant u).
        pu, pv: thread pitch in px of warp / weft.
        up_fn: ``f(i, j) -> bool array`` warp on top at warp thread i, weft thread j (int64 arrays).
        warp_tab, weft_tab: (_TAB, 3) per-thread colours.
        contrast: depth of the yarn shading (0 flat .. 1 black gaps).

    Returns:
        (img HxWx3 float32 in [0, 1], shade HxW float32 in [0, 1])
    """
    fi = u / pu
    fj = v / pv
    i = np.floor(fi)
    j = np.floor(fj)
    fu = fi - i
    fv = fj - j
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    up = up_fn(i, j)
    su = np.sin(np.pi * fu)
    sv = np.sin(np.pi * fv)
    across = np.where(up, su, sv) ** gamma
    # a float dips only where it interlaces, i.e. where the next cell along the yarn is not on top:
    # continuous floats give twill / satin their ribs instead of a brick pattern
    dip_warp = np.where(fv < 0.5, ~up_fn(i, j - 1), ~up_fn(i, j + 1))
    dip_weft = np.where(fu < 0.5, up_fn(i - 1, j), up_fn(i + 1, j))
    along_s = np.where(up, np.where(dip_warp, sv, 1.0), np.where(dip_weft, su, 1.0))
    shade = (across * ((1.0 - along) + along * along_s)).astype(np.float32)
    col = np.where(up[..., None], warp_tab[np.mod(i, _TAB)], weft_tab[np.mod(j, _TAB)])
    img = col * ((1.0 - contrast) + contrast * shade)[..., None]
    return img.astype(np.float32), shade


def _twill_fn(n_up, n_down, direction=1):
    r = n_up + n_down
    return lambda i, j: np.mod(direction * i - j, r) < n_up


def _aa(d, width=1.0):
    """Anti-aliased coverage from a signed distance ``d`` (px, > 0 inside)."""
    return np.clip(0.5 + d / width, 0.0, 1.0).astype(np.float32)


class _Texture:
    """One rendered texture instance on the canvas (all arrays Hc x Wc [x 3] float32 in [0, 1])."""

    def __init__(self, image, thread_angle, params, ground=None, print_premul=None, print_alpha=None,
                 motif_period=None):
        self.image = image
        self.thread_angle = thread_angle        # degrees; thread directions are angle and angle + 90
        self.params = params
        self.ground = ground                    # printed families: fabric without the print
        self.print_premul = print_premul        # premultiplied print colour
        self.print_alpha = print_alpha          # print coverage, HxW
        self.motif_period = motif_period


def _finish(img, rng, h, w, fibre=(0.006, 0.02), mottle=(0.01, 0.04)):
    """Fibre noise + low-frequency mottling (dye unevenness)."""
    f = rng.uniform(*fibre)
    n = rng.standard_normal((h, w, 1)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 0.6)[..., None] * f * 2.0
    m = _smooth_noise(rng, h, w, rng.uniform(40, 140))[..., None] * rng.uniform(*mottle)
    return np.clip(img * (1.0 + m) + n, 0.0, 1.0).astype(np.float32)


def _render_texture(family, h, w, rng, ks):
    """Render one instance of ``family`` on an h x w canvas; ``ks`` = image-size scale (S / 256)."""
    x, y = _grid(h, w)
    kt = float(np.clip(ks, 0.5, 4.0)) ** 0.5      # thread pitch scale
    irr = rng.uniform(0.02, 0.10)                 # per-thread brightness irregularity
    warp_amp = rng.uniform(0.0, 1.5)
    angle = rng.uniform(-6, 6)
    if family not in PRINTED_FAMILIES and family != "knit" and rng.random() < 0.3:
        angle += 90.0
    params = {"angle": round(angle, 3), "irregularity": round(irr, 4)}
    u, v = _rot_uv(x, y, angle, rng, warp_amp, rng.uniform(15, 60))

    if family in ("plain_weave", "twill", "satin", "herringbone", "denim"):
        pu = rng.uniform(2.6, 5.5) * kt
        pv = pu * rng.uniform(0.8, 1.25)
        c1 = _fabric_color(rng)
        c2 = c1 * rng.uniform(0.85, 1.1)
        contrast = rng.uniform(0.25, 0.6)
        if family == "plain_weave":
            if rng.random() < 0.3:  # chambray / two-tone
                c2 = _fabric_color(rng)
            fn = lambda i, j: np.mod(i + j, 2) == 0  # noqa: E731
            params["weave"] = "1/1"
        elif family == "twill":
            nu, nd = [(2, 1), (2, 2), (3, 1), (1, 3), (1, 2)][int(rng.integers(5))]
            d = int(rng.choice([-1, 1]))
            fn = _twill_fn(nu, nd, d)
            params["weave"] = f"{nu}/{nd}"
            if rng.random() < 0.4:
                c2 = _fabric_color(rng)
        elif family == "satin":
            r, step = [(5, 2), (5, 3), (8, 3), (8, 5)][int(rng.integers(4))]
            warp_faced = bool(rng.random() < 0.5)
            fn = (lambda i, j: np.mod(i * step - j, r) != 0) if warp_faced else \
                (lambda i, j: np.mod(i * step - j, r) == 0)
            contrast = rng.uniform(0.15, 0.35)
            pu = rng.uniform(2.2, 4.0) * kt
            pv = pu * rng.uniform(0.8, 1.25)
            params["weave"] = f"satin{r}/{step}"
        elif family == "herringbone":
            nu, nd = [(2, 2), (2, 1), (3, 1)][int(rng.integers(3))]
            r = nu + nd
            block = int(rng.integers(3, 8)) * r
            fn = lambda i, j: np.mod(np.where(np.mod(i // block, 2) == 0, i, -i) - j, r) < nu  # noqa: E731
            pu = rng.uniform(2.4, 4.2) * kt
            pv = pu * rng.uniform(0.85, 1.2)
            c2 = np.clip(c1 * rng.uniform(0.45, 0.7) if c1.mean() > 0.45 else c1 + rng.uniform(0.25, 0.45),
                         0, 1).astype(np.float32)
            contrast = rng.uniform(0.3, 0.55)
            params["weave"] = f"herringbone{nu}/{nd}x{block}"
        else:  # denim
            d = int(rng.choice([-1, 1]))
            fn = _twill_fn(3, 1, d)
            c1 = _hsv_color(rng, (205, 232), (0.45, 0.9), (0.22, 0.6))       # indigo warp
            c2 = _hsv_color(rng, (30, 50), (0.03, 0.15), (0.7, 0.92))        # ecru weft
            irr = rng.uniform(0.06, 0.16)
            contrast = rng.uniform(0.3, 0.5)
            params["weave"] = "3/1 denim"
        warp_tab = _thread_table(rng, c1, irr)
        weft_tab = _thread_table(rng, c2, irr * 0.7)
        img, shade = _weave(u, v, pu, pv, fn, warp_tab, weft_tab, contrast, rng.uniform(0.5, 1.0))
        if family == "denim" or rng.random() < 0.3:  # slubs / streaks along the warp
            vertical = abs(math.cos(math.radians(angle))) > 0.7
            cy, cx = (rng.uniform(20, 60), pu) if vertical else (pu, rng.uniform(20, 60))
            amp = rng.uniform(0.05, 0.14) if family == "denim" else rng.uniform(0.02, 0.06)
            img = img * (1.0 + amp * _smooth_noise(rng, h, w, cy, cx))[..., None]
        if family == "satin":  # sheen
            img = img * (1.0 + rng.uniform(0.03, 0.08) * _smooth_noise(rng, h, w, rng.uniform(60, 160)))[..., None]
        params.update(pitch=round(pu, 3), colors=[c1.round(3).tolist(), c2.round(3).tolist()])
        return _Texture(_finish(img, rng, h, w), angle, params)

    if family in ("stripes", "plaid"):
        ncol = int(rng.integers(2, 5))
        base = _fabric_color(rng)
        cols = [base]
        for _ in range(ncol - 1):
            if rng.random() < 0.5:
                cols.append(np.clip(base * rng.uniform(0.4, 1.5), 0, 1).astype(np.float32))
            else:
                cols.append(_fabric_color(rng))
        pu = rng.uniform(2.4, 4.5) * kt
        pv = pu * rng.uniform(0.85, 1.2)
        counts = (2, int(rng.integers(6, 22)))
        warp_tab = _sett_table(rng, cols, counts, irr * 0.5, mirror=family == "plaid" or rng.random() < 0.5)
        if family == "plaid":
            weft_tab = warp_tab if rng.random() < 0.6 else _sett_table(rng, cols, counts, irr * 0.5)
            fn = _twill_fn(2, 2, int(rng.choice([-1, 1])))
        else:
            weft_tab = _thread_table(rng, cols[int(rng.integers(len(cols)))], irr * 0.5)
            fn = (lambda i, j: np.mod(i + j, 2) == 0) if rng.random() < 0.5 else _twill_fn(2, 1)
        img, _ = _weave(u, v, pu, pv, fn, warp_tab, weft_tab, rng.uniform(0.2, 0.45), rng.uniform(0.5, 1.0))
        params.update(pitch=round(pu, 3), colors=[c.round(3).tolist() for c in cols])
        return _Texture(_finish(img, rng, h, w), angle, params)

    if family == "knit":
        pc = rng.uniform(4.0, 8.0) * kt
        pr = pc * rng.uniform(0.5, 0.8)
        fi = u / pc
        i = np.floor(fi)
        fu = (fi - i - 0.5).astype(np.float32)
        ii = np.mod(i.astype(np.int64), _TAB)
        jit = (1.0 + irr * rng.standard_normal(_TAB).astype(np.float32))[ii]
        loops = 0.5 + 0.5 * np.cos(2 * np.pi * (v / pr + 1.1 * np.abs(fu)))
        gap = np.abs(np.cos(np.pi * fu)) ** 0.6
        shade = ((0.3 + 0.7 * loops ** 0.7) * gap * jit).astype(np.float32)
        c1 = _fabric_color(rng)
        contrast = rng.uniform(0.35, 0.6)
        img = c1[None, None, :] * ((1 - contrast) + contrast * shade)[..., None]
        if rng.random() < 0.4:  # heather / melange yarn
            c2 = _fabric_color(rng)
            mix = (_smooth_noise(rng, h, w, 1.5) > rng.uniform(0.3, 1.2)).astype(np.float32)
            mix = cv2.GaussianBlur(mix, (0, 0), 0.7)[..., None] * 0.6
            img = img * (1 - mix) + mix * c2[None, None, :] * ((1 - contrast) + contrast * shade)[..., None]
        params.update(pitch=round(pc, 3), colors=[c1.round(3).tolist()])
        return _Texture(_finish(img.astype(np.float32), rng, h, w), angle, params)

    if family in PRINTED_FAMILIES:
        pu = rng.uniform(2.2, 3.6) * kt
        g = _fabric_color(rng, val=(0.6, 0.97)) if rng.random() < 0.8 else _fabric_color(rng)
        ground, gshade = _weave(u, v, pu, pu * rng.uniform(0.85, 1.2), lambda i, j: np.mod(i + j, 2) == 0,
                                _thread_table(rng, g, irr * 0.5), _thread_table(rng, g, irr * 0.5),
                                rng.uniform(0.12, 0.3), 0.7)
        ground = _finish(ground, rng, h, w, mottle=(0.005, 0.02))
        pangle = rng.uniform(-15, 15) if rng.random() < 0.8 else 45.0 + rng.uniform(-5, 5)
        pu_, pv_ = _rot_uv(x, y, pangle, rng, rng.uniform(0.0, 0.8), rng.uniform(20, 60))
        period = rng.uniform(26, 80) * ks
        gmean = float(g.mean())

        def ink():
            # print colours contrast with the ground
            if gmean > 0.5:
                return _hsv_color(rng, (0, 360), (0.35, 0.95), (0.2, 0.75))
            return _hsv_color(rng, (0, 360), (0.1, 0.6), (0.7, 1.0))

        if family == "floral_print":
            layers, desc = _floral_layers(pu_, pv_, period, rng, ink)
        else:
            layers, desc = _geometric_layers(pu_, pv_, period, rng, ink)
        premul = np.zeros((h, w, 3), np.float32)
        alpha = np.zeros((h, w), np.float32)
        inkshade = (0.8 + 0.2 * gshade)[..., None]
        for a, c in layers:
            a = a * rng.uniform(0.85, 1.0)
            premul = premul * (1 - a[..., None]) + a[..., None] * c[None, None, :] * inkshade
            alpha = alpha * (1 - a) + a
        img = ground * (1 - alpha[..., None]) + premul
        params.update(pitch=round(pu, 3), motif=desc, motif_period=round(period, 2), print_angle=round(pangle, 2),
                      colors=[g.round(3).tolist()] + [c.round(3).tolist() for _, c in layers])
        return _Texture(img.astype(np.float32), angle, params, ground=ground, print_premul=premul,
                        print_alpha=alpha, motif_period=period)
    raise ValueError(f"unknown texture family {family!r}")


def _lattice(u, v, period, halfdrop, offset=(0.0, 0.0)):
    """Local motif coordinates (px from the cell centre) and the cell ids, all HxW."""
    a = u / period + offset[0]
    ca = np.floor(a)
    b = v / period + offset[1] + (0.5 * np.mod(ca, 2) if halfdrop else 0.0)
    cb = np.floor(b)
    return ((a - ca - 0.5) * period).astype(np.float32), ((b - cb - 0.5) * period).astype(np.float32), ca, cb


def _floral_layers(u, v, period, rng, ink):
    """Repeating flowers (petals, centre, leaves) + small filler dots: list of (alpha HxW, colour)."""
    lx, ly, ca, cb = _lattice(u, v, period, rng.random() < 0.6)
    rot_tab = rng.uniform(0, 2 * np.pi, 97).astype(np.float32)
    rot = rot_tab[np.mod((ca * 31 + cb * 17).astype(np.int64), 97)] * rng.uniform(0.0, 1.0)
    r = np.hypot(lx, ly)
    th = np.arctan2(ly, lx) + rot
    r0 = period * rng.uniform(0.16, 0.3)
    npet = int(rng.integers(4, 9))
    depth = rng.uniform(0.3, 0.7)
    rf = r0 * ((1 - depth) + depth * np.abs(np.cos(npet * th / 2)) ** rng.uniform(0.5, 2.0))
    petal_col, centre_col, leaf_col = ink(), ink(), _hsv_color(rng, (70, 160), (0.3, 0.8), (0.25, 0.6))
    layers = []
    # two leaves
    la, lb = r0 * rng.uniform(0.5, 0.8), r0 * rng.uniform(0.2, 0.35)
    leaf = np.zeros_like(r)
    phi0 = rng.uniform(0, 2 * np.pi)
    for phi in (phi0, phi0 + rng.uniform(2.2, 4.0)):
        c, s = math.cos(phi), math.sin(phi)
        px = c * lx + s * ly - r0 * 1.25
        py = -s * lx + c * ly
        nrm = np.sqrt((px / la) ** 2 + (py / lb) ** 2)
        leaf = np.maximum(leaf, _aa((1 - nrm) * lb))
    layers.append((leaf, leaf_col))
    layers.append((_aa(rf - r), petal_col))
    layers.append((_aa(r0 * rng.uniform(0.18, 0.32) - r), centre_col))
    if rng.random() < 0.7:  # filler dots between flowers
        dx, dy, _, _ = _lattice(u, v, period, False, (0.5, 0.5))
        layers.append((_aa(period * rng.uniform(0.03, 0.07) - np.hypot(dx, dy)), ink()))
    return layers, f"flower{npet}"


def _geometric_layers(u, v, period, rng, ink):
    """Repeating geometric prints (dots, diamonds, zigzag, rings, squares): list of (alpha, colour)."""
    kinds = ["dots", "diamonds", "zigzag", "rings", "squares"]
    first = kinds[int(rng.integers(len(kinds)))]
    chosen = [first]
    if rng.random() < 0.5:
        chosen.append(kinds[int(rng.integers(len(kinds)))])
    layers = []
    for n, kind in enumerate(chosen):
        off = (0.0, 0.0) if n == 0 else (0.5, 0.5)
        p = period * (1.0 if n == 0 else rng.uniform(0.5, 1.0))
        lx, ly, _, _ = _lattice(u, v, p, rng.random() < 0.5, off)
        if kind == "dots":
            a = _aa(p * rng.uniform(0.12, 0.3) - np.hypot(lx, ly))
        elif kind == "diamonds":
            rr = p * rng.uniform(0.2, 0.42)
            a = _aa(rr - (np.abs(lx) + np.abs(ly)) * 0.7071)
            if rng.random() < 0.5:
                a = a * (1 - _aa(rr * 0.5 - (np.abs(lx) + np.abs(ly)) * 0.7071))
        elif kind == "zigzag":
            amp = rng.uniform(0.15, 0.4) * p
            zz = amp * np.abs(np.mod(u / (p * 0.5), 2.0) - 1.0)
            d = np.mod(v - zz, p) - p / 2
            a = _aa(p * rng.uniform(0.05, 0.15) - np.abs(d))
        elif kind == "rings":
            rr = p * rng.uniform(0.2, 0.38)
            a = _aa(p * rng.uniform(0.03, 0.08) - np.abs(np.hypot(lx, ly) - rr))
        else:  # squares (outlined or filled)
            rr = p * rng.uniform(0.15, 0.35)
            m = np.maximum(np.abs(lx), np.abs(ly))
            a = _aa(rr - m) if rng.random() < 0.5 else _aa(p * 0.05 - np.abs(m - rr))
        layers.append((a, ink()))
    return layers, "+".join(chosen)
