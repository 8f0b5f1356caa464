"""Back-off between retries: one policy for every loop that waits for something to come back.

Exponential growth with "equal jitter" (AWS Architecture Blog, "Exponential Backoff and
Jitter", 2015): half of each delay is fixed, so a retry never comes at once, and half is
random, so many clients that failed together do not retry together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SHARED = random.Random()  # seeding one per back-off would read the OS's entropy each time


@dataclass
class Backoff:
    """Delays for successive attempts: `first`, then doubling up to `most`, each jittered."""

    first: float = 0.25
    most: float = 30.0
    factor: float = 2.0
    jitter: bool = True
    rng: random.Random = field(default_factory=lambda: _SHARED, repr=False)
    attempts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.most or self.factor < 1:
            raise ValueError("need 0 < first <= most and factor >= 1")

    def next(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        ceiling = min(self.most, self.first * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        """It worked: the next failure starts from `first` again."""
        self.attempts = 0
