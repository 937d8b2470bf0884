"""Server-rendered SVG charts for the staff panel: numbers only, no user text, so the
markup is built here and marked safe."""

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 480, 140, 28
COLOURS = {"supabase": "#3ecf8e", "websocket": "#4aa3ff"}


def _scale(value: float, top: float) -> float:
    return HEIGHT - PAD - (value / top) * (HEIGHT - 2 * PAD) if top else HEIGHT - PAD


def series_svg(
    *,
    title: str,
    series: dict[str, list[dict]],
    key: str,
    buckets: int,
    threshold: float | None,
    threshold_label: str,
    unit: str,
    scale: float = 1.0,
) -> SafeString:
    """One line per transport over the window's buckets, and the threshold as a dashed
    red line, so staff see how close each path is to a rollback."""
    values = [
        point[key] * scale
        for points in series.values()
        for point in points
        if point[key] is not None
    ]
    top = max([*values, (threshold or 0) * scale * 1.25, 1e-9]) * 1.1
    step = (WIDTH - 2 * PAD) / max(buckets - 1, 1)
    parts = [
        f'<svg class="rollout-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{title}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{PAD}" y="14" class="title">{title}</text>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'class="axis" stroke="#888"/>',
        f'<text x="{PAD - 4}" y="{PAD}" text-anchor="end" class="tick">{top:.3g}</text>',
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end" class="tick">0</text>',
    ]
    if threshold is not None:
        y = _scale(threshold * scale, top)
        parts.append(
            f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" class="threshold" '
            f'stroke="#ff5c5c" stroke-dasharray="5 4"/>'
            f'<text x="{WIDTH - PAD}" y="{y - 4:.1f}" text-anchor="end" class="threshold-label" '
            f'fill="#ff5c5c">{threshold_label} {threshold * scale:.3g}{unit}</text>'
        )
    for index, (transport, points) in enumerate(sorted(series.items())):
        coords = [
            f"{PAD + point['bucket'] * step:.1f},{_scale(point[key] * scale, top):.1f}"
            for point in points
            if point[key] is not None
        ]
        colour = COLOURS.get(transport, "#ccc")
        if coords:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{" ".join(coords)}" data-transport="{transport}"/>'
            )
        parts.append(
            f'<text x="{PAD + 90 * index}" y="{HEIGHT - 8}" fill="{colour}" class="legend">'
            f"{transport}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (numbers and fixed labels only)
