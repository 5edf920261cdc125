"""Fixed-capacity columnar ring buffer: bounded memory, O(1) append, cheap ordered snapshots."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class ColumnRing:
    """Named numpy columns of one capacity; the oldest row is overwritten when full.

    Not thread-safe by itself: owners guard ``append`` and ``column`` with their own lock.
    """

    __slots__ = ("_columns", "capacity", "count")

    def __init__(self, capacity: int, dtypes: Mapping[str, type | np.dtype]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._columns = {name: np.zeros(capacity, dtype) for name, dtype in dtypes.items()}
        self.count = 0  # rows ever appended; the write position is count % capacity

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def append(self, values: Mapping[str, object]) -> None:
        i = self.count % self.capacity
        for name, column in self._columns.items():
            column[i] = values[name]
        self.count += 1

    def column(self, name: str, last: int | None = None) -> np.ndarray:
        """Copy of a column, oldest row first; only the newest ``last`` rows if given."""
        column = self._columns[name]
        size = len(self)
        take = size if last is None else min(max(last, 0), size)
        end = self.count % self.capacity if self.count > self.capacity else size
        start = end - take
        if start >= 0:
            return column[start:end].copy()
        return np.concatenate((column[start:], column[:end]))
