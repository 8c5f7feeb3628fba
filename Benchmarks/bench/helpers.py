#!/usr/bin/env python3
"""Helpers for run.sh (standard library only; every request goes to 127.0.0.1).

  helpers.py freeport                      print a free TCP port on 127.0.0.1
  helpers.py json FIELD [FIELD...]         read JSON on stdin, print obj[F1][F2]... (ints index lists)
  helpers.py wrk FILE                      parse wrk --latency output: "rps p99_ms non2xx sockerr"
  helpers.py table TITLE TSV               print a cairn-vs-peer table from rows of run.sh
  helpers.py logins URL RATE SECONDS TOTAL CONCURRENCY EMAIL... -- PASSWORD
                                           bounded open-loop login load, prints a JSON summary
  helpers.py rss PID                       sum of VmRSS (MB) of PID's process group
  helpers.py cpu PID                       CPU seconds (user + system) PID has used so far
  helpers.py cpureq WRK_FILE BEFORE AFTER  "rps µs_per_request": CPU seconds AFTER - BEFORE over wrk's requests
  helpers.py summary FILE                  all.sh's closing table from KEY<TAB>VALUE lines
"""
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

# Never go through a proxy: every request is to 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def json_field(path):
    obj = json.load(sys.stdin)
    for p in path:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    print(obj)


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    return float(m.group(1)) * UNITS_MS[m.group(2)] if m else float("nan")


def parse_wrk(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p99": to_ms(p99.group(1)) if p99 else float("nan"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sockerr": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def wrk(path):
    r = parse_wrk(path)
    print(f'{r["rps"]:.1f} {r["p99"]:.2f} {r["non2xx"]} {r["sockerr"]}')


def fmt_ms(v):
    if v != v:  # NaN
        return "n/a"
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def fmt_rps(v):
    return "n/a" if v != v else f"{v:,.0f}"


def table(title, tsv):
    # rows: route \t cairn_rps \t cairn_p99 \t cairn_non2xx \t cairn_sockerr \t peer_... (same 4) \t note
    rows = [line.rstrip("\n").split("\t") for line in open(tsv, encoding="utf-8") if line.strip()]
    head = ["route", "cairn req/s", "peer req/s", "ratio c/p", "cairn p99", "peer p99", "p99 ratio c/p"]
    out, notes = [], []
    for r in rows:
        route = r[0]
        c_rps, c_p99, c_bad, c_sock = float(r[1]), float(r[2]), int(r[3]), int(r[4])
        p_rps, p_p99, p_bad, p_sock = float(r[5]), float(r[6]), int(r[7]), int(r[8])
        ratio = c_rps / p_rps if p_rps == p_rps and c_rps == c_rps and p_rps > 0 else float("nan")
        pr = c_p99 / p_p99 if p_p99 == p_p99 and c_p99 == c_p99 and p_p99 > 0 else float("nan")
        out.append([route, fmt_rps(c_rps), fmt_rps(p_rps), "n/a" if ratio != ratio else f"{ratio:.2f}x",
                    fmt_ms(c_p99), fmt_ms(p_p99), "n/a" if pr != pr else f"{pr:.2f}x"])
        for side, bad, sock in (("cairn", c_bad, c_sock), ("peer", p_bad, p_sock)):
            if bad:
                notes.append(f"  ! {route}: {side} answered {bad} non-2xx/3xx responses during the load")
            if sock:
                notes.append(f"  ! {route}: {side} had {sock} socket errors (connect/read/write/timeout)")
        if len(r) > 9 and r[9]:
            notes.append(f"  ! {route}: {r[9]}")
    widths = [max(len(str(x[i])) for x in out + [head]) for i in range(len(head))]
    line = lambda cells: "  " + " | ".join(
        (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])) for i, c in enumerate(cells))
    print(title)
    print(line(head))
    print("  " + "-+-".join("-" * w for w in widths))
    for r in out:
        print(line(r))
    for n in notes:
        print(n)


def logins(url, rate, seconds, total, concurrency, emails, password):
    """Open-loop schedule: login i is due at start + i/rate; at most `concurrency` in flight;
    stops issuing at `seconds` or after `total` logins, whichever comes first."""
    rate, seconds, total, concurrency = float(rate), float(seconds), int(total), int(concurrency)
    lock = threading.Lock()
    state = {"next": 0}
    statuses, latencies = {}, []
    start = time.monotonic()

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    return
                state["next"] = i + 1
            due = start + i / rate
            now = time.monotonic()
            if due - start >= seconds or now - start >= seconds:
                return
            if due > now:
                time.sleep(due - now)
            body = json.dumps({"email": emails[i % len(emails)], "password": password}).encode()
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            t0 = time.monotonic()
            try:
                with OPENER.open(req, timeout=30) as resp:
                    resp.read()
                    code = resp.status
            except urllib.error.HTTPError as e:
                code = e.code
            except Exception as e:  # connection errors, timeouts
                code = type(e).__name__
            dt = time.monotonic() - t0
            with lock:
                statuses[str(code)] = statuses.get(str(code), 0) + 1
                if code == 200:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    ok = statuses.get("200", 0)
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
    print(json.dumps({
        "target_per_s": rate, "sent": sum(statuses.values()), "ok": ok, "statuses": statuses,
        "elapsed_s": round(elapsed, 2), "achieved_per_s": round(ok / elapsed, 2) if elapsed > 0 else 0,
        "latency_p50_ms": round(pct(0.50), 1), "latency_p99_ms": round(pct(0.99), 1),
    }))


def rss(pid):
    pid = int(pid)
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        print("nan")
        return
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    print(f"{total / 1024:.1f}")


