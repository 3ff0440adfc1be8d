"""The analysis of a finished soak: the RSS bound, restart windows against
evictions, every check, and the table printed at the end."""

from __future__ import annotations

import bisect
import os
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .common import METRICS, KiB, MiB, Params
from .hostile import EXPECTED


def rss_bound(p: Params, started: int) -> tuple[int, list[tuple[str, int]]]:
    """The most RSS the hub may reach in this soak, and its terms (see :mod:`benchmarks.soak`)."""
    chunk = max(256 * KiB, MiB + KiB)
    clients = p.stalled + p.healthy + p.slowloris + 16
    terms = [
        ("RSS once started (interpreter, fastapi, uvicorn, websockets)", started),
        (f"history: 1.5 x history_bytes ({p.history_bytes // MiB} MiB)", int(1.5 * p.history_bytes)),
        (
            f"series: {p.runs}x{len(METRICS)} full curves x 80 KiB + max_series ({p.max_series}) x 1 KiB",
            p.runs * len(METRICS) * 80 * KiB + p.max_series * KiB,
        ),
        (
            f"clients: {clients} x 1.125 x (64 KiB + {chunk // KiB} KiB chunk)",
            int(clients * 1.125 * (64 * KiB + chunk)),
        ),
        ("chunk cache: 65 joined chunks", 65 * chunk),
        ("backfill cache: archived events' frames (Hub.backfill_chunk)", 16 * MiB),
        ("ingest: one 1 MiB body of {}s parsed", 32 * MiB),
        ("slack: malloc arenas, fragmentation", 64 * MiB),
    ]
    return sum(v for _, v in terms), terms


class Windows:
    """The restart windows, for "did this happen during a restart?"."""

    def __init__(self, windows: list[dict[str, Any]], slack: float = 0.05, end: float = float("inf")) -> None:
        # A restart that left the server stopped lasts until one brings it back.
        spans = []
        for i, w in enumerate(windows):
            t1 = w["t1"]
            if not w.get("running", True):
                t1 = next((v["t1"] for v in windows[i + 1 :] if v.get("running", True)), end)
            spans.append((w["t0"] - slack, t1 + slack))
        self.spans = sorted(spans)
        self.starts = [s for s, _ in self.spans]

    def overlaps(self, a: float, b: float) -> bool:
        """Whether [a, b] meets a restart window."""
        i = bisect.bisect_right(self.starts, b)
        return any(self.spans[j][1] >= a for j in range(max(0, i - 3), i))

    def find(self, a: float, b: float) -> int | None:
        """The index of the first restart window that meets [a, b] (None: none)."""
        i = bisect.bisect_right(self.starts, b)
        hits = [j for j in range(max(0, i - 3), i) if self.spans[j][1] >= a]
        return hits[0] if hits else None

    def serving_before(self, index: int, since: float) -> float:
        """How long the server served between ``since`` and the start of window ``index``."""
        previous_end = self.spans[index - 1][1] if index > 0 else float("-inf")
        return max(0.0, self.spans[index][0] - max(since, previous_end))

    def survived(self, since: float, alive: float, grace: float = 1.0) -> bool:
        """Whether a connection made at ``since`` was still alive at ``alive``,
        more than ``grace`` s after a whole restart window that began after it."""
        i = bisect.bisect_right(self.starts, since)
        return any(end + grace < alive for _, end in self.spans[i:])

    def last_end_before(self, t: float) -> float:
        """When the last restart before ``t`` ended (-inf: none)."""
        i = bisect.bisect_right(self.starts, t)
        ends = [e for _, e in self.spans[:i] if e <= t]
        return max(ends, default=float("-inf"))


