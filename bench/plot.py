#!/usr/bin/env python3
"""Plots one vecgpu-bench report (the JSON written by Runner::Report) as PNGs plus a summary.

    .venv/bin/python bench/plot.py report.json --out plots/

Writes into --out:
  <scenario>_throughput.png  closed-loop search scenarios with more than one `clients` value:
                             requests/s (and p50/p99 latency) against clients, a line per target
  <scenario>_latency.png     open-loop scenarios: p50/p99 latency (and achieved requests/s)
                             against offered load, a line per target
  <scenario>_recall.png      nprobe/efSearch sweeps: recall@k against queries/s, points
                             labelled with the parameter
  <scenario>_batch.png       batch-* scenarios (and any closed search scenario with more than
                             one `batch` value): queries/s against batch, a line per target and
                             encoding
  cluster_gateway.png        reports with targets "gateway" and "direct" (bench/run_suite.sh
                             cluster, merged by bench/merge_reports.py): p50/p99 latency and
                             requests/s of each point through vecgpu gateway and against its
                             agent directly, with the added p50 and the throughput ratio
  summary.md                 Markdown tables (also printed): every search point, every add/mixed
                             point, failed preparations, the vecgpu/FAISS and vecgpu/FAISSx
                             ratios of the latency-flat and concurrency-flat scenarios,
                             gRPC against ZeroMQ (target grpc beside vecgpu) where both ran, and
                             gateway against direct (added p50 in us, throughput ratio, against
                             the targets) where both ran.

Whatever the report lacks (scenarios, targets, recall, ratios) is skipped, not an error.
"""
import argparse
import collections
import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

TARGET_ORDER = ["vecgpu", "grpc", "faiss", "faissx", "echo", "direct", "gateway"]
TARGET_LABEL = {"vecgpu": "vecgpu", "grpc": "vecgpu gRPC (Vald API)", "faiss": "FAISS (in-process)",
                "faissx": "FAISSx server", "echo": "ZeroMQ echo (transport floor)",
                "direct": "agent directly",
                "gateway": "through vecgpu gateway"}
TARGET_COLOR = {"vecgpu": "tab:green", "grpc": "tab:purple", "faiss": "tab:blue",
                "faissx": "tab:red", "echo": "tab:gray", "direct": "tab:green",
                "gateway": "tab:orange"}