def cpu(pid):
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised name): utime and stime in ticks,
    # summed over every thread of the process.
    with open(f"/proc/{int(pid)}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))


def cpureq(path, before, after):
    r = parse_wrk(path)
    us = (float(after) - float(before)) / r["requests"] * 1e6 if r["requests"] else float("nan")
    print(f'{r["rps"]:.1f} {us:.2f}')


def summary(path):
    """The figures issue 19 names, each beside its peer (where it has one) and its goal."""
    v = {}
    for line in open(path, encoding="utf-8"):
        if "\t" in line:
            key, value = line.rstrip("\n").split("\t", 1)
            try:
                v[key] = float(value)
            except ValueError:
                v[key] = float("nan")
    nan = float("nan")
    get = lambda k: v.get(k, nan)  # noqa: E731
    ok = lambda b: "n/a" if b is None else ("yes" if b else "NO")  # noqa: E731
    rows = []

    def ratio(a, b):
        return a / b if a == a and b == b and b else nan

    def f(x, unit="", digits=0):
        return "n/a" if x != x else f"{x:,.{digits}f}{unit}"

    for tag, engine in (("sqlite", "SQLite (peer in memory)"), ("postgres", "PostgreSQL (fsync off)")):
        for route in ("GET /tasks?limit=20", "GET /tasks/{id}", "POST /tasks"):
            k = f"tasks.{tag}.{route}."
            c, p = get(k + "cairn_rps"), get(k + "peer_rps")
            cp, pp = get(k + "cairn_p99"), get(k + "peer_p99")
            r = ratio(c, p)
            rows.append((f"{route}, {engine}: req/s", f(c), f(p), f(r, "x", 2), "≥ 3x", ok(None if r != r else r >= 3)))
            rows.append((f"{route}, {engine}: p99", f(cp, " ms", 2), f(pp, " ms", 2), f(ratio(cp, pp), "x", 2), "≤ peer's",
                         ok(None if cp != cp or pp != pp else cp <= pp)))
    live, product, me = get("auth.live_us"), get("auth.product_us"), get("auth.me_us")
    d = product - live
    rows.append(("auth CPU: cached /products/{id} minus /health/live, µs/request", f(d, " µs", 1), "-",
                 f"{f(product, '', 1)} - {f(live, '', 1)}", "≤ ~20 µs", ok(None if d != d else d <= 20)))
    rows.append(("auth CPU and one row: /users/me minus /health/live, µs/request", f(me - live, " µs", 1), "-",
                 f"{f(me, '', 1)} - {f(live, '', 1)}", "-", "n/a"))
    c, p = get("reports.cairn_mbps"), get("reports.peer_mbps")
    r = ratio(c, p)
    rows.append((f"GET /reports/tasks.csv, {f(get('reports.tasks'))} tasks: MB/s", f(c, "", 1), f(p, "", 1), f(r, "x", 2), "≥ 3x",
                 ok(None if r != r else r >= 3)))
    g = get("reports.cairn_rss_growth")
    rows.append(("GET /reports/tasks.csv: RSS growth while streaming", f(g, " MB", 1), f(get("reports.peer_rss_growth"), " MB", 1), "-",
                 "< 50 MB", ok(None if g != g else g < 50)))
    for mode, goal in (("batched", 30000), ("single", 8000)):
        j = get(f"jobs.{mode}.rate")
        rows.append((f"jobs, 1 PostgreSQL node (fsync on), {mode}: jobs/s", f(j), "-", f(ratio(j, goal), "x of goal", 2), f"≥ {goal:,}",
                     ok(None if j != j else j >= goal)))
    for mode in ("batched", "single"):
        i, b = get(f"jobs.{mode}.idle_p99"), get(f"jobs.{mode}.busy_p99")
        r = ratio(b, i)
        rows.append((f"GET /tasks p99, queue flat out ({mode}) vs idle", f(b, " ms", 2), f"idle {f(i, ' ms', 2)}", f(r, "x", 2), "≤ 1.5x",
                     ok(None if r != r else r <= 1.5)))
    c, u = get("catalog.cached_rps"), get("catalog.uncached_rps")
    r = ratio(c, u)
    rows.append(("GET /products/{id}: cached vs uncached req/s", f(c), f"uncached {f(u)}", f(r, "x", 2), "≥ 5x", ok(None if r != r else r >= 5)))
    i, b = get("login.idle_p99"), get("login.busy_p99")
    r = ratio(b, i)
    rows.append((f"GET /tasks p99 while 20 logins/s are asked ({f(get('login.achieved'), '/s achieved', 1)}) vs idle",
                 f(b, " ms", 2), f"idle {f(i, ' ms', 2)}", f(r, "x", 2), "≤ 1.5x", ok(None if r != r else r <= 1.5)))
    m = get("rss.cairn_sqlite_start")
    rows.append(("idle RSS, SQLite, after start-up", f(m, " MB", 1), f(get("rss.peer_memory_start"), " MB", 1), "-", "< 40 MB",
                 ok(None if m != m else m < 40)))
    head = ("figure", "cairn", "peer / baseline", "ratio", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])) for i, c in enumerate(cells)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "freeport":
        freeport()
    elif cmd == "json":
        json_field(argv[2:])
    elif cmd == "wrk":
        wrk(argv[2])
    elif cmd == "table":
        table(argv[2], argv[3])
    elif cmd == "logins":
        sep = argv.index("--")
        url, rate, seconds, total, conc = argv[2:7]
        logins(url, rate, seconds, total, conc, argv[7:sep], argv[sep + 1])
    elif cmd == "rss":
        rss(argv[2])
    elif cmd == "cpu":
        cpu(argv[2])
    elif cmd == "cpureq":
        cpureq(argv[2], argv[3], argv[4])
    elif cmd == "summary":
        summary(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
