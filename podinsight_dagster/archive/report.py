"""``podrun report``: one self-contained HTML page (inline SVG charts, no scripts, no downloads) about the archive."""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

CHART_W, BAR_H = 640, 22


@dataclass
class ReportData:
    generated_at: str
    deployment: str
    counts: dict[str, int]
    success_by_feed: dict[str, float] = field(default_factory=dict)         # percent
    hours_by_day: dict[str, float] = field(default_factory=dict)
    cost_by_day: dict[str, float] = field(default_factory=dict)
    ceiling_usd: float = 40.0
    attempts_by_host: dict[str, float] = field(default_factory=dict)       # mean download attempts per episode
    rate429_by_host: dict[str, float] = field(default_factory=dict)        # percent
    search_terms: dict[str, dict[str, int]] = field(default_factory=dict)  # term -> month -> hits
    index_stats: dict | None = None


def _day(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d") if ts else None


def gather(services, durations: dict[str, float], index=None) -> ReportData:
    """The report's figures from the checkpoint store, the spend ledger, the metrics and the search index.

    ``durations``: audio seconds per transcribed episode (partition key), from the ``episodes`` view.
    """
    import json

    from podinsight_dagster.store.checkpoints import DOWNLOADED, FAILED, TRANSCRIBED

    episodes = services.checkpoints.episodes()
    ok: Counter[str] = Counter()
    tried: Counter[str] = Counter()
    attempts: dict[str, list[int]] = defaultdict(list)
    hours: dict[str, float] = defaultdict(float)
    for rec in episodes:
        fetched = rec.state in (DOWNLOADED, TRANSCRIBED)
        if fetched or (rec.state == FAILED and rec.failed_stage == "download"):
            tried[rec.feed_slug] += 1
            ok[rec.feed_slug] += fetched
            host = urlsplit(rec.enclosure_url or "").hostname or "?"
            attempts[host].append(max(1, rec.attempts))
        day = _day(rec.transcribed_at) if rec.state == TRANSCRIBED else None
        if day:
            hours[day] += durations.get(rec.partition_key, 0.0) / 3600
    cost: dict[str, float] = defaultdict(float)
    for entry in services.budget.ledger.entries(0.0):
        cost[_day(entry.ts)] += entry.usd
    per_host = {json.loads(d).get("hostname", "?"): v for d, v in services.metrics.latest("PerHost429").items()}
    terms = {}
    if index is not None:
        for term, _n in index.top_searches(5):
            if term:
                terms[term] = index.hits_by_month(term)
    return ReportData(
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        deployment=services.settings.deployment, counts=services.checkpoints.counts(),
        success_by_feed={f: 100.0 * ok[f] / n for f, n in sorted(tried.items())},
        hours_by_day=dict(sorted(hours.items())), cost_by_day=dict(sorted(cost.items())),
        ceiling_usd=services.budget.ceiling_usd,
        attempts_by_host=dict(sorted(((h, sum(v) / len(v)) for h, v in attempts.items()), key=lambda kv: -kv[1])[:10]),
        rate429_by_host=dict(sorted(per_host.items(), key=lambda kv: -kv[1])[:10]),
        search_terms=terms, index_stats=index.stats() if index is not None else None)


# ---------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(items: dict[str, float], unit: str, limit: float | None = None, limit_label: str = "",
              fmt: str = "{:.1f}") -> str:
    """Horizontal bars, one per label; an optional dashed line at ``limit`` (a target or a ceiling)."""
    if not items:
        return '<p class="empty">no data yet</p>'
    label_w, pad = 190, 60
    top = max([*items.values(), limit or 0.0]) or 1.0
    scale = (CHART_W - label_w - pad) / top
    h = BAR_H * len(items) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{h}" role="img">']
    for i, (label, value) in enumerate(items.items()):
        y = i * BAR_H + 4
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label[:30])}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{max(1.0, value * scale):.1f}" height="{BAR_H - 6}" '
                     f'class="bar"><title>{_e(label)}: {fmt.format(value)} {_e(unit)}</title></rect>'
                     f'<text x="{label_w + value * scale + 4:.1f}" y="{y + 15}">{fmt.format(value)}</text>')
    if limit is not None:
        x = label_w + limit * scale
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{h - 18}" class="limit"/>'
                     f'<text x="{x:.1f}" y="{h - 4}" text-anchor="middle" class="limit-label">'
                     f'{_e(limit_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def column_chart(series: dict[str, float], unit: str, limit: float | None = None, limit_label: str = "",
                 fmt: str = "{:.2f}") -> str:
    """Vertical columns over time (days or months, in order); an optional dashed line at ``limit``."""
    if not series:
        return '<p class="empty">no data yet</p>'
    h, base, left = 220, 190, 50
    n = len(series)
    col = min(60.0, (CHART_W - left - 10) / n)
    top = max([*series.values(), limit or 0.0]) or 1.0
    scale = (base - 20) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{h + 20}" role="img">',
             f'<line x1="{left}" y1="{base}" x2="{CHART_W}" y2="{base}" class="axis"/>']
    for i, (label, value) in enumerate(series.items()):
        x = left + i * col
        bh = value * scale
        parts.append(f'<rect x="{x + 2:.1f}" y="{base - bh:.1f}" width="{col - 4:.1f}" height="{max(bh, 0.5):.1f}" '
                     f'class="bar"><title>{_e(label)}: {fmt.format(value)} {_e(unit)}</title></rect>'
                     f'<text x="{x + col / 2:.1f}" y="{base - bh - 4:.1f}" text-anchor="middle">'
                     f'{fmt.format(value)}</text>')
        if n <= 16 or i % max(1, n // 12) == 0:
            parts.append(f'<text x="{x + col / 2:.1f}" y="{base + 16}" text-anchor="middle" class="tick">'
                         f'{_e(label[5:] if len(label) == 10 else label)}</text>')
    if limit is not None:
        y = base - limit * scale
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{CHART_W}" y2="{y:.1f}" class="limit"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="limit-label">'
                     f'{_e(limit_label)}</text>')
    parts.append(f'<text x="{left}" y="{h + 14}" class="tick">{_e(unit)}</text></svg>')
    return "".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:720px;color:#222}
