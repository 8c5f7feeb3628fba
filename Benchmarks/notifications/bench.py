#!/usr/bin/env python3
"""Notification fan-out benchmark for Cairn (a measuring tool: no thresholds).

Starts a fresh `cairn serve` (SQLite in a temp dir, or PostgreSQL with --pg-url), creates USERS
users in one tenant, opens CONNS WebSocket connections (round-robin over the users, Python
`websockets`, client processes of their own), then:

  1. broadcast: ROUNDS x POST /notifications {"audience":"tenant"}; each notification carries
     the publish time, every connection records publish -> receive latency. Reports p50/p90/p99/
     max, deliveries expected vs received (lost), and server RSS per connection (VmRSS after
     connecting minus before, divided by CONNS).
  2. throughput: PUBLISHERS threads POST /notifications to one random user each for SECONDS
     seconds; reports notifications stored per second (202s) and delivered per second.

With --nodes 2 (PostgreSQL only) it starts two `cairn serve` processes on one database (one
master key, one blob directory), holds half of every user's sockets on each, publishes on the
first, and reports latency, lost/duplicated and RSS per connection per node. Every figure is
printed with its goal from issue 17 beside it.

Usage: bench.py --bin .build/release/cairn [--conns 10000] [--users 1000] [--pg-url URL] [--nodes 2]
With --pg-url, each run makes a database of its own on that cluster (psql) and drops it at the
end, so runs never meet each other's data or master key. All traffic stays on 127.0.0.1.
"""
import base64
import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# The goals of issue 17, printed beside the figures.
GOAL_RSS_KB = 20  # per live connection, in kB (1000 bytes)
GOAL_P99_MS = 250  # tenant broadcast, last delivery after the POST
GOAL_STORED_PG = 5000  # notifications stored per second on PostgreSQL, fsync on


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, (json.loads(data) if data else None)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the servers, the load client and this script (the HTTP publishers) over a phase."""

    def __init__(self, server_pids, client_pid):
        names = ["server"] if len(server_pids) == 1 else [f"server {n + 1}" for n in range(len(server_pids))]
        self.pids = {**dict(zip(names, server_pids)), "load client": client_pid}
        self.start = self.sample()
        self.shares = {}

    def sample(self):
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items() if pid}
        times = os.times()
        values["bench.py"] = times.user + times.system
        values["wall"] = time.time()
        return values

    def report(self, phase):
        end = self.sample()
        wall = end["wall"] - self.start["wall"]
        cores = os.cpu_count() or 1
        parts = [f"{name} {end[name] - self.start[name]:.1f} s ({(end[name] - self.start[name]) / wall / cores * 100:.0f}%)"
                 for name in end if name != "wall"]
        print(f"CPU during {phase} ({wall:.1f} s wall, share of {cores} cores): " + ", ".join(parts), flush=True)
        self.shares[phase] = {name: (end[name] - self.start[name]) / wall / cores * 100 for name in end if name != "wall"}
        self.start = end


class SwiftClient:
    """The load client `cairn-wsload` (Benchmarks/cairn-wsload): one process, raw SwiftNIO."""

    def __init__(self, binary, port, conn_tokens, conn_users, conn_ports):
        self.file = tempfile.NamedTemporaryFile("w", prefix="cairn-wsload-", delete=False)
        for user, token, conn_port in zip(conn_users, conn_tokens, conn_ports):
            self.file.write(f"{user} {token} {conn_port}\n")
        self.file.close()
        self.proc = subprocess.Popen([binary, str(port), self.file.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def wait_ready(self, timeout):
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        return int(line.split()[1])

    def report(self):
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def publish(self, seconds, connections, token, user_ids):
        """Runs the load client's HTTP publishers; returns their JSON report."""
        with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as f:
            f.write("\n".join(user_ids))
        try:
            self.proc.stdin.write(f"publish {seconds} {connections} {token} {f.name}\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())
        finally:
            os.unlink(f.name)

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
        os.unlink(self.file.name)


def client_process(port, tokens, ready_queue, result_queue, stop_event):
    """Holds len(tokens) sockets; reports latencies (ms) and counts when stop_event is set."""
    import websockets

    async def main():
        latencies = {"b": [], "t": []}
        counts = {"b": 0, "t": 0}
        rounds = {}
        ready = [0]

        async def one(token):
            while True:
                try:
                    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_queue=None, ping_interval=None,
                                                  open_timeout=120) as ws:
                        await ws.send(json.dumps({"type": "auth", "token": token}))
                        await ws.send(json.dumps({"type": "subscribe"}))
                        first = True
                        async for raw in ws:
                            now = time.time()
                            message = json.loads(raw)
                            kind = message.get("type")
                            if kind == "ready" and first:
                                first = False
                                ready[0] += 1
                                ready_queue.put(1)
                            elif kind == "notification":
                                data = message["notification"]["data"]
                                phase = data.get("p", "t")
                                latencies[phase].append((now - data["t"]) * 1000)
                                counts[phase] += 1
                                if "r" in data:
                                    rounds.setdefault(data["r"], []).append((now - data["t"]) * 1000)
                                await ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))
                        return
                except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
                    await asyncio.sleep(0.2 + random.random())

        tasks = []
        for index, token in enumerate(tokens):
            tasks.append(asyncio.create_task(one(token)))
            if index % 200 == 199:
                await asyncio.sleep(0.05)  # spread the handshakes a little
        while not stop_event.is_set():
            await asyncio.sleep(0.2)
        result_queue.put((latencies, counts, rounds))
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def pg_setting(url, name):
    """A PostgreSQL setting through psql (None without psql or on failure)."""
    try:
        out = subprocess.run(["psql", url, "-Atc", f"SHOW {name}"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def fresh_database(url):
    """A new empty database on the cluster `url` names, and its URL: each run starts its nodes
    under a master key of its own, which a database sealed by an earlier run's key refuses."""
    parts = urllib.parse.urlsplit(url)
    name = f"cairn_nbench_{os.getpid()}_{int(time.time())}"
    made = subprocess.run(["psql", url, "-qc", f'CREATE DATABASE "{name}"'], capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        sys.exit(f"cannot make a database for the run on {parts.hostname}:{parts.port}: {made.stderr.strip()}")
    return name, urllib.parse.urlunsplit(parts._replace(path="/" + name))


def drop_database(url, name):
    subprocess.run(["psql", url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True, timeout=60)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=".build/release/cairn")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--publishers", type=int, default=8, help="HTTP publishing connections")
    parser.add_argument("--publisher", choices=("swift", "python"), default=None,
                        help="swift: keep-alive connections in cairn-wsload (default with it); python: threads of this script")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--nodes", type=int, default=1, help="cairn serve processes on the one PostgreSQL (--pg-url)")
    parser.add_argument("--load-client", default=None,
                        help="cairn-wsload binary (default: next to --bin); 'python' for the websockets clients")
    args = parser.parse_args()
    if args.load_client is None:
        candidate = os.path.join(os.path.dirname(args.bin), "cairn-wsload")
        args.load_client = candidate if os.path.exists(candidate) else "python"
    if args.publisher is None:
        args.publisher = "python" if args.load_client == "python" else "swift"
    if args.publisher == "swift" and args.load_client == "python":
        parser.error("--publisher swift needs cairn-wsload as the load client")
    if args.nodes < 1 or (args.nodes > 1 and (not args.pg_url or args.load_client == "python")):
        parser.error("--nodes above 1 needs --pg-url and cairn-wsload")

    data_dir = tempfile.mkdtemp(prefix="cairn-nbench-")
    ports = [free_port() for _ in range(args.nodes)]
    port = ports[0]
    base_env = {"PATH": os.environ.get("PATH", ""), **({"MALLOC_ARENA_MAX": os.environ["MALLOC_ARENA_MAX"]} if "MALLOC_ARENA_MAX" in os.environ else {}),
                "CAIRN_BCRYPT_COST": "4", "CAIRN_LOG_LEVEL": "warning", "CAIRN_ACCESS_TOKEN_TTL": "2h",
                # What several nodes must share (README, "Several nodes on one PostgreSQL").
                "CAIRN_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(), "CAIRN_BLOB_URL": f"file://{data_dir}/blobs",
                # The notification settings under test (CAIRN_NOTIFICATIONS_PUBLISH_BATCH=0: each publish alone),
                # and OpenTelemetry's variables for a traced run (OTEL_EXPORTER_OTLP_ENDPOINT and the sampler).
                **{key: value for key, value in os.environ.items() if key.startswith(("CAIRN_NOTIFICATIONS_", "OTEL_"))}}
    database = None
    if args.pg_url:
        database, run_url = fresh_database(args.pg_url)
        base_env["CAIRN_DATABASE_URL"] = run_url
    servers = []
    procs = []
    try:
        # The first node migrates and makes the key ring; the others start once it is live.
        for node, node_port in enumerate(ports):
            node_dir = os.path.join(data_dir, f"node{node + 1}")
            os.makedirs(node_dir)
            env = {**base_env, "CAIRN_DATA_DIR": node_dir, "CAIRN_HTTP_PORT": str(node_port)}
            log = open(os.path.join(node_dir, "server.log"), "wb")
            servers.append(subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log))
            for _ in range(300):
                try:
                    if request(node_port, "GET", "/health/live")[0] == 200:
                        break
                except OSError:
                    if servers[-1].poll() is not None:
                        with open(log.name, errors="replace") as failed:
                            sys.exit(f"node {node + 1} exited ({servers[-1].returncode}) before it was live:\n" + failed.read()[-2000:])
                    time.sleep(0.1)
        server = servers[0]
        status, owner = request(port, "POST", "/auth/register",
                                {"email": "owner@bench.test", "password": "correct horse battery", "name": "Owner"})
        assert status == 201, (status, owner)
        status, tokens = request(port, "POST", "/auth/login", {"email": "owner@bench.test", "password": "correct horse battery"})
        admin = tokens["accessToken"]
        user_tokens = [admin]
        user_ids = [owner["id"]]
        t0 = time.time()
        for n in range(args.users - 1):
            email = f"u{n}@bench.test"
            status, body = request(port, "POST", "/users",
                                   {"email": email, "name": "U", "role": "member", "password": "correct horse battery"}, admin)
            assert status == 201, (status, body)
            user_ids.append(body["id"])
            status, body = request(port, "POST", "/auth/login", {"email": email, "password": "correct horse battery"})
            user_tokens.append(body["accessToken"])
        print(f"users: {args.users} created in {time.time() - t0:.1f} s", flush=True)

        time.sleep(1)
        rss_before = [rss_kib(s.pid) for s in servers]
        ready_queue, result_queue, stop_event = mp.Queue(), mp.Queue(), mp.Event()
        conn_tokens = [user_tokens[i % len(user_tokens)] for i in range(args.conns)]
        conns_of = [0] * len(user_ids)
        for i in range(args.conns):
            conns_of[i % len(user_ids)] += 1
        # Connection i is user i mod USERS's; shifting the node by each pass over the users
        # spreads every user's sockets over the nodes, so a user's seqs are compared across them.
        conn_nodes = [(i + i // len(user_ids)) % args.nodes for i in range(args.conns)]
        sockets_on = [conn_nodes.count(n) for n in range(args.nodes)]
        t0 = time.time()
        swift = None
        if args.load_client != "python":
            swift = SwiftClient(args.load_client, port, conn_tokens, [i % len(user_ids) for i in range(args.conns)],
                                [ports[n] for n in conn_nodes])
            meter = CpuMeter([s.pid for s in servers], swift.pid)
            ready = swift.wait_ready(600)
        else:
            for c in range(args.clients):
                p = mp.Process(target=client_process, args=(port, conn_tokens[c::args.clients], ready_queue, result_queue, stop_event))
                p.start()
                procs.append(p)
            meter = CpuMeter([server.pid], None)
            ready = 0
            while ready < args.conns and time.time() - t0 < 600:
                ready_queue.get(timeout=600)
                ready += 1
        print(f"connections: {ready} authenticated and subscribed in {time.time() - t0:.1f} s", flush=True)
        time.sleep(2)
        rss_per_conn = []
        for n, s in enumerate(servers):
            rss_after = rss_kib(s.pid)
            sockets = sockets_on[n] if ready == args.conns else ready / args.nodes
            rss_per_conn.append((rss_after - rss_before[n]) * 1024 / 1000 / max(sockets, 1))
            print(f"server{'' if args.nodes == 1 else f' {n + 1}'} RSS: {rss_before[n] / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB "
                  f"with {sockets} sockets -> {(rss_after - rss_before[n]) / max(sockets, 1):.1f} KiB per connection", flush=True)
        meter.report(f"connecting ({args.load_client if swift else 'python websockets'} client)")

        # 1. Broadcasts.
        for r in range(args.rounds):
            start = time.time()
            status, body = request(port, "POST", "/notifications",
                                   {"audience": "tenant", "type": "announcement", "title": f"b{r}", "data": {"t": start, "p": "b", "r": r}}, admin)
            assert status == 202, (status, body)
            answered = time.time() - start
            # A tenant broadcast is a job: the 202 comes at once, the rows follow. Latency stays
            # publish (POST) -> receive, so it includes the job's pick-up and paging.
            job_id = body["job"]["id"]
            while True:
                status, job = request(port, "GET", f"/jobs/{job_id}", token=admin)
                if job["state"] in ("succeeded", "discarded", "cancelled"):
                    break
                time.sleep(0.05)
            print(f"broadcast {r}: POST answered in {answered * 1000:.0f} ms, job {job['state']}: "
                  f"{(job.get('result') or {}).get('stored')} stored {(time.time() - start) * 1000:.0f} ms after the POST", flush=True)
            time.sleep(3)
        broadcast_expected = args.rounds * args.conns
        meter.report("the broadcasts (incl. 3 s pauses)")

        # 2. Throughput: publishers to random single users.
        stored = [0]
        expected = [0]
        lock = threading.Lock()
        deadline = time.time() + args.seconds

        def publisher():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while time.time() < deadline:
                target = random.randrange(len(user_ids))
                body = json.dumps({"userIds": [user_ids[target]], "type": "message", "title": "tp", "data": {"t": time.time(), "p": "t"}})
                conn.request("POST", "/notifications", body, {"content-type": "application/json", "authorization": f"Bearer {admin}"})
                response = conn.getresponse()
                response.read()
                if response.status == 202:
                    with lock:
                        stored[0] += 1
                        expected[0] += conns_of[target]

        if args.publisher == "swift":
            published = swift.publish(args.seconds, args.publishers, admin, user_ids)
            stored[0], expected[0], elapsed = published["stored"], published["expected"], published["elapsed"]
            if set(published["statuses"]) - {"202"}:
                print(f"publisher statuses: {published['statuses']}", flush=True)
        else:
            threads = [threading.Thread(target=publisher) for _ in range(args.publishers)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.time() - t0
        time.sleep(3)
        meter.report(f"the throughput phase ({args.publishers} {args.publisher} HTTP publishers)")
        stop_event.set()
        latencies = {"b": [], "t": []}
        received = {"b": 0, "t": 0}
        per_round = {}
        if swift:
            result = swift.report()
            for phase in ("b", "t"):
                latencies[phase] = result["latencies"][phase]
                received[phase] = len(latencies[phase])
            per_round = {int(r): values for r, values in result["rounds"].items()}
            print(f"seq check: {result['lost']} lost (gaps), {result['duplicated']} duplicated, {result['behind']} behind their "
                  f"user's highest seq; closes {result['closes']}, reconnects {result['reconnects']}; load client "
                  f"{result['cpuSeconds']:.1f} CPU s, max RSS {result['maxRssKiB'] / 1024:.0f} MiB", flush=True)
            nodes = result.get("nodes", {})
        else:
            for _ in procs:
                lat, count, rounds = result_queue.get(timeout=120)
                for phase in ("b", "t"):
                    latencies[phase] += lat[phase]
                    received[phase] += count[phase]
                for r, values in rounds.items():
                    per_round.setdefault(r, []).extend(values)
        # When a round's first and last deliveries arrive tells storing (first late) from fan-out (spread).
        for r in sorted(per_round):
            values = per_round[r]
            print(f"broadcast {r} deliveries (ms after publish): first {min(values):.0f} p50 {percentile(values, 50):.0f} "
                  f"last {max(values):.0f} ({len(values)} received)", flush=True)
        b = latencies["b"]
        print(f"broadcast latency publish->receive (ms): p50 {percentile(b, 50):.1f} p90 {percentile(b, 90):.1f} "
              f"p99 {percentile(b, 99):.1f} max {max(b or [0]):.1f}; deliveries {received['b']} of {broadcast_expected} "
              f"(lost {broadcast_expected - received['b']})", flush=True)
        t = latencies["t"]
        print(f"throughput: {stored[0]} notifications stored in {elapsed:.1f} s = {stored[0] / elapsed:.0f}/s "
              f"({args.publishers} {args.publisher} HTTP publishers, one recipient each); delivered {received['t']} of {expected[0]} "
              f"= {received['t'] / elapsed:.0f}/s (lost {expected[0] - received['t']}); latency p50 {percentile(t, 50):.1f} "
              f"p99 {percentile(t, 99):.1f} ms", flush=True)

        # The figures beside their goals (issue 17).
        engine = "PostgreSQL" if args.pg_url else "SQLite"
        fsync = pg_setting(args.pg_url, "fsync") if args.pg_url else None
        print(f"\n== goals: {engine}, {args.nodes} node{'s' if args.nodes > 1 else ''}, {args.conns} connections over {args.users} users ==",
              flush=True)
        for n in range(args.nodes):
            name = "" if args.nodes == 1 else f"node {n + 1} ({'publishes; ' if n == 0 else ''}{sockets_on[n]} sockets): "
            mark = "ok" if rss_per_conn[n] < GOAL_RSS_KB else "MISSED"
            print(f"{name}RSS per connection {rss_per_conn[n]:.1f} kB (goal < {GOAL_RSS_KB} kB) {mark}", flush=True)
        if swift and args.nodes > 1:
            for n in range(args.nodes):
                node = nodes.get(str(ports[n]), {"latencies": {"b": []}, "lost": 0, "duplicated": 0, "behind": 0})
                values = node["latencies"]["b"]
                mark = "ok" if percentile(values, 99) < GOAL_P99_MS else "MISSED"
                print(f"node {n + 1}: broadcast p50 {percentile(values, 50):.0f} ms, p99 {percentile(values, 99):.0f} ms (goal p99 < "
                      f"{GOAL_P99_MS} ms) {mark}; {len(values)} of {args.rounds * sockets_on[n]} broadcast deliveries; lost "
                      f"{node['lost']}, duplicated {node['duplicated']}, behind {node['behind']} (goal 0)", flush=True)
        mark = "ok" if percentile(b, 99) < GOAL_P99_MS else "MISSED"
        print(f"broadcast p50 {percentile(b, 50):.0f} ms, p99 {percentile(b, 99):.0f} ms (goal p99 < {GOAL_P99_MS} ms) {mark}", flush=True)
        if swift:
            bad = result["lost"] + result["duplicated"] + result["behind"] + (broadcast_expected - received["b"]) + (expected[0] - received["t"])
            print(f"lost {result['lost']} + undelivered {broadcast_expected - received['b'] + expected[0] - received['t']}, duplicated "
                  f"{result['duplicated']}, behind {result['behind']} (goal 0) {'ok' if bad == 0 else 'MISSED'}", flush=True)
        goal = f"goal >= {GOAL_STORED_PG}/s on PostgreSQL with fsync on"
        if args.pg_url:
            mark = "ok" if stored[0] / elapsed >= GOAL_STORED_PG else "MISSED"
            if fsync != "on":
                mark += f" (this cluster runs with fsync {fsync or 'unknown'})"
        else:
            mark = "(SQLite: the goal is PostgreSQL's)"
        print(f"stored {stored[0] / elapsed:.0f}/s ({goal}) {mark}", flush=True)
        for phase, shares in meter.shares.items():
            if phase.startswith("connecting"):
                continue
            servers_share = sum(v for k, v in shares.items() if k.startswith("server"))
            client_share = shares.get("load client", 0) + (shares.get("bench.py", 0) if args.publisher == "python" else 0)
            mark = "ok" if client_share < servers_share else "MISSED"
            print(f"load client CPU during {phase}: {client_share:.0f}% of the cores beside the server's {servers_share:.0f}% "
                  f"(goal: the client leaves the server its cores, a smaller share) {mark}", flush=True)
    finally:
        stop_event_set = locals().get("stop_event")
        if stop_event_set is not None:
            stop_event_set.set()
        if locals().get("swift"):
            swift.close()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        for s in servers:
            s.terminate()
        for s in servers:
            try:
                s.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
        if database:
            drop_database(args.pg_url, database)


if __name__ == "__main__":
    main()
