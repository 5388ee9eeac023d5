"""accelerate entry point: ``accelerate launch [--num_processes N] scripts/train.py DATASET_DIR RUN_DIR --config ldm_2d``."""

import sys

from imgsynth.training.entry import main

if __name__ == "__main__":
    sys.exit(main())
