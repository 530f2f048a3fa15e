"""Divergence, judged from the record: what the Wrapper held when (the truth log of every
write the scenario made), and how long each entity's answers differed from it.

An answer is right when its value is one the Wrapper held at some moment of the answer's
flight (a write in progress counts both ways). A *divergence* is a period in which one
entity's answers were wrong with no moment between them at which the service may have
agreed with the Wrapper. It begins at the last moment the entity may have been right: the
start of the last right answer before it, or, within a run of wrong answers, the first
moment between two of them at which the Wrapper held the value answered before or the value
answered after (the service moved from one to the other in between, so it may have agreed
with the Wrapper then: the earlier divergence healed and a new one began; e.g. a lost change
repaired by a verifier pass, then a change whose refetch fails, with no read between). It
heals at the end of its last wrong answer. Either end is off by at most one sampling
interval (the beginning early, the end early). Wrong answers between which the service can
never have agreed (the same wrong value while the Wrapper moved on, a forged value, an older
value applied late) stay one divergence, however many times either side changed. A
divergence still open at the end of the record never healed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.faults.history import Observation

Entity = tuple[str, str, str]


@dataclass
class TruthLog:
    initial: dict[Entity, str]
    # entity -> (value, sent, answered) of each write, in order
    writes: dict[Entity, list[tuple[str, float, float]]] = field(default_factory=lambda: defaultdict(list))

    def wrote(self, entity: Entity, value: str, sent: float, answered: float) -> None:
        self.writes[entity].append((value, sent, answered))

    def acceptable(self, entity: Entity, start: float, end: float) -> set[str]:
        """The values the Wrapper held at some moment in [start, end]."""
        values: set[str] = set()
        writes = self.writes.get(entity, [])
        # value i holds from its write's send (it may commit at once) to the next write's answer
        held_from = -math.inf
        current = self.initial[entity]
        for value, sent, answered in writes:
            if held_from <= end and answered >= start:
                values.add(current)
            current, held_from = value, sent
        if held_from <= end:
            values.add(current)
        return values

    def first_held(self, entity: Entity, values: set[str], start: float, end: float) -> float | None:
        """The first moment in [start, end] at which the Wrapper held one of `values`
        (value i held from its write's send to the next write's answer), or None."""
        first: float | None = None
        held_from = -math.inf
        current = self.initial[entity]
        for value, sent, answered in self.writes.get(entity, []):
            if current in values and held_from <= end and answered >= start:
                at = max(start, held_from)
                first = at if first is None else min(first, at)
            current, held_from = value, sent
        if current in values and held_from <= end:
            at = max(start, held_from)
            first = at if first is None else min(first, at)
        return first

    def final(self, entity: Entity) -> str:
        writes = self.writes.get(entity)
        return writes[-1][0] if writes else self.initial[entity]


@dataclass
class Divergence:
    entity: Entity
    since: float  # start of the last right answer before it
    until: float  # end of its last wrong answer
    wrong: int
    wrong_live: int
    healed: bool

    @property
    def heal_s(self) -> float:
        return self.until - self.since


@dataclass
class Verdict:
    divergences: list[Divergence]
    answers: int
    wrong: int
    wrong_live: int
    wrong_live_beyond: int  # wrong LIVE answers older than the bound
    failed: int

    def lasting(self, longer_than_s: float) -> list[Divergence]:
        return [d for d in self.divergences if d.heal_s > longer_than_s]


def judge(observations: Iterable[Observation], truth: TruthLog, *, since: float, bound_s: float) -> Verdict:
    """The divergences of the record (see the module's docstring); a wrong LIVE answer is
    beyond the bound when its end is more than `bound_s` after its divergence began."""
    by_entity: dict[Entity, list[Observation]] = defaultdict(list)
    for o in observations:
        if o.request.entity in truth.initial and o.start >= since:
            by_entity[o.request.entity].append(o)
    divergences: list[Divergence] = []
    answers = wrong = wrong_live = beyond = failed = 0
    for entity, seq in by_entity.items():
        seq.sort(key=lambda o: o.start)
        last_right = since
        open_: Divergence | None = None
        answered: Observation | None = None  # the open divergence's last wrong answer with a value
        for o in seq:
            answers += 1
            right = o.ok and o.value in truth.acceptable(entity, o.start, o.end)
            failed += not o.ok
            if right:
                if open_ is not None:
                    open_.healed = True
                    divergences.append(open_)
                    open_, answered = None, None
                last_right = o.start
                continue
            if open_ is not None and answered is not None and o.ok:
                # between the two answers (the service served one, then the other)
                lo, hi = sorted((answered.end, o.start))
                values = {v for v in (answered.value, o.value) if v is not None}
                agreed = truth.first_held(entity, values, lo, hi)
                if agreed is not None:  # the service may have agreed in between: a new divergence
                    open_.healed = True
                    divergences.append(open_)
                    open_, answered = None, None
                    last_right = agreed
            wrong += 1
            live = o.freshness == "live"
            wrong_live += live
            if open_ is None:
                open_ = Divergence(entity, last_right, o.end, 0, 0, healed=False)
            beyond += live and (o.end - open_.since) > bound_s
            open_.until = max(open_.until, o.end)
            open_.wrong += 1
            open_.wrong_live += live
            if o.ok:
                answered = o
        if open_ is not None:
            divergences.append(open_)
    return Verdict(divergences, answers, wrong, wrong_live, beyond, failed)


@dataclass
class Timeline:
    """What happened during a run, to explain a divergence beyond its bound: the injector's
    moves (time, what, entity; None for a fault of the whole Wrapper) and the verifier's
    passes (start, end, what the pass did)."""

    moves: list[tuple[float, str, Entity | None]] = field(default_factory=list)
    passes: list[tuple[float, float, str]] = field(default_factory=list)

    def move(self, what: str, entity: Entity | None, at: float) -> None:
        self.moves.append((at, what, entity))

    def explain(
        self,
        d: Divergence,
        observations: Iterable[Observation],
        truth: TruthLog,
        *,
        origin: float,
        before_s: float,
    ) -> list[str]:
        """The story of one divergence, times relative to `origin`: the moves on its entity
        and the Wrapper faults from `before_s` before it began to its end, the passes in that
        window, each change of what its readers were answered, and the writes."""
        lo, hi = d.since - before_s, d.until + 1.0
        lines = [
            f"divergence {d.entity}: {d.since - origin:.2f} .. {d.until - origin:.2f} s "
            f"({d.heal_s:.2f} s, {d.wrong} wrong answers, {d.wrong_live} LIVE)"
        ]
        lines += [
            f"  move  {t - origin:8.2f} {what}"
            for t, what, e in self.moves
            if lo <= t <= hi and e in (None, d.entity)
        ]
        lines += [
            f"  pass  {t0 - origin:8.2f} .. {t1 - origin:8.2f} {what}"
            for t0, t1, what in self.passes
            if t1 >= lo and t0 <= hi
        ]
        last: tuple[object, ...] | None = None
        for o in sorted(
            (o for o in observations if o.request.entity == d.entity and lo <= o.start <= hi),
            key=lambda o: o.start,
        ):
            answer = (o.code, o.value, o.freshness, o.source, o.version)
            if answer != last:
                lines.append(f"  read  {o.start - origin:8.2f} {answer}")
                last = answer
        lines += [
            f"  write {sent - origin:8.2f} .. {answered - origin:.2f} {value}"
            for value, sent, answered in truth.writes.get(d.entity, [])
            if lo <= answered and sent <= hi
        ]
        return lines
