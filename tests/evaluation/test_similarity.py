"""SSIM / MS-SSIM / PSNR against scikit-image with the same settings."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from imgsynth.evaluation.similarity import PSNR_MAX_DB, SSIMSettings, ms_ssim, ms_ssim_scales, psnr, ssim

SETTINGS = SSIMSettings(data_range=2.0)


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(0, 0.5, shape), -1, 1)
    a = a + np.linspace(-0.3, 0.3, shape[-1])  # some structure beyond noise
    b = np.clip(a + rng.normal(0, 0.2, shape), -1, 1)
    return a, b


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.mark.parametrize("shape", [(28, 28), (32, 32), (64, 48), (20, 24, 22)])
def test_ssim_equals_scikit_image(shape: tuple[int, ...]) -> None:
    pairs = [_pair(shape, seed) for seed in range(3)]
    x = np.stack([p[1] for p in pairs])[:, None]
    y = np.stack([p[0] for p in pairs])[:, None]
    ours = ssim(x, y, SETTINGS)
    ref = [_sk_ssim(a, b) for a, b in pairs]
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_psnr_is_per_image_and_equals_scikit_image() -> None:
    pairs = [_pair((32, 32), seed) for seed in range(4)]
    pairs[1] = (pairs[1][0], np.clip(pairs[1][0] + 0.5, -1, 1))  # very different error levels
    x = np.stack([p[1] for p in pairs])[:, None]
    y = np.stack([p[0] for p in pairs])[:, None]
    ours = psnr(x, y, 2.0)
    ref = [peak_signal_noise_ratio(a, b, data_range=2.0) for a, b in pairs]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    pooled = peak_signal_noise_ratio(y, x, data_range=2.0)
    assert abs(ours.mean() - pooled) > 0.1  # averaged per image, not pooled over the batch


def test_ms_ssim_on_28x28_uses_fewer_scales_with_a_note() -> None:
    a, b = _pair((28, 28))
    scales, note = ms_ssim_scales((28, 28), SETTINGS)
    assert scales == 2 and "2 of 5 scales" in note
    value, note2 = ms_ssim(b[None, None], a[None, None], SETTINGS)
    assert note2 == note and 0 < value[0] < 1
    # Two scales: cs_1 ^ w1 * ssim_2 ^ w2, weights renormalised from (0.0448, 0.2856), against an
    # independent scipy implementation of the valid-region Gaussian SSIM terms.
    cs1, _ = _reference_terms(b, a)
    _, ssim2 = _reference_terms(_pool2(b), _pool2(a))
    w = np.array([0.0448, 0.2856]) / (0.0448 + 0.2856)
    assert value[0] == pytest.approx(cs1 ** w[0] * ssim2 ** w[1], abs=1e-4)


def _pool2(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))


def _reference_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.ndimage import gaussian_filter

    def g(im: np.ndarray) -> np.ndarray:
        return gaussian_filter(im, sigma=1.5, truncate=3.5)[5:-5, 5:-5]

    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    mx, my = g(x), g(y)
    vx, vy, cxy = g(x * x) - mx**2, g(y * y) - my**2, g(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return float(cs.mean()), float(((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean())


def test_ms_ssim_3d_and_identity() -> None:
    a, b = _pair((32, 32, 32))
    value, note = ms_ssim(b[None, None], a[None, None], SETTINGS)
    assert "2 of 5 scales" in note and 0 < value[0] < 1
    same, _ = ms_ssim(a[None, None], a[None, None], SETTINGS)
    assert same[0] == pytest.approx(1.0, abs=1e-5)
    big, big_note = ms_ssim(*[np.zeros((1, 1, 176, 176)) + 0.1] * 2, SETTINGS)
    assert big_note == "" and big[0] == pytest.approx(1.0, abs=1e-5)


def test_constant_images_give_finite_values() -> None:
    zeros = np.full((2, 1, 28, 28), -1.0)
    ones = np.full((2, 1, 28, 28), 1.0)
    for x, y in [(zeros, zeros), (zeros, ones)]:
        assert np.isfinite(ssim(x, y, SETTINGS)).all()
        assert np.isfinite(ms_ssim(x, y, SETTINGS)[0]).all()
        assert np.isfinite(psnr(x, y, 2.0)).all()
    assert psnr(zeros, zeros, 2.0)[0] == pytest.approx(PSNR_MAX_DB)
    assert ssim(zeros, zeros, SETTINGS)[0] == pytest.approx(1.0)


def test_tiny_images_shrink_the_window() -> None:
    a, b = _pair((8, 8))
    assert np.isfinite(ssim(b[None, None], a[None, None], SETTINGS)).all()
    with pytest.raises(ValueError, match="too small"):
        ssim(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), SETTINGS)


def test_why_monai_ssim_and_not_torchmetrics() -> None:
    """torchmetrics averages a reflect-padded border into SSIM, so it misses scikit-image by far more than
    1e-4 on small images; its per-image PSNR agrees with ours."""
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = _pair((28, 28))
    x, y = torch.tensor(b)[None, None], torch.tensor(a)[None, None]
    assert abs(structural_similarity_index_measure(x, y, data_range=2.0).item() - _sk_ssim(a, b)) > 1e-3
    assert abs(ssim(b[None, None], a[None, None], SETTINGS)[0] - _sk_ssim(a, b)) < 1e-4
    xs = np.stack([_pair((32, 32), s)[1] for s in range(3)])[:, None]
    ys = np.stack([_pair((32, 32), s)[0] for s in range(3)])[:, None]
    tm = peak_signal_noise_ratio(torch.tensor(xs), torch.tensor(ys), data_range=2.0, reduction="none", dim=(1, 2, 3))
    np.testing.assert_allclose(psnr(xs, ys, 2.0), tm.numpy(), atol=1e-6)
