"""StyleGAN2 networks checked against direct reference computations (numpy / scipy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d

from imgsynth.models.stylegan2 import ConditionLayout, Discriminator, Generator, MappingNetwork
from imgsynth.models.stylegan2_ops import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    downsample2d,
    fir_filter,
    modulated_conv2d,
    upsample2d,
)

torch.set_num_threads(2)


def _lrelu(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, 0.2 * x) * math.sqrt(2)


def _ref_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cross-correlation with 'same' zero padding: x [B, I, H, W], w [O, I, k, k] -> [B, O, H, W]."""
    out = np.zeros((x.shape[0], w.shape[0], *x.shape[2:]))
    for b in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[b, o] = sum(correlate2d(x[b, i], w[o, i], mode="same") for i in range(w.shape[1]))
    return out


def test_equal_linear_matches_runtime_scaled_reference() -> None:
    torch.manual_seed(0)
    layer = EqualLinear(7, 5, bias_init=0.5, lr_multiplier=0.01, activation="lrelu")
    x = torch.randn(3, 7)
    w = layer.weight.detach().numpy().astype(np.float64)
    b = layer.bias.detach().numpy().astype(np.float64)
    ref = _lrelu(x.numpy() @ (w * 0.01 / math.sqrt(7)).T + b * 0.01)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)
    # Stored weights are N(0, 1/lr^2); the effective weights have He-like std 1/sqrt(fan_in).
    big = EqualLinear(512, 512, lr_multiplier=0.01)
    assert abs(big.weight.std().item() * 0.01 - 1.0) < 0.02
    assert abs((big.weight * big.weight_gain).std().item() * math.sqrt(512) - 1.0) < 0.02
    # Equalised LR: the gradient of the stored weight is the effective weight's scaled by the gain.
    layer2 = EqualLinear(7, 5)
    w_eff = (layer2.weight * layer2.weight_gain).detach().requires_grad_(True)
    torch.nn.functional.linear(x, w_eff, layer2.bias.detach()).square().sum().backward()
    layer2(x).square().sum().backward()
    torch.testing.assert_close(layer2.weight.grad, w_eff.grad / math.sqrt(7))


