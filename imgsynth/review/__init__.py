"""Review stage: blinded real-vs-synthetic reading packages for radiologists, and their scoring.

``export_review`` writes ``readers/<id>/`` packages and ``key.csv``; ``score_review`` checks the
returned ``answers.csv`` files against the key and reports accuracy, AUC, agreement and quality.
"""

from imgsynth.review.export import export_review, write_case_batch
from imgsynth.review.score import score_review

__all__ = ["export_review", "score_review", "write_case_batch"]
