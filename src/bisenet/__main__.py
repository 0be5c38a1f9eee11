"""`python -m bisenet ...` (what torchrun launches) does what `bisenet ...` does."""

import sys

from bisenet.cli import main

sys.exit(main())