def test_equal_conv_matches_reference() -> None:
    torch.manual_seed(1)
    conv = EqualConv2d(3, 4, 3, activation="lrelu")
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 6, 6)
    w = conv.weight.detach().double().numpy() / math.sqrt(3 * 9)
    ref = _lrelu(_ref_conv(x.double().numpy(), w) + conv.bias.detach().double().numpy()[None, :, None, None])
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_per_sample_reference(fused: bool, demodulate: bool) -> None:
    torch.manual_seed(2)
    x, weight, styles = torch.randn(3, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, fused=fused).double().numpy()
    ref = np.zeros_like(out)
    xd, wd, sd = x.double().numpy(), weight.double().numpy(), styles.double().numpy()
    for b in range(3):
        wb = wd * sd[b][None, :, None, None]  # modulation (eq. 1)
        if demodulate:  # demodulation (eq. 3)
            wb = wb / np.sqrt((wb**2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        ref[b] = _ref_conv(xd[b : b + 1], wb)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_demodulation_gives_unit_output_variance() -> None:
    """With unit-variance i.i.d. input, each demodulated output channel has unit variance (eq. 2-3)."""
    torch.manual_seed(3)
    x = torch.randn(2, 32, 64, 64)
    styles = torch.rand(2, 32) * 10 + 0.1  # arbitrary scales: demodulation removes them
    y = modulated_conv2d(x, torch.randn(8, 32, 3, 3), styles)[:, :, 1:-1, 1:-1]
    var = y.var(dim=[2, 3])
    assert torch.allclose(var, torch.ones_like(var), atol=0.1), var


def test_fir_resampling_matches_scipy() -> None:
    f = fir_filter().double().numpy()
    np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    # Up: zero insertion, then convolution with 4 f ('full' conv cropped by the [2, 1] padding).
    z = np.zeros((12, 12))
    z[::2, ::2] = x[0, 0].numpy()
    ref_up = convolve2d(z, 4 * f, mode="full")[1:13, 1:13]
    np.testing.assert_allclose(upsample2d(x, fir_filter(dtype=torch.float64))[0, 0].numpy(), ref_up, atol=1e-12)
    # Down: blur with zero padding 1, then every other sample.
    ref_down = convolve2d(x[0, 0].numpy(), f, mode="full")[2:-1:2, 2:-1:2]
    np.testing.assert_allclose(downsample2d(x, fir_filter(dtype=torch.float64))[0, 0].numpy(), ref_down, atol=1e-12)
    # Gains: a constant image stays constant away from the borders.
    ones = torch.ones(1, 1, 8, 8)
    assert torch.allclose(upsample2d(ones, fir_filter())[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))
    assert torch.allclose(downsample2d(ones, fir_filter())[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))


def test_minibatch_std_matches_reference() -> None:
    torch.manual_seed(4)
    x = torch.randn(8, 3, 4, 4)
    y = MinibatchStd(group_size=4)(x)
    assert y.shape == (8, 4, 4, 4)
    xn = x.double().numpy()
    for i in range(8):
        group = [j for j in range(8) if j % 2 == i % 2]  # groups take every (B/G)-th sample
        ref = np.sqrt(xn[group].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[i, 3].numpy(), np.full((4, 4), ref), rtol=1e-5)
    assert torch.equal(y[:, :3], x)
    assert MinibatchStd(4)(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)  # group shrinks to divide B


@pytest.mark.parametrize("resolution", [32, 64, 128, 256, 512])
def test_shapes_for_all_resolutions(resolution: int) -> None:
    torch.manual_seed(0)
    channels = 3 if resolution == 64 else 1
    kw = dict(img_resolution=resolution, img_channels=channels, channel_base=128, channel_max=8)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, mapping_layers=2, **kw)
    D = Discriminator(c_dim=3, mapping_layers=2, **kw)
    log2 = int(math.log2(resolution))
    assert G.num_ws == 2 * log2 - 2
    assert list(G.synthesis.blocks) == [f"b{2**i}" for i in range(2, log2 + 1)]
    assert list(D.blocks) == [f"b{2**i}" for i in range(log2, 2, -1)]
    c = torch.eye(3)[[0, 2]]
    img = G(torch.randn(2, 8), c)
    assert img.shape == (2, channels, resolution, resolution) and torch.isfinite(img).all()
    logits = D(img, c)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


def test_resolution_must_be_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Generator(z_dim=4, w_dim=4, img_resolution=48)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(img_resolution=4)


def _tiny_generator(c_dim: int = 2) -> Generator:
    torch.manual_seed(5)
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
                     mapping_layers=3).eval()


def test_fused_and_unfused_modulation_agree_in_the_generator() -> None:
    G = _tiny_generator()
    z, c = torch.randn(3, 8), torch.eye(2)[[0, 1, 1]]
    noise = torch.randn(3, G.synthesis.noise_numel)
    for layer in G.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.3)
    fused = G(z, c, noise=noise)
    G.train()
    unfused = G(z, c, noise=noise)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)
    # Supplied noise is used: changing it changes the image; 'none' ignores it.
    assert not torch.allclose(G(z, c, noise=torch.randn_like(noise)), unfused)
    torch.testing.assert_close(G(z, c, noise_mode="none", noise=noise), G(z, c, noise_mode="none"))


