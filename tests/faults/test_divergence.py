"""Scenario 9: every kind of divergence, injected at random; anti-entropy heals each within
its bound, and no answer labelled LIVE stays wrong for longer.

While 4 readers ask for every credit cost of two tenants (200 reads/s), an injector makes,
at random, about 8 moves a second:

* a change in the Wrapper, published; on its way from Redis to the server the proxy eats
  some deliveries (dropped events) and holds others back past the next one (out of order);
* a forged `credit-config-changed` published straight onto Redis, in the design note's
  format, with an odd version: absurdly high, far ahead, none at all, or stale;
* a refetch during a Wrapper outage: the Wrapper changes a cost without publishing, then an
  event without `newValue` asks the server to refetch it while the item route answers 500.

The record is judged afterwards (`divergence.judge`, against the log of every write):
every divergence healed, each within the bound (verify interval + 3 s for the pass and a
loaded machine), and no wrong LIVE answer older than the bound. Figures: moves injected by
kind, divergences, heal time p50/p99/max, wrong answers and wrong LIVE answers.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import threading
import time
from collections import Counter

import pytest

from hybridcache.server.events.verifier import Verifier, VerifierStats
from hybridcache_dev.harness.percentiles import percentile
from hybridcache_dev.wrapper.seed import OPERATION_CODES
from tests.faults.conftest import Figures, Scale
from tests.faults.divergence import Timeline, TruthLog, judge
from tests.faults.history import History, LoadLoop, Observation, Request, canonical, wait_until
from tests.faults.resp_filter import ChaosPlan, DeliveryChaos
from tests.faults.scenarios import wait_converged
from tests.faults.stack import TENANTS, Stack, stack

PASS_SLACK_S = 3.0  # one verifier pass plus a loaded machine's delays, on top of the interval
MOVES_PER_S = 8.0
OUTAGE_S = 1.0
ITEM_ROUTE = "GET /api/tenants/{tenantId}/credit-costs/{operationCode}"
EVENT_TYPE = "credit-config-changed"
LASTING_S = 0.5  # longer than any event takes to apply: only anti-entropy heals these


def _requests() -> list[Request]:
    return [Request("credit-cost", t, code) for t in TENANTS for code in OPERATION_CODES]


class Injector:
    """The random moves, on one thread, for `duration_s`; every write logged in `truth`."""

    def __init__(
        self, s: Stack, truth: TruthLog, requests: list[Request], rng: random.Random, timeline: Timeline
    ) -> None:
        self.s = s
        self.truth = truth
        self.timeline = timeline
        self.requests = requests
        self.rng = rng
        self.moves: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._outage_until = 0.0
        self._redis = s.redis.client(socket_timeout=5)

    def run(self, duration_s: float) -> None:
        end = time.monotonic() + duration_s
        next_at = time.monotonic()
        while time.monotonic() < end:
            next_at += self.rng.expovariate(MOVES_PER_S)
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the moves, not waiting for readiness
            self._end_outage_if_due()
            roll = self.rng.random()
            if roll < 0.7:
                self._write(publish=True)
            elif roll < 0.9:
                self._forge()
            elif not self._outage_until:
                self._refetch_during_outage()
        self._outage_until = time.monotonic()
        self._end_outage_if_due()
        self._redis.close()

    def _pick(self) -> Request:
        return self.rng.choice(self.requests)

    def _write(self, *, publish: bool) -> Request:
        r = self._pick()
        value = f"{self.rng.randint(1, 999)}.{self.rng.randint(0, 99):02d}"
        sent = time.monotonic()
        self.s.admin.put_cost(r.tenant, r.key, value, publish=publish)
        self.truth.wrote(r.entity, canonical(value), sent, time.monotonic())
        self.timeline.move("write" if publish else "write-unpublished", r.entity, sent)
        self.moves["write" if publish else "write-unpublished"] += 1
        return r

    def _publish(self, tenant: str, data: dict[str, object]) -> None:
        body = {
            "eventId": f"chaos-{next(self._ids)}",
            "eventType": EVENT_TYPE,
            "tenantId": tenant,
            "data": data,
        }
        self._redis.publish(f"crm:{tenant}:{EVENT_TYPE}", json.dumps(body))

    def _forge(self) -> None:
        r = self._pick()
        style = self.rng.choice(("absurd", "far-ahead", "none", "stale"))
        data: dict[str, object] = {"operationCode": r.key, "changedFields": ["credit_cost"], "newValue": 77.7}
        if style == "absurd":
            data["version"] = 2**63 - 1
        elif style == "far-ahead":
            data["version"] = 10_000 + self.rng.randint(0, 1000)
        elif style == "stale":
            data["version"] = 1
        self.timeline.move(f"forged-{style}", r.entity, time.monotonic())
        self._publish(r.tenant, data)
        self.moves[f"forged-{style}"] += 1

    def _refetch_during_outage(self) -> None:
        self.s.admin.set_faults(failStatus=500, routes=[ITEM_ROUTE])
        self.timeline.move("wrapper item route failing (500)", None, time.monotonic())
        self._outage_until = time.monotonic() + OUTAGE_S
        r = self._write(publish=False)
        self._publish(r.tenant, {"operationCode": r.key, "changedFields": ["credit_cost"]})
        self.moves["refetch-in-outage"] += 1

    def _end_outage_if_due(self) -> None:
        if self._outage_until and time.monotonic() >= self._outage_until:
            self.s.admin.clear_faults()
            self.timeline.move("wrapper item route answering", None, time.monotonic())
            self._outage_until = 0.0


def trace_passes(verifier: Verifier, timeline: Timeline) -> None:
    """Record each verifier pass (when, and what it did) in `timeline`: a spy on `run_once`,
    which the verifier's thread calls, to explain a divergence that outlived a pass."""
    run_once = verifier.run_once

    def traced() -> VerifierStats:
        started = time.monotonic()
        before = dataclasses.replace(verifier.stats, repaired_by_kind={})
        after = run_once()
        what = (
            f"compared {after.compared - before.compared}, differed {after.mismatched - before.mismatched}, "
            f"buckets {after.buckets_repaired - before.buckets_repaired}, "
            f"keys repaired {after.keys_repaired - before.keys_repaired}"
            f"{', cut short by a Wrapper failure' if after.failures > before.failures else ''}"
        )
        timeline.passes.append((started, time.monotonic(), what))
        return after

    verifier.run_once = traced  # type: ignore[method-assign]


