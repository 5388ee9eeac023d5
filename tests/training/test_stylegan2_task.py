"""The StyleGAN2 task and family without the loop: configs, checks, phases, optimizers, state, keyed draws."""

from __future__ import annotations

import math

import pytest
import torch

from imgsynth.config import config_kinds, load_config, validate_config
from imgsynth.contracts import Condition, DatasetInfo, Intensity
from imgsynth.errors import ConfigError
from imgsynth.training.stylegan2 import (
    StyleGAN2Task,
    build_networks,
    check,
    condition_layout,
    keyed_draws,
    preview_conditions,
)
from imgsynth.training.task import KeyedRandom, Phase, StepContext, get_family

torch.set_num_threads(2)

TINY = {"generator": {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64, "channel_max": 8},
        "discriminator": {"channel_base": 64, "channel_max": 8, "mapping_layers": 2}}


def _config(model: dict | None = None, stage: dict | None = None, data: dict | None = None):
    return validate_config(config_kinds()["train"], {
        "model": {"family": "stylegan2", **TINY, **(model or {})},
        "stages": {"stylegan2": {"batch": 4, "lr": 0.002, "betas": [0.0, 0.99], "grad_clip": None, **(stage or {})}},
        "data": data or {},
    })


def _info(shape=(1, 16, 16), conditions=None) -> DatasetInfo:
    conditions = conditions if conditions is not None else [
        Condition(name="label", type="categorical", categories=["normal", "pneumonia"]),
        Condition(name="age", type="continuous", range=(0, 100)),
    ]
    return DatasetInfo(spatial_dims=len(shape) - 1, shape=list(shape), intensity=Intensity(kind="none"),
                       conditions=conditions)


def _task(model: dict | None = None, stage: dict | None = None):
    config, info = _config(model, stage), _info()
    layout = condition_layout(config, info)
    G, D = build_networks(config.model, info, layout, seed=3)
    return StyleGAN2Task(config.model, config.stage("stylegan2"), layout, G), G, D


def _ctx(keys, phase: Phase, step: int = 0) -> StepContext:
    return StepContext(step=step, kimg=0.0, micro=0, accum=1, phase=phase, rng=KeyedRandom(7, keys),
                       device=torch.device("cpu"))


def test_builtin_configs_validate_and_name_the_family() -> None:
    full, tiny = load_config("stylegan2_2d"), load_config("stylegan2_2d_tiny")
    assert full.model.family == tiny.model.family == "stylegan2"
    assert list(tiny.stages) == ["stylegan2"] and tiny.stage("stylegan2").grad_clip is None
    assert tiny.model.generator.channel_max == 32 and tiny.model.loss.pl_interval == 4  # from the base
    assert get_family("stylegan2").stages(tiny) == ["stylegan2"]


