"""Stage 2: DICOM series / NIfTI / MedMNIST -> dataset folders, and torch loaders over them."""
