"""Hardness measures: the box-restricted computation equals the whole-image definition."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from data_recipes.diagrams.hardness import CHANGED_PIXEL_THRESHOLD, changed_fraction, image_hardness, ssim


def _whole_image_ssim(a, b, window=7):
    """The textbook definition: every window of the luminance, its means, variances and covariance."""
    gray = np.array([0.299, 0.587, 0.114])
    x, y = (im[..., :3].astype(np.float64) @ gray if im.ndim == 3 else im.astype(np.float64) for im in (a, b))
    wx, wy = sliding_window_view(x, (window, window)), sliding_window_view(y, (window, window))
    mx, my = wx.mean(axis=(2, 3)), wy.mean(axis=(2, 3))
    vx, vy = wx.var(axis=(2, 3)), wy.var(axis=(2, 3))
    cxy = (wx * wy).mean(axis=(2, 3)) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def _whole_image_changed(a, b):
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(((diff[..., :3].max(axis=2) if diff.ndim == 3 else diff) > CHANGED_PIXEL_THRESHOLD).mean())


def _pair(seed, shape, box):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    b = a.copy()
    (r0, r1), (c0, c1) = box
    b[r0:r1, c0:c1] = rng.integers(0, 256, size=b[r0:r1, c0:c1].shape, dtype=np.uint8)
    return a, b


@pytest.mark.parametrize("shape", [(64, 80, 3), (64, 80), (64, 80, 4)])
@pytest.mark.parametrize("box", [((10, 14), (20, 30)), ((0, 3), (0, 2)), ((60, 64), (75, 80)), ((0, 64), (0, 80))])
def test_box_restricted_measures_equal_the_whole_image_definition(shape, box):
    a, b = _pair(0, shape, box)
    assert ssim(a, b) == pytest.approx(_whole_image_ssim(a, b), abs=1e-9)
    assert changed_fraction(a, b) == pytest.approx(_whole_image_changed(a, b), abs=1e-12)
    assert ssim(a, b) < 1.0 and changed_fraction(a, b) > 0


@pytest.mark.parametrize("shape", [(90, 100), (90, 100, 3)])
def test_separate_clusters_of_change_give_the_whole_image_ssim(shape):
    """Changes far apart are measured cluster by cluster: the sum over clusters is the whole-image SSIM,
    whether the clusters are further apart than a window, exactly a window apart, or just closer."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    for gap in (0, 1, 5, 6, 7, 40):  # empty rows or columns between changed blocks
        b = a.copy()
        b[10:14, 10:15] = 255 - b[10:14, 10:15]
        b[14 + gap:18 + gap, 10:15] = 0  # below the first block, same columns
        b[10:14, 15 + gap:20 + gap] = 255  # beside it, same rows
        assert ssim(a, b) == pytest.approx(_whole_image_ssim(a, b), abs=1e-9), gap


def test_identical_images_are_not_changed_and_fully_similar():
    a = np.full((32, 32, 3), 255, dtype=np.uint8)
    a[10:20, 5] = 0
    assert image_hardness(a, a.copy()) == {"changed_fraction": 0.0, "ssim": 1.0}


def test_a_moved_line_is_counted():
    a = np.full((50, 50, 3), 255, dtype=np.uint8)
    b = a.copy()
    a[:, 20] = 0
    b[:, 22] = 0
    h = image_hardness(a, b)
    assert h["changed_fraction"] == pytest.approx(100 / 2500)
    assert 0.5 < h["ssim"] < 1.0


def test_mismatched_shapes_and_modes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="expected an"):
        changed_fraction(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)))