@pytest.mark.faults
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "scale",
    [
        pytest.param(Scale("fast", extra=(("duration_s", 30.0), ("verify_s", 2.0))), id="fast"),
        pytest.param(
            Scale("full", extra=(("duration_s", 600.0), ("verify_s", 30.0))),
            id="full",
            marks=pytest.mark.slow,  # 10 minutes: make test-faults only, never the default run
        ),
    ],
)
def test_random_divergence_heals_within_the_anti_entropy_bound(scale: Scale, figures: Figures) -> None:
    duration_s, verify_s = scale.get("duration_s", 30.0), scale.get("verify_s", 2.0)
    bound_s = verify_s + PASS_SLACK_S
    rng = random.Random(14)
    plan = ChaosPlan(drop_p=0.1, hold_p=0.1, rng=random.Random(15))
    requests = _requests()
    history = History()
    with stack(redis_proxy=True, redis_down_filter=lambda: DeliveryChaos(plan)) as s:
        service = s.start_service(verify_interval_s=verify_s, resync_jitter_s=1.0)
        truth = TruthLog(initial=s.admin.truths(requests))
        timeline = Timeline()
        trace_passes(service.verifier, timeline)
        injector = Injector(s, truth, requests, rng, timeline)
        with LoadLoop(s.target, requests, history, workers=4, rate_per_s=200, max_s=duration_s + 120) as load:
            wait_until(lambda: len(history) > 50, timeout=10, what="the load to start")
            started = time.monotonic()
            worker = threading.Thread(target=injector.run, args=(duration_s,), name="injector", daemon=True)
            worker.start()
            worker.join(duration_s + 60)
            assert not worker.is_alive(), "the injector did not finish"
            plan.enabled = False
            final = {e: truth.final(e) for e in truth.initial}
            wait_converged(history, final, since=time.monotonic(), timeout=bound_s + 10)
            load.stop()
        verdict = judge(history, truth, since=started, bound_s=bound_s)
        verified = service.verifier.stats
    heals = [d.heal_s for d in verdict.divergences]
    for d in verdict.lasting(bound_s):
        print("\n".join(timeline.explain(d, history, truth, origin=started, before_s=verify_s)))
    lasting = verdict.lasting(LASTING_S)
    unhealed = [d for d in verdict.divergences if not d.healed]
    slowest = max(heals, default=0.0)
    figures.record(
        "9-random-divergence",
        scale.name,
        duration_s=duration_s,
        verify_interval_s=verify_s,
        bound_s=bound_s,
        moves=dict(sorted(injector.moves.items())),
        deliveries_dropped=len(plan.dropped),
        deliveries_reordered=len(plan.held),
        divergences=len(heals),
        divergences_lasting=len(lasting),
        heal_s={
            "p50": round(percentile(heals, 50), 3) if heals else 0.0,
            "p99": round(percentile(heals, 99), 3) if heals else 0.0,
            "max": round(slowest, 3),
        },
        lasting_heal_s={
            "p50": round(percentile([d.heal_s for d in lasting], 50), 3) if lasting else 0.0,
            "max": round(max((d.heal_s for d in lasting), default=0.0), 3),
        },
        answers=verdict.answers,
        wrong_answers=verdict.wrong,
        wrong_live_answers=verdict.wrong_live,
        wrong_live_beyond_bound=verdict.wrong_live_beyond,
        failed_reads=verdict.failed,
        verifier_keys_repaired=verified.keys_repaired,
        verifier_passes=verified.passes,
    )
    assert not unhealed, f"divergences never healed: {[(d.entity, round(d.heal_s, 2)) for d in unhealed[:5]]}"
    assert slowest <= bound_s, (
        f"a divergence took {slowest:.2f} s to heal, beyond the anti-entropy bound of {bound_s} s: "
        f"{[(d.entity, round(d.heal_s, 2)) for d in verdict.divergences if d.heal_s > bound_s][:5]}"
    )
    assert verdict.wrong_live_beyond == 0, (
        f"{verdict.wrong_live_beyond} answers labelled LIVE were wrong for longer than {bound_s} s"
    )
    assert sum(injector.moves.values()) >= duration_s * MOVES_PER_S / 3, "the injector hardly ran"
    assert plan.dropped, "no delivery was dropped: the scenario did not test lost events"


