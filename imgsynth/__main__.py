import sys

from imgsynth.cli import main

sys.exit(main())