class Analysis:
    def __init__(
        self,
        p: Params,
        idle: dict[str, Any] | None,
        ready: dict[str, Any],
        head: dict[str, Any],
        final: dict[str, Any],
        healthy: list[dict[str, Any]],
        stalled: dict[str, Any],
        hostile: dict[str, Any],
        codes: dict[str, int | None],
        log_dir: Path,
    ) -> None:
        self.p = p
        self.idle = idle  # the hub before the load (None: a run from before it was measured)
        self.ready = ready
        self.head = head
        self.final = final
        self.clients = [c for r in healthy for c in r["clients"]]
        self.catch_up = max((r["catch_up_s"] for r in healthy), default=0.0)
        self.stalled = stalled
        self.hostile = hostile
        self.codes = codes
        self.log_dir = log_dir
        self.windows = Windows(final["windows"])
        self.rows: list[tuple[str, str, str]] = []
        self.findings: list[str] = []
        self.failed = False
        self.cpu: dict[str, float] = {}
        self.loadavg: dict[str, list[float]] | None = None

    def row(self, name: str, value: Any, ok: bool | None = None) -> None:
        check = "" if ok is None else ("ok" if ok else "FAIL")
        if ok is False:
            self.failed = True
        self.rows.append((name, str(value), check))

    def section(self, name: str) -> None:
        self.rows.append((name, "", ""))

    def report(self) -> int:
        self.general()
        self.memory()
        self.stalled_clients()
        self.healthy_clients()
        self.hostile_publisher()
        self.logs()
        self.print()
        return 1 if self.failed else 0

    # -- figures ------------------------------------------------------------------------

    def general(self) -> None:
        final, p = self.final, self.p
        status = final["status"]
        duration = final["t_stop"] - final["t_go"]
        windows = final["windows"]
        failed = [w for w in windows if w["error"]]
        ms = sorted((w["t1"] - w["t0"]) * 1000 for w in windows) or [0.0]
        self.section("hub")
        self.row("duration of the load (s)", f"{duration:.1f}")
        self.row("events published (events.published)", f"{status['events']['published']:,}")
        self.row("final head (last_seq)", f"{self.head['head']:,}")
        if self.head.get("error"):
            self.row("server serving at the end of the load", "no", False)
            self.findings.append(f"at the end of the load: {self.head['error']}")
        down = [w for w in windows if not w.get("running", True)]
        self.row("restarts that left the server stopped", len(down), not down)
        ports = self.ready["ports"]
        moved = [w for w in windows if w.get("running", True) and w.get("ports", ports) != ports]
        self.row("restarts that came back on other ports", len(moved), not moved)
        for w in moved[:3]:
            self.findings.append(
                f"the restart at {w['t0'] - final['t_go']:.1f} s came back on ports {w['ports']}, not {ports}"
            )
        self.row(
            "training events logged / rate",
            f"{final['logged']:,} / {final['logged'] / max(duration, 1e-9):.0f} per s",
        )
        self.row("training thread errors", final["train_error"] or "none", final["train_error"] is None)
        self.row(
            "events delivered / dropped / rejected",
            " / ".join(f"{status['events'][k]:,}" for k in ("delivered", "dropped", "rejected")),
        )
        expected = int(duration // p.restart_interval)
        self.row(
            "force_restart done / failed",
            f"{len(windows)} / {len(failed)}",
            not failed and len(windows) >= expected - 1,
        )
        for w in failed[:5]:
            self.findings.append(f"force_restart failed at t={w['t0'] - final['t_go']:.1f} s: {w['error']}")
        self.row(
            "restart duration ms (median / p95 / max)",
            f"{statistics.median(ms):.0f} / {ms[int(0.95 * (len(ms) - 1))]:.0f} / {ms[-1]:.0f}",
        )
        idle = sorted(self.idle["restarts"]) if self.idle and self.idle.get("restarts") else None
        if idle:
            self.row(
                f"  idle, before the load ({len(idle)} restarts): median / max",
                f"{statistics.median(idle):.1f} / {idle[-1]:.0f}",
            )
            self.row(
                "  median under load / median idle",
                f"{statistics.median(ms) / max(statistics.median(idle), 1e-9):.1f}x",
            )
        stopped = final["stop_error"] is None and not final["running_after_release"]
        self.row(
            "release_stream_server() at the end",
            f"{'stopped' if stopped else final['stop_error']} in {final['stop_ms']:.0f} ms",
            stopped,
        )
        if not stopped:
            self.findings.append(f"the final stop failed: {final['stop_error']}")
        if self.cpu:
            self.row(
                "CPU s used during the load, per process",
                ", ".join(f"{name} {seconds:.0f}" for name, seconds in self.cpu.items()),
            )
        bad_exit = {name: code for name, code in self.codes.items() if code != 0}
        self.row("child processes exited cleanly", "yes" if not bad_exit else bad_exit, not bad_exit)

    def memory(self) -> None:
        final, ready = self.final, self.ready
        samples = final["samples"]
        rss = [r for _, r in samples] or [0]
        bound, terms = rss_bound(self.p, ready["rss_started"])
        self.section("memory (hub process RSS)")
        self.row(
            "RSS after imports / once started (MiB)",
            f"{ready['rss_baseline'] / MiB:.1f} / {ready['rss_started'] / MiB:.1f}",
        )
        peak_at = samples[rss.index(max(rss))][0] - final["t_go"] if samples else 0.0
        self.row(
            "RSS start / peak / end of load (MiB)",
            f"{rss[0] / MiB:.1f} / {max(rss) / MiB:.1f} (at {peak_at:.0f} s) / {final['rss_end'] / MiB:.1f}",
        )
        n = len(rss)
        parts = 10 if n >= 300 else 4
        if n >= 2 * parts:
            peaks = [max(rss[i * n // parts : (i + 1) * n // parts]) / MiB for i in range(parts)]
            name = "tenth" if parts == 10 else "quarter"
            self.row(f"RSS peak per {name} of the run (MiB)", " / ".join(f"{q:.0f}" for q in peaks))
        self.row(
            "RSS after the final stop / after gc + malloc_trim (MiB)",
            f"{final['rss_after_stop'] / MiB:.1f} / {final['rss_after_trim'] / MiB:.1f}",
        )
        if self.p.default_malloc:
            # glibc keeps freed buffers below its raised mmap threshold: no bound is stated.
            fixed = f"none ({bound / MiB:.1f} if fixed)"
            self.row("RSS bound (MiB), glibc mmap threshold left dynamic", fixed)
            return
        self.row("RSS bound (MiB), glibc mmap threshold fixed", f"{bound / MiB:.1f}", max(rss) < bound)
        for name, value in terms:
            self.row(f"  + {name}", f"{value / MiB:.1f}")
        if max(rss) >= bound:
            self.findings.append(
                f"hub RSS peaked at {max(rss) / MiB:.1f} MiB, over the bound of {bound / MiB:.1f} MiB"
            )

    def evictions(self) -> list[list[Any]] | None:
        return self.final["evictions"]

    def stalled_clients(self) -> None:
        p, final, report = self.p, self.final, self.stalled
        windows = self.windows
        t_go = final["t_go"]
        records = self.evictions()
        by_port: dict[tuple[int, int], list[list[Any]]] = {}
        for record in records or []:
            by_port.setdefault((record[1], record[2]), []).append(record)
        used: set[int] = set()

        def match(kind: str, port: int, t_from: float, t_to: float) -> list[Any] | None:
            for record in by_port.get((p.ports[kind], port), ()):
                if id(record) not in used and t_from - 0.01 <= record[0] <= t_to + 0.01:
                    used.add(id(record))
                    return record
            return None

        evicted: Counter[str] = Counter()
        by_restart: Counter[str] = Counter()
        unexplained: list[list[Any]] = []
        overdue: list[list[Any]] = []
        to_evict: list[float] = []
        threshold = p.send_timeout + 0.5 + 1.5  # send_timeout + a sweep + slack
        for kind, port, t_connect, last_alive, seen in report["closed"]:
            record = match(kind, port, t_connect, seen)
            if record is not None:
                evicted[kind] += 1
                to_evict.append(record[0] - t_connect)
            elif (index := windows.find(last_alive, seen)) is not None:
                by_restart[kind] += 1
                serving = windows.serving_before(index, t_connect)
                if t_connect > t_go + 10 and serving > threshold:
                    overdue.append([kind, port, t_connect - t_go, serving])
            else:
                unexplained.append([kind, port, t_connect - t_go, last_alive - t_go, seen - t_go])
        survivors = [
            [kind, port, t_connect - t_go, last_alive - t_go]
            for kind, port, t_connect, last_alive, *_ in report["closed"] + report["open"]
            if windows.survived(t_connect, last_alive)
        ]
        t_end = report["t"]
        still = []
        for kind, port, t_connect, _ in report["open"]:
            serving = t_end - max(t_connect, windows.last_end_before(t_end))
            if t_connect > t_go + 10 and serving > threshold:
                still.append([kind, port, t_connect - t_go, serving])
        opened = report["opened"]
        closed = len(report["closed"])
        self.section("stalled clients")
        self.row(
            "stalled connections opened (SSE / WS)", f"{opened.get('sse', 0):,} / {opened.get('ws', 0):,}"
        )
        self.row("connect attempts refused (restarting)", f"{sum(report['refused'].values()):,}")
        self.row("seen closed by the server", f"{closed:,}")
        self.row("  evicted (an eviction of that port)", f"{evicted['sse']:,} SSE + {evicted['ws']:,} WS")
        self.row("  closed by a restart", f"{by_restart['sse']:,} SSE + {by_restart['ws']:,} WS")
        self.row("  closed while serving, not evicted", len(unexplained), not unexplained)
        for item in unexplained[:5]:
            self.findings.append(
                f"stalled {item[0]} client port {item[1]} (connected at {item[2]:.1f} s) was closed by "
                f"the server between {item[3]:.2f} s and {item[4]:.2f} s, outside any restart, "
                "without being counted as evicted"
            )
        if to_evict:
            to_evict.sort()
            self.row(
                "  connect -> eviction s (median / max)",
                f"{statistics.median(to_evict):.2f} / {to_evict[-1]:.2f}",
            )
        self.row(
            f"  served > {threshold:g} s and not evicted",
            len(overdue) + len(still),
            not overdue and not still,
        )
        for item in (overdue + still)[:5]:
            self.findings.append(
                f"stalled {item[0]} client port {item[1]} (connected at {item[2]:.1f} s) was served for "
                f"{item[3]:.1f} s without an eviction (send_timeout {p.send_timeout:g} s)"
            )
        dropped = final.get("dropped_stalled")
        if dropped is not None:
            self.row("  dropped at once by a restart (read nothing)", f"{dropped:,}")
        self.row("still open at the end", len(report["open"]))
        self.row("outlived a whole restart (never closed by it)", len(survivors), not survivors)
        for kind, port, t_connect, last_alive in survivors[:5]:
            self.findings.append(
                f"stalled {kind} client port {port} (connected at {t_connect:.1f} s) was still connected at "
                f"{last_alive:.1f} s, through the restarts in between"
            )
        self.row(
            "kernel TCP memory, all sockets, peak (MiB)",
            f"{report.get('tcp_mem_pages_max', 0) * os.sysconf('SC_PAGE_SIZE') / MiB:.1f}",
        )
        self.row(
            "stalled evictions happened at all",
            "yes" if sum(evicted.values()) else "no",
            sum(evicted.values()) > 0,
        )
        counter = final["status"]["clients"]["evicted"]
        self.section("evictions")
        if records is None:
            self.row("clients.evicted", f"{counter:,} (evictions not recorded: no per-connection check)")
            return
        healthy_evicted = 0
        for client in self.clients:
            for port, t_open, t_close, _ in client["abrupt"]:
                if match(client["kind"], port, t_open, t_close) is not None:
                    healthy_evicted += 1
        unmatched = [r for r in records if id(r) not in used]
        kinds = Counter(r[3] for r in records)
        self.row(
            "clients.evicted counter / evictions recorded",
            f"{counter:,} / {len(records):,}",
            counter == len(records),
        )
        self.row(
            "  by send_timeout / by client_buffer_bytes",
            f"{kinds['send_timeout']:,} / {kinds['client_buffer_bytes']:,}",
        )
        self.row("  of stalled / of healthy clients", f"{sum(evicted.values()):,} / {healthy_evicted:,}")
        self.row("  during a restart window", f"{sum(w['evicted'] for w in final['windows']):,}")
        self.row("  of no client of ours", len(unmatched), not unmatched)
        for record in unmatched[:5]:
            self.findings.append(
                f"eviction of client port {record[2]} on server port {record[1]} at "
                f"{record[0] - t_go:.2f} s matches no client connection"
            )

    def healthy_clients(self) -> None:
        clients, head = self.clients, self.head["head"]
        sse = [c for c in clients if c["kind"] == "sse"]
        ws = [c for c in clients if c["kind"] == "ws"]
        lost = sum(c["lost"] for c in clients)
        dups = sum(c["dups"] for c in clients)
        gaps = [g for c in clients for g in c["gaps"]]
        behind = [c for c in clients if c["last"] != head]
        errors = [(c["id"], e) for c in clients for e in c["errors"]]
        firsts = [c["first"] for c in clients]
        self.section("healthy clients")
        self.row("healthy clients (SSE / WS)", f"{len(sse)} / {len(ws)}")
        self.row("events received", f"{sum(c['received'] for c in clients):,}")
        self.row("events lost (holes in the sequence)", f"{lost:,}", lost == 0)
        self.row("duplicates / out of order", f"{dups:,}", dups == 0)
        self.row("gap events", f"{len(gaps)} ({sum(c['gap_lost'] for c in clients):,} seqs)", not gaps)
        self.row(
            "reached the final head",
            f"{len(clients) - len(behind)}/{len(clients)} (catch-up {self.catch_up:.1f} s)",
            not behind,
        )
        self.row(
            "first seq (min / max)",
            f"{min(firsts, default=0):,} / {max(firsts, default=0):,}",
        )
        self.row(
            "connections / shutdown events seen",
            f"{sum(c['connections'] for c in clients):,} / {sum(c['shutdowns'] for c in clients):,}",
        )
        abrupt = [a for c in clients for a in c["abrupt"]]
        in_restart = sum(1 for a in abrupt if self.windows.overlaps(a[2] - 0.1, a[2]))
        self.row(
            "closed without a shutdown event (in a restart / not)",
            f"{in_restart} / {len(abrupt) - in_restart}",
        )
        reconnect = [c["reconnect_max"] for c in clients]
        means = [c["reconnect_mean"] for c in clients if c["reconnect_mean"]]
        self.row(
            "shutdown -> reconnected s (mean / max)",
            f"{statistics.fmean(means) if means else 0:.3f} / {max(reconnect, default=0):.3f}",
        )
        statuses: Counter[str] = Counter()
        for c in clients:
            statuses.update(c["statuses"])
        self.row("handshake answers", ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())))
        self.row("protocol errors seen", len(errors), not errors)
        for c in clients:
            if c["lost"]:
                self.findings.append(
                    f"healthy {c['kind']} client {c['id']} lost {c['lost']} events: holes {c['holes'][:5]}"
                )
            if c["dups"]:
                self.findings.append(
                    f"healthy {c['kind']} client {c['id']} got {c['dups']} duplicate/out-of-order events"
                )
        for g in gaps[:5]:
            self.findings.append(f"healthy client got a gap event: {g}")
        for c in behind[:5]:
            self.findings.append(
                f"healthy {c['kind']} client {c['id']} ended at seq {c['last']}, not the head {head}"
            )
        for ident, error in errors[:5]:
            self.findings.append(f"healthy client {ident}: {error}")

    def hostile_publisher(self) -> None:
        report, windows, p = self.hostile, self.windows, self.p
        t_go = self.final["t_go"]
        self.section("hostile publisher (answers by status)")
        for kind, counts in report["counts"].items():
            allowed = EXPECTED[kind]
            bad = {k: v for k, v in counts.items() if k != "error" and int(k) not in allowed}
            shown = ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
            self.row(
                f"{kind} (expect {'/'.join(map(str, sorted(allowed)))})",
                shown or "none",
                not bad and bool(counts),
            )
        for kind, t0, _, status, body in report["unexpected"][:5]:
            self.findings.append(f"hostile {kind} at {t0 - t_go:.1f} s answered {status}: {body}")
        self.row(
            "max_series reached (422)", "yes" if report["series_capped"] else "no", report["series_capped"]
        )
        self.row(
            "  curves accepted after the cap",
            report["series_accepted_after_cap"],
            report["series_accepted_after_cap"] == 0,
        )
        errors = report["errors"]
        outside = [e for e in errors if not windows.overlaps(e[1], e[2])]
        self.row(
            "connection errors (in a restart / outside)",
            f"{len(errors) - len(outside)} / {len(outside)}",
            not outside,
        )
        for kind, t0, t1, error in outside[:5]:
            self.findings.append(
                f"hostile {kind} request at {t0 - t_go:.2f}-{t1 - t_go:.2f} s failed outside any "
                f"restart: {error}"
            )
        self.responsiveness()
        self.section("slowloris connections")
        ht = p.handshake_timeout
        timed, restarted, odd = Counter(), Counter(), []
        for kind, t0, t1, how, sent in report["slowloris"]:
            age = t1 - t0
            if ht - 0.3 <= age <= ht + 1.0 and how in ("eof", "ConnectionResetError"):
                timed[kind] += 1
            elif windows.overlaps(t1 - 0.3, t1):
                restarted[kind] += 1
            else:
                odd.append([kind, t0 - t_go, age, how, sent])
        late = [s for s in report["slowloris_open"] if s[2] - s[1] > ht + 1.0]
        self.row(
            f"closed at handshake_timeout ({ht:g} s): REST / SSE / WS",
            f"{timed['rest']} / {timed['sse']} / {timed['ws']}",
            sum(timed.values()) > 0,
        )
        self.row("closed by a restart", sum(restarted.values()))
        self.row("closed otherwise (early, late, answered)", len(odd), not odd)
        self.row("outlived handshake_timeout at the end", len(late), not late)
        for kind, t0, age, how, sent in odd[:5]:
            self.findings.append(
                f"slowloris on {kind} (at {t0:.1f} s) ended after {age:.2f} s ({how}, {sent} bytes sent)"
            )

    def responsiveness(self) -> None:
        """REST /health latency outside restarts: how long the hub's loop stalls."""
        report, windows, t_go = self.hostile, self.windows, self.final["t_go"]
        probes = [(t, ms) for t, ms in report["probes"] if not windows.overlaps(t, t + ms / 1000)]
        self.section("hub loop responsiveness (REST /health every 100 ms, outside restarts)")
        if not probes:
            self.row("probes", "none")
            return
        ms = sorted(m for _, m in probes)
        p99 = ms[int(0.99 * (len(ms) - 1))]
        self.row(
            "latency ms (median / p99 / max)",
            f"{statistics.median(ms):.1f} / {p99:.1f} / {ms[-1]:.0f}",
        )
        idle = sorted(m for _, m in self.idle["probes"]) if self.idle and self.idle.get("probes") else None
        if idle:
            idle_p99 = idle[int(0.99 * (len(idle) - 1))]
            self.row(
                f"  idle, before the load ({len(idle)} probes): median / p99 / max",
                f"{statistics.median(idle):.1f} / {idle_p99:.1f} / {idle[-1]:.0f}",
            )
            self.row("  p99 under load / p99 idle", f"{p99 / max(idle_p99, 1e-9):.1f}x")
            if self.idle.get("errors"):
                self.row("  idle probe errors", len(self.idle["errors"]), False)
        slow = sorted(((m, t) for t, m in probes if m > 250), reverse=True)
        self.row("answers slower than 250 ms", len(slow))
        blobs = [t0 for t0, _ in report["blobs"]]
        for m, t in slow[:3]:
            near = min((abs(t - b) for b in blobs), default=float("inf"))
            self.row(f"  {m:.0f} ms at {t - t_go:.1f} s", f"nearest 1 MiB post {near:.2f} s away")
        pauses = self.final.get("gc_pauses") or []
        longest = max((ms for _, ms, _ in pauses), default=0.0)
        self.row("hub GC pauses > 20 ms (count / longest ms)", f"{len(pauses)} / {longest:.0f}")
        errors = [e for e in report["probe_errors"] if not windows.overlaps(e[0], e[1])]
        self.row("probe errors outside restarts", len(errors), not errors)
        for t0, _, error in errors[:3]:
            self.findings.append(
                f"REST /health probe at {t0 - t_go:.2f} s failed outside any restart: {error}"
            )

    def logs(self) -> None:
        self.section("logs")
        hub_log = self.log_dir / "hub.log"
        text = hub_log.read_text(errors="replace") if hub_log.exists() else ""
        tracebacks = text.count("Traceback (most recent call last)")
        errors = [line for line in text.splitlines() if " ERROR " in line]
        warnings = Counter(
            re.sub(r"\d+(\.\d+)?", "N", line.split(" WARNING ", 1)[1])[:110]
            for line in text.splitlines()
            if " WARNING " in line
        )
        self.row(
            "hub log: tracebacks / ERROR lines",
            f"{tracebacks} / {len(errors)}",
            tracebacks == 0 and not errors,
        )
        writes = self.final.get("write_after_close", 0)
        times = self.final.get("write_after_close_times") or []
        during = sum(1 for t in times if t < self.final["t_stop"])
        self.row("asyncio write-after-close warnings (during the load)", f"{writes:,} ({during:,})")
        if writes:
            stacks = self.final.get("write_after_close_stacks") or ["?"]
            self.findings.append(
                f"{writes:,} 'asyncio: socket.send() raised exception.' warnings (writes to a transport "
                "after its connection was lost, the 6th and later on one transport); first stack:\n"
                + stacks[0].rstrip()
            )
        for line in errors[:5]:
            self.findings.append(f"hub log: {line[:300]}")
        for message, count in warnings.most_common(4):
            self.row(f"  WARNING x{count}", message)
        for name in sorted(self.codes):
            if name == "hub":
                continue
            path = self.log_dir / f"{name}.log"
            other = path.read_text(errors="replace") if path.exists() else ""
            if "Traceback" in other:
                self.row(f"{name} log: tracebacks", other.count("Traceback"), False)
                self.findings.append(f"{name} log has tracebacks; see {path}")

    def print(self) -> None:
        p = self.p
        print()
        print(
            f"stream_hub soak: {p.minutes:g} min, {p.rate} events/s over {p.runs} runs, force_restart every "
            f"{p.restart_interval:g} s, {p.healthy} healthy + {p.stalled} stalled clients, "
            "a hostile publisher"
        )
        if self.loadavg:
            idle, end = self.loadavg["idle"], self.loadavg["end"]
            print(
                "load average (1/5/15 min) before the load: "
                + " / ".join(f"{v:.2f}" for v in idle)
                + "; at its end: "
                + " / ".join(f"{v:.2f}" for v in end)
                + f" ({os.cpu_count()} CPUs)"
            )
        print(
            f"config: send_timeout={p.send_timeout:g} s, handshake_timeout={p.handshake_timeout:g} s, "
            f"shutdown_timeout={p.shutdown_timeout:g} s, history_size={p.history_size}, "
            f"history_bytes={p.history_bytes // MiB} MiB (default 64), max_series={p.max_series}, "
            f"1 MiB blob every {p.blob_interval:g} s"
        )
        width = max(len(name) for name, _, _ in self.rows) + 2
        vwidth = max(len(value) for _, value, _ in self.rows) + 2
        print()
        print(f"{'figure':<{width}}{'value':<{vwidth}}check")
        print("-" * (width + vwidth + 5))
        for name, value, check in self.rows:
            if not value and not check:
                print(f"{name}")
            else:
                print(f"  {name:<{width - 2}}{value:<{vwidth}}{check}")
        print()
        if self.findings:
            print("findings:")
            for finding in self.findings:
                print(f"  - {finding}")
        print(f"RESULT: {'FAIL' if self.failed else 'PASS'} (logs in {self.log_dir})")
