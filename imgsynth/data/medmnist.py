"""Import MedMNIST-format ``.npz`` files (official splits and labels) as a dataset folder.

Keys ``{train,val,test}_images`` (uint8, ``[N, H, W]`` or ``[N, D, H, W]``) and
``{train,val,test}_labels`` (``[N, 1]``). Images are padded (centred) or resized to ``size``
(32 by default for 28x28 sources, so every model downsamples cleanly) and stored as ``.npy``
items in model scale [-1, 1]; the intensity mapping ``minmax`` [0, 255] records how to map back.
"""

from __future__ import annotations

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
    try:
        npz = np.load(npz_path, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable .npz ({exc})", path=npz_path) from None
    splits = [s for s in ("train", "val", "test") if f"{s}_images" in arrays]
    if not splits:
        raise InputError("no '<split>_images' arrays (expected MedMNIST keys train_images, ...)", path=npz_path)
    ndim = arrays[f"{splits[0]}_images"].ndim - 1
    if ndim not in (2, 3):
        raise InputError(f"images must be [N,H,W] or [N,D,H,W], got {arrays[f'{splits[0]}_images'].shape}", path=npz_path)
    native = arrays[f"{splits[0]}_images"].shape[1]
    size = int(size or (32 if native == 28 else native))
    n_classes = int(max(int(arrays[f"{s}_labels"].max()) for s in splits if f"{s}_labels" in arrays) + 1)
    names = label_names(npz_path, n_classes)
    intensity = Intensity(kind="minmax", low=0.0, high=255.0, unit="", params={"source": "uint8 pixel values"})
    out_dir = Path(out_dir)
    rows = []
    prefix = source_name or npz_path.stem.lower()
    for split in splits:
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        if images.ndim - 1 != ndim:
            raise InputError(f"'{split}_images' has {images.ndim - 1} spatial dims, expected {ndim}", path=npz_path)
        count = len(images) if max_per_split is None else min(len(images), max_per_split)
        for i in range(count):
            item_id = f"{prefix}-{split}-{i:05d}"
            arr = fit_to_size(images[i].astype(np.float32), size)
            model = intensity.to_model(arr)[None].astype(dtype)
            rel = save_item(out_dir, f"items/{item_id}.npy", model)
            label = names[int(labels[i].reshape(-1)[0])] if labels is not None else names[0]
            rows.append({"id": item_id, "path": rel, "split": split, "subject": item_id, "label": label})
    info = DatasetInfo(
        spatial_dims=ndim,
        shape=[1, *([size] * ndim)],
        spacing=[1.0] * ndim,
        orientation=None,
        intensity=intensity,
        conditions=[Condition(name="label", type="categorical", categories=names, description="MedMNIST class")],
        source={"inputs": [npz_path.name], "kind": "medmnist", "native_size": native, "fit": "pad" if native <= size else "resize"},
    )
    return write_dataset(out_dir, info, rows)
