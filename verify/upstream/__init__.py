"""The fence: every place verify-ate reaches into the internals of lerobot, transformers or torch.

Everything else in verify-ate uses their public interfaces (PI0Policy, its config and processors,
LeRobotDataset, torch tensors and hooks). What those do not offer is done here, one module per seam,
each copied or patched piece labelled with where it came from and the version it was copied from:

  patching        the one way a patch is applied: thread-scoped, under one lock, gone when its block ends
  pi0_build       lerobot policies/pi0/modeling_pi0 and pi05/modeling_pi05: pi0 and pi0.5 at reduced sizes;
                  parameters on the meta device
  pi0_modules     lerobot PI0Pytorch: the module paths that hooks and rewrites name; the Euler step
  pi0_weights     pi0 checkpoints of every era (lerobot before 0.4, lerobot 0.4-0.6.1, openpi): their tensor
                  names, lerobot's own remapping, tied twins, the normalisation buffers of old files
  pi0_processors  lerobot processor_pi0: a local tokenizer where lerobot would fetch one from the hub
  gemma           transformers models/gemma and lerobot pi_gemma: the forwards a rewrite replaces, copied
  dataset_v21     lerobot scripts/convert_dataset_v21_to_v30: its steps, without the hub
  pi05_processors lerobot policies/pi05/processor_pi05: the state discretisation, copied for one fault
  act_diffusion   lerobot policies/act and policies/diffusion: building them offline (no ImageNet download),
                  Diffusion's scheduler draws pinned (diffusers' randn_tensor), the module paths --trace names

Importing this package checks that the installed lerobot, transformers and torch are the releases
these modules were written for (`WRITTEN_FOR`). Another release may rename a module, change a
forward or a key, and the numbers would be wrong without an error, so it is refused: exit 3, one
line naming both versions. Setting VERIFY_ATE_ALLOW_UPSTREAM=1 runs anyway, with a warning.
Only code that runs a model imports this package: `compare`, `noise` and `fk` never check.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from verify_ate.verify.errors import DeviceUnavailableError

# The releases the seams below were read from: an exact version, or a release series ("5.5" is 5.5.x).
WRITTEN_FOR = {"lerobot": "0.6.1", "transformers": "5.5", "torch": "2.11"}
ALLOW_VARIABLE = "VERIFY_ATE_ALLOW_UPSTREAM"


class UpstreamVersionError(DeviceUnavailableError):
    """An installed lerobot, transformers or torch that the fence was not written for (exit 3)."""


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def matches(installed: str, written_for: str) -> bool:
    """'2.11.0+cu130' matches '2.11'; '0.6.1' matches only '0.6.1' (a local suffix aside)."""
    wanted = written_for.split(".")
    return installed.split("+", 1)[0].split(".")[: len(wanted)] == wanted


def mismatches(installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """'lerobot 0.7.0 (written for 0.6.1)' for every distribution that differs from WRITTEN_FOR."""
    found = []
    for distribution, written_for in WRITTEN_FOR.items():
        have = installed(distribution)
        if have is None:
            found.append(f"{distribution} not installed (written for {written_for})")
        elif not matches(have, written_for):
            found.append(f"{distribution} {have} (written for {written_for})")
    return found


def check_versions(installed: Callable[[str], str | None] = installed_version) -> None:
    """Refuse (UpstreamVersionError) an environment the fence was not written for, unless the user
    accepts the risk with VERIFY_ATE_ALLOW_UPSTREAM=1 (then one warning on stderr)."""
    found = mismatches(installed)
    if not found:
        return
    if os.environ.get(ALLOW_VARIABLE, "") not in ("", "0"):
        print(
            f"warning: running on {', '.join(found)} because {ALLOW_VARIABLE} is set; verify-ate's patches of "
            "their internals were not checked on these versions",
            file=sys.stderr,
        )
        return
    raise UpstreamVersionError(
        f"{', '.join(found)}: verify-ate reaches into their internals and may compute wrong numbers on other "
        f"releases; install the ones it was written for (pip install 'verify-ate[pi0]'), or set "
        f"{ALLOW_VARIABLE}=1 to run anyway"
    )


check_versions()
