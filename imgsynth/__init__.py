"""imgsynth: privacy-safe synthetic medical images.

Six stages, each a folder in and a folder out (see README): de-identify DICOM, preprocess
into a dataset folder, train a generative model into a run folder, generate a sample set,
evaluate it, and export a blinded reading package for radiologists.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
