"""Pictures of the benchmark results, drawn from the JSON in docs/bench-results/.

    .venv/bin/python -m hybridcache_dev.bench.plots [docs/bench-results]

writes, beside the JSON, PNG and SVG of:
  * latency.{png,svg} — p50 and p99 of the floor (TCP, Redis, an empty gRPC call), cache hits
    and misses through the service;
  * latency-cdf.{png,svg} — the same figures' latency distributions, as CDFs;
  * propagation.{png,svg} — change propagation p50 / p99 against the number of subscribers
    (Redis delivery, applied in the replica, delivered on WatchChanges);
  * propagation-cdf.{png,svg} — the propagation CDFs, a panel per number of subscribers;
  * strategy.{png,svg} — full replication, hybrid and on-demand side by side (storage,
    network, read latency, Wrapper calls per 1,000 reads, staleness).

The CDFs come from each figure's `quantiles_us` (bench/stats.py, QUANTILE_LEVELS). Results
written before it was kept have none: their curves are drawn through p50 and p99 only, as
markers, and their legend says so. The same JSON draws the same bytes (SVG ids salted by a
constant, no date), so redrawn pictures only change in git when the results do.
matplotlib is a bench-only dependency (the `bench` extra); `hybridcache bench` draws these
when it is installed and says so when it is not.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridcache_dev.bench.stats import quantiles_from_json

STRATEGIES = ("full", "hybrid", "on-demand")
STRATEGY_LABELS = {"full": "full replication", "hybrid": "hybrid", "on-demand": "on-demand only"}
LATENCY_FIGURES = (  # (group, figure, label): floor first, then the service
    ("redis", "tcp.round-trip.x1", "floor: TCP round trip"),
    ("redis", "redis.get.x1", "floor: Redis GET"),
    ("service", "floor.empty.x1", "floor: empty gRPC call (bare server)"),
    ("service", "GetCreditCost.hit.x1", "hit: GetCreditCost"),
    ("service", "CheckPermission.hit.x1", "hit: CheckPermission"),
    ("service", "GetUserProfile.hit.x1", "hit: GetUserProfile"),
    ("service", "wrapper5ms.direct-get.x16", "floor: Wrapper (5 ms) direct, 16 in flight"),
    ("service", "GetUserProfile.miss.wrapper5ms.x16", "miss: GetUserProfile, 16 in flight"),
)
PROPAGATION_SERIES = (
    ("redis.pubsub", "Redis pub/sub delivery (floor)"),
    ("applied", "applied in the replica"),
    ("watch", "delivered on WatchChanges"),
)


# Fixed instead of matplotlib's per-run uuid4: SVG element ids are then the same on every draw.
SVG_HASH_SALT = "hybridcache-bench"
CDF_TICKS = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
LATENCY_COLORS = {"floor": ("#444444", "#7f7f7f", "#a6a6a6", "#c8c8c8"),
                  "hit": ("#1f5fbf", "#3d7ee8", "#7fa9f0"), "miss": ("#d9822b",)}  # fmt: skip


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 (optional: the `bench` extra)

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def load(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in directory.glob("*.json")}


def _figures(groups: dict[str, dict[str, Any]], group: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in groups.get(group, {}).get("figures", [])}


def _save(fig: Any, directory: Path, name: str) -> list[Path]:
    paths = [directory / f"{name}.png", directory / f"{name}.svg"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})  # reproducible SVG
    return paths


def plot_latency(plt: Any, groups: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    rows = [
        (label, fig)
        for group, name, label in LATENCY_FIGURES
        if (fig := _figures(groups, group).get(name)) is not None
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r[1]["p99_us"] / 1000 for r in rows], 0.4, label="p99", color="#e8a33d")
    ax.barh([i - 0.2 for i in y], [r[1]["p50_us"] / 1000 for r in rows], 0.4, label="p50", color="#3d7ee8")
    ax.set_yticks(list(y), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title("Read latency: the floor, cache hits and misses (one call in flight unless said)")
    ax.legend(loc="upper right")
    ax.grid(axis="x", which="both", alpha=0.3)
    return _save(fig, directory, "latency")


def plot_propagation(plt: Any, groups: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    figures = _figures(groups, "propagation")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for prefix, label in PROPAGATION_SERIES:
        points = sorted(
            (int(name.rsplit(".subs", 1)[1]), f)
            for name, f in figures.items()
            if name.startswith(prefix + ".subs")
        )
        if not points:
            continue
        subs = [p[0] for p in points]
        line = ax.plot(subs, [p[1]["p50_us"] / 1000 for p in points], marker="o", label=f"{label}: p50")[0]
        ax.plot(subs, [p[1]["p99_us"] / 1000 for p in points], marker="^", linestyle="--",
                color=line.get_color(), label=f"{label}: p99")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("WatchChanges subscribers")
    ax.set_ylabel("publish → seen, milliseconds (log)")
    ax.set_title("Change propagation against the number of subscribers")
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return _save(fig, directory, "propagation")


def cdf_points(figure: dict[str, Any]) -> tuple[list[tuple[float, float]], bool]:
    """(fraction of calls, ms) to draw a figure's CDF through, and whether it is the whole
    distribution (False: results without `quantiles_us`, only p50 and p99 are known)."""
    kept = quantiles_from_json(figure)
    if kept:
        return [(level / 100, us / 1000) for level, us in kept], True
    return [(0.5, figure["p50_us"] / 1000), (0.99, figure["p99_us"] / 1000)], False


def _cdf_axes(ax: Any, xlabel: str) -> None:
    from matplotlib import ticker  # noqa: PLC0415

    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_ylim(0.0007, 0.9993)
    ax.yaxis.set_major_locator(ticker.FixedLocator(list(CDF_TICKS)))
    ax.yaxis.set_major_formatter(ticker.FixedFormatter([f"{t * 100:g}%" for t in CDF_TICKS]))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(xlabel)
    ax.grid(which="major", alpha=0.3)


def _log_ticks(ax: Any) -> None:
    """Milliseconds written plainly (0.5, 1, 2, not 5x10^-1); 1-2-5 steps when the data spans
    under three decades (often under one), else powers of ten. Call after drawing; shared
    axes share it."""
    from matplotlib import ticker  # noqa: PLC0415

    low, high = ax.get_xlim()
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) < 3 else (1.0,)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _draw_cdf(ax: Any, figure: dict[str, Any], label: str, **style: Any) -> None:
    points, whole = cdf_points(figure)
    ys, xs = zip(*points, strict=True)
    if whole:
        ax.plot(xs, ys, label=label, linewidth=1.6, **style)
    else:  # two known points, not a curve: markers, joined faintly
        ax.plot(xs, ys, label=f"{label} (p50, p99 only)", **{**style, "linestyle": ":", "marker": "o"})


def plot_latency_cdf(plt: Any, groups: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    used: dict[str, int] = {}
    for group, name, label in LATENCY_FIGURES:
        figure = _figures(groups, group).get(name)
        if figure is None:
            continue
        kind = label.split(":", 1)[0]
        palette = LATENCY_COLORS[kind]
        color = palette[used.get(kind, 0) % len(palette)]
        used[kind] = used.get(kind, 0) + 1
        _draw_cdf(ax, figure, label, color=color, linestyle="--" if kind == "floor" else "-")
    _cdf_axes(ax, "milliseconds (log scale)")
    _log_ticks(ax)
    ax.set_ylabel("share of calls at or below (logit scale)")
    ax.set_title("Read latency distributions: the floor, cache hits and misses")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, directory, "latency-cdf")


def plot_propagation_cdf(plt: Any, groups: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    figures = _figures(groups, "propagation")
    counts = sorted({int(name.rsplit(".subs", 1)[1]) for name in figures if ".subs" in name})
    fig, axes = plt.subplots(
        1, len(counts), figsize=(4.2 * len(counts), 4.5), sharex=True, sharey=True, squeeze=False
    )
    for ax, count in zip(axes[0], counts, strict=True):
        for prefix, label in PROPAGATION_SERIES:
            figure = figures.get(f"{prefix}.subs{count}")
            if figure is not None:
                _draw_cdf(ax, figure, label)
        _cdf_axes(ax, "publish → seen, milliseconds (log)")
        ax.set_title(f"{count} subscriber{'s' if count != 1 else ''}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    _log_ticks(axes[0][0])
    axes[0][0].set_ylabel("share of changes seen by then (logit scale)")
    fig.suptitle(
        "Change propagation distributions: Redis PUBLISH → applied, or → the last subscriber's receive"
    )
    fig.tight_layout()
    return _save(fig, directory, "propagation-cdf")


STRATEGY_PANELS: Sequence[tuple[str, str, Any]] = (
    ("storage (RSS growth), MB", "storage_bytes", lambda v: v / 1e6),
    ("network (Wrapper + Redis), MB", "network_bytes", lambda v: v / 1e6),
    ("read p50, ms", "read_p50_us", lambda v: v / 1000),
    ("read p99, ms", "read_p99_us", lambda v: v / 1000),
    ("Wrapper calls per 1,000 reads", "wrapper_calls_per_1000_reads", lambda v: v),
    ("staleness p50, ms", "staleness_p50_ms", lambda v: v),
)


def plot_strategy(plt: Any, groups: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    values = groups["strategy"]["values"]
    colors = {"full": "#7f7f7f", "hybrid": "#3d7ee8", "on-demand": "#e8a33d"}
    fig, axes = plt.subplots(1, len(STRATEGY_PANELS), figsize=(3 * len(STRATEGY_PANELS), 3.6))
    for ax, (title, key, scale) in zip(axes, STRATEGY_PANELS, strict=True):
        heights = [scale(values[s][key]) for s in STRATEGIES]
        bars = ax.bar(
            [STRATEGY_LABELS[s] for s in STRATEGIES], heights, color=[colors[s] for s in STRATEGIES]
        )
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle("Strategies compared on the same workload (docs/BENCHMARKS.md, strategy)")
    fig.tight_layout()
    return _save(fig, directory, "strategy")


def write_plots(directory: Path) -> list[Path]:
    """Draw every picture whose groups are present in `directory`; return the files written."""
    plt = _pyplot()
    groups = load(directory)
    written: list[Path] = []
    with plt.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
        if any(group in groups for group, _, _ in LATENCY_FIGURES):
            written += plot_latency(plt, groups, directory)
            written += plot_latency_cdf(plt, groups, directory)
        if "propagation" in groups:
            written += plot_propagation(plt, groups, directory)
            written += plot_propagation_cdf(plt, groups, directory)
        if "strategy" in groups and all(s in groups["strategy"]["values"] for s in STRATEGIES):
            written += plot_strategy(plt, groups, directory)
        plt.close("all")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "docs/bench-results")
    for path in write_plots(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
