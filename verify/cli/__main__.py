"""`python -m verify_ate.verify.cli` (also what torchrun starts): the same command line as `verify-ate`."""

import sys

from verify_ate.verify.cli import main

sys.exit(main())
