"""Import MedMNIST-format ``.npz`` files (official splits and labels) as a dataset folder.

Keys ``{train,val,test}_images`` (uint8, ``[N, H, W]`` or ``[N, D, H, W]``) and
``{train,val,test}_labels`` (``[N, 1]``). Images are padded (centred) or resized to ``size``
(32 by default for 28x28 sources, so every model downsamples cleanly) and stored as ``.npy``
items in model scale [-1, 1]; the intensity mapping ``minmax`` [0, 255] records how to map back.
Several files merge into one dataset (same dimensionality and size; label names are united).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imgsynth.contracts import Condition, Dataset, DatasetInfo, Intensity, save_item, write_dataset
from imgsynth.errors import InputError

# Label names of the MedMNIST subsets (medmnist/info.py); others get "class_<k>".
KNOWN_LABELS: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "adrenalmnist3d": ["normal", "mass"],
    "breastmnist": ["malignant", "normal_benign"],
}
INTENSITY = Intensity(kind="minmax", low=0.0, high=255.0, unit="", params={"source": "uint8 pixel values"})


def label_names(npz_path: Path, n_classes: int) -> list[str]:
    stem = npz_path.stem.lower()
    for key, names in KNOWN_LABELS.items():
        if stem.startswith(key) and len(names) >= n_classes:
            return names
    return [f"class_{k}" for k in range(n_classes)]


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-pad (background 0) to ``size`` per axis when smaller, else resize (linear, anti-aliased)."""
    if all(s == size for s in image.shape):
        return image
    if all(s <= size for s in image.shape):
        pads = [((size - s) // 2, size - s - (size - s) // 2) for s in image.shape]
        return np.pad(image, pads, mode="constant", constant_values=0)
    from skimage.transform import resize

    return resize(image, (size,) * image.ndim, order=1, preserve_range=True, anti_aliasing=True)


def read_medmnist(npz_path: Path) -> tuple[dict[str, np.ndarray], list[str], int]:
    """(arrays, splits present, spatial dims) of one MedMNIST file, checked."""
    try:
        npz = np.load(npz_path, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"not a readable .npz ({' '.join(str(exc).split())[:120] or type(exc).__name__})", path=npz_path) from None
    splits = [s for s in ("train", "val", "test") if f"{s}_images" in arrays]
    if not splits:
        raise InputError("no '<split>_images' arrays (expected MedMNIST keys train_images, ...)", path=npz_path)
    ndim = arrays[f"{splits[0]}_images"].ndim - 1
    if ndim not in (2, 3):
        raise InputError(f"images must be [N,H,W] or [N,D,H,W], got {arrays[f'{splits[0]}_images'].shape}", path=npz_path)
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays.get(f"{split}_labels")
        if images.ndim - 1 != ndim or images.shape[1:] != arrays[f"{splits[0]}_images"].shape[1:]:
            raise InputError(f"'{split}_images' has shape {list(images.shape)}, inconsistent with the other splits", path=npz_path)
        if labels is None:
            raise InputError(f"'{split}_images' without '{split}_labels' (MedMNIST files label every split)", path=npz_path)
        if len(labels) != len(images):
            raise InputError(f"'{split}_labels' has {len(labels)} rows for {len(images)} images", path=npz_path)
        if images.size and not np.all(np.isfinite(images)):
            raise InputError(f"'{split}_images' holds NaN or inf", path=npz_path)
    return arrays, splits, ndim


def import_medmnist_many(
    npz_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    size: int | None = None,
    dtype: str = "float32",
    max_per_split: int | None = None,
    source_names: Sequence[str] | None = None,
) -> tuple[Dataset, list[dict[str, str]]]:
    """One dataset folder from several MedMNIST files; unreadable files are returned as errors.

    Item ids are ``<name>-<split>-<index>`` with ``name`` the file stem (or ``source_names``).
    """
    out_dir = Path(out_dir)
    errors: list[dict[str, str]] = []
    loaded = []
    given = list(source_names) if source_names is not None else [Path(p).stem.lower() for p in npz_paths]
    prefix_of: dict[Path, str] = {}
    for p, name in zip(map(Path, npz_paths), given, strict=True):
        prefix_of[p] = name
        try:
            loaded.append((p, *read_medmnist(p)))
        except InputError as exc:
            errors.append({"input": p.name, "reason": str(exc).split(": ", 1)[-1]})
    if not loaded:
        raise InputError(f"no readable MedMNIST input ({'; '.join(e['reason'] for e in errors)})")
    dims = {ndim for _, _, _, ndim in loaded}
    natives = {arrays[f"{splits[0]}_images"].shape[1] for _, arrays, splits, _ in loaded}
    if len(dims) > 1:
        raise InputError("MedMNIST inputs mix 2D and 3D images; preprocess them separately")
    ndim = dims.pop()
    if size is None:
        sizes = {32 if n == 28 else n for n in natives}
        if len(sizes) > 1:
            raise InputError(f"MedMNIST inputs have different image sizes {sorted(natives)}; set medmnist.size")
        size = sizes.pop()

    names: list[str] = []
    rows = []
    prefixes: set[str] = set()
    for path, arrays, splits, _ in loaded:
        label_max = [int(arrays[f"{s}_labels"].max()) for s in splits if arrays.get(f"{s}_labels", np.empty(0)).size]
        file_names = label_names(path, max(label_max, default=0) + 1)
        names += [n for n in file_names if n not in names]
        prefix = base = prefix_of[path]
        k = 2
        while prefix in prefixes:
            prefix, k = f"{base}-{k}", k + 1
        prefixes.add(prefix)
        for split in splits:
            images, labels = arrays[f"{split}_images"], arrays.get(f"{split}_labels")
            count = len(images) if max_per_split is None else min(len(images), max_per_split)
            for i in range(count):
                item_id = f"{prefix}-{split}-{i:05d}"
                arr = fit_to_size(images[i].astype(np.float32), size)
                model = INTENSITY.to_model(arr)[None].astype(dtype)
                rel = save_item(out_dir, f"items/{item_id}.npy", model)
                label = file_names[int(labels[i].reshape(-1)[0])] if labels is not None else file_names[0]
                rows.append({"id": item_id, "path": rel, "split": split, "subject": item_id, "label": label})
    fits = {"pad" if n <= size else "resize" for n in natives}
    info = DatasetInfo(
        spatial_dims=ndim,
        shape=[1, *([size] * ndim)],
        spacing=[1.0] * ndim,
        orientation=None,
        intensity=INTENSITY,
        conditions=[Condition(name="label", type="categorical", categories=names, description="MedMNIST class")],
        source={
            "kind": "medmnist",
            "inputs": [p.name for p, *_ in loaded],
            "native_size": sorted(natives)[0] if len(natives) == 1 else sorted(natives),
            "fit": "/".join(sorted(fits)),
        },
    )
    return write_dataset(out_dir, info, rows), errors


def import_medmnist(
    npz_path: str | Path,
    out_dir: str | Path,
    *,
    size: int | None = None,
    dtype: str = "float32",
    max_per_split: int | None = None,
    source_name: str | None = None,
) -> Dataset:
    """Write a dataset folder from one MedMNIST ``.npz`` (labels as condition ``label``)."""
    npz_path = Path(npz_path)
    dataset, errors = import_medmnist_many(
        [npz_path], out_dir, size=size, dtype=dtype, max_per_split=max_per_split,
        source_names=[source_name or npz_path.stem.lower()],
    )
    if errors:
        raise InputError(errors[0]["reason"], path=npz_path)
    return dataset
