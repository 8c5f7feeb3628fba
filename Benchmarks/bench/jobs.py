#!/usr/bin/env python3
"""Job system benchmark: noop jobs end to end on SQLite and PostgreSQL (one and two nodes).

    Benchmarks/bench/jobs.py [--quick] [--only sqlite|postgres] [--no-build] [--jobs N] [--modes batched,single] [--nodes 1,2]

For each setup it measures, against real `cairn serve` processes over loopback HTTP:
  1. throughput: N noop jobs enqueued through `POST /jobs/batch` in batches of 1,000, timed
     from the first enqueue until every job is `succeeded`;
  2. wait time (run_at → attempted_at, read from the jobs table) p50/p99 while jobs are
     enqueued at half that throughput for 10 s;
  3. p99 of `GET /tasks?limit=20` (wrk, 16 connections) idle, then while the queue runs flat out.
Modes: `batched` (the defaults: claims of up to 100 jobs, completions written in batches) and
`single` (CAIRN_JOBS_CLAIM_LIMIT=1, CAIRN_JOBS_BATCH_COMPLETIONS=false: one job per claim
statement, one statement per completion).

A measurement tool, not a test: it prints a table and never fails on a number. The PostgreSQL
cluster it starts keeps fsync ON (durability as in production). Everything started here stops
on exit. Only 127.0.0.1 is ever contacted.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PASSWORD = "correct horse battery staple"
# One master key for every node of a run: nodes sharing a database must seal secrets alike
# (a node with another key refuses to start, by design).
MASTER_KEY = __import__("base64").b64encode(os.urandom(32)).decode()
# Issue 19's goals for one PostgreSQL node (end-to-end jobs/s), printed beside the figures.
GOALS = {"PostgreSQL ×1 batched": 30_000, "PostgreSQL ×1 single": 8_000}
CONCURRENCY = 100  # jobs per node at once (River's benchmark runs 100 workers too)


class Node:
    """One `cairn serve` process in its own session; stopped with SIGTERM then SIGKILL."""

    def __init__(self, binary, work, name, env):
        self.port = free_port()
        self.base = f"127.0.0.1:{self.port}"
        self.data = os.path.join(work, name + "-data")
        os.makedirs(self.data, exist_ok=True)
        self.log = open(os.path.join(work, name + ".log"), "wb")
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                "CAIRN_LOG_LEVEL": "warning", "CAIRN_BCRYPT_COST": "4", "CAIRN_ACCESS_TOKEN_TTL": "2h",
                "CAIRN_JOBS_CONCURRENCY": str(CONCURRENCY), "CAIRN_JOBS_MAX_RUNNING_PER_TENANT": str(CONCURRENCY),
                "CAIRN_JOBS_MAX_PENDING_PER_TENANT": "100000000", "CAIRN_JWT_SECRET": "bench-secret-" + "x" * 40,
                "CAIRN_MASTER_KEY": MASTER_KEY}
        full.update(env)
        self.proc = subprocess.Popen([binary, "serve", "--data-dir", self.data, "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=full, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"cairn exited during start-up (see {self.log.name})")
            try:
                if request(self.base, "GET", "/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("cairn not ready after 60 s")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(base, method, path, body=None, token=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection(base, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, data


def account(base, email):
    status, data = request(base, "POST", "/auth/register", {"email": email, "password": PASSWORD, "name": "Bench"})
    if status != 201:
        sys.exit(f"register answered {status}: {data[:200]!r}")
    status, data = request(base, "POST", "/auth/login", {"email": email, "password": PASSWORD})
    if status != 200:
        sys.exit(f"login answered {status}: {data[:200]!r}")
    return json.loads(data)["accessToken"]


class Jobs:
    """Reads the jobs table directly (the benchmark must not add HTTP load to count).

    PostgreSQL is read through one `psql` kept open for the whole setup: a `psql` per poll cost
    about 28 ms of CPU (its start and a server backend's), which at a poll every 20 ms took more
    than a quarter of this 2-core machine from the server being measured."""

    MARK = "__jobs_bench_end__"

    def __init__(self, sqlite_path=None, psql=None):
        self.sqlite_path, self.db, self.proc = sqlite_path, None, None
        if sqlite_path:
            self.db = None  # opened on first use: the node creates the file
        else:
            self.proc = subprocess.Popen(psql + ["-At", "-q", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql):
        if self.sqlite_path:
            if self.db is None:
                self.db = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30)
            return [tuple(r) for r in self.db.execute(sql).fetchall()]
        self.proc.stdin.write(sql.rstrip(";") + ";\n\\echo " + self.MARK + "\n")
        self.proc.stdin.flush()
        rows = []
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == self.MARK:
                return rows
            if line:
                rows.append(tuple(line.split("|")))
        raise RuntimeError("psql ended")

    def close(self):
        if self.db is not None:
            self.db.close()
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def finished_since(self, since_ms):
        return int(self.query(f"SELECT COUNT(*) FROM jobs WHERE finished_at IS NOT NULL AND created_at >= {since_ms}")[0][0])

    def last_finished_since(self, since_ms):
        """When the last job created since `since_ms` finished, in seconds since the epoch (the
        server's own record, so polling less often costs no precision)."""
        return int(self.query(f"SELECT MAX(finished_at) FROM jobs WHERE created_at >= {since_ms}")[0][0]) / 1000

    def not_succeeded_since(self, since_ms):
        return int(self.query(f"SELECT COUNT(*) FROM jobs WHERE created_at >= {since_ms} AND state NOT IN ('succeeded')")[0][0])

    def waits_since(self, since_ms):
        return sorted(int(r[0]) for r in self.query(
            f"SELECT attempted_at - run_at FROM jobs WHERE created_at >= {since_ms} AND attempted_at IS NOT NULL"))


def enqueue_batches(base, token, total, batch, stop=None, in_flight_cap=None, jobs=None, since=None):
    """Posts noop jobs in batches on one keep-alive connection; returns how many were created."""
    conn = http.client.HTTPConnection(base, timeout=120)
    body = {"jobs": [{"kind": "noop"}] * batch}
    done = 0
    while done < total and not (stop and stop.is_set()):
        if in_flight_cap and jobs and done - jobs.finished_since(since) > in_flight_cap:
            time.sleep(0.2)
            continue
        n = min(batch, total - done)
        status, data = request(base, "POST", "/jobs/batch", body if n == batch else {"jobs": [{"kind": "noop"}] * n}, token, conn)
        if status != 201:
            sys.exit(f"POST /jobs/batch answered {status}: {data[:300]!r}")
        done += n
    conn.close()
    return done


def wait_all(jobs, since, total, timeout=600):
    """Returns once `total` jobs created since `since` finished: when the last of them did, by
    the jobs table. Polled every 0.2 s (each poll is a count the database has to make)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if jobs.finished_since(since) >= total:
            return jobs.last_finished_since(since)
        time.sleep(0.2)
    sys.exit(f"jobs not finished after {timeout} s")


def throughput(nodes, token, jobs, total):
    since = int(time.time() * 1000) - 1
    start = time.time()
    senders = [threading.Thread(target=enqueue_batches, args=(nodes[i % len(nodes)].base, token, total // 2, 1000)) for i in range(2)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    enqueued = time.time()
    end = wait_all(jobs, since, total - total % 2)
    bad = jobs.not_succeeded_since(since)
    return (total - total % 2) / (end - start), (total - total % 2) / (enqueued - start), bad


def waits_at(nodes, token, jobs, rate, seconds):
    """Enqueues `rate` jobs/s for `seconds` (a batch every 10 ms), then reads the wait times."""
    since = int(time.time() * 1000) - 1
    conn = http.client.HTTPConnection(nodes[0].base, timeout=120)
    tick, sent, start = 0.01, 0, time.time()
    while time.time() - start < seconds:
        # Catch up with the schedule (a slow request makes the next batch bigger, not the rate lower).
        n = int(rate * (time.time() - start)) - sent
        if n > 0:
            status, data = request(nodes[0].base, "POST", "/jobs/batch", {"jobs": [{"kind": "noop"}] * n}, token, conn)
            if status != 201:
                sys.exit(f"POST /jobs/batch answered {status}: {data[:300]!r}")
            sent += n
        next_tick = start + (round((time.time() - start) / tick) + 1) * tick
        time.sleep(max(0, next_tick - time.time()))
    conn.close()
    wait_all(jobs, since, sent)
    waits = jobs.waits_since(since)
    pct = lambda p: waits[min(len(waits) - 1, int(p * len(waits)))] if waits else float("nan")  # noqa: E731
    return sent / seconds, pct(0.50), pct(0.99)


def wrk_p99(base, token, seconds, work, name):
    out = os.path.join(work, name + ".wrk")
    with open(out, "w") as f:
        subprocess.run(["timeout", str(seconds + 30), "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency",
                        "-H", f"Authorization: Bearer {token}", f"http://{base}/tasks?limit=20"], stdout=f, stderr=subprocess.STDOUT)
    r = helpers.parse_wrk(out)
    return r["rps"], r["p99"]


def tasks_under_load(nodes, token, jobs, seconds, work, label):
    for i in range(100):
        request(nodes[0].base, "POST", "/tasks", {"title": f"task {i} " + "x" * 40}, token)
    idle_rps, idle_p99 = wrk_p99(nodes[0].base, token, seconds, work, label + "-idle")
    stop = threading.Event()
    since = int(time.time() * 1000) - 1
    feeder = threading.Thread(target=enqueue_batches, args=(nodes[0].base, token, 10**9, 1000, stop, 20000, jobs, since))
    feeder.start()
    time.sleep(2)  # let the queue fill before measuring
    before, t0 = jobs.finished_since(since), time.time()
    busy_rps, busy_p99 = wrk_p99(nodes[0].base, token, seconds, work, label + "-busy")
    rate = (jobs.finished_since(since) - before) / (time.time() - t0)
    stop.set()
    feeder.join()
    return idle_rps, idle_p99, busy_rps, busy_p99, rate


def start_pg(work):
    state = os.path.join(work, "pg.state")
    port = free_port()
    env = dict(os.environ, PG_FSYNC="on", PG_STATE=state)
    url = subprocess.run([os.path.join(ROOT, "scripts/pg-cluster.sh"), "start", str(port)], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    pgbin, pgdata = open(state).read().split()
    return url, port, pgbin, pgdata, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs, shorter runs")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (default 100,000; --quick 20,000)")
    parser.add_argument("--modes", default="batched,single")
    parser.add_argument("--nodes", default="1,2", help="PostgreSQL node counts to run (default 1,2)")
    args = parser.parse_args()
    total = args.jobs or (20_000 if args.quick else 100_000)
    seconds = 5 if args.quick else 10
    binary = os.environ.get("CAIRN_BIN") or os.path.join(ROOT, ".build-release/release/cairn")
    if not args.no_build:
        print("building cairn (release, --scratch-path .build-release)...", file=sys.stderr)
        subprocess.run(["swift", "build", "-c", "release", "--scratch-path", os.path.join(ROOT, ".build-release"), "--product", "cairn"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        sys.exit("wrk is required (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="cairn-jobs-bench.")
    nodes, pg = [], None
    rows = []
    try:
        setups = []
        if args.only in (None, "sqlite"):
            setups.append(("SQLite", 1))
        if args.only in (None, "postgres"):
            setups += [("PostgreSQL", int(n)) for n in args.nodes.split(",")]
        for mode in args.modes.split(","):
            env = {} if mode == "batched" else {"CAIRN_JOBS_CLAIM_LIMIT": "1", "CAIRN_JOBS_BATCH_COMPLETIONS": "false"}
            for engine, count in setups:
                label = f"{engine} ×{count} {mode}"
                print(f"[{label}] starting...", file=sys.stderr)
                node_env = dict(env)
                if engine == "PostgreSQL":
                    if pg is None:
                        pg = start_pg(work)
                    url, port, pgbin, _, _ = pg
                    db = f"bench_{len(rows)}"
                    subprocess.run([f"{pgbin}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-qc", f"CREATE DATABASE {db}"],
                                   check=True, stdout=subprocess.DEVNULL)
                    node_env["CAIRN_DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable"
                    jobs = Jobs(psql=[f"{pgbin}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db])
                else:
                    jobs = None
                nodes = [Node(binary, work, f"n{len(rows)}-{i}", node_env) for i in range(count)]
                if jobs is None:
                    jobs = Jobs(sqlite_path=os.path.join(nodes[0].data, "cairn.sqlite"))
                token = account(nodes[0].base, f"bench{len(rows)}@example.com")
                enqueue_batches(nodes[0].base, token, 2000, 1000)  # warm-up
                wait_all(jobs, 0, 2000)
                rate, insert_rate, bad = throughput(nodes, token, jobs, total)
                print(f"[{label}] {rate:,.0f} jobs/s end to end (enqueue alone {insert_rate:,.0f}/s)", file=sys.stderr)
                half, p50, p99 = waits_at(nodes, token, jobs, rate / 2, seconds)
                print(f"[{label}] at {half:,.0f}/s: wait p50 {p50} ms, p99 {p99} ms", file=sys.stderr)
                idle_rps, idle_p99, busy_rps, busy_p99, busy_rate = tasks_under_load(nodes, token, jobs, seconds, work, label.replace(" ", "_"))
                rows.append((label, rate, insert_rate, bad, half, p50, p99, idle_p99, busy_p99, busy_rate))
                if engine == "PostgreSQL" and count == 1 and os.environ.get("BENCH_SUMMARY"):
                    with open(os.environ["BENCH_SUMMARY"], "a") as out:  # for all.sh's closing table
                        for key, value in (("rate", rate), ("idle_p99", idle_p99), ("busy_p99", busy_p99)):
                            out.write(f"jobs.{mode}.{key}\t{value}\n")
                for node in nodes:
                    node.stop()
                nodes = []
                jobs.close()
        print()
        print(f"Job system, noop jobs, {total:,} per throughput run, {CONCURRENCY} jobs at once per node; "
              f"load average at end {os.getloadavg()[0]:.1f} (2 cores shared by server(s), PostgreSQL, the client and wrk)")
        print("Goals (issue 19): one PostgreSQL node ≥ 30,000 jobs/s batched, ≥ 8,000 claiming singly; GET /tasks p99 busy ≤ 1.5× idle.")
        print("| setup | end-to-end jobs/s (goal) | enqueue jobs/s | not succeeded | wait p50 / p99 at rate | GET /tasks p99 idle → busy (ratio, goal ≤ 1.5×) | jobs/s while busy |")
        print("|---|---|---|---|---|---|---|")
        for label, rate, insert_rate, bad, half, p50, p99, idle_p99, busy_p99, busy_rate in rows:
            goal = GOALS.get(label)
            goal_text = f" ({rate / goal:.2f}× of goal {goal:,})" if goal else ""
            print(f"| {label} | {rate:,.0f}{goal_text} | {insert_rate:,.0f} | {bad} | {p50} / {p99} ms at {half:,.0f}/s | "
                  f"{idle_p99:.1f} → {busy_p99:.1f} ms ({busy_p99 / idle_p99:.1f}×) | {busy_rate:,.0f} |")
    finally:
        for node in nodes:
            node.stop()
        if pg is not None:
            env = dict(os.environ, PG_STATE=pg[4])
            subprocess.run([os.path.join(ROOT, "scripts/pg-cluster.sh"), "stop"], env=env)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
