"""ADA and DiffAugment: exact per-op references, firing probability, replay, double backward, p control."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imgsynth.training.augment import GEOMETRIC, PRESETS, AdaController, AugmentPipe, DiffAugment

torch.set_num_threads(2)

# Column layout of the uniform draws (see AugmentPipe.params_from_draws).
U = {"xflip": 0, "flip": 1, "rotate90": 2, "quarter": 3, "xint": 4, "tx": 5, "ty": 6, "scale": 7,
     "rotate_a": 8, "angle_a": 9, "aniso": 10, "rotate_b": 11, "angle_b": 12, "xfrac": 13,
     "brightness": 14, "contrast": 15, "noise": 16, "cutout": 17, "cx": 18, "cy": 19}
N = {"scale": 0, "aniso": 1, "xfrac_x": 2, "xfrac_y": 3, "brightness": 4, "contrast": 5, "noise": 6}


def _draws(pipe: AugmentPipe, shape: tuple[int, ...], u: dict[str, float], n: dict[str, float]):
    nu, nn_ = pipe.num_draws(shape)
    uniforms = torch.ones(shape[0], nu)  # 1 >= p: nothing fires unless set below
    normals = torch.zeros(shape[0], nn_)
    for k, v in u.items():
        uniforms[:, U[k]] = v
    for k, v in n.items():
        normals[:, N[k]] = v
    return uniforms, normals


def _image(shape: tuple[int, ...] = (2, 2, 16, 16)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_p_zero_is_exact_identity() -> None:
    pipe = AugmentPipe(PRESETS["bgcnc"])
    x = _image()
    assert pipe(x) is x
    params = pipe.sample(x.shape)
    assert not params.geometric and params.noise is None and params.cutout is None
    assert torch.equal(pipe.apply(x, params), x)


@pytest.mark.parametrize(
    ("u", "reference"),
    [
        ({"xflip": 0.0, "flip": 0.75}, lambda x: torch.flip(x, dims=[3])),
        ({"rotate90": 0.0, "quarter": 0.3}, lambda x: torch.rot90(x, k=-1, dims=[2, 3])),
        ({"rotate90": 0.0, "quarter": 0.6}, lambda x: torch.rot90(x, k=2, dims=[2, 3])),
        # Integer translation by (+2, -1) pixels with symmetric (edge-repeating) reflection.
        ({"xint": 0.0, "tx": 1.0, "ty": 0.25}, lambda x: torch.from_numpy(
            np.pad(x.numpy(), ((0, 0), (0, 0), (0, 1), (2, 0)), mode="symmetric")[:, :, 1:, :16])),
    ],
)
def test_exact_geometric_ops(u: dict[str, float], reference) -> None:
    pipe = AugmentPipe(GEOMETRIC, p=1.0)
    x = _image()
    out = pipe(x, *_draws(pipe, x.shape, u, {}))
    torch.testing.assert_close(out, reference(x), rtol=0, atol=1e-5)


def test_scale_and_rotation_follow_their_closed_forms() -> None:
    pipe = AugmentPipe(GEOMETRIC, p=1.0)
    shape = (1, 1, 16, 16)
    # Isotropic scale 2^(n * std): theta is the inverse scale.
    params = pipe.params_from_draws(shape, *_draws(pipe, shape, {"scale": 0.0}, {"scale": 1.0}))
    torch.testing.assert_close(params.theta[0], torch.tensor([[2**-0.2, 0, 0], [0, 2**-0.2, 0]]))
    # Rotation by angle (2u - 1) * pi: theta is the inverse rotation.
    params = pipe.params_from_draws(shape, *_draws(pipe, shape, {"rotate_a": 0.0, "angle_a": 0.75}, {}))
    a = -0.5 * math.pi
    torch.testing.assert_close(params.theta[0], torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]]),
                               atol=1e-6, rtol=0)
    # Fractional translation n * 0.125 of the size: 0.125 * 16 = 2 px = 0.25 in normalised units.
    params = pipe.params_from_draws(shape, *_draws(pipe, shape, {"xfrac": 0.0}, {"xfrac_x": 1.0, "xfrac_y": -2.0}))
    torch.testing.assert_close(params.theta[0], torch.tensor([[1.0, 0, -0.25], [0, 1.0, 0.5]]))
    # Any geometric transform keeps a constant image constant (reflection padding, no black borders).
    ones = torch.ones(4, 1, 16, 16)
    assert torch.allclose(pipe(ones), ones, atol=1e-5)


def test_intensity_and_corruption_ops() -> None:
    pipe = AugmentPipe(PRESETS["bgcnc"], p=1.0)
    x = _image()
    u, n = _draws(pipe, x.shape, {"brightness": 0.0}, {"brightness": 1.5})
    torch.testing.assert_close(pipe(x, u, n), x + 0.3)
    u, n = _draws(pipe, x.shape, {"contrast": 0.0}, {"contrast": 2.0})
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    torch.testing.assert_close(pipe(x, u, n), (x - mean) * 2.0 + mean)  # gain 2^(2 * 0.5) about the mean
    u, n = _draws(pipe, x.shape, {"noise": 0.0}, {"noise": -1.0})
    n[:, 7:] = 1.0
    torch.testing.assert_close(pipe(x, u, n), x + 0.1)  # sigma = |n| * 0.1
    u, n = _draws(pipe, x.shape, {"cutout": 0.0, "cx": 0.5, "cy": 0.5}, {})
    out = pipe(x, u, n)
    assert torch.equal(out[:, :, 4:12, 4:12], torch.zeros(2, 2, 8, 8))  # half-size square at the centre
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = False
    assert torch.equal(out[:, :, mask], x[:, :, mask])


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_each_op_fires_with_probability_p(p: float) -> None:
    shape = (20000, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    for op in ("xflip", "scale", "aniso", "brightness", "contrast"):
        params = AugmentPipe([op], p=p).sample(shape, generator=g)
        changed = ((params.theta - torch.tensor([[1.0, 0, 0], [0, 1, 0]])).abs().amax(dim=[1, 2]) > 0) | (
            params.brightness != 0) | (params.contrast != 1)
        expected = p / 2 if op == "xflip" else p  # a fired flip mirrors half the time (ADA)
        assert abs(changed.float().mean().item() - expected) < 0.015, op
    # Rotation is tried twice with 1 - sqrt(1 - p) each: some rotation happens with probability p.
    params = AugmentPipe(["rotate"], p=p).sample(shape, generator=g)
    rotated = (params.theta[:, 0, 1].abs() > 0).float().mean().item()
    assert abs(rotated - p) < 0.015


def test_replay_is_deterministic_and_differentiable() -> None:
    pipe = AugmentPipe(PRESETS["bgc"], p=0.8)
    x = _image((3, 1, 8, 8))
    params = pipe.sample(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(pipe.apply(x, params), pipe.apply(x, params))
    other = pipe.sample(x.shape, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(pipe.apply(x, params), pipe.apply(x, other))
    # Per-image draws: an image's augmentation does not depend on the rest of the batch.
    u, n = torch.rand(3, 20), torch.randn(3, 7)
    torch.testing.assert_close(pipe(x, u, n)[1:], pipe(x[1:], u[1:], n[1:]))
    # R1 differentiates D(augment(x)) twice with respect to x.
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: pipe.apply(t, params).square().sum(), (xg,))


def test_ada_controller_moves_p_by_images_seen() -> None:
    pipe = AugmentPipe(PRESETS["bgc"])
    ada = AdaController(pipe, target=0.6, speed_kimg=1.0)
    logits = torch.tensor([1.0] * 9 + [-1.0])  # r_t = 0.8 > target: overfitting, raise p
    ada.accumulate(logits)
    ada.accumulate(logits)
    assert ada.update() == pytest.approx(0.8)
    assert float(pipe.p) == pytest.approx(20 / 1000)  # 20 images / (speed 1 kimg)
    assert float(ada.stats.sum()) == 0  # statistics restart after each update
    ada.accumulate(torch.tensor([1.0, -1.0, -1.0, 1.0]))  # r_t = 0 < target: lower p
    assert ada.update() == pytest.approx(0.0)
    assert float(pipe.p) == pytest.approx(16 / 1000)
    for _ in range(10):
        ada.accumulate(-torch.ones(10))
        ada.update()
    assert float(pipe.p) == 0.0  # clamped at 0
    assert ada.update() is None  # nothing seen: p unchanged
    # p, r_t and pending statistics are state: saved and restored.
    pipe.p.fill_(0.37)
    ada.accumulate(torch.ones(3))
    state = {k: v.clone() for k, v in ada.state_dict().items()}
    assert set(state) == {"stats", "rt", "pipe.p"}
    fresh = AdaController(AugmentPipe(PRESETS["bgc"]))
    fresh.load_state_dict(state)
    assert float(fresh.pipe.p) == pytest.approx(0.37) and float(fresh.stats[1]) == 3
    assert float(fresh.rt) == pytest.approx(-1.0)


def test_diffaugment_ops() -> None:
    x = _image((2, 1, 16, 16))
    # Middle draws: no colour change, zero translation.
    u = torch.full((2, 7), 0.5)
    torch.testing.assert_close(DiffAugment("color,translation")(x, u), x)
    # Translation by +2 px in x (floor(u * 5) - 2 = 2 with 1/8 of 16 = 2): zero fill.
    u[:, 3] = 0.99
    ref = torch.zeros_like(x)
    ref[..., 2:] = x[..., :-2]
    torch.testing.assert_close(DiffAugment("translation")(x, u), ref)
    # Cutout: a zero square of half the size.
    out = DiffAugment("cutout")(x, torch.full((2, 7), 0.5))
    assert int((out == 0).sum()) == 2 * 8 * 8
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        DiffAugment("colour")
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentPipe(["xflip", "hue"])