@pytest.mark.parametrize(("override", "message"), [
    ({"genrator": {}}, "unknown key 'model.genrator'; did you mean 'model.generator'?"),
    ({"generator": {"z_dm": 4}}, "unknown key 'model.generator.z_dm'; did you mean 'model.generator.z_dim'?"),
    ({"augment": {"ops": "abc"}}, "model.augment.ops='abc' is not a preset"),
    ({"augment": {"ops": ["xflip", "hue"]}}, "unknown op(s) ['hue']"),
    ({"augment": {"policy": "color,zoom"}}, "model.augment.policy has unknown op(s) ['zoom']"),
])
def test_config_errors_name_the_field(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(override)
    assert message in str(err.value)


def test_dataset_checks_name_the_fix() -> None:
    config = _config()
    check(config, _info())
    with pytest.raises(ConfigError, match="trains 2D images but the dataset is 3D"):
        check(config, _info(shape=(1, 16, 16, 16)))
    with pytest.raises(ConfigError, match=r"square images with a power-of-two size .* \[1, 24, 24\]"):
        check(config, _info(shape=(1, 24, 24)))
    with pytest.raises(ConfigError, match="power-of-two"):
        check(config, _info(shape=(1, 32, 16)))
    masked = _info(conditions=[Condition(name="label", type="categorical", categories=["a", "b"]),
                               Condition(name="seg", type="mask", channels=1)])
    with pytest.raises(ConfigError, match=r"'seg' is a mask.*'data.conditions'.*\[label\]"):
        check(config, masked)
    check(_config(data={"conditions": ["label"]}), masked)
    with pytest.raises(ConfigError, match=r"'data.conditions\[0\]'='sex' is not a condition"):
        check(_config(data={"conditions": ["sex"]}), _info())


def test_networks_follow_the_dataset_and_seed() -> None:
    config = _config()
    info = _info(shape=(3, 32, 32))
    layout = condition_layout(config, info)
    assert layout.c_dim == 3  # two classes one-hot + one covariate
    G, D = build_networks(config.model, info, layout, seed=1)
    G2, _ = build_networks(config.model, info, layout, seed=1)
    assert G.img_resolution == 32 and G.img_channels == 3 and G.c_dim == D.c_dim == 3
    for a, b in zip(G.parameters(), G2.parameters(), strict=True):
        assert torch.equal(a, b)
    only_label = condition_layout(_config(data={"conditions": ["label"]}), info)
    assert only_label.names == ["label"] and only_label.c_dim == 2


def test_phases_and_lazy_regularisation_optimizers() -> None:
    task, G, D = _task()
    names = [(p.name, p.optimizer, p.trains, p.interval) for p in task.phases()]
    assert names == [("G_main", "G", ("G",), 1), ("G_reg", "G", ("G",), 4), ("D_main", "D", ("D",), 1),
                     ("D_reg", "D", ("D",), 16)]
    assert task.r1_gamma == pytest.approx(0.0002 * 16**2 / 4)  # ADA's heuristic from resolution and batch
    opts = task.make_optimizers({"G": G, "D": D})
    g, d = opts["G"].param_groups[0], opts["D"].param_groups[0]
    assert g["lr"] == pytest.approx(0.002 * 4 / 5) and g["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    plain, _, _ = _task({"loss": {"pl_weight": 0.0, "r1_gamma": 0.0, "d_lr": 0.001}})
    assert [p.name for p in plain.phases()] == ["G_main", "D_main"]
    opts = plain.make_optimizers({"G": G, "D": D})
    assert opts["G"].param_groups[0]["lr"] == pytest.approx(0.002) and opts["D"].param_groups[0]["lr"] == pytest.approx(0.001)


def test_keyed_draws_depend_on_item_keys_only() -> None:
    phase = Phase("G_main", "G", ("G",))
    n4, u4 = keyed_draws(_ctx([10, 11, 12, 13], phase), "x", 5, 3)
    n2, u2 = keyed_draws(_ctx([12, 13], phase), "x", 5, 3)
    assert torch.equal(n4[2:], n2) and torch.equal(u4[2:], u2)
    assert not torch.equal(keyed_draws(_ctx([12, 13], phase), "y", 5, 3)[0], n2)
    assert ((u4 >= 0) & (u4 < 1)).all()


def _batch(keys):
    g = torch.Generator().manual_seed(sum(keys))
    return {"image": torch.rand(len(keys), 1, 16, 16, generator=g) * 2 - 1,
            "cond": {"label": torch.tensor([k % 2 for k in keys]), "age": torch.linspace(-1, 1, len(keys))},
            "key": torch.tensor(keys)}


def test_every_phase_gives_a_finite_loss_and_gradients_for_all_weights() -> None:
    task, G, D = _task({"augment": {"p": 0.5, "target": None}})
    task.make_optimizers({"G": G, "D": D})
    keys = [0, 1, 2, 3]
    for phase in task.phases():
        nets = {"G": G, "D": D}
        for name, net in nets.items():
            net.requires_grad_(name in phase.trains)
            net.zero_grad(set_to_none=True)
        loss, logs = task.loss(nets, _batch(keys), _ctx(keys, phase))
        assert loss.ndim == 0 and math.isfinite(loss.item()) and math.isfinite(logs["loss"])
        loss.backward()
        trained = G if phase.trains == ("G",) else D
        missing = [n for n, p in trained.named_parameters() if p.grad is None]
        assert not missing, (phase.name, missing)  # DDP needs a gradient for every weight
    # Running averages move once per step, by the mean over the step's items.
    lengths, ws = torch.cat(task._stats["pl"]), torch.cat(task._stats["w"])
    assert task.pl_mean.item() == 0 and ws.shape == (4, 8) and lengths.shape == (2,)  # pl_batch_shrink 2
    task.end_step(_ctx(keys, phase))
    assert task.pl_mean.item() == pytest.approx(0.01 * lengths.mean().item())
    torch.testing.assert_close(G.mapping.w_avg, 0.002 * ws.mean(0))
    assert task._stats == {"w": [], "pl": []}
    # Same keys, same loss: nothing depends on global random state.
    phase = task.phases()[0]
    G.requires_grad_(True)
    a = task.loss({"G": G, "D": D}, _batch(keys), _ctx(keys, phase))[0]
    torch.manual_seed(123)
    b = task.loss({"G": G, "D": D}, _batch(keys), _ctx(keys, phase))[0]
    assert a.item() == b.item()


def test_ada_p_follows_rt_and_state_round_trips() -> None:
    task, G, D = _task({"augment": {"speed_kimg": 0.01, "interval": 2}})
    phase = Phase("D_main", "D", ("D",))
    task.ada.accumulate(torch.ones(4, 1))  # D sure of every real: r_t = 1 > 0.6
    assert task.end_step(_ctx([0], phase, step=0)) == {"augment/p": 0.0}  # not an update step
    logs = task.end_step(_ctx([0], phase, step=1))
    assert logs["augment/rt"] == 1.0 and logs["augment/p"] == pytest.approx(0.4)  # 4 images / 10
    task.pl_mean.fill_(0.25)
    task.ada.accumulate(-torch.ones(3, 1))
    state = task.state_dict()
    assert {"pl_mean", "ada.pipe.p", "ada.stats", "ada.rt"} <= set(state)
    fresh, _, _ = _task({"augment": {"speed_kimg": 0.01, "interval": 2}})
    fresh.load_state_dict(state)
    assert float(fresh.augment.p) == pytest.approx(0.4) and fresh.pl_mean.item() == 0.25
    assert float(fresh.ada.stats[1]) == 3  # pending statistics survive a resume too
    # DiffAugment and no augmentation: nothing adapts, nothing breaks.
    diff, _, _ = _task({"augment": {"kind": "diffaugment"}})
    assert diff.ada is None and diff.end_step(_ctx([0], phase, step=3)) == {"augment/p": 1.0}
    none, _, _ = _task({"augment": {"kind": "none"}})
    assert none.augment is None and none.end_step(_ctx([0], phase)) == {} and set(none.state_dict()) == {"pl_mean"}


def test_preview_conditions_cycle_classes() -> None:
    layout = condition_layout(_config(), _info())
    cond = preview_conditions(layout, 5, "cpu")
    assert cond["label"].tolist() == [0, 1, 0, 1, 0] and cond["age"].tolist() == [0.0] * 5
    task, G, _ = _task()
    images = task.preview({"G": G.eval()}, 4, seed=0)
    assert images.shape == (4, 1, 16, 16) and torch.isfinite(images).all()


def test_phases_run_under_bf16_autocast() -> None:
    """The loop runs losses under autocast: every phase works in bf16 (regularisers switch to fp32)."""
    task, G, D = _task({"augment": {"p": 0.5, "target": None}})
    keys = [4, 5, 6, 7]
    for phase in task.phases():
        G.requires_grad_("G" in phase.trains)
        D.requires_grad_("D" in phase.trains)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = task.loss({"G": G, "D": D}, _batch(keys), _ctx(keys, phase))
        loss.backward()
        assert math.isfinite(loss.item()), phase.name
