"""Training: the shared accelerate loop and the model families' training tasks.

``task.py`` is the contract between the loop and a family; ``loop.py`` the loop;
``checkpoint.py``, ``ema.py``, ``data.py`` and ``schedule.py`` its reusable parts;
``ldm.py`` the latent diffusion family; ``run.py`` the ``imgsynth train`` driver.
"""