def test_the_story_of_a_divergence_names_its_moves_passes_reads_and_writes() -> None:
    entity = ("credit-cost", "t1", "op")
    request = Request("credit-cost", "t1", "op")
    truth = TruthLog(initial={entity: "1"})
    truth.wrote(entity, "2", 10.0, 10.1)
    timeline = Timeline()
    timeline.move("write-unpublished", entity, 10.0)
    timeline.move("forged-stale", ("credit-cost", "t2", "op"), 11.0)  # another entity: left out
    timeline.move("wrapper item route failing (500)", None, 10.0)
    timeline.passes.append((11.5, 11.7, "compared 2, differed 0"))
    timeline.passes.append((30.0, 30.2, "compared 2, differed 1"))  # after it: left out
    reads = [
        Observation(t, t + 0.01, "w", request, "OK", v, freshness="live")
        for t, v in ((9.0, "1"), (12.0, "1"), (25.0, "2"))
    ]
    (d,) = judge(reads, truth, since=0.0, bound_s=5.0).divergences
    story = "\n".join(timeline.explain(d, reads, truth, origin=0.0, before_s=5.0))
    assert "9.00 .. 12.01" in story, f"the divergence's span is not told: {story}"
    for told in (
        "write-unpublished",
        "wrapper item route failing",
        "compared 2, differed 0",
        "10.00 .. 10.10 2",
    ):
        assert told in story, f"{told!r} missing from the story: {story}"
    for not_told in ("forged-stale", "differed 1"):
        assert not_told not in story, f"the story tells {not_told!r}, which is not its: {story}"


