"""Errors the command line turns into its documented exit codes (README.md, "Command line")."""

from __future__ import annotations

EXIT_PASS = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


class InputError(ValueError):
    """Bad usage, config or input file: exit 2. The message names the file and the problem."""


class DeviceUnavailableError(RuntimeError):
    """A device or runtime that is not there (no torch_npu, no CUDA, index out of range): exit 3."""
