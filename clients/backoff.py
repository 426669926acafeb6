"""Reconnect delays: exponential with full jitter, so a fleet that lost its hub at once does not return at once."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(kw_only=True)
class Backoff:
    """Delay ``n`` (from 0) is uniform in ``[0, min(maximum_s, initial_s * factor**n)]`` ("full jitter").

    ``reset()`` after a connection that worked, so the next failure starts short again."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        ceiling = min(self.maximum_s, self.initial_s * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return self._random.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0
