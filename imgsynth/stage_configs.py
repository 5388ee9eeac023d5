"""Imports each stage's config schema so that ``kind:`` names resolve.

Each stage keeps its schema in a light module (pydantic only, no torch) and adds one import
here; ``imgsynth.config.config_kinds()`` imports this module on first use.
"""

import imgsynth.data.config  # noqa: F401  (kind: preprocess)
import imgsynth.deid.config  # noqa: F401
import imgsynth.evaluation.config  # noqa: F401  (kind: evaluate)
import imgsynth.review.config  # noqa: F401
import imgsynth.training.config  # noqa: F401  (kind: train)
