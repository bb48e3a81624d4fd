"""How hard is a negative? Pixel-level closeness of a negative image to its positive.

A good hard negative changes few pixels (it looks almost the same) but enough to be visible at the
output resolution. Both figures are recorded for every negative and thresholded by the recipe.

A hard negative differs from its positive in few pixels, so both measures look only there: outside
the box of differing pixels nothing counts as changed, and an SSIM window of equal pixels scores
exactly 1, so only the windows holding a differing pixel are computed, cluster by cluster. The result equals the
whole-image computation (up to float rounding) at a fraction of its cost.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter

# A pixel counts as changed when any channel moves by more than this (out of 255): antialiasing
# jitter stays below it, a moved line or a swapped letter does not.
CHANGED_PIXEL_THRESHOLD = 32
SSIM_WINDOW = 7


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    return a, b


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.float64)
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _diff_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), end-exclusive, of the smallest box holding every differing pixel; None if equal."""
    flat = np.flatnonzero(a.reshape(-1) != b.reshape(-1))  # one pass; few entries for a hard negative
    if not len(flat):
        return None
    channels = a.shape[2] if a.ndim == 3 else 1
    rows, cols = np.divmod(flat // channels, a.shape[1])
    return int(rows[0]), int(rows[-1]) + 1, int(cols.min()), int(cols.max()) + 1


def _grown(box: tuple[int, int, int, int], margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    r0, r1, c0, c1 = box
    return (slice(max(0, r0 - margin), min(shape[0], r1 + margin)),
            slice(max(0, c0 - margin), min(shape[1], c1 + margin)))


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: int = CHANGED_PIXEL_THRESHOLD) -> float:
    """Fraction of pixels whose value differs by more than ``threshold`` in any channel."""
    a, b = _check_pair(a, b)
    return _changed_fraction(a, b, _diff_box(a, b), threshold)


def _changed_fraction(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int] | None,
                      threshold: int = CHANGED_PIXEL_THRESHOLD) -> float:
    if box is None:
        return 0.0
    crop = _grown(box, 0, a.shape)
    x, y = a[crop], b[crop]
    moved = (np.maximum(x, y) - np.minimum(x, y)) > threshold  # |x - y| without a wider dtype
    if moved.ndim == 3:  # any colour channel (a reduction over a short last axis is slow: or the planes)
        moved = moved[..., 0] | moved[..., 1] | moved[..., 2]
    return float(np.count_nonzero(moved) / (a.shape[0] * a.shape[1]))


def ssim(a: np.ndarray, b: np.ndarray, window: int = SSIM_WINDOW) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images on their luminance, box window.

    Only the windows holding a differing pixel are computed; every other window scores exactly 1.
    """
    a, b = _check_pair(a, b)
    return _ssim(a, b, _diff_box(a, b), window)


def _ssim(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int] | None, window: int = SSIM_WINDOW) -> float:
    if box is None:
        return 1.0
    h, w = a.shape[:2]
    window = min(window, h, w)
    windows = (h - window + 1) * (w - window + 1)
    crop = _grown(box, 0, a.shape)
    differs = a[crop] != b[crop]
    if differs.ndim == 3:
        differs = differs.any(axis=2)
    # The differing pixels usually sit in a few separate places (a moved vertex, a swapped label):
    # each cluster's windows are computed on its own, which skips the unchanged space between them.
    total, count = 0.0, 0
    for cluster in _clusters(differs, window, box[0], box[2]):
        local = _local_ssim(a, b, cluster, window)
        total, count = total + float(local.sum()), count + local.size
    return float((total + (windows - count)) / windows)


def _clusters(differs: np.ndarray, window: int, row0: int = 0, col0: int = 0) -> list[tuple[int, int, int, int]]:
    """Boxes (row0, row1, col0, col1) holding every True of ``differs`` (offset by row0, col0), any
    two of them at least ``window`` rows or columns apart, so that no window touches two of them.
    A recursive XY cut: split at runs of ``window - 1`` or more empty rows, then columns."""
    rows, cols = _runs(differs.any(axis=1), window), _runs(differs.any(axis=0), window)
    if len(rows) == 1 and len(cols) == 1:
        (r0, r1), (c0, c1) = rows[0], cols[0]
        return [(row0 + r0, row0 + r1, col0 + c0, col0 + c1)]
    out = []
    for r0, r1 in rows:
        for c0, c1 in _runs(differs[r0:r1].any(axis=0), window):
            out += _clusters(differs[r0:r1, c0:c1], window, row0 + r0, col0 + c0)
    return out


def _runs(mask: np.ndarray, window: int) -> list[tuple[int, int]]:
    """(start, end) of the groups of True in ``mask``, split where ``window - 1`` or more False lie between."""
    idx = np.flatnonzero(mask)
    cuts = np.flatnonzero(np.diff(idx) >= window)
    starts, ends = [int(idx[0]), *idx[cuts + 1].tolist()], [*idx[cuts].tolist(), int(idx[-1])]
    return [(s, e + 1) for s, e in zip(starts, ends)]


def _local_ssim(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int], window: int) -> np.ndarray:
    """SSIM of every window holding a differing pixel of ``box`` (all such windows lie in ``box`` grown by
    ``window - 1``), (M,)."""
    crop = _grown(box, window - 1, a.shape)
    x, y = _gray(a[crop]), _gray(b[crop])
    # scipy's filters are centred: the valid windows' values sit `half` pixels in from the top-left
    half = window // 2
    valid = (slice(half, x.shape[0] - window + 1 + half), slice(half, x.shape[1] - window + 1 + half))
    touched = maximum_filter(x != y, window, mode="constant")[valid]

    def mean(v: np.ndarray) -> np.ndarray:  # window means of the touched windows, (M,)
        return uniform_filter(v, window, mode="constant")[valid][touched]

    # In sum/difference form (s = x + y, d = x - y) four window means do instead of five:
    # mx^2 + my^2 = (ms^2 + md^2) / 2, 2 mx my = (ms^2 - md^2) / 2, and with vs = mss - ms^2 and
    # vd = mdd - md^2, vx + vy = (vs + vd) / 2 and 2 cov(x, y) = (vs - vd) / 2.
    sums, diffs = x + y, x - y
    ms, md = mean(sums), mean(diffs)
    ms2, md2 = ms * ms, md * md
    vs, vd = mean(sums * sums) - ms2, mean(diffs * diffs) - md2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return (((ms2 - md2) / 2 + c1) * ((vs - vd) / 2 + c2)) / (((ms2 + md2) / 2 + c1) * ((vs + vd) / 2 + c2))


def image_hardness(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """``{"changed_fraction", "ssim"}`` of a negative against its positive (uint8 arrays, same shape)."""
    a, b = _check_pair(positive, negative)
    box = _diff_box(a, b)
    return {"changed_fraction": round(_changed_fraction(a, b, box), 6), "ssim": round(_ssim(a, b, box), 6)}
