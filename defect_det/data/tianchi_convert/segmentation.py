"""Validation of the optional ``segmentation`` of a fabric annotation entry (COCO RLE or polygons), in pure
Python (no pycocotools): :func:`_check_segmentation`, and the number checks the readers share."""
import math

__all__ = []  # internal to the converter


def _number(v):
    """float(v) for a finite int/float (not bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v):
    """v for an int (not bool), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rle_string_counts(s):
    """
    Run lengths of a COCO compressed RLE ``counts`` string, or None if it is not one. Format: each
    count is written in 5-bit groups, least significant first, as characters ``chr(48 + group)``
    with 0x20 set on every group but the last and 0x10 of the last group the sign; from the 4th count
    on, the value stored is the difference to the count two places before.
    """
    counts, p, n = [], 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None  # the last count is cut off
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_segmentation(segm, width, height):
    """
    Validate a COCO ``segmentation`` of an image of ``height`` x ``width`` pixels (pure Python).

    Returns:
        (mask, problem, area): ``(segm to write, None, foreground pixels or polygon area)`` if
        valid, ``(None, "<what is wrong>", 0)`` if not.
    """
    if isinstance(segm, dict):
        if set(segm) != {"size", "counts"}:
            return None, f"segmentation RLE must have exactly the keys 'size' and 'counts', got {sorted(segm)}", 0
        size = segm["size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2 or any(_int(v) is None for v in size):
            return None, f"segmentation RLE size must be [height, width] ints, got {size!r}", 0
        if list(size) != [height, width]:
            return None, (f"segmentation RLE size [h, w] = {list(size)} differs from the image size "
                          f"[{height}, {width}]"), 0
        counts = segm["counts"]
        if isinstance(counts, str):
            runs = _rle_string_counts(counts)
            if runs is None:
                return None, f"segmentation RLE counts {counts[:40]!r} is not a COCO compressed RLE string", 0
        elif isinstance(counts, list) and all(_int(v) is not None for v in counts):
            runs = counts
        else:
            return None, "segmentation RLE counts must be a compressed string or a list of ints", 0
        if any(v < 0 for v in runs) or sum(runs) != height * width:
            return None, (f"segmentation RLE counts decode to {sum(runs)} pixels with "
                          f"{sum(1 for v in runs if v < 0)} negative runs, expected {height * width} "
                          f"({height}x{width}) and none"), 0
        return {"size": [height, width], "counts": counts}, None, sum(runs[1::2])
    if isinstance(segm, list) and segm:
        out, area = [], 0.0
        for j, poly in enumerate(segm):
            xy = [_number(v) for v in poly] if isinstance(poly, list) else None
            if xy is None or len(xy) < 6 or len(xy) % 2 or None in xy:
                return None, (f"segmentation polygon {j} must be a list of >= 6 numbers (x1, y1, x2, y2, "
                              f"...; an even count), got {str(poly)[:80]}"), 0
            xs, ys = xy[0::2], xy[1::2]
            area += abs(sum(xs[k] * ys[k - 1] - xs[k - 1] * ys[k] for k in range(len(xs)))) / 2
            out.append(xy)
        return out, None, area
    return None, (f"segmentation must be an RLE dict {{'size', 'counts'}} or a non-empty list of polygons, "
                  f"got {str(segm)[:80]}"), 0
