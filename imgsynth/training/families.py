"""Imports every model family so that it registers itself (``imgsynth.training.task.get_family``).

One line per family; each module calls ``register_family(ModelFamily(...))`` at import.
"""

import imgsynth.training.stylegan2  # noqa: F401
