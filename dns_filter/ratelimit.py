"""Per-client rate limiting with token buckets, so one noisy or infected host cannot starve
the office's resolver (or turn it into an amplifier)."""

from __future__ import annotations


class ClientRateLimiter:
    """``rate`` queries per second per client with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, *, max_clients: int = 65_536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self.limited = 0

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            self.limited += 1
            return False
        if len(self._buckets) >= self.max_clients and client not in self._buckets:
            self._prune(now)
        self._buckets[client] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        """Forget clients whose buckets are full again (idle long enough); bounds memory."""
        full_after = self.burst / self.rate
        idle = [c for c, (_, last) in self._buckets.items() if now - last >= full_after]
        for client in idle:
            del self._buckets[client]
        if len(self._buckets) >= self.max_clients:  # still full: drop the oldest half
            oldest = sorted(self._buckets, key=lambda c: self._buckets[c][1])
            for client in oldest[: len(oldest) // 2]:
                del self._buckets[client]