def test_truncation_global_and_per_condition() -> None:
    G = _tiny_generator()
    G.mapping.w_avg.copy_(torch.randn(8))
    z, c = torch.randn(4, 8), torch.eye(2)[[0, 0, 1, 1]]
    ws = G.mapping(z, c)
    assert ws.shape == (4, G.num_ws, 8)
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=1.0), ws)
    # psi = 0 collapses every w to the centre; psi = 0.5 halves the distance.
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.0), G.mapping.w_avg.expand_as(ws))
    half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(half[:, :3], 0.5 * (ws[:, :3] + G.mapping.w_avg))
    torch.testing.assert_close(half[:, 3:], ws[:, 3:])
    # Per-condition centres: the mean of mapping(z, c) over the seed's latents, one per class.
    centres = G.condition_w_avg(c, num_samples=300, seed=7, chunk=128)
    zs = torch.randn(300, 8, generator=torch.Generator().manual_seed(7))
    for k in range(2):
        ref = G.mapping(zs, torch.eye(2)[[k]].expand(300, 2))[:, 0].mean(0)
        torch.testing.assert_close(centres[2 * k], ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(centres[2 * k + 1], ref, rtol=1e-4, atol=1e-5)
    # Class truncation at psi = 0: every seed of a class gives that class's centre image.
    imgs = G.sample(c, seeds=[1, 2, 3, 4], truncation_psi=0.0)
    torch.testing.assert_close(imgs[0], imgs[1])
    torch.testing.assert_close(imgs[2], imgs[3])
    assert (imgs[0] - imgs[2]).abs().max() > 1e-3
    # Seeds alone decide the latents: the same seed gives the same image in any batch.
    torch.testing.assert_close(G.sample(c[2:3], seeds=[3])[0], G.sample(c, seeds=[1, 2, 3, 4])[2], rtol=1e-4, atol=1e-5)


def test_style_mixing_takes_layers_from_the_second_latent() -> None:
    G = _tiny_generator()
    z, z2, c = torch.randn(3, 8), torch.randn(3, 8), torch.eye(2)[[0, 1, 0]]
    cutoff = torch.tensor([G.num_ws, 0, 2])
    _, ws = G(z, c, mix_z=z2, mix_cutoff=cutoff, noise_mode="const", return_ws=True)
    w1, w2 = G.mapping(z, c), G.mapping(z2, c)
    torch.testing.assert_close(ws[0], w1[0])  # cutoff = num_ws: unmixed
    torch.testing.assert_close(ws[1], w2[1])  # cutoff = 0: all from z2
    torch.testing.assert_close(ws[2, :2], w1[2, :2])
    torch.testing.assert_close(ws[2, 2:], w2[2, 2:])


def test_w_avg_tracks_moving_average() -> None:
    m = MappingNetwork(4, 0, 4, 2, num_layers=2, w_avg_beta=0.9)
    z = torch.randn(16, 4)
    w = m(z, None)[:, 0]
    m.track_w_avg(w.mean(0))
    torch.testing.assert_close(m.w_avg, 0.1 * w.mean(0))
    m.track_w_avg(w.mean(0))
    torch.testing.assert_close(m.w_avg, 0.19 * w.mean(0))


def test_projection_discriminator() -> None:
    torch.manual_seed(6)
    D = Discriminator(c_dim=2, img_resolution=16, channel_base=64, channel_max=8, mapping_layers=2)
    x = torch.randn(4, 1, 16, 16)
    c0, c1 = torch.eye(2)[[0] * 4], torch.eye(2)[[1] * 4]
    feats = {}
    D.epilogue.out.register_forward_hook(lambda mod, inp, out: feats.__setitem__("phi", out))
    logits0 = D(x, c0)
    cmap = D.mapping(None, c0)
    ref = (feats["phi"] * cmap).sum(1, keepdim=True) / math.sqrt(cmap.shape[1])  # <phi(x), psi(c)> / sqrt(d)
    torch.testing.assert_close(logits0, ref)
    assert not torch.allclose(logits0, D(x, c1))
    assert Discriminator(img_resolution=16, channel_base=64, channel_max=8).mapping is None


def test_condition_layout_encodes_categorical_and_continuous() -> None:
    from imgsynth.contracts import Condition

    layout = ConditionLayout.from_conditions([
        Condition(name="label", type="categorical", categories=["a", "b", "c"]),
        Condition(name="age", type="continuous", range=(0, 100)),
    ])
    assert layout.c_dim == 4 and layout.names == ["label", "age"]
    c = layout.encode({"label": torch.tensor([2, 0]), "age": torch.tensor([0.5, -1.0])})
    torch.testing.assert_close(c, torch.tensor([[0, 0, 1, 0.5], [1, 0, 0, -1.0]]))
    with pytest.raises(ValueError, match="mask"):
        ConditionLayout.from_conditions([Condition(name="seg", type="mask", channels=1)])
    assert ConditionLayout().encode({}, batch=3).shape == (3, 0)
