"""`python -m stlm_selfplay ...` (what torchrun launches) is the `stlm` command."""

import sys

from stlm_selfplay.cli import main

sys.exit(main())