EXTRA_COLORS = ["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
ENCODING_STYLE = {"list": "-", "binary": "--", "protobuf": "-."}
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
SWEEP_PARAMS = ["nprobe", "efSearch"]
RATIO_SCENARIOS = ["latency-flat", "concurrency-flat"]
LOG_Y_SPREAD = 30.0  # log y axis when the largest value is more than this times the smallest
# The gateway's targets (issue [2/5]): one agent behind vecgpu gateway adds at most this much to
# the p50 of a one-query search on loopback (judged with one client: with more, p50 holds
# queueing), and serves at least this share of the agent's requests/s when called directly
# (judged with more than one client: with one, requests/s is only 1 / latency).
GATEWAY_ADDED_P50_US = 150.0
GATEWAY_THROUGHPUT_SHARE = 0.8
POINT_KEYS = ("scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch", "encoding")


# ---------------------------------------------------------------------------------------------
# Reading the report


def num(v):
    """A finite float, or None for null/missing/non-numeric/NaN values."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def latency(entry, key):
    lat = entry.get("latency_ms")
    return num(lat.get(key)) if isinstance(lat, dict) else None


def ok_entries(report):
    """Measured entries (not failed preparations), as dicts."""
    out = []
    for e in report.get("results") or []:
        if isinstance(e, dict) and "error" not in e and num(e.get("throughput_rps")) is not None:
            out.append(e)
    return out


def by_scenario(entries):
    groups = collections.OrderedDict()
    for e in entries:
        groups.setdefault(e.get("scenario", "?"), []).append(e)
    return groups


def target_rank(t):
    return (TARGET_ORDER.index(t) if t in TARGET_ORDER else len(TARGET_ORDER), str(t))


def distinct(entries, key):
    return sorted({e.get(key) for e in entries if e.get(key) is not None}, key=lambda v: (str(type(v)), v))


def sweep_param(e):
    for p in SWEEP_PARAMS:
        if e.get(p) is not None:
            return p, e[p]
    return None, None


def fmt_count(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"


def fmt_tick(v, _=None):
    """Axis tick labels: 0.01, 0.5, 10, 1000, 10k, 2M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def fmt_ms(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(v):
    v = num(v)
    if v is None:
        return "-"
    if v >= 10:
        return f"{v:.1f}x"
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def fmt_recall(v):
    v = num(v)
    return "-" if v is None else f"{v:.3f}"


# ---------------------------------------------------------------------------------------------
# Titles, series and axes


def machine_line(report):
    m = report.get("machine") or {}
    parts = []
    if m.get("cpus"):
        parts.append(f"{m['cpus']} CPUs")
    if m.get("cpu_model"):
        parts.append(str(m["cpu_model"]))
    if m.get("gpu") and m.get("gpu") != "none":
        parts.append(f"GPU {m['gpu']}")
    if m.get("hostname"):
        parts.append(f"host {m['hostname']}")
    commit = report.get("commit") or "unknown"
    parts.append(f"commit {commit}")
    return ", ".join(parts)


def title(report, scenario, entries, what):
    e = entries[0]
    data = str(e.get("dataset", "?"))
    n, d = e.get("n"), e.get("d")
    if n is not None and d is not None:
        data += f" ({n:,} x {d})"
    index = e.get("index_type") or e.get("index")
    head = f"{scenario}: {what}"
    line2 = f"dataset {data}" + (f", index {index}" if index else "") + f", k={e.get('k', '?')}"
    if e.get("mode") == "closed" or e.get("mode") is None:
        clients = distinct(entries, "clients")
        if len(clients) == 1:
            line2 += f", {clients[0]} client{'s' if clients[0] != 1 else ''}"
    return f"{head}\n{line2}\n{machine_line(report)}"


class Colors:
    """A stable colour per target (and a fallback cycle for unknown ones)."""

    def __init__(self):
        self.extra = {}

    def __call__(self, target):
        if target in TARGET_COLOR:
            return TARGET_COLOR[target]
        if target not in self.extra:
            self.extra[target] = EXTRA_COLORS[len(self.extra) % len(EXTRA_COLORS)]
        return self.extra[target]


def series(entries, vary, always=()):
    """Groups entries into lines: one per target, and per any other key (encoding, batch,
    clients, sweep parameter) that varies in the scenario and is not the x axis `vary`;
    keys in `always` are named in the labels even when they do not vary."""
    split = [k for k in ("encoding", "batch", "clients", "offered_rps", *SWEEP_PARAMS)
             if k != vary and (k in always or len(distinct(entries, k)) > 1)]
    groups = collections.OrderedDict()
    for e in sorted(entries, key=lambda e: (target_rank(e.get("target")),
                                            *[str(e.get(k)) for k in split])):
        key = (e.get("target"),) + tuple(e.get(k) for k in split)
        groups.setdefault(key, []).append(e)
    out = []
    for key, es in groups.items():
        label = TARGET_LABEL.get(key[0], str(key[0]))
        extras = [f"{k}={v}" if k != "encoding" else str(v) for k, v in zip(split, key[1:])]
        if extras:
            label += " (" + ", ".join(extras) + ")"
        enc = dict(zip(split, key[1:])).get("encoding", es[0].get("encoding", "list"))
        out.append((key[0], enc, label, es))
    return out


def spread_needs_log(values):
    vals = [v for v in values if v is not None and v > 0]
    return len(vals) >= 2 and max(vals) / min(vals) > LOG_Y_SPREAD


def setup_log2_x(ax, xs):
    ax.set_xscale("log", base=2)
    ticks = sorted({x for x in xs if x is not None and x > 0})
    if ticks:
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def setup_y(ax, values, label, force_log=False):
    ax.set_ylabel(label)
    if force_log or spread_needs_log(values):
        if any(v is not None and v > 0 for v in values):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
            return
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(fmt_tick))


def points(es, xkey, yfun, positive):
    """(x, y) pairs sorted by x, dropping missing values (and non-positive ones on log axes)."""
    pts = []
    for e in es:
        x, y = num(e.get(xkey)) if isinstance(xkey, str) else xkey(e), yfun(e)
        if x is None or y is None or (positive and (x <= 0 or y <= 0)):
            continue
        pts.append((x, y, e))
    pts.sort(key=lambda p: p[0])
    return pts


def tidy_log_axes(fig):
    """Base-10 log axes spanning less than about a decade get labelled 2/3/5 minor ticks in plain
    numbers (matplotlib would otherwise print few or no labels, in 4x10^0 notation)."""
    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log" or getattr(axis.get_transform(), "base", 10) != 10:
                continue
            lo, hi = sorted(limits)
            if lo > 0 and hi / lo < 30:
                subs = (2.0, 3.0, 5.0) if hi / lo > 6 else (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
                axis.set_minor_locator(LogLocator(base=10, subs=subs))
                axis.set_minor_formatter(FuncFormatter(fmt_tick))
            else:
                axis.set_minor_formatter(NullFormatter())


def finish(fig, path):
    tidy_log_axes(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mark_errors(ax, pts):
    """A red ring around points whose run had failed requests."""
    bad = [(x, y) for x, y, e in pts if (num(e.get("errors")) or 0) > 0]
    if bad:
        ax.scatter([b[0] for b in bad], [b[1] for b in bad], s=160, facecolors="none",
                   edgecolors="red", linewidths=1.5, zorder=5)
        return True
    return False


def error_note(ax, any_errors):
    if any_errors:
        ax.text(0.99, 0.99, "red ring: run had failed requests", transform=ax.transAxes,
                ha="right", va="top", fontsize=7, color="red")


# ---------------------------------------------------------------------------------------------
# The four kinds of plot


def is_search(e):
    return e.get("op", "search") == "search"


def plot_concurrency(report, scenario, entries, out):
    """Throughput (and latency) against clients, one line per target."""
    colors, lines = Colors(), series(entries, "clients")
    fig, (ax, axl) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    all_y, lat_y, any_err = [], [], False
    for i, (target, enc, label, es) in enumerate(lines):
        pts = points(es, "clients", lambda e: num(e.get("throughput_rps")), True)
        if not pts:
            continue
        c, ls = colors(target), ENCODING_STYLE.get(enc, ":")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=MARKERS[i % len(MARKERS)],
                color=c, label=label)
        all_y += [p[1] for p in pts]
        any_err |= mark_errors(ax, pts)
        for key, lst in (("p50", "-"), ("p99", "--")):
            lp = points(es, "clients", lambda e, key=key: latency(e, key), True)
            if not lp:
                continue
            axl.plot([p[0] for p in lp], [p[1] for p in lp], lst, marker=MARKERS[i % len(MARKERS)],
                     color=c, label=f"{label} {key}", markersize=4)
            lat_y += [p[1] for p in lp]
    if not all_y:
        plt.close(fig)
        return None
    setup_log2_x(ax, [num(e.get("clients")) for e in entries])
    setup_y(ax, all_y, "requests/s")
    ax.set_xlabel("concurrent clients (closed loop, one request in flight each)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    error_note(ax, any_err)
    ax.set_title("throughput", fontsize=10)
    setup_log2_x(axl, [num(e.get("clients")) for e in entries])
    setup_y(axl, lat_y, "latency (ms)", force_log=True)
    axl.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
    axl.set_xlabel("concurrent clients")
    axl.grid(True, which="both", alpha=0.3)
    axl.legend(fontsize=7)
    axl.set_title("latency p50 (solid) / p99 (dashed)", fontsize=10)
    fig.suptitle(title(report, scenario, entries, "throughput against concurrency"), fontsize=10)
    return finish(fig, out / f"{scenario}_throughput.png")


def plot_open_loop(report, scenario, entries, out):
    """p50/p99 latency and achieved throughput against offered load, one colour per target."""
    colors, lines = Colors(), series(entries, "offered_rps")
    fig, (ax, axt) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    lat_y, any_err, drew = [], False, False
    for i, (target, enc, label, es) in enumerate(lines):
        c, m = colors(target), MARKERS[i % len(MARKERS)]
        for key, ls in (("p50", "-"), ("p99", "--")):
            pts = points(es, "offered_rps", lambda e, key=key: latency(e, key), True)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=m, color=c,
                    label=f"{label} {key}")
            lat_y += [p[1] for p in pts]
            any_err |= mark_errors(ax, pts)
            drew = True
        tp = points(es, "offered_rps", lambda e: num(e.get("throughput_rps")), True)
        if tp:
            axt.plot([p[0] for p in tp], [p[1] for p in tp], "-", marker=m, color=c, label=label)
    if not drew:
        plt.close(fig)
        return None
    rates = [num(e.get("offered_rps")) for e in entries]
    setup_log2_x(ax, rates)
    setup_y(ax, lat_y, "latency (ms), measured from the scheduled start", force_log=True)
    ax.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
    ax.set_xlabel("offered load (requests/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    error_note(ax, any_err)
    ax.set_title("latency p50 (solid) / p99 (dashed)", fontsize=10)
    setup_log2_x(axt, rates)
    ok_rates = sorted(r for r in rates if r and r > 0)
    if ok_rates:
        axt.plot(ok_rates, ok_rates, ":", color="grey", label="offered")
    axt.set_yscale("log", base=2)
    axt.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
    axt.set_ylabel("achieved requests/s")
    axt.set_xlabel("offered load (requests/s)")
    axt.grid(True, which="both", alpha=0.3)
    axt.legend(fontsize=8)
    axt.set_title("achieved throughput", fontsize=10)
    clients = distinct(entries, "clients")
    what = "latency against offered load (open loop"
    what += f", {clients[0]} clients)" if len(clients) == 1 else ")"
    fig.suptitle(title(report, scenario, entries, what), fontsize=10)
    return finish(fig, out / f"{scenario}_latency.png")


def plot_recall(report, scenario, entries, out):
    """recall@k against queries/s, points labelled by nprobe / efSearch."""
    param = next((p for p in SWEEP_PARAMS if any(e.get(p) is not None for e in entries)), None)
    colors, lines = Colors(), series(entries, param)
    fig, ax = plt.subplots(figsize=(9, 6))
    xs, drew = [], False
    for i, (target, enc, label, es) in enumerate(lines):
        pts = points(es, "queries_per_s", lambda e: num(e.get("recall_at_k")), True)
        pts.sort(key=lambda p: num(p[2].get(param)) or 0)
        if not pts:
            continue
        c = colors(target)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ENCODING_STYLE.get(enc, ":"),
                marker=MARKERS[i % len(MARKERS)], color=c, label=label)
        for x, y, e in pts:
            ax.annotate(f"{param}={e.get(param)}" if param else "", (x, y), textcoords="offset points",
                        xytext=(5, -11 if i % 2 else 5), fontsize=7, color=c)
        xs += [p[0] for p in pts]
        drew = True
    if not drew:
        plt.close(fig)
        return None
    if spread_needs_log(xs):
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(fmt_tick))
    ax.set_xlabel("queries/s")
    k = entries[0].get("k", "k")
    ax.set_ylabel(f"recall@{k}")
    lo = min(p for p in (num(e.get("recall_at_k")) for e in entries) if p is not None)
    ax.set_ylim(max(0.0, lo - 0.05), 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    what = f"recall against throughput over {param or 'parameter'}"
    fig.suptitle(title(report, scenario, entries, what), fontsize=10)
    return finish(fig, out / f"{scenario}_recall.png")


def plot_batch(report, scenario, entries, out):
    """queries/s (and per-request latency) against batch, one line per target and encoding."""
    colors, lines = Colors(), series(entries, "batch", always=("encoding",))
    fig, (ax, axl) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    all_y, lat_y, any_err = [], [], False
    for i, (target, enc, label, es) in enumerate(lines):
        pts = points(es, "batch", lambda e: num(e.get("queries_per_s")), True)
        if not pts:
            continue
        c, ls, m = colors(target), ENCODING_STYLE.get(enc, ":"), MARKERS[i % len(MARKERS)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=m, color=c, label=label)
        all_y += [p[1] for p in pts]
        any_err |= mark_errors(ax, pts)
        lp = points(es, "batch", lambda e: latency(e, "p50"), True)
        if lp:
            axl.plot([p[0] for p in lp], [p[1] for p in lp], ls, marker=m, color=c, label=label)
        lat_y += [p[1] for p in lp]
    if not all_y:
        plt.close(fig)
        return None
    setup_log2_x(ax, [num(e.get("batch")) for e in entries])
    setup_y(ax, all_y, "queries/s (requests/s x batch)")
    ax.set_xlabel("queries per request (batch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    error_note(ax, any_err)
    ax.set_title("queries/s", fontsize=10)
    setup_log2_x(axl, [num(e.get("batch")) for e in entries])
    setup_y(axl, lat_y, "p50 latency per request (ms)", force_log=True)
    axl.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
    axl.set_xlabel("queries per request (batch)")
    axl.grid(True, which="both", alpha=0.3)
    axl.legend(fontsize=7)
    axl.set_title("request latency p50", fontsize=10)
    fig.suptitle(title(report, scenario, entries, "queries/s against batch size"), fontsize=10)
    return finish(fig, out / f"{scenario}_batch.png")


def gateway_pairs(entries):
    """Each search point measured through the gateway, with the same point against the agent
    directly: {scenario, clients, batch, encoding, direct, gateway, added_p50_us, added_p99_us,
    throughput_share}."""
    pairs = []
    for g in entries:
        if g.get("target") != "gateway" or not is_search(g):
            continue
        d = next((o for o in entries if o.get("target") == "direct" and is_search(o)
                  and all(o.get(k) == g.get(k) for k in POINT_KEYS)), None)
        if d is None:
            continue
        added = {}
        for key in ("p50", "p99"):
            gl, dl = latency(g, key), latency(d, key)
            added[key] = (gl - dl) * 1000 if gl is not None and dl is not None else None
        gt, dt = num(g.get("throughput_rps")), num(d.get("throughput_rps"))
        share = gt / dt if gt is not None and dt else None
        one = g.get("clients") == 1
        pairs.append({"scenario": g.get("scenario"), "clients": g.get("clients"),
                      "batch": g.get("batch"), "encoding": g.get("encoding"), "direct": d,
                      "gateway": g, "added_p50_us": added["p50"], "added_p99_us": added["p99"],
                      "throughput_share": share,
                      "p50_met": (added["p50"] <= GATEWAY_ADDED_P50_US
                                  if one and added["p50"] is not None else None),
                      "throughput_met": (share >= GATEWAY_THROUGHPUT_SHARE
                                         if not one and share is not None else None)})
    return pairs


def verdict(met, target):
    """'met: <= 150' / 'missed: ...'; '' where the point does not judge that target."""
    return "" if met is None else f"{'met' if met else 'missed'}: {target}"


def pair_label(p, multi_batch):
    c = p.get("clients")
    label = f"{c} client{'s' if c != 1 else ''}"
    if multi_batch:
        label += f", batch {p.get('batch')}"
    return label


def plot_gateway(report, pairs, out):
    """Per point (clients, batch): p50 and p99 through the gateway and directly, on an axis of
    its own (1 and 16 clients differ tenfold); then requests/s of every point side by side."""
    if not pairs:
        return None
    multi_batch = len({p["batch"] for p in pairs}) > 1
    n = len(pairs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * n + 5, 5.4),
                             gridspec_kw={"width_ratios": [2] * n + [3]}, squeeze=False)
    axes = axes[0]
    for ax, p in zip(axes, pairs):
        for j, (key, hatch) in enumerate((("p50", None), ("p99", "//"))):
            for i, target in enumerate(("direct", "gateway")):
                y = (latency(p[target], key) or 0) * 1000
                ax.bar(j + (i - 0.5) * 0.38, y, 0.38, color=TARGET_COLOR[target], hatch=hatch,
                       edgecolor="black", linewidth=0.5,
                       label=TARGET_LABEL[target] if j == 0 else None)
            added = p[f"added_{key}_us"]
            if added is None:
                continue
            top = max((latency(p[t], key) or 0) * 1000 for t in ("direct", "gateway"))
            text, color = f"{added:+.0f} us", "black"
            if key == "p50" and p["p50_met"] is not None:
                text += f"\n({verdict(p['p50_met'], f'<= {GATEWAY_ADDED_P50_US:.0f}')})"
                color = "black" if p["p50_met"] else "red"
            ax.annotate(text, (j, top), textcoords="offset points", xytext=(0, 4), ha="center",
                        fontsize=8, color=color)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["p50", "p99"])
        ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
        ax.set_ylabel("latency (us)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(f"latency, {pair_label(p, multi_batch)}", fontsize=10)

    axt = axes[n]
    xs = range(n)
    for i, target in enumerate(("direct", "gateway")):
        axt.bar([x + (i - 0.5) * 0.38 for x in xs],
                [num(p[target].get("throughput_rps")) or 0 for p in pairs], 0.38,
                color=TARGET_COLOR[target], edgecolor="black", linewidth=0.5,
                label=TARGET_LABEL[target])
    for x, p in zip(xs, pairs):
        r = p["throughput_share"]
        if r is None:
            continue
        top = max(num(p[t].get("throughput_rps")) or 0 for t in ("direct", "gateway"))
        text = f"gateway/direct {r:.2f}x"
        if p["throughput_met"] is not None:
            text += f"\n({verdict(p['throughput_met'], f'>= {GATEWAY_THROUGHPUT_SHARE:g}')})"
        axt.annotate(text, (x, top), textcoords="offset points", xytext=(0, 4), ha="center",
                     fontsize=8, color="red" if p["throughput_met"] is False else "black")
    axt.set_xticks(list(xs))
    axt.set_xticklabels([pair_label(p, multi_batch) for p in pairs])
    axt.set_ylim(0, axt.get_ylim()[1] * 1.45)
    axt.set_ylabel("requests/s")
    axt.yaxis.set_major_formatter(FuncFormatter(fmt_tick))
    axt.grid(True, axis="y", alpha=0.3)
    axt.legend(fontsize=8, loc="upper right")
    axt.set_title("throughput", fontsize=10)
    entries = [p[t] for p in pairs for t in ("direct", "gateway")]
    scenarios = ", ".join(dict.fromkeys(str(p["scenario"]) for p in pairs))
    what = "vecgpu gateway over one agent against the agent directly"
    fig.suptitle(title(report, scenarios, entries, what), fontsize=10)
    return finish(fig, out / "cluster_gateway.png")


def make_plots(report, out):
    written = []
    for scenario, entries in by_scenario(ok_entries(report)).items():
        search = [e for e in entries if is_search(e)]
        if not search:
            continue
        closed = [e for e in search if e.get("mode", "closed") == "closed"]
        opened = [e for e in search if e.get("mode") == "open"]
        swept = [e for e in closed if sweep_param(e)[0] is not None]
        jobs = []
        if len(distinct(closed, "clients")) > 1:
            jobs.append((plot_concurrency, closed))
        if opened:
            jobs.append((plot_open_loop, opened))
        if swept and any(num(e.get("recall_at_k")) is not None for e in swept):
            jobs.append((plot_recall, swept))
        if closed and (scenario.startswith("batch-") or len(distinct(closed, "batch")) > 1):
            jobs.append((plot_batch, closed))
        for fn, es in jobs:
            try:
                path = fn(report, scenario, es, out)
            except Exception as exc:  # one odd scenario must not lose the other plots
                print(f"warning: {fn.__name__} for {scenario} failed: {exc!r}", file=sys.stderr)
                plt.close("all")
                continue
            if path is not None:
                written.append(path)
    pairs = gateway_pairs(ok_entries(report))
    if pairs:
        try:
            path = plot_gateway(report, pairs, out)
        except Exception as exc:  # as above: the summary must still be written
            print(f"warning: plot_gateway failed: {exc!r}", file=sys.stderr)
            plt.close("all")
            path = None
        if path is not None:
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Summary tables


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def point_label(e):
    parts = []
    p, v = sweep_param(e)
    if p:
        parts.append(f"{p}={v}")
    if e.get("offered_rps") is not None:
        parts.append(f"rate={e['offered_rps']}")
    return " ".join(parts) or "-"


def sort_key(order):
    def key(e):
        s = e.get("scenario", "")
        p = sweep_param(e)[1]
        return (order.get(s, len(order)), s, target_rank(e.get("target")), str(e.get("encoding")),
                num(e.get("clients")) or 0, num(e.get("batch")) or 0, num(e.get("offered_rps")) or 0,
                num(p) or 0)
    return key


def compute_ratios(entries):
    """Python twin of Ratios() in bench/runner.cc, for reports written without a ratios list."""
    keys = ("scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch")
    out = []
    for v in entries:
        if v.get("target") != "vecgpu":
            continue
        row = {"scenario": v.get("scenario"), "clients": v.get("clients"), "batch": v.get("batch"),
               "offered_rps": v.get("offered_rps")}
        for o in entries:
            t = o.get("target")
            if t not in ("faiss", "faissx") or any(v.get(k) != o.get(k) for k in keys):
                continue
            if v.get("encoding") != "list" or o.get("encoding") != "list":
                continue
            tput, p50 = num(o.get("throughput_rps")) or 0, latency(o, "p50") or 0
            row[f"vecgpu_over_{t}_throughput"] = (num(v.get("throughput_rps")) or 0) / tput if tput else 0
            row[f"vecgpu_over_{t}_p50"] = (latency(v, "p50") or 0) / p50 if p50 else 0
        if len(row) > 4:
            out.append(row)
    return out


def grpc_rows(entries):
    """gRPC (target grpc) beside ZeroMQ (target vecgpu, each encoding) at the same point."""
    keys = ("scenario", "clients", "batch", "offered_rps", "nprobe", "efSearch")
    rows = []
    for g in entries:
        if g.get("target") != "grpc" or not is_search(g):
            continue
        for o in entries:
            if o.get("target") != "vecgpu" or any(g.get(k) != o.get(k) for k in keys):
                continue
            gt, ot = num(g.get("throughput_rps")) or 0, num(o.get("throughput_rps")) or 0
            rows.append([g.get("scenario"), g.get("clients", "-"), g.get("batch", "-"),
                         fmt_count(gt), fmt_ms(latency(g, "p50")), o.get("encoding", "-"),
                         fmt_count(ot), fmt_ms(latency(o, "p50")),
                         fmt_ratio(gt / ot if ot else None)])
    return rows


def summary(report, ratio_scenarios):
    entries = ok_entries(report)
    order = {}
    for e in report.get("results") or []:
        if isinstance(e, dict):
            order.setdefault(e.get("scenario", ""), len(order))
    lines = [f"# vecgpu-bench report, commit {report.get('commit') or 'unknown'}", ""]
    m = report.get("machine") or {}
    lines.append(f"- started: {report.get('started_at', '?')}; tool: {report.get('tool', '?')}")
    lines.append(f"- machine: {machine_line(report)}"
                 + (f", {m['memory_bytes'] / 2**30:.0f} GiB RAM" if num(m.get("memory_bytes")) else ""))
    opts = report.get("options") or {}
    if opts:  # a merged report (bench/merge_reports.py) has one dict of options per label
        lines.append("- options: " + "; ".join(
            f"{k}: " + ", ".join(f"{kk}={vv}" for kk, vv in v.items()) if isinstance(v, dict)
            else f"{k}={v}" for k, v in opts.items()))
    lines.append("")

    search = sorted((e for e in entries if is_search(e)), key=sort_key(order))
    lines += ["## Search", ""]
    if search:
        header = ["scenario", "target", "encoding", "clients", "batch", "point", "requests/s",
                  "queries/s", "p50 ms", "p99 ms", "recall", "errors"]
        rows = [[e.get("scenario", "?"), e.get("target", "?"), e.get("encoding", "-"),
                 e.get("clients", "-"), e.get("batch", "-"), point_label(e),
                 fmt_count(num(e.get("throughput_rps"))), fmt_count(num(e.get("queries_per_s"))),
                 fmt_ms(latency(e, "p50")), fmt_ms(latency(e, "p99")),
                 fmt_recall(e.get("recall_at_k")), e.get("errors", "-")] for e in search]
        lines += md_table(header, rows)
    else:
        lines.append("(no search results)")
    lines.append("")

    writes = sorted((e for e in entries if not is_search(e)), key=sort_key(order))
    if writes:
        lines += ["## Add / mixed", ""]
        header = ["scenario", "target", "encoding", "op", "clients", "batch", "requests/s",
                  "vectors/s", "p50 ms", "p99 ms", "errors"]
        rows = [[e.get("scenario", "?"), e.get("target", "?"), e.get("encoding", "-"),
                 e.get("op", "?"), e.get("clients", "-"), e.get("batch", "-"),
                 fmt_count(num(e.get("throughput_rps"))), fmt_count(num(e.get("vectors_per_s"))),
                 fmt_ms(latency(e, "p50")), fmt_ms(latency(e, "p99")), e.get("errors", "-")]
                for e in writes]
        lines += md_table(header, rows)
        lines.append("")

    failed = [e for e in report.get("results") or [] if isinstance(e, dict) and "error" in e]
    if failed:
        lines += ["## Failed preparations", ""]
        lines += md_table(["scenario", "target", "encoding", "error"],
                          [[e.get("scenario", "?"), e.get("target", "?"), e.get("encoding", "-"),
                            str(e.get("error")).replace("|", "\\|").replace("\n", " ")]
                           for e in failed])
        lines.append("")

    pairs = gateway_pairs(entries)
    if pairs:
        lines += ["## Gateway against direct (one agent)", ""]
        lines.append(f"Added p50 = gateway p50 - direct p50 (target <= "
                     f"{GATEWAY_ADDED_P50_US:.0f} us on loopback, judged with one client); "
                     f"throughput share = gateway requests/s / direct requests/s (target >= "
                     f"{GATEWAY_THROUGHPUT_SHARE:g}, judged with more than one client).")
        lines.append("")
        header = ["scenario", "clients", "batch", "encoding", "direct p50 ms", "gateway p50 ms",
                  "added p50 us", "direct p99 ms", "gateway p99 ms", "added p99 us",
                  "direct req/s", "gateway req/s", "throughput share", "targets"]
        rows = []
        for p in sorted(pairs, key=lambda p: (order.get(p["scenario"], len(order)),
                                              num(p["clients"]) or 0, num(p["batch"]) or 0)):
            d, g = p["direct"], p["gateway"]
            a, r = p["added_p50_us"], p["throughput_share"]
            judged = [verdict(p["p50_met"], f"added p50 <= {GATEWAY_ADDED_P50_US:.0f} us"),
                      verdict(p["throughput_met"], f"share >= {GATEWAY_THROUGHPUT_SHARE:g}")]
            rows.append([p["scenario"], p["clients"], p["batch"], p["encoding"],
                         fmt_ms(latency(d, "p50")), fmt_ms(latency(g, "p50")),
                         "-" if a is None else f"{a:+.0f}", fmt_ms(latency(d, "p99")),
                         fmt_ms(latency(g, "p99")),
                         "-" if p["added_p99_us"] is None else f"{p['added_p99_us']:+.0f}",
                         fmt_count(num(d.get("throughput_rps"))),
                         fmt_count(num(g.get("throughput_rps"))), fmt_ratio(r),
                         "; ".join(j for j in judged if j) or "-"])
        lines += md_table(header, rows)
        lines.append("")
        if not any(e.get("target") == "vecgpu" for e in entries):
            return "\n".join(lines)  # a cluster report: no vecgpu/FAISS ratios to show

    ratios = report.get("ratios")
    source = "report"
    if not isinstance(ratios, list):
        ratios, source = compute_ratios(entries), "computed from results"
    ratios = [r for r in ratios if isinstance(r, dict) and r.get("scenario") in ratio_scenarios]
    ratios.sort(key=lambda r: (order.get(r.get("scenario"), len(order)), num(r.get("clients")) or 0,
                               num(r.get("batch")) or 0))
    lines += [f"## Ratios ({', '.join(ratio_scenarios)}; {source})", ""]
    lines.append("Throughput ratio > 1: vecgpu serves more requests/s; p50 ratio < 1: vecgpu "
                 "answers faster.")
    lines.append("")
    if ratios:
        header = ["scenario", "clients", "batch", "vecgpu/faiss throughput",
                  "vecgpu/faissx throughput", "vecgpu/faiss p50", "vecgpu/faissx p50"]
        rows = [[r.get("scenario"), r.get("clients", "-"), r.get("batch", "-"),
                 fmt_ratio(r.get("vecgpu_over_faiss_throughput")),
                 fmt_ratio(r.get("vecgpu_over_faissx_throughput")),
                 fmt_ratio(r.get("vecgpu_over_faiss_p50")),
                 fmt_ratio(r.get("vecgpu_over_faissx_p50"))] for r in ratios]
        lines += md_table(header, rows)
    else:
        lines.append("(no ratios: the report lacks vecgpu and FAISS/FAISSx points for these scenarios)")
    lines.append("")

    overheads = [o for o in report.get("overheads") or [] if isinstance(o, dict)]
    if overheads:
        lines += ["## Server overhead (vecgpu - FAISS in process - echo)", ""]
        lines.append("What vecgpu adds beyond the search itself (in-process FAISS) and the ZeroMQ "
                     "round trip with a reply of the same size (the echo target); p99s do not "
                     "add up exactly, so their difference is indicative.")
        lines.append("")
        ms = lambda o, part, pct: fmt_ms(num((o.get(part) or {}).get(pct)))
        rows = [[o.get("scenario"), o.get("encoding"), o.get("clients", "-"), o.get("batch", "-"),
                 *[ms(o, part, pct) for pct in ("p50", "p99")
                   for part in ("vecgpu_ms", "faiss_ms", "echo_ms", "server_overhead_ms")]]
                for o in overheads]
        lines += md_table(["scenario", "encoding", "clients", "batch", "vecgpu p50 ms",
                           "FAISS p50 ms", "echo p50 ms", "server p50 ms", "vecgpu p99 ms",
                           "FAISS p99 ms", "echo p99 ms", "server p99 ms"], rows)
        lines.append("")

    grpc = grpc_rows(entries)
    if grpc:
        lines += ["## gRPC against ZeroMQ (same server)", ""]
        lines += md_table(["scenario", "clients", "batch", "gRPC requests/s", "gRPC p50 ms",
                           "ZeroMQ encoding", "ZeroMQ requests/s", "ZeroMQ p50 ms",
                           "gRPC/ZeroMQ throughput"], grpc)
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=pathlib.Path, help="a vecgpu-bench report JSON")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="folder for the PNGs and summary.md")
    ap.add_argument("--ratio-scenarios", default=",".join(RATIO_SCENARIOS),
                    help="comma-separated scenarios whose ratios go in the summary "
                         f"(default {','.join(RATIO_SCENARIOS)})")
    args = ap.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(report, dict):
        print(f"error: {args.report} is not a vecgpu-bench report (not a JSON object)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    written = make_plots(report, args.out)
    text = summary(report, [s for s in args.ratio_scenarios.split(",") if s])
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"wrote {len(written)} plot(s) to {args.out}:", file=sys.stderr)
    for p in written:
        print(f"  {p.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
