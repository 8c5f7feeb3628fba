#!/usr/bin/env python3
"""A hostile tenant against a quiet one, on one node (issue 13's measurement).

Starts `cairn serve` on a fresh data directory on 127.0.0.1, gives a quiet tenant 50 tasks and
measures its `GET /tasks?limit=20` latency alone, then while a hostile tenant runs three
pipelines that must fail on their limits (a huge row, a runaway recursive CTE, a huge XML
record), and prints both latency profiles, how each hostile run ended, the server's peak RSS
(VmHWM) and the sandbox processes' peak. A measuring tool: no thresholds, it never fails on a
number. Standard library only; every request goes to 127.0.0.1.

  Benchmarks/hostile/run.py                      # .build/release/cairn if built, else .build/debug/cairn
  CAIRN_BIN=path/to/cairn SECONDS=10 Benchmarks/hostile/run.py
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECONDS = float(os.environ.get("SECONDS_PER_PHASE", os.environ.get("SECONDS", "10")))


def binary():
    if os.environ.get("CAIRN_BIN"):
        return os.path.abspath(os.environ["CAIRN_BIN"])
    for candidate in (".build/release/cairn", ".build-release/release/cairn", ".build/debug/cairn"):
        path = os.path.join(ROOT, candidate)
        if os.path.exists(path):
            return path
    sys.exit("no cairn binary: swift build --product cairn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, base):
        self.base = base
        self.token = None

    def call(self, method, path, body=None, raw=None, content_type="application/json", timeout=60):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with OPENER.open(request, timeout=timeout) as response:
                text = response.read()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as error:
            text = error.read()
            return error.code, (json.loads(text) if text else None)

    def account(self, email):
        self.call("POST", "/auth/register", {"email": email, "password": "correct horse battery", "name": email})
        status, tokens = self.call("POST", "/auth/login", {"email": email, "password": "correct horse battery"})
        assert status == 200, tokens
        self.token = tokens["accessToken"]


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """The child processes of every thread of `pid` (a child belongs to the thread that started it)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def latency(client, seconds, threads=4):
    """Closed-loop GETs from `threads` threads for `seconds`: (count, errors, p50 ms, p99 ms, max ms)."""
    samples, errors, lock = [], [0], threading.Lock()
    end = time.monotonic() + seconds

    def loop():
        while time.monotonic() < end:
            started = time.monotonic()
            status, _ = client.call("GET", "/tasks?limit=20")
            took = (time.monotonic() - started) * 1000
            with lock:
                samples.append(took)
                if status != 200:
                    errors[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] if samples else float("nan")
    return len(samples), errors[0], pick(0.5), pick(0.99), samples[-1] if samples else float("nan")


def main():
    cairn = binary()
    data = tempfile.mkdtemp(prefix="cairn-hostile-")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CAIRN_LOG_LEVEL": "warning", "CAIRN_BCRYPT_COST": "4",
           "CAIRN_PIPELINE_CPU": os.environ.get("CAIRN_PIPELINE_CPU", "20")}
    server = subprocess.Popen([cairn, "serve", "--data-dir", data, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "server.log"), "w"), start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if OPENER.open(base + "/health/live", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        quiet, hostile = Client(base), Client(base)
        quiet.account("quiet@example.com")
        hostile.account("hostile@example.com")
        for i in range(50):
            quiet.call("POST", "/tasks", {"title": f"task {i}"})

        count, errors, p50, p99, worst = latency(quiet, SECONDS)
        print(f"binary: {cairn}")
        print(f"quiet tenant alone:      {count / SECONDS:7.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:7.1f} ms  errors {errors}")
        rss_before = rss_kb(server.pid)

        _, csv = hostile.call("POST", "/files", raw=b"n,label\n1,one\n2,two\n3,three\n", content_type="text/csv")
        record = b"<r><e><t>" + b"x" * (40 << 20) + b"</t></e></r>"
        _, xml = hostile.call("POST", "/files", raw=record, content_type="application/xml")
        runs = {
            "huge row": (csv["id"], {"input": {"format": "csv"},
                                     "sql": "SELECT " + ", ".join(f"zeroblob(60000000) || x'' AS v{i}" for i in range(12)) + " FROM input LIMIT 1"}),
            "runaway CTE": (csv["id"], {"input": {"format": "csv"},
                                        "sql": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) AS n FROM c"}),
            "huge XML record": (xml["id"], {"input": {"format": "xml", "recordPath": "/r/e"}, "sql": "SELECT * FROM input"}),
        }
        jobs = {}
        for name, (file_id, spec) in runs.items():
            body = {"name": name, "output": {"format": "csv"}, "onRowError": "fail", **spec}
            status, pipeline = hostile.call("POST", "/pipelines", body)
            assert status == 201, pipeline
            status, job = hostile.call("POST", f"/pipelines/{pipeline['id']}/runs", {"fileId": file_id})
            assert status == 202, job
            jobs[name] = job["id"]

        peak_children, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                total = sum(rss_kb(child) for child in children(server.pid))
                peak_children[0] = max(peak_children[0], total)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        count, errors, p50, p99, worst = latency(quiet, SECONDS)
        print(f"during the hostile runs: {count / SECONDS:7.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {worst:7.1f} ms  errors {errors}")
        deadline = time.monotonic() + 120
        outcomes = {}
        while time.monotonic() < deadline and len(outcomes) < len(jobs):
            for name, job_id in jobs.items():
                _, job = hostile.call("GET", f"/jobs/{job_id}")
                if job and job.get("state") in ("succeeded", "discarded", "cancelled"):
                    outcomes[name] = f"{job['state']}: {(job.get('result') or {}).get('failure') or job.get('errors')}"
            time.sleep(0.5)
        stop.set()
        sampler.join()
        for name in jobs:
            print(f"  {name:16} {outcomes.get(name, 'still running after 120 s')}")
        print(f"server RSS: {rss_before / 1024:.0f} MB before the hostile runs, peak (VmHWM) {rss_kb(server.pid, 'VmHWM') / 1024:.0f} MB over the whole run;"
              f" sandbox processes' peak {peak_children[0] / 1024:.0f} MB")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
