"""The compact copy of a reference output too large to keep exactly: a CountSketch."""

from __future__ import annotations

from typing import Any

MAX_CACHED_HASHES = 8  # hash tables kept, one per output length


class CountSketch:
    """A linear sketch of fixed size: bucket i sums sign * value over the elements hashed to it.

    Linear, so sketch(a) - sketch(b) = sketch(a - b); norms and inner products are preserved in
    expectation (relative spread about sqrt(2 / size)). Hashes depend only on (seed, length), so
    both sides of a comparison hash alike.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self._cache: dict[int, tuple[Any, Any]] = {}

    def _hashes(self, length: int) -> tuple[Any, Any]:
        import torch

        if length not in self._cache:
            if len(self._cache) >= MAX_CACHED_HASHES:
                self._cache.pop(next(iter(self._cache)))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + length)
            bucket = torch.randint(0, self.size, (length,), generator=generator)
            sign = torch.randint(0, 2, (length,), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
            self._cache[length] = (bucket, sign)
        return self._cache[length]

    def __call__(self, values: Any) -> Any:
        import torch

        flat = values.reshape(-1).to(torch.float64)
        bucket, sign = self._hashes(flat.numel())
        return torch.zeros(self.size, dtype=torch.float64).index_add_(0, bucket, flat * sign)
