"""NearCache's merge rules as a property: loads racing events never leave an older value.

No I/O: a fake client answers loads from a "truth" that changes version by version, and
the test decides when each change's event is delivered, including while a load's answer
is on its way. Values are the versions themselves (cost "7" is version 7), so what the
near cache holds says which version it holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridcache.client import HybridCacheError, NearCache, NotFound
from hybridcache.v1 import hybridcache_pb2 as pb

OPS = ("op.a", "op.b")


class _FakeStream:
    """Stands in for WatchStream: blocks the near cache's thread until closed."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[pb.ChangeEvent]:
        return self

    def __next__(self) -> pb.ChangeEvent:
        self._closed.wait()
        raise StopIteration

    def close(self) -> None:
        self._closed.set()


class _FakeClient:
    def __init__(self) -> None:
        self.truth: dict[str, int | None] = {}  # op -> current version (None: deleted)
        self.during_fetch: Callable[[], None] | None = None

    def watch(self, **_: Any) -> _FakeStream:
        return _FakeStream()

    def sticky(self) -> _FakeClient:
        return self  # one server

    def list_snapshot(self, *_: Any, **__: Any) -> Any:
        # A server that predates ListSnapshot: the near cache loads per key (what this tests).
        raise HybridCacheError("no ListSnapshot", code=grpc.StatusCode.UNIMPLEMENTED)

    def get_credit_cost(self, tenant_id: str, op: str, *, timeout: float | None = None) -> Any:
        version = self.truth.get(op)  # the answer is read now...
        if self.during_fetch is not None:
            self.during_fetch()  # ...and events arrive while it travels back
        if version is None:
            raise NotFound("no such operation", code=grpc.StatusCode.NOT_FOUND)
        cost = pb.CreditCost(operation_code=op, cost=pb.Decimal(value=str(version)))
        return pb.GetCreditCostResponse(credit_cost=cost, provenance=pb.Provenance(version=version))


def _event(op: str, version: int, deleted: bool) -> pb.ChangeEvent:
    event = pb.ChangeEvent(
        tenant_id="t", kind=pb.KIND_CREDIT_COSTS, keys=[op], version=version, deleted=deleted
    )
    if not deleted:
        event.credit_cost.CopyFrom(pb.CreditCost(operation_code=op, cost=pb.Decimal(value=str(version))))
    return event


_ACTION = st.one_of(
    st.tuples(st.just("change"), st.sampled_from(OPS), st.booleans()),
    st.tuples(st.just("deliver"), st.just(""), st.just(False)),
    # a load; during its RPC: (changes to the truth, events delivered, then a resync?)
    st.tuples(
        st.just("load"),
        st.sampled_from(OPS),
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.booleans()),
    ),
    st.tuples(st.just("resync"), st.just(""), st.just(False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ACTION, max_size=40))
def test_loads_and_events_converge_and_never_go_back(actions: list[tuple[str, str, Any]]) -> None:
    client = _FakeClient()
    near = NearCache(client, "t")  # type: ignore[arg-type]
    try:
        near._mark_live()  # as if the stream had delivered its first message
        pending: list[pb.ChangeEvent] = []
        # The newest version of each op that a reader may have seen: applied by an event
        # or answered by a load. The copy must never go back behind it.
        acknowledged: dict[str, int] = {}
        version = 0

        def change(op: str, deleted: bool) -> None:
            nonlocal version
            version += 1
            client.truth[op] = None if deleted else version
            pending.append(_event(op, version, deleted=deleted))

        def deliver(count: int) -> None:
            for _ in range(min(count, len(pending))):
                event = pending.pop(0)
                near._apply(event)
                name = event.keys[0]
                acknowledged[name] = max(acknowledged.get(name, 0), event.version)

        def resync() -> None:  # the server could not replay: the pending events are lost to us
            pending.clear()
            acknowledged.clear()
            near._on_resync("resume token outside the retained window")

        def during_fetch(op: str, changes: int, deliveries: int, then_resync: bool) -> None:
            for _ in range(changes):
                change(op, deleted=False)
            deliver(deliveries)
            if then_resync:
                resync()

        def held(op: str) -> int | None:
            cost = near._credit_costs.get(op)
            return None if cost is None else int(cost)

        for action, op, argument in actions:
            if action == "change":
                change(op, deleted=argument)
            elif action == "deliver":
                deliver(1)
            elif action == "load":
                client.during_fetch = lambda op=op, during=argument: during_fetch(op, *during)
                try:
                    answer = near.credit_cost(op)
                except NotFound:
                    answer = None
                client.during_fetch = None
                if answer is not None:
                    assert answer == Decimal(str(int(answer)))
                    acknowledged[op] = max(acknowledged.get(op, 0), int(answer))
            else:
                resync()
            for name in OPS:
                current = held(name)
                if current is not None and name in acknowledged:
                    assert current >= acknowledged[name], (name, current, acknowledged[name])

        deliver(len(pending))
        for name in OPS:  # once every event is in, the copy agrees with the truth
            if held(name) is not None:
                assert held(name) == client.truth.get(name)
    finally:
        near.close()
