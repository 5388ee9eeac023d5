"""Imports every model family so that it registers itself (``imgsynth.training.task.get_family``).

One line per family; each module calls ``register_family(ModelFamily(...))`` at import.
"""

import imgsynth.training.ldm  # noqa: E402,F401  (family "ldm")
import imgsynth.training.stylegan2  # noqa: E402,F401  (family "stylegan2")
