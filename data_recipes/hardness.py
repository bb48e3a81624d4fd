"""How hard is a negative? Pixel-level closeness of a negative image to its positive.

A good hard negative changes few pixels (it looks almost the same) but enough to be visible at the
output resolution. Both figures are recorded for every negative and thresholded by the recipe.

A hard negative differs from its positive in few pixels, so both measures look only there: outside
the box of differing pixels nothing counts as changed, and an SSIM window of equal pixels scores
exactly 1, so only the windows holding a differing pixel are computed. The result equals the
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
    crop = _grown(box, window - 1, a.shape)
    x, y = _gray(a[crop]), _gray(b[crop])
    # scipy's filters are centred: the valid windows' values sit `half` pixels in from the top-left
    half = window // 2
    valid = (slice(half, x.shape[0] - window + 1 + half), slice(half, x.shape[1] - window + 1 + half))
    touched = maximum_filter(x != y, window, mode="constant")[valid]

    def mean(v: np.ndarray) -> np.ndarray:  # window means of the touched windows, (M,)
        return uniform_filter(v, window, mode="constant")[valid][touched]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    local = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float((local.sum() + (windows - local.size)) / windows)


def image_hardness(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """``{"changed_fraction", "ssim"}`` of a negative against its positive (uint8 arrays, same shape)."""
    a, b = _check_pair(positive, negative)
    box = _diff_box(a, b)
    return {"changed_fraction": round(_changed_fraction(a, b, box), 6), "ssim": round(_ssim(a, b, box), 6)}
