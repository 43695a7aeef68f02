"""How the learned policy keeps a tier at its quality floor while paying as little as it can.

Each request offers candidates with a predicted probability of answering correctly `p` and an
estimated cost `k`. Over many requests the cheapest way to keep the expected quality at
`target` x the reference model's is to pick, per request, the candidate with the largest
`lam * p - k` for one exchange rate `lam` (money per expected correct answer): a long prompt,
where a cheaper model saves more, goes to it sooner than a short one. `lam` is the smallest
rate at which the recent decisions (a window of them) reach the target, found again every few
decisions; until the window has enough of them, and for a prompt the model knows too little
about, each request is decided alone: the cheapest candidate whose own prediction is at least
`target` x the reference's (the reference itself when none is).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FloorController"]

_WIDTH = 32  # candidates kept per decision in the window (the cheapest ones)
_LOW, _HIGH = 1e-3, 1e18  # the range of rates searched (pico-USD per expected correct answer)


class FloorController:
    def __init__(self, target: float, window: int = 512, resolve_every: int = 32, warm_up: int = 32) -> None:
        self.target = target
        self._p = np.zeros((window, _WIDTH))
        self._k = np.full((window, _WIDTH), np.inf)
        self._ref = np.zeros(window)
        self._size = 0  # decisions in the window (up to its length)
        self._next = 0  # where the next one goes
        self._since = 0  # decisions since `rate` was found
        self._resolve_every = resolve_every
        self._warm_up = warm_up
        self.rate: float | None = None  # lam, once the window has `warm_up` decisions

    def choose(self, p: np.ndarray, k: np.ndarray, ref: int, sure: bool = True) -> int:
        """The index of the candidate to use (read-only: `record` learns from it)."""
        if self.rate is None or not sure:
            return self._alone(p, k, ref)
        return int(np.argmax(self.rate * p - k))

    def _alone(self, p: np.ndarray, k: np.ndarray, ref: int) -> int:
        fits = np.flatnonzero(p >= self.target * p[ref])
        if not len(fits):
            return ref
        return int(fits[np.argmin(k[fits])])

    def record(self, p: np.ndarray, k: np.ndarray, ref: int) -> None:
        """A decision that was acted on: it joins the window; every `resolve_every`, `rate` is
        found again."""
        row = self._next
        self._p[row] = 0.0
        self._k[row] = np.inf
        if len(p) > _WIDTH:  # keep the cheapest (and the reference)
            keep = np.argsort(k)[:_WIDTH - 1]
            keep = np.append(keep[keep != ref][:_WIDTH - 1], ref)
            p, k, ref = p[keep], k[keep], len(keep) - 1
        self._p[row, :len(p)] = p
        self._k[row, :len(k)] = k
        self._ref[row] = p[ref]
        self._next = (row + 1) % len(self._ref)
        self._size = min(self._size + 1, len(self._ref))
        self._since += 1
        if self._size >= self._warm_up and (self.rate is None or self._since >= self._resolve_every):
            self.rate = self._solve()
            self._since = 0

    def _quality(self, rate: float) -> float:
        n = self._size
        pick = np.argmax(rate * self._p[:n] - self._k[:n], axis=1)
        return float(self._p[np.arange(n), pick].sum())

    def _solve(self) -> float:
        """The smallest rate (to 1 %) at which the window's expected quality reaches the target."""
        goal = self.target * float(self._ref[:self._size].sum())
        lo, hi = math.log(_LOW), math.log(_HIGH)
        if self._quality(_HIGH) < goal:
            return _HIGH
        while hi - lo > 0.01:
            mid = (lo + hi) / 2
            if self._quality(math.exp(mid)) >= goal:
                hi = mid
            else:
                lo = mid
        return math.exp(hi)
