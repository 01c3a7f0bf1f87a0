"""`python -m verify.cli` (also what torchrun starts): the same command line as `verify-ate`."""

import sys

from verify.cli import main

sys.exit(main())
