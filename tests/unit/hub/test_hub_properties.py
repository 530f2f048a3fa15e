"""Property tests: random interleavings of publish / subscribe / resume / read / close."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from hybridcache.server.core.kinds import Kind
from hybridcache.server.hub import (
    ANY_TENANT,
    REASON_OUTSIDE_WINDOW,
    ChangeHub,
    HubEvent,
    Item,
    ResyncNeeded,
    Sequenced,
    Subscription,
    WatchFilter,
)
from tests.unit.hub.hub_support import assert_gap_free, drain, event

TENANTS = ("a", "b")
KINDS = (Kind.CREDIT_COSTS, Kind.FEATURE_FLAGS)
KEYS = ("crm.x", "crm.y", "hrms.z")

events = st.builds(
    event,
    tenant=st.sampled_from(TENANTS),
    kind=st.sampled_from(KINDS),
    key=st.sampled_from(KEYS),
    resync=st.sampled_from([False, False, False, True]),  # whole-kind reloads: rarer
)
filters = st.builds(
    WatchFilter,
    tenants=st.sampled_from(
        [frozenset({"a"}), frozenset({"b"}), frozenset(TENANTS), frozenset({ANY_TENANT})]
    ),
    kinds=st.sampled_from([frozenset(), frozenset({KINDS[0]}), frozenset(KINDS)]),
    key_prefix=st.sampled_from(["", "crm.", "crm.x", "hrms."]),
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(events, max_size=30),
    after=st.lists(events, max_size=30),
    flt=filters,
    resume_at=st.integers(0, 30),
    retain=st.integers(0, 40),
)
def test_resume_is_exact(
    before: list[HubEvent], after: list[HubEvent], flt: WatchFilter, resume_at: int, retain: int
) -> None:
    """With a buffer that cannot overflow: inside the window, exactly the missed events then
    the live ones; outside it, one ResyncNeeded then exactly the live ones."""
    hub = ChangeHub(retain=retain, subscriber_buffer=1_000)
    published = {hub.publish(e): e for e in before}
    resume_at = min(resume_at, hub.current_sequence)
    at_subscribe = hub.current_sequence
    sub = hub.subscribe(flt, hub.token(resume_at))
    published |= {hub.publish(e): e for e in after}
    got = drain(sub)

    def matching(start: int) -> list[Item]:
        # Each tenant's own numbering, 1, 2, 3, ... over everything it published.
        per_tenant: Counter[str] = Counter()
        out: list[Item] = []
        for s, e in sorted(published.items()):
            per_tenant[e.tenant_id] += 1
            if s > start and flt.matches(e):
                out.append(Sequenced(s, e, per_tenant[e.tenant_id]))
        return out

    if resume_at >= at_subscribe - min(retain, at_subscribe):
        assert got == matching(resume_at)
    else:
        assert got == [ResyncNeeded(REASON_OUTSIDE_WINDOW, at_subscribe), *matching(at_subscribe)]


class HubMachine(RuleBasedStateMachine):
    """Small window and buffers so every edge (window, overflow, lag) is hit often. The
    invariant: each subscriber's stream is gap-free or says so with a ResyncNeeded."""

    BUFFER = 3

    def __init__(self) -> None:
        super().__init__()
        self.hub = ChangeHub(retain=6, subscriber_buffer=self.BUFFER)
        self.published: dict[int, HubEvent] = {}
        self.received: dict[int, list[Item]] = {}
        self.start: dict[int, int] = {}

    subs = Bundle("subs")

    @rule(e=events)
    def publish(self, e: HubEvent) -> None:
        self.published[self.hub.publish(e)] = e

    @rule(target=subs, flt=filters, back=st.integers(0, 10), foreign=st.booleans())
    def subscribe(self, flt: WatchFilter, back: int, foreign: bool) -> Subscription:
        point = max(0, self.hub.current_sequence - back)
        token = ChangeHub().token(point) if foreign else self.hub.token(point)
        sub = self.hub.subscribe(flt, token)
        self.received[sub.id] = []
        self.start[sub.id] = point
        return sub

    @rule(sub=subs)
    def read(self, sub: Subscription) -> None:
        self.received[sub.id].extend(drain(sub))
        assert_gap_free(
            self.received[sub.id], self.published, sub.filter, self.start[sub.id], self.hub.current_sequence
        )
        assert sub.progress() == self.hub.current_sequence

    @rule(sub=consumes(subs))
    def close(self, sub: Subscription) -> None:
        sub.close()
        assert sub.next(0) == []

    @invariant()
    def buffers_are_bounded(self) -> None:
        for sub in list(self.hub._subscriptions.values()):
            assert sub.buffered() <= self.BUFFER


HubMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=60, deadline=None)
test_hub_state_machine = HubMachine.TestCase
