"""How hard is a negative? Pixel-level closeness of a negative image to its positive.

A good hard negative changes few pixels (it looks almost the same) but enough to be visible at the
output resolution. Both figures are recorded for every negative and thresholded by the recipe.
"""
from __future__ import annotations

import numpy as np

# A pixel counts as changed when any channel moves by more than this (out of 255): antialiasing
# jitter stays below it, a moved line or a swapped letter does not.
CHANGED_PIXEL_THRESHOLD = 32


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    rgb = image[..., :3].astype(np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: int = CHANGED_PIXEL_THRESHOLD) -> float:
    """Fraction of pixels whose value differs by more than ``threshold`` in any channel."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    if diff.ndim == 3:
        diff = diff[..., :3].max(axis=2)
    return float((diff > threshold).mean())


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window (valid positions only), via a summed-area table."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images on their luminance, box window."""
    x, y = _gray(a), _gray(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    window = min(window, *x.shape)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _box_mean(x, window), _box_mean(y, window)
    vx = _box_mean(x * x, window) - mx * mx
    vy = _box_mean(y * y, window) - my * my
    cxy = _box_mean(x * y, window) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


def image_hardness(positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """``{"changed_fraction", "ssim"}`` of a negative against its positive (uint8 arrays, same shape)."""
    return {
        "changed_fraction": round(changed_fraction(positive, negative), 6),
        "ssim": round(ssim(positive, negative), 6),
    }
