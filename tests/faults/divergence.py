"""Divergence, judged from the record: what the Wrapper held when (the truth log of every
write the scenario made), and how long each entity's answers differed from it.

An answer is right when its value is one the Wrapper held at some moment of the answer's
flight (a write in progress counts both ways). A *divergence* is a run of consecutive
wrong answers for one entity; its heal time runs from the start of the last right answer
before it (the latest moment the entity is known to have been right: an overestimate by
at most one sampling interval) to the end of its last wrong answer. A divergence still
open at the end of the record never healed.
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
        for o in seq:
            answers += 1
            right = o.ok and o.value in truth.acceptable(entity, o.start, o.end)
            failed += not o.ok
            if right:
                if open_ is not None:
                    open_.healed = True
                    divergences.append(open_)
                    open_ = None
                last_right = o.start
                continue
            wrong += 1
            live = o.freshness == "live"
            wrong_live += live
            beyond += live and (o.end - last_right) > bound_s
            if open_ is None:
                open_ = Divergence(entity, last_right, o.end, 0, 0, healed=False)
            open_.until = o.end
            open_.wrong += 1
            open_.wrong_live += live
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
