"""The precisions a side runs in: lerobot's PI0Config.dtype values (no torch needed to name them)."""

DTYPES = ("float32", "bfloat16")
