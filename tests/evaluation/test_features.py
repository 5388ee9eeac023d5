"""Feature extractors: the FID InceptionV3 port, MedicalNet 3D ResNet loading, 2.5D slicing, domain encoder files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgsynth.errors import ConfigError, DependencyError
from imgsynth.evaluation.config import EvaluateConfig
from imgsynth.evaluation.features import ExtractorContext, build_extractors, extractor_names, plane_slices
from imgsynth.evaluation.inception import FIDInceptionV3, load_state_dict_file, resize_bilinear_tf1
from imgsynth.evaluation.sets import ImageSet, Inputs


def _inputs(images: np.ndarray, intensity_kind: str = "minmax") -> Inputs:
    from imgsynth.contracts import DatasetInfo, Intensity

    dims = images.ndim - 2
    info = DatasetInfo(spatial_dims=dims, shape=list(images.shape[1:]),
                       intensity=Intensity(kind=intensity_kind, low=0.0, high=255.0) if intensity_kind != "none" else Intensity(kind="none"))
    s = ImageSet("real_train", images, [f"i{k}" for k in range(len(images))], {}, "x", ["train"])
    return Inputs(info, info, s, s, s)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = FIDInceptionV3()
    path = tmp_path_factory.mktemp("w") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_tf1_resize_matches_its_definition() -> None:
    # TF1 align_corners=False: output pixel i samples input position i * (in / out), no half-pixel offset.
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = resize_bilinear_tf1(x, 8)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])


def test_inception_extractor_loads_weights_and_names_scores(inception_file: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["inception"], "inception": {"weights": str(inception_file)}}})
    ctx = ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path)
    (ext,) = build_extractors(ctx)
    # Not the standard FID weights (hash prefix 6726825d): never called FID.
    assert ext.score_names == ("FD_inception", "KD_inception")
    assert any("not the standard FID weights" in n for n in ctx.notes)
    recipe = ext.recipe()
    assert len(recipe["weights_sha256"]) == 64 and "299" in recipe["resize"] and "3 channels" in recipe["preprocessing"]
    feats = ext.extract(images)[""]
    assert feats.shape == (2, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()


def test_inception_matches_torch_fidelity_when_installed(inception_file: Path) -> None:
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    ref = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_file))
    ours = FIDInceptionV3()
    ours.load_state_dict(load_state_dict_file(inception_file))
    x = (torch.rand(2, 3, 32, 32) * 255).to(torch.uint8)
    with torch.no_grad():
        np.testing.assert_allclose(ours.eval()(x.float()).numpy(), ref(x)[0].numpy(), atol=1e-5)


def test_inception_2p5d_features_per_plane(inception_file: Path, tmp_path: Path) -> None:
    vols = np.random.default_rng(1).uniform(-1, 1, (1, 1, 16, 16, 16)).astype(np.float32)
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["inception"], "inception": {"weights": str(inception_file)},
                                                      "slices": {"every_k": 16}}})
    (ext,) = build_extractors(ExtractorContext(cfg, _inputs(vols), torch.device("cpu"), tmp_path))
    feats = ext.extract(vols)
    assert set(feats) == {"axial", "coronal", "sagittal"} and all(f.shape == (1, 2048) for f in feats.values())
    assert ext.score_names[0] == "FD_inception_2.5d" and "2.5D" in ext.recipe()["slices"]


def test_plane_slices_order_and_count() -> None:
    vols = np.arange(2 * 1 * 4 * 5 * 6, dtype=np.float32).reshape(2, 1, 4, 5, 6)
    axial = plane_slices(vols, "axial", 1.0, 1)
    assert axial.shape == (8, 1, 5, 6) and np.array_equal(axial[5], vols[1, :, 1])
    assert plane_slices(vols, "coronal", 1.0, 2).shape == (6, 1, 4, 6)
    assert plane_slices(vols, "sagittal", 0.5, 1).shape == (6, 1, 4, 5)


def test_medicalnet_weights_in_their_layout_load(tmp_path: Path) -> None:
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, conv1_t_stride=2, shortcut_type="B", bias_downsample=False,
                   feed_forward=False)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2)  # segmentation head of the released files: ignored
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": state}, path)
    vols = np.random.default_rng(2).uniform(-1, 1, (2, 1, 16, 16, 16)).astype(np.float32)
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["medicalnet"], "medicalnet": {"weights": str(path)}}})
    (ext,) = build_extractors(ExtractorContext(cfg, _inputs(vols), torch.device("cpu"), tmp_path))
    assert ext.score_names == ("FD_medicalnet", "KD_medicalnet")
    assert ext.extract(vols)[""].shape == (2, 512)
    bad = EvaluateConfig.model_validate({"features": {"extractors": ["medicalnet"], "medicalnet": {"weights": str(path), "depth": 18}}})
    with pytest.raises(DependencyError, match="resnet18"):
        build_extractors(ExtractorContext(bad, _inputs(vols), torch.device("cpu"), tmp_path))


def test_registry_errors(tmp_path: Path) -> None:
    images = np.zeros((4, 1, 16, 16), np.float32)
    assert {"domain", "inception", "medicalnet"} <= set(extractor_names())
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["clip"]}})
    with pytest.raises(ConfigError, match="unknown feature extractor 'clip'"):
        build_extractors(ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path))
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["inception"]}})
    with pytest.raises(DependencyError, match="features.inception.weights"):
        build_extractors(ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path))
    cfg = EvaluateConfig.model_validate({"features": {"extractors": ["auto"], "domain": {"enabled": False}}})
    with pytest.raises(ConfigError, match="no feature extractor"):
        build_extractors(ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path))


def test_domain_encoder_is_cached_and_reused(tmp_path: Path) -> None:
    images = np.random.default_rng(3).uniform(-1, 1, (16, 1, 16, 16)).astype(np.float32)
    cfg = EvaluateConfig.model_validate({"features": {"domain": {"width": 8, "levels": 2, "steps": 3, "batch_size": 8,
                                                                 "cache_dir": str(tmp_path / "cache")}}})
    first = ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path / "a")
    (ext1,) = build_extractors(first)
    second = ExtractorContext(cfg, _inputs(images), torch.device("cpu"), tmp_path / "b")
    (ext2,) = build_extractors(second)
    assert ext1.score_names == ("FD_domain", "KD_domain")
    assert ext1.recipe()["weights_sha256"] == ext2.recipe()["weights_sha256"]
    assert any("reused from the cache" in n for n in second.notes)
    np.testing.assert_allclose(ext1.extract(images)[""], ext2.extract(images)[""], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "b" / "domain-encoder.safetensors").is_file()
    # The copy in the evaluation folder can be given back as features.domain.weights.
    cfg3 = EvaluateConfig.model_validate({"features": {"domain": {"weights": str(tmp_path / "b" / "domain-encoder.safetensors")}}})
    (ext3,) = build_extractors(ExtractorContext(cfg3, _inputs(images), torch.device("cpu"), tmp_path / "c"))
    assert ext3.recipe()["weights_sha256"] == ext1.recipe()["weights_sha256"]
    with pytest.raises(DependencyError, match="shape"):
        build_extractors(ExtractorContext(cfg3, _inputs(np.zeros((4, 1, 8, 8), np.float32)), torch.device("cpu"), tmp_path / "d"))