h1{font-size:1.5em}h2{font-size:1.1em;margin-top:2em}
svg text{font:12px system-ui,sans-serif;fill:#333}.bar{fill:#4e79a7}.axis{stroke:#999}
.limit{stroke:#e15759;stroke-dasharray:5 4;stroke-width:2}.limit-label{fill:#e15759}
.tick{fill:#666}.empty{color:#888;font-style:italic}.note{color:#666;font-size:12px}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}
"""


def render(data: ReportData) -> str:
    """The page: every chart inline, no script, no external file; opens from disk without a server."""
    counts = " · ".join(f"{k}: {v}" for k, v in data.counts.items())
    sections = [
        ("Download success rate per feed",
         bar_chart(data.success_by_feed, "%", limit=98.0, limit_label="target 98%"),
         "Episodes downloaded / attempted; the run-book's target is above 98%."),
        ("Hours transcribed per day", column_chart(data.hours_by_day, "hours of audio"), None),
        ("Cost per day against the ceiling",
         column_chart(data.cost_by_day, "USD", limit=data.ceiling_usd, limit_label=f"${data.ceiling_usd:g}"),
         "Every transcription's cost from the spend ledger (UTC days)."),
        ("Slowest hosts", bar_chart(data.attempts_by_host, "attempts per episode", fmt="{:.2f}"),
         "Mean download attempts per episode by enclosure host: every retry is a timeout, a reset or a 429."),
        ("429 responses per host", bar_chart(data.rate429_by_host, "%", limit=1.0, limit_label="1%", fmt="{:.2f}"),
         "PerHost429, the latest value per host; the run-book's target is below 1%."),
    ]
    body = [f"<h1>Pod-Insight archive</h1><p>{_e(data.generated_at)} · deployment {_e(data.deployment)}"
            f"<br>{_e(counts)}</p>"]
    for title, chart, note in sections:
        body.append(f"<section><h2>{_e(title)}</h2>{chart}"
                    + (f'<p class="note">{_e(note)}</p>' if note else "") + "</section>")
    terms = ['<section><h2>Top search terms: hits over time</h2>']
    if data.search_terms:
        for term, months in data.search_terms.items():
            terms.append(f"<h3>{_e(term)}</h3>"
                         + column_chart({k: float(v) for k, v in months.items()}, "matching passages per month "
                                        "the episode was published", fmt="{:.0f}"))
    else:
        terms.append('<p class="empty">no searches yet (podrun search logs each one)</p>')
    if data.index_stats:
        s = data.index_stats
        terms.append(f'<p class="note">index: {s["episodes"]} episodes, {s["passages"]} passages, '
                     f'{s["feeds"]} feeds</p>')
    body.append("".join(terms) + "</section>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pod-Insight archive report</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def episode_durations(con) -> dict[str, float]:
    return {pk: d or 0.0 for pk, d in con.execute("SELECT partition_key, duration_sec FROM episodes").fetchall()}


