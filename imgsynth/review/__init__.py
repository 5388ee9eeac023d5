"""Review stage: blinded real-vs-synthetic reading packages for radiologists, and their scoring.

``export_review`` writes ``readers/<id>/`` packages and ``key.csv``; ``score_review`` checks the
returned ``answers.csv`` files against the key and reports accuracy, AUC, agreement and quality.
Names are imported on first use, so that importing the (light) config schema stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgsynth.review.export import export_review, write_case_batch
    from imgsynth.review.score import score_review

__all__ = ["export_review", "score_review", "write_case_batch"]
_WHERE = {"export_review": "export", "write_case_batch": "export", "score_review": "score"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"imgsynth.review.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'imgsynth.review' has no attribute {name!r}")
