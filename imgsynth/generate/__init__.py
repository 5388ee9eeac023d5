"""Stage 4, generate: sample a trained run into a sample set (see ``api.py`` and README.md)."""

from imgsynth.generate.api import (
    SampleRequest,
    SampleResult,
    SampleSettings,
    generate,
    generate_batch,
    generate_items,
    item_seed,
    load_generator,
    plan,
)

__all__ = [
    "SampleRequest",
    "SampleResult",
    "SampleSettings",
    "generate",
    "generate_batch",
    "generate_items",
    "item_seed",
    "load_generator",
    "plan",
]
