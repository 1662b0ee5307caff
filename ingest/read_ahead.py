"""Work through an iterator in a thread, a bounded amount ahead of its consumer.

Ingestion parses the next documents (single-threaded Python in unstructured) while the embedder
runs on every core for the previous ones; the embedder releases the GIL, so the two overlap.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class ReadAhead(Generic[T]):
    """Draws `items` in a worker thread while holding at most `budget` units (`size` of each item)
    that the consumer has not taken, plus the one item that crosses the budget.

    `groups()` hands over everything ready at once (at least one item), so the consumer gets large
    groups when the worker keeps ahead and never waits while anything is ready. An exception raised
    by `items` reaches the consumer after the items before it. Leaving the `with` block stops the
    worker once its current item is done.
    """

    def __init__(
        self, items: Iterator[T], size: Callable[[T], int], budget: int, name: str
    ) -> None:
        if budget < 1:
            raise ValueError("budget must be at least 1")
        self._items = items
        self._size = size
        self._budget = budget
        self._ready: deque[tuple[object, int]] = deque()
        self._held = 0
        self._stopped = False
        self._changed = threading.Condition()
        self._worker = threading.Thread(target=self._produce, name=name, daemon=True)

    def __enter__(self) -> ReadAhead[T]:
        self._worker.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._worker.join()

    def _produce(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopped or self._held < self._budget)
                if self._stopped:
                    return
            try:
                item: object = next(self._items, _END)
                size = 0 if item is _END else self._size(item)  # type: ignore[arg-type]
            except BaseException as error:  # handed to the consumer, raised there
                item, size = _Failure(error), 0
            with self._changed:
                self._ready.append((item, size))
                self._held += size
                self._changed.notify_all()
            if item is _END or isinstance(item, _Failure):
                return

    def groups(self) -> Iterator[list[T]]:
        """The items in order, in lists of what was ready when the consumer asked."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._ready))
                group: list[T] = []
                while self._ready and not _is_marker(self._ready[0][0]):
                    item, size = self._ready.popleft()
                    self._held -= size
                    group.append(item)  # type: ignore[arg-type]
                self._changed.notify_all()
                head = None if group else self._ready[0][0]
            if group:
                yield group
            elif isinstance(head, _Failure):
                raise head.error
            else:
                return


def _is_marker(item: object) -> bool:
    return item is _END or isinstance(item, _Failure)
