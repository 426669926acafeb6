"""What a simulated device measures: metrics that wander like real sensors, with the odd overheating episode.

No I/O and no clock of its own: ``SensorModel.step(dt_s)`` advances the model by ``dt_s`` seconds and returns
the metrics to send. Each metric is a mean-reverting random walk (an Ornstein-Uhlenbeck process: pulled back
to its mean with time constant ``reversion_s``, wandering about ``spread`` around it), rounded as a sensor
would report it. Each device draws its own offset from the profile's mean, so a fleet's devices differ. Now and
then (``episodes_per_h``), or on the ``overheat`` command, an episode shifts some means for a while: a pump's
temperature climbs past the demo's alert threshold, then settles back.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["PROFILES", "MetricSpec", "Profile", "SensorModel"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    mean: float
    # The typical distance from the mean (the walk's standard deviation); devices differ by up to one spread.
    spread: float
    low: float
    high: float
    decimals: int
    # How quickly the value returns to its mean (seconds).
    reversion_s: float = 30.0
    # Added to the mean during an overheating episode.
    episode_shift: float = 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    """A device type: its metrics and how often it overheats on its own."""

    type: str
    metrics: tuple[MetricSpec, ...]
    episodes_per_h: float = 0.0
    episode_s: float = 60.0


PROFILES: dict[str, Profile] = {
    profile.type: profile
    for profile in (
        Profile(
            "sensor",
            (
                MetricSpec("temp", 21.5, 1.5, -40.0, 85.0, 2, reversion_s=120.0, episode_shift=8.0),
                MetricSpec("hum", 45.0, 6.0, 0.0, 100.0, 1, reversion_s=90.0, episode_shift=-10.0),
            ),
        ),
        Profile(
            "pump",
            (
                MetricSpec("temp", 55.0, 2.5, 0.0, 130.0, 2, reversion_s=8.0, episode_shift=38.0),
                MetricSpec("pressure", 3.2, 0.15, 0.0, 10.0, 3, reversion_s=20.0, episode_shift=-0.8),
                MetricSpec("rpm", 1450.0, 25.0, 0.0, 3000.0, 0, reversion_s=15.0, episode_shift=150.0),
            ),
            episodes_per_h=6.0,
            episode_s=45.0,
        ),
    )
}


class SensorModel:
    """One device's metrics over time (see the module docstring)."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self._means = {m.name: m.mean + rng.uniform(-m.spread, m.spread) for m in profile.metrics}
        self._values = dict(self._means)
        # Seconds of overheating left.
        self.episode_left_s = 0.0

    @property
    def overheating(self) -> bool:
        return self.episode_left_s > 0

    def start_episode(self, duration_s: float | None = None) -> float:
        """Overheat for ``duration_s`` (the profile's length by default); returns the duration."""
        self.episode_left_s = self.profile.episode_s if duration_s is None else duration_s
        return self.episode_left_s

    def reset(self) -> None:
        """A reboot: values back at their means, no episode."""
        self._values = dict(self._means)
        self.episode_left_s = 0.0

    def step(self, dt_s: float) -> dict[str, float | int]:
        """Advance ``dt_s`` seconds; the metrics as the device reports them now."""
        dt_s = max(dt_s, 0.0)
        if self.episode_left_s > 0:
            self.episode_left_s = max(0.0, self.episode_left_s - dt_s)
        elif self._rng.random() < self.profile.episodes_per_h * dt_s / 3600:
            self.start_episode()
        reported: dict[str, float | int] = {}
        for spec in self.profile.metrics:
            target = self._means[spec.name] + (spec.episode_shift if self.overheating else 0.0)
            pull = min(1.0, dt_s / spec.reversion_s)
            noise = spec.spread * math.sqrt(2 * pull) * self._rng.gauss(0.0, 1.0)
            value = self._values[spec.name] + (target - self._values[spec.name]) * pull + noise
            value = self._values[spec.name] = min(spec.high, max(spec.low, value))
            reported[spec.name] = round(value, spec.decimals) if spec.decimals else round(value)
        return reported
