import threading
import time
from collections.abc import Iterator

import pytest

from ingest.read_ahead import ReadAhead


class TestReadAhead:
    def test_every_item_arrives_once_in_order(self) -> None:
        with ReadAhead(iter(range(100)), size=lambda _: 1, budget=7, name="t") as ahead:
            groups = list(ahead.groups())
        assert [item for group in groups for item in group] == list(range(100))
        assert all(1 <= len(group) <= 8 for group in groups)  # the budget, plus the one crossing

    def test_the_worker_stays_within_its_budget_while_the_consumer_works(self) -> None:
        drawn: list[int] = []

        def items() -> Iterator[int]:
            for n in range(20):
                drawn.append(n)
                yield n

        with ReadAhead(items(), size=lambda n: 3, budget=10, name="t") as ahead:
            groups = ahead.groups()
            first = next(groups)
            time.sleep(0.5)  # time for the worker to run ahead as far as it may
            # Taken by the consumer, plus 10 units and the item crossing them (4 items of 3).
            assert len(drawn) == len(first) + 4
            rest = [item for group in groups for item in group]
        assert first + rest == list(range(20))

    def test_a_failure_arrives_after_the_items_before_it(self) -> None:
        def items() -> Iterator[int]:
            yield 1
            yield 2
            raise RuntimeError("disk gone")

        received: list[int] = []
        with (
            pytest.raises(RuntimeError, match="disk gone"),
            ReadAhead(items(), size=lambda _: 1, budget=5, name="t") as ahead,
        ):
            for group in ahead.groups():
                received.extend(group)
        assert received == [1, 2]

    def test_leaving_early_stops_the_worker(self) -> None:
        def endless() -> Iterator[int]:
            n = 0
            while True:
                yield n
                n += 1

        ahead = ReadAhead(endless(), size=lambda _: 1, budget=4, name="regulus-test-worker")
        with ahead:
            next(ahead.groups())
        assert not any(t.name == "regulus-test-worker" for t in threading.enumerate())

    def test_budget_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="budget"):
            ReadAhead(iter([]), size=len, budget=0, name="t")
