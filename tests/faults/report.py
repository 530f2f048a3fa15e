"""Tiny report writers for the soak: a CSV and a hand-written SVG line chart (no matplotlib)."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 800, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [
        ",".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / count
    return [lo + i * step for i in range(count + 1)]


def line_chart_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    markers: Sequence[float] = (),
    marker_label: str = "",
    band: tuple[float, float] | None = None,
    band_label: str = "",
) -> str:
    """An SVG line chart of (x, y) points; vertical dashed `markers` at x positions; an optional
    shaded x-range `band` (e.g. the warm-up)."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.1 or 1.0
    y_lo, y_hi = max(0.0, y_lo - pad), y_hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x_lo) / ((x_hi - x_lo) or 1.0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y_lo) / ((y_hi - y_lo) or 1.0) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    if band is not None:
        bx0, bx1 = sx(max(band[0], x_lo)), sx(min(band[1], x_hi))
        out.append(
            f'<rect x="{bx0:.1f}" y="{TOP}" width="{bx1 - bx0:.1f}" height="{plot_h}" fill="#eeeeee"/>'
        )
        middle = (bx0 + bx1) / 2
        label = escape(band_label)
        out.append(f'<text x="{middle:.1f}" y="{TOP + 14}" text-anchor="middle" fill="#666">{label}</text>')
    for y in _ticks(y_lo, y_hi):
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for x in _ticks(x_lo, x_hi, 10):
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{x:.0f}</text>')
    for i, x in enumerate(markers):
        out.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
            'stroke="#c0392b" stroke-dasharray="4,3"/>'
        )
        if i == 0 and marker_label:
            out.append(
                f'<text x="{sx(x) + 4:.1f}" y="{TOP + 28}" fill="#c0392b">{escape(marker_label)}</text>'
            )
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#2471a3" stroke-width="1.5"/>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def line_chart_png(
    points: Sequence[tuple[float, float]],
    *,
    markers: Sequence[float] = (),
    band: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
) -> bytes:
    """The same chart as a PNG, rasterised here (zlib + struct, no imaging library): plot area,
    horizontal grid at the SVG's y ticks, the line, restart markers, warm-up band. No text:
    the SVG carries the labels."""
    width, height = WIDTH, HEIGHT
    pixels = bytearray(b"\xff" * (width * height * 3))

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            pixels[i : i + 3] = bytes(rgb)

    def line(x0: int, y0: int, x1: int, y1: int, *, rgb: tuple[int, int, int], dash: int = 0) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err, n = dx + dy, 0
        while True:
            if not dash or (n // dash) % 2 == 0:
                put(x0, y0, rgb)
            n += 1
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if y_range is None:
        pad = (max(ys) - min(ys)) * 0.1 or 1.0
        y_range = (max(0.0, min(ys) - pad), max(ys) + pad)
    y_lo, y_hi = y_range
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def sx(x: float) -> int:
        return round(LEFT + (x - x_lo) / ((x_hi - x_lo) or 1.0) * plot_w)

    def sy(y: float) -> int:
        return round(TOP + plot_h - (y - y_lo) / ((y_hi - y_lo) or 1.0) * plot_h)

    if band is not None:
        for x in range(sx(max(band[0], x_lo)), sx(min(band[1], x_hi))):
            for y in range(TOP, TOP + plot_h):
                put(x, y, (238, 238, 238))
    for tick in _ticks(y_lo, y_hi):
        line(LEFT, sy(tick), LEFT + plot_w, sy(tick), rgb=(221, 221, 221))
    for marker in markers:
        line(sx(marker), TOP, sx(marker), TOP + plot_h, rgb=(192, 57, 43), dash=4)
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        for offset in (0, 1):  # 2 px wide
            line(sx(xa), sy(ya) + offset, sx(xb), sy(yb) + offset, rgb=(36, 113, 163))
    for a, b, c, d in ((LEFT, TOP, LEFT + plot_w, TOP), (LEFT, TOP + plot_h, LEFT + plot_w, TOP + plot_h)):
        line(a, b, c, d, rgb=(51, 51, 51))
    line(LEFT, TOP, LEFT, TOP + plot_h, rgb=(51, 51, 51))
    line(LEFT + plot_w, TOP, LEFT + plot_w, TOP + plot_h, rgb=(51, 51, 51))
    raw = b"".join(b"\x00" + bytes(pixels[y * width * 3 : (y + 1) * width * 3]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
