"""A small thread-safe cache that computes each missing value once however many threads ask at once.

:class:`SingleFlightCache` holds at most ``max_entries`` values, least recently used dropped
first. Keys fall into *groups* (e.g. one pair and its parameters, at successive versions of the
data): one computation per group runs at a time, so a second asker waits for the first and then
reuses its value, while other groups go on meanwhile. Storing a key drops the other keys of its
group: an older version of the same data is never asked for again.

What a stored value is good for is the caller's business: :meth:`SingleFlightCache.get_or_compute`
takes a ``usable`` function that turns a held value into the answer, or None when that value does
not serve this request (then it is computed again, and replaces it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


class SingleFlightCache(Generic[K, V]):
    """LRU map ``key → value`` with one computation per group of keys at a time (see the module docstring).

    ``group(key)`` names a key's group (hashable). Thread-safe.
    """

    def __init__(self, max_entries: int, group: Callable[[K], Hashable]) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries: {max_entries!r} must be an integer >= 1")
        self.max_entries = max_entries
        self._group = group
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # guards the entries and the group locks, never held while computing
        self._flights: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def find(self, key: K, usable: Callable[[V], R | None]) -> R | None:
        """``usable(value)`` of ``key``'s value if held and usable (then it counts as recently used), else None.

        ``usable`` runs under the cache's lock: keep it quick and free of calls back into the cache.
        """
        with self._lock:
            if key not in self._entries:
                return None
            answer = usable(self._entries[key])
            if answer is not None:
                self._entries.move_to_end(key)
            return answer

    def newest(self, match: Callable[[K], bool]) -> V | None:
        """The most recently used value whose key ``match``es, or None (e.g. an earlier version to build on)."""
        with self._lock:
            return next((value for key, value in reversed(self._entries.items()) if match(key)), None)

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` for ``key``, dropping the other keys of its group and then the least recently used."""
        group = self._group(key)
        with self._lock:
            for old in [k for k in self._entries if k != key and self._group(k) == group]:
                del self._entries[old]
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_compute(self, key: K, usable: Callable[[V], R | None],
                       compute: Callable[[], tuple[V, R]]) -> tuple[R, bool]:
        """The answer for ``key``: from the held value (:meth:`find`), else from ``compute()``, which
        returns the value to hold and the answer; True as the second item if this call computed it.

        Askers of one group compute one at a time; one that waited looks again before computing,
        so it reuses what the one before it held. An exception from ``compute`` holds nothing and
        reaches the caller; the next asker computes again.
        """
        answer = self.find(key, usable)
        if answer is not None:
            return answer, False
        with self._flight(key):
            answer = self.find(key, usable)  # computed meanwhile by the asker we waited for?
            if answer is not None:
                return answer, False
            value, answer = compute()
            self.put(key, value)
            return answer, True

    def _flight(self, key: K) -> threading.Lock:
        """The lock of ``key``'s group (made on first use; those of groups no longer held are dropped)."""
        group = self._group(key)
        with self._lock:
            lock = self._flights.get(group)
            if lock is None:
                if len(self._flights) >= 2 * self.max_entries:  # bound them: a lock per group ever asked would grow
                    held = {self._group(k) for k in self._entries}
                    self._flights = {g: f for g, f in self._flights.items() if g in held or f.locked()}
                lock = self._flights[group] = threading.Lock()
            return lock
