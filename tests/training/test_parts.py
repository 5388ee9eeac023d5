"""The loop's parts against closed forms: LR schedule, EMA half-life, the training stream, keyed noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imgsynth.training.data import StreamDataset, StreamSampler, epoch_order
from imgsynth.training.ema import EMA, ema_beta
from imgsynth.training.schedule import lr_factor
from imgsynth.training.task import KeyedRandom, Phase


def test_lr_factor_warmup_and_cosine_closed_form() -> None:
    assert lr_factor(5, total_kimg=100, warmup_kimg=10) == pytest.approx(0.5)
    assert lr_factor(50, total_kimg=100, warmup_kimg=10) == 1.0
    # Cosine: halfway through the post-warm-up span the factor is lr_min + (1 - lr_min) / 2.
    assert lr_factor(55, total_kimg=100, warmup_kimg=10, kind="cosine", lr_min=0.1) == pytest.approx(0.55)
    assert lr_factor(100, total_kimg=100, warmup_kimg=10, kind="cosine", lr_min=0.1) == pytest.approx(0.1)
    assert lr_factor(10 + 90 / 3, total_kimg=100, warmup_kimg=10, kind="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))


def test_ema_half_life_in_images() -> None:
    # After half-life images the old weights keep exactly half their weight, whatever the batch size.
    for batch in (8, 32, 128):
        beta = ema_beta(batch, 10**9, halflife_kimg=1.0, rampup=None)
        assert beta ** (1000 / batch) == pytest.approx(0.5)
    # Ramp-up: early on the half-life is capped at rampup * images seen.
    assert ema_beta(10, 100, halflife_kimg=1.0, rampup=0.1) == pytest.approx(0.5)


def test_ema_update_is_the_lerp_of_live_weights() -> None:
    net = nn.Linear(3, 2)
    ema = EMA({"net": net}, halflife_kimg=0.01, rampup=None)
    before = {k: v.clone() for k, v in ema.nets["net"].state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    beta = ema.update({"net": net}, batch=10, nimg=10)
    assert beta == pytest.approx(0.5)
    expected = net.weight * (1 - beta) + before["weight"] * beta
    torch.testing.assert_close(ema.nets["net"].weight, expected)
    assert not ema.nets["net"].weight.requires_grad and ema.nets["net"].weight is not net.weight


def test_stream_global_batch_independent_of_processes_and_accumulation() -> None:
    def step_positions(batch: int, batch_gpu: int, processes: int, nimg: int) -> list[int]:
        out = []
        for rank in range(processes):
            s = StreamSampler(batch=batch, batch_gpu=batch_gpu, rank=rank, processes=processes)
            for micro in range(s.accum):
                out.extend(s.positions(nimg, micro))
        return sorted(out)

    one = step_positions(8, 8, 1, 16)
    assert one == list(range(16, 24))
    assert step_positions(8, 4, 2, 16) == one  # 2 processes
    assert step_positions(8, 2, 2, 16) == one  # 2 processes x 2 accumulation steps
    # Resuming at nimg continues the same positions an uninterrupted sampler would give.
    straight = StreamSampler(batch=8, batch_gpu=4, rank=1, processes=2)
    resumed = StreamSampler(batch=8, batch_gpu=4, rank=1, processes=2, start_nimg=24)
    it_a, it_b = iter(straight), iter(resumed)
    a = [next(it_a) for _ in range(16)]
    assert a[12:16] == [next(it_b) for _ in range(4)]


def test_stream_epochs_are_permutations_seeded_by_epoch() -> None:
    items = [{"image": torch.zeros(1), "i": i} for i in range(10)]
    ds = StreamDataset(items, seed=5)
    first = [ds[p]["i"] for p in range(10)]
    second = [ds[p]["i"] for p in range(10, 20)]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert torch.equal(epoch_order(10, 5, 1), torch.tensor(second))
    assert ds[13]["key"] == 13


def test_keyed_random_rows_depend_only_on_their_key() -> None:
    a = KeyedRandom(7, [3, 4, 5]).randn((2, 2), "noise")
    b = KeyedRandom(7, [5, 3]).randn((2, 2), "noise")
    torch.testing.assert_close(a[0], b[1])
    torch.testing.assert_close(a[2], b[0])
    assert not torch.equal(a[0], KeyedRandom(8, [3]).randn((2, 2), "noise")[0])
    assert not torch.equal(a[0], KeyedRandom(7, [3]).randn((2, 2), "other")[0])
    t = KeyedRandom(0, range(200)).randint(10, "t")
    assert t.min() >= 0 and t.max() <= 9 and len(set(t.tolist())) == 10


def test_keyed_random_distributions() -> None:
    """SplitMix64 counters give standard normals (moments to 4th order), uniforms and integers."""
    x = KeyedRandom(1, range(4000)).randn((25,), "n").flatten().double()
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    assert abs(float(((x - x.mean()) ** 4).mean() / x.var() ** 2) - 3) < 0.1  # kurtosis of a normal
    u = KeyedRandom(1, range(4000)).rand("u", (5,))
    assert float(u.min()) > 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    a = KeyedRandom(0, range(1000)).randn((50,), "n")
    assert abs(float(torch.corrcoef(torch.stack([a[:-1].flatten(), a[1:].flatten()]))[0, 1])) < 0.02  # neighbours


def test_phase_due_interval_and_warmup() -> None:
    reg = Phase("D_reg", "D", ("D",), interval=16)
    assert reg.due(0, 0.0) and not reg.due(5, 0.0) and reg.due(32, 0.0)
    warm = Phase("D_main", "D", ("D",), start_kimg=1.0)
    assert not warm.due(3, 0.5) and warm.due(3, 1.0)
