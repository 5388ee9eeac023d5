"""What the demo runs: its folder layout, the configs of each mode, and the built-in real data.

Everything the demo reads ships inside installed packages: pydicom's own test files, those of
``pydicom-data`` (found through pydicom's ``pydicom.data.external_sources`` entry point, the way
``pydicom.data.get_testdata_files`` finds them) and nilearn's MNI152 template. Nothing is
downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from imgsynth.errors import DependencyError

MNI152 = "nilearn:mni152"
MODELS = ("ldm", "stylegan2")


@dataclass(frozen=True)
class Mode:
    """The configs (built-in names) and sizes of one demo mode."""

    name: str
    preprocess_config: str
    train_configs: dict[str, str]  # model -> train config; the models this mode trains
    evaluate_config: str
    review_config: str
    samples_per_condition: int  # samples per validation slice's conditions
    budget_s: int  # what the mode is sized for on 2 CPU cores

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m for m in MODELS if m in self.train_configs)


QUICK = Mode(
    name="quick",
    preprocess_config="demo_preprocess_quick",
    train_configs={"ldm": "demo_ldm_quick"},
    evaluate_config="demo_evaluate_quick",
    review_config="demo_review_quick",
    samples_per_condition=4,
    budget_s=180,
)
FULL = Mode(
    name="full",
    preprocess_config="preprocess_mni152_slices",
    train_configs={"ldm": "demo_ldm", "stylegan2": "demo_stylegan2"},
    evaluate_config="demo_evaluate",
    review_config="demo_review",
    samples_per_condition=3,
    budget_s=900,
)
MODES = {m.name: m for m in (QUICK, FULL)}


@dataclass(frozen=True)
class Layout:
    """The folders of a demo output folder (see the README.txt it writes)."""

    root: Path

    private = property(lambda self: self.root / "private")
    key = property(lambda self: self.root / "private" / "deid.key")
    deid = property(lambda self: self.root / "1-deid")
    verify = property(lambda self: self.root / "1-deid-verify.json")
    dataset = property(lambda self: self.root / "2-dataset")
    requests = property(lambda self: self.root / "requests")
    review = property(lambda self: self.root / "6-review")
    cache = property(lambda self: self.root / "cache")
    state = property(lambda self: self.root / "demo.json")
    readme = property(lambda self: self.root / "README.txt")

    def run(self, model: str) -> Path:
        return self.root / f"3-run-{model}"

    def samples(self, model: str) -> Path:
        return self.root / f"4-samples-{model}"

    def evaluation(self, model: str) -> Path:
        return self.root / f"5-eval-{model}"

    def conditions_csv(self, model: str) -> Path:
        return self.requests / f"{model}.csv"


# ---------------------------------------------------------------------------------------------
# Built-in real data
# ---------------------------------------------------------------------------------------------
def pydicom_test_files() -> Path:
    """pydicom's bundled test files (``pydicom/data/test_files``)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files"
    if not path.is_dir():
        raise DependencyError(f"pydicom's test files are missing ({path}); reinstall pydicom")
    return path


def pydicom_data_store() -> Path:
    """The files of the ``pydicom-data`` package (its ``data_store/data`` folder in site-packages)."""
    for ep in importlib.metadata.entry_points(group="pydicom.data.external_sources"):
        if ep.name != "pydicom-data":
            continue
        try:
            path = Path(ep.load()().data_path)
        except Exception:  # noqa: BLE001  (a broken plugin: reported below as missing)
            continue
        if path.is_dir():
            return path
    raise DependencyError("pydicom-data is not installed: pip install 'imgsynth[data]' (or pip install pydicom-data)")


def dicom_sources() -> list[Path]:
    """The two DICOM folders the demo de-identifies."""
    return [pydicom_test_files(), pydicom_data_store()]


def check_nilearn() -> None:
    if importlib.util.find_spec("nilearn") is None:
        raise DependencyError("nilearn is not installed (it ships the MNI152 template): pip install 'imgsynth[data]'")
