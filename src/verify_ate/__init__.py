"""verify-ate: does the model on the new device move the robot the same way it does on the reference device?

The one import namespace of this distribution. Its subpackages are the repository's top-level folders
(ARCHITECTURE.md): `verify_ate.verify` (the harness and the command line), `verify_ate.kinematics`,
`verify_ate.noise`, `verify_ate.reports` and `verify_ate.configs` (YAML only).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# The YAML settings (robots, thresholds, profiles...), shipped beside the code in a wheel and a checkout alike.
CONFIGS_DIR = Path(__file__).parent / "configs"
