"""Batch augmentation (tegaki.data.augment): references for each transform, seeding, identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tegaki.data.augment import (KINDS, Augmenter, affine_matrices, gaussian_kernel, parse_kinds, smooth, thicken,
                                 warp)
from tegaki.errors import TegakiError


def batch(n=16, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_zero_strength_is_the_identity_for_every_kind():
    x = batch()
    aug = Augmenter(KINDS, background=-0.4242, strength=0.0)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, x, atol=1e-4, rtol=0)  # bilinear sampling exactly at the pixel centres


def test_integer_translation_is_a_shift_with_background_fill():
    x = batch(4)
    bg = -0.5
    theta = affine_matrices(torch.zeros(4), torch.ones(4, 2), torch.zeros(4), torch.tensor([[2.0, -1.0]] * 4))
    y = warp(x, theta, None, bg)
    # content moves 2 pixels right and 1 pixel up
    torch.testing.assert_close(y[:, :, :-1, 2:], x[:, :, 1:, :-2], atol=1e-4, rtol=0)
    torch.testing.assert_close(y[:, :, :, :2], torch.full_like(y[:, :, :, :2], bg), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :, -1:, :], torch.full_like(y[:, :, -1:, :], bg), atol=1e-5, rtol=0)


def test_quarter_turn_equals_rot90_and_displacement_equals_translation():
    x = batch(3)
    theta = affine_matrices(torch.full((3,), math.pi / 2), torch.ones(3, 2), torch.zeros(3), torch.zeros(3, 2))
    torch.testing.assert_close(warp(x, theta), torch.rot90(x, 1, (2, 3)), atol=1e-4, rtol=0)
    ident = affine_matrices(torch.zeros(3), torch.ones(3, 2), torch.zeros(3), torch.zeros(3, 2))
    disp = torch.zeros(3, 2, 28, 28)
    disp[:, 0] = -3.0  # every output pixel samples 3 pixels to its left: content moves right by 3
    shifted = affine_matrices(torch.zeros(3), torch.ones(3, 2), torch.zeros(3), torch.tensor([[3.0, 0.0]] * 3))
    torch.testing.assert_close(warp(x, ident, disp), warp(x, shifted), atol=1e-5, rtol=0)


def test_zoom_magnifies_about_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 12:16, 12:16] = 1.0  # a 4x4 square in the middle
    theta = affine_matrices(torch.zeros(1), torch.full((1, 2), 2.0), torch.zeros(1), torch.zeros(1, 2))
    y = warp(x, theta)
    assert abs(float(y.sum()) - 4 * float(x.sum())) < 1.0  # area x4
    assert float(y[0, 0, 13:15, 13:15].min()) == pytest.approx(1.0)


def test_thickness_matches_max_pool_dilation_and_erosion():
    x = batch(8)
    torch.testing.assert_close(thicken(x, torch.ones(8)), F.max_pool2d(x, 3, 1, 1))
    torch.testing.assert_close(thicken(x, -torch.ones(8)), -F.max_pool2d(-x, 3, 1, 1))
    half = thicken(x, torch.full((8,), 0.5))
    torch.testing.assert_close(half, 0.5 * (x + F.max_pool2d(x, 3, 1, 1)))


def test_matrix_blur_matches_a_separable_convolution():
    f = torch.rand(4, 2, 28, 28)
    k = gaussian_kernel(4.0)
    r = (len(k) - 1) // 2
    ref = F.conv2d(F.conv2d(f.reshape(8, 1, 28, 28), k.view(1, 1, 1, -1), padding=(0, r)),
                   k.view(1, 1, -1, 1), padding=(r, 0)).reshape(4, 2, 28, 28)
    torch.testing.assert_close(smooth(f, 4.0), ref, atol=1e-6, rtol=1e-5)


def test_seeded_shape_kept_and_numpy_batches():
    x = batch(32)
    a = Augmenter(KINDS, background=-0.42)
    a.seed(7, 1)
    y1 = a(x)
    a.seed(7, 1)
    y2 = a(x)
    a.seed(7, 2)
    y3 = a(x)
    assert y1.shape == x.shape
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    assert (y1 - x).abs().mean() > 0.05  # it does change the images
    a.seed(7, 1)
    yn = a(x.numpy())
    assert isinstance(yn, np.ndarray) and yn.dtype == np.float32
    np.testing.assert_allclose(yn, y1.numpy(), atol=1e-6)


def test_parse_kinds_and_errors():
    assert parse_kinds("affine+elastic") == ("affine", "elastic")
    assert parse_kinds("none") == () and parse_kinds(None) == ()
    assert Augmenter.parse("none") is None
    for bad in ("rotate", "affine+affine", "affine,elastic"):
        with pytest.raises(TegakiError, match="^unknown augmentation"):
            parse_kinds(bad)
    with pytest.raises(TegakiError, match="strength"):
        Augmenter(("affine",), strength=-1)


def test_affine_matches_scipy_affine_transform():
    """The same random maps through scipy.ndimage (order 1, grid-constant fill) give the same images."""
    from scipy import ndimage

    x = batch(6)
    aug = Augmenter(("affine",), background=-0.3)
    aug.seed(3)
    p = aug.params(6, 28, 28, "cpu")
    y = aug.apply(x, p)
    theta = affine_matrices(p["rot"], p["zoom"], p["shear"], p["shift"]).double().numpy()  # (N, 2, 3) in (x, y)
    c = np.array([13.5, 13.5])  # the centre of a 28-pixel axis, pixel centres at 0..27
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
    for i in range(6):
        a = swap @ theta[i, :, :2] @ swap  # acts on (row, col)
        offset = swap @ theta[i, :, 2] + c - a @ c
        ref = ndimage.affine_transform(x[i, 0].double().numpy(), a, offset, order=1, mode="grid-constant", cval=-0.3)
        np.testing.assert_allclose(y[i, 0].numpy(), ref, atol=2e-4)


def test_train_cli_rejects_a_bad_augment(cli, tmp_path):
    r = cli("train", "--preset", "ffnn", "--augment", "swirl", "--out", tmp_path / "r")
    assert r.code == 2
    assert "unknown augmentation 'swirl'" in r.err and r.err.count("\n") == 1
    assert not (tmp_path / "r").exists()
