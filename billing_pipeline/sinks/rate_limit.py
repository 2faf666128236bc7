"""A token bucket shared by every worker of a sink: requests are spaced to the provider's limit."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """``rate`` requests per ``per`` seconds with a burst of ``capacity``.

    The default capacity of 1 spaces requests evenly: a provider that counts requests over any
    window (or runs its own bucket) never sees more than the configured rate.
    """

    def __init__(self, rate: float, per: float = 1.0, capacity: float = 1.0,
                 clock=time.monotonic, sleep=time.sleep):
        if rate <= 0 or per <= 0 or capacity < 1:
            raise ValueError(f"token bucket needs rate > 0, per > 0, capacity >= 1 (got {rate}, {per}, {capacity})")
        self.fill_rate = rate / per
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting as long as needed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.fill_rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                delay = (1 - self._tokens) / self.fill_rate
            self._sleep(delay)
            waited += delay
