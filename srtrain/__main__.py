"""`python -m srtrain ...` (and `accelerate launch -m srtrain ...`): the `srtrain` command."""

import sys

from srtrain.cli import main

sys.exit(main())