def _reads(request: Request, answers: list[tuple[float, str, str]]) -> list[Observation]:
    return [Observation(t, t + 0.01, "w", request, "OK", v, freshness=f) for t, v, f in answers]


@pytest.mark.timeout(10)
def test_a_repair_then_a_new_divergence_with_no_read_between_are_two_divergences() -> None:
    """Run 4's story: a published change lost (the entity answers the old value) until a pass
    repairs it; 0.4 s later, before any read, a change whose refetch fails: the answers go
    from the old value straight to the repaired one, wrong again. Between the two the service
    may have agreed with the Wrapper (it held the repaired value while the Wrapper did), so
    these are two divergences, the second timed from the last answer of the old value."""
    entity = ("credit-cost", "t1", "op")
    truth = TruthLog(initial={entity: "1"})
    truth.wrote(entity, "2", 10.0, 10.1)  # published, the delivery lost
    truth.wrote(entity, "3", 20.9, 21.0)  # unpublished; its refetch fails (the pass was at 20.5)
    reads = _reads(
        Request(*entity),
        [(9.0, "1", "live")]
        + [(t, "1", "live") for t in (12.0, 15.0, 20.0)]
        + [(t, "2", "live") for t in (21.5, 25.0, 30.0, 35.0, 40.0)]
        + [(41.0, "3", "live")],
    )
    verdict = judge(reads, truth, since=0.0, bound_s=25.0)
    spans = [(round(d.since, 2), round(d.until, 2), d.wrong, d.healed) for d in verdict.divergences]
    assert spans == [(9.0, 20.01, 3, True), (20.01, 40.01, 5, True)], (
        f"a lost change repaired, then a failed refetch, should be two divergences "
        f"(9.00 .. 20.01 and 20.01 .. 40.01), judged: {spans}"
    )
    assert verdict.wrong_live_beyond == 0, (
        f"{verdict.wrong_live_beyond} wrong LIVE answers counted beyond 25 s: the second "
        "divergence's answers were timed from the first one's beginning"
    )


@pytest.mark.timeout(10)
def test_wrong_answers_the_service_can_never_have_agreed_between_stay_one_divergence() -> None:
    """Not lenient: no split where the service cannot have been right between two wrong
    answers, even though the Wrapper's value or the answered value changed: the same stale
    value while the Wrapper moved on twice; a forged value, then an older value applied late."""
    a, b = ("credit-cost", "t1", "a"), ("credit-cost", "t1", "b")
    truth = TruthLog(initial={a: "1", b: "1"})
    truth.wrote(a, "2", 10.0, 10.1)
    truth.wrote(a, "3", 15.0, 15.1)
    truth.wrote(b, "2", 10.0, 10.1)
    reads = _reads(
        Request(*a), [(9.0, "1", "live"), (12.0, "1", "live"), (16.0, "1", "live"), (20.0, "1", "live")]
    ) + _reads(Request(*a), [(22.0, "3", "live")])
    reads += _reads(
        Request(*b),
        [
            (9.0, "1", "live"),
            (12.0, "77.7", "live"),
            (14.0, "1", "repairing"),
            (40.0, "1", "live"),
            (41.0, "2", "live"),
        ],
    )
    verdict = judge(reads, truth, since=0.0, bound_s=25.0)
    spans = {d.entity[2]: (round(d.since, 2), round(d.until, 2), d.wrong) for d in verdict.divergences}
    assert len(verdict.divergences) == 2, f"expected one divergence per entity: {verdict.divergences}"
    assert spans == {"a": (9.0, 20.01, 3), "b": (9.0, 40.01, 3)}, (
        f"wrong answers with no possible agreement between them were split or mis-timed: {spans}"
    )
    assert verdict.wrong_live_beyond == 1, (
        f"b's LIVE answer at 40 s is 31 s into its divergence (bound 25 s): "
        f"counted {verdict.wrong_live_beyond}"
    )
