import CairnTestSupport
import Foundation
import Testing

/// OpenTelemetry traces (issue 16) seen by a real OTLP/HTTP receiver: real `cairn serve`
/// processes (the tracer is bootstrapped once per process), a Python receiver decoding the
/// protobuf with `opentelemetry-proto`, and curl as the client.
@Suite("End to end: OpenTelemetry traces across nodes", .serialized)
struct TracingEndToEndTests {
    /// One OTLP/HTTP receiver on loopback: `POST /v1/traces` bodies decoded as
    /// `ExportTraceServiceRequest`, one JSON line per span on standard output; any other POST
    /// is a webhook target, printed with its `traceparent`. With `blackhole`, a socket that
    /// listens and never answers (a collector that hangs).
    static let receiver = #"""
        import gzip, json, socket, sys, threading, time
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

        if len(sys.argv) > 1 and sys.argv[1] == "blackhole":
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1024)
            print("port", s.getsockname()[1], flush=True)
            while True:
                time.sleep(3600)

        lock = threading.Lock()

        def value(v):
            kind = v.WhichOneof("value")
            if kind is None:
                return None
            if kind == "array_value":
                return [value(x) for x in v.array_value.values]
            if kind == "kvlist_value":
                return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
            if kind == "bytes_value":
                return v.bytes_value.hex()
            return getattr(v, kind)

        def emit(record):
            with lock:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/traces":
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    for resource_spans in request.resource_spans:
                        resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                emit({
                                    "record": "span", "traceId": span.trace_id.hex(), "spanId": span.span_id.hex(),
                                    "parentSpanId": span.parent_span_id.hex(), "name": span.name, "kind": span.kind,
                                    "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                                    "instance": resource.get("service.instance.id"), "service": resource.get("service.name"),
                                })
                    reply = ExportTraceServiceResponse().SerializeToString()
                    self.send_response(200)
                    self.send_header("content-type", "application/x-protobuf")
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                else:
                    emit({"record": "webhook", "path": self.path, "traceparent": self.headers.get("traceparent")})
                    self.send_response(204)
                    self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print("port", server.server_address[1], flush=True)
        server.serve_forever()
        """#

    /// A running receiver: its port and what it printed.
    struct Receiver {
        let child: ChildProcess
        let port: Int
        let output: LogBuffer

        /// The spans received so far.
        var spans: [[String: Any]] { records("span") }
        /// The webhook requests received so far.
        var webhooks: [[String: Any]] { records("webhook") }

        /// Starts a node on a fresh data directory that exports its spans here in batches every
        /// `scheduleDelay` milliseconds, with `environment` on top.
        func startNode(exportingEvery scheduleDelay: Int = 100, _ environment: [String: String] = [:]) async throws -> ServerProcess {
            let exporting = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(port)", "OTEL_BSP_SCHEDULE_DELAY": String(scheduleDelay)]
            return try await ServerProcess.start(dataDir: try temporaryDirectory(), environment: exporting.merging(environment) { $1 })
        }

        func records(_ kind: String) -> [[String: Any]] {
            output.text.split(separator: "\n").compactMap { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
                return object["record"] as? String == kind ? object : nil
            }
        }
    }

    static func startReceiver(_ arguments: [String] = []) async throws -> Receiver {
        let output = LogBuffer()
        let child = try await ChildProcess("/usr/bin/env", ["python3", "-c", receiver] + arguments, includeErrors: true) { data in
            if let data { output.append(String(decoding: data, as: UTF8.self)) } else { output.end() }
        }
        _ = await output.wait(timeout: .seconds(30)) { text, ended in ended || text.contains("\n") }
        guard let line = output.text.split(separator: "\n").first, line.hasPrefix("port "), let port = Int(line.dropFirst(5)) else {
            child.signal(SIGKILL)
            throw E2EError("the OTLP receiver did not start: \(output.text)")
        }
        return Receiver(child: child, port: port, output: output)
    }

    /// The spans the traced broadcast must export, whatever order they end in: a job attempt's
    /// span ends after the work it enqueued may already have run on another worker.
    static let chainNames = [
        "POST /notifications", "job notifications.broadcast", "notification publish", "job notifications.webhook", "webhook delivery",
    ]

    /// 32 random bytes in base64: the master key both nodes share.
    static func masterKey() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// Random lower-case hex of `bytes` bytes (a W3C trace or span id).
    static func hex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    /// The W3C `traceparent` header of a caller in `trace`, in span `span` (a random one by
    /// default), who sampled the trace or not.
    static func traceparent(_ trace: String, span: String = hex(8), sampled: Bool = true) -> [String: String] {
        ["traceparent": "00-\(trace)-\(span)-\(sampled ? "01" : "00")"]
    }

    /// A tenant broadcast asked of node A (which runs no jobs) with a caller's `traceparent`:
    /// its job runs on node B, publishes, and a webhook delivery job posts to the receiver. One
    /// trace — the caller's — holds request (A) → job attempt (B) → publish → webhook delivery,
    /// the webhook sees that trace in `traceparent`, and log lines of both nodes, in both
    /// formats, carry its trace id.
    @Test(.enabled(if: E2EEngine.available.contains(.postgres), "needs PostgreSQL (two nodes)"))
    func oneTraceFollowsARequestThroughAJobOnAnotherNodeToAWebhook() async throws {
        let receiver = try await Self.startReceiver()
        defer { receiver.child.signal(SIGKILL) }
        let shared = try await E2EEngine.postgres.environment().merging([
            "CAIRN_MASTER_KEY": Self.masterKey(), "CAIRN_WEBHOOKS_ALLOW_PRIVATE": "true", "CAIRN_LOG_LEVEL": "debug",
        ]) { $1 }
        let nodeA = try await receiver.startNode(
            shared.merging([
                "CAIRN_JOBS_CONCURRENCY": "0", "CAIRN_LOG_FORMAT": "json", "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=node-a",
            ]) { $1 })
        let nodeB = try await receiver.startNode(
            shared.merging(["CAIRN_LOG_FORMAT": "text", "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=node-b"]) { $1 })

        let base = nodeA.baseURL
        _ = try await curl("POST", "\(base)/auth/register", json: ["email": "trace@example.com", "password": "trace password!", "name": "T"])
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "trace@example.com", "password": "trace password!"])
        let token = try #require(login.json["accessToken"] as? String)
        // A credential in the target's URL, as many webhook receivers take one.
        let hookKey = "hook-key-" + Self.hex(8)
        let hook = try await curl(
            "POST", "\(base)/webhooks", json: ["url": "http://127.0.0.1:\(receiver.port)/hook?key=\(hookKey)", "types": ["message"]], token: token)
        #expect(hook.status == 201, "\(hook.body)")

        func broadcast(_ title: String, headers: [String: String]) async throws {
            let accepted = try await curl(
                "POST", "\(base)/notifications", json: ["type": "message", "title": title, "audience": "tenant"], token: token, headers: headers)
            #expect(accepted.status == 202, "\(title): \(accepted.body)")
        }
        // First a caller whose trace is not sampled (flags 00): the node makes no span for it,
        // anywhere, yet carries its trace on, still flagged 00, to the webhook.
        let droppedTrace = Self.hex(16)
        try await broadcast("untraced", headers: Self.traceparent(droppedTrace, sampled: false))
        let traceId = Self.hex(16)
        let callerSpan = Self.hex(8)
        try await broadcast("traced", headers: Self.traceparent(traceId, span: callerSpan))
        // A credential in the query string reaches no span (its own trace).
        let queryTrace = Self.hex(16)
        _ = try await curl(
            "GET", "\(base)/notifications/unread-count?access_token=\(token)", token: token,
            headers: Self.traceparent(queryTrace))

        // Done when both webhooks arrived and every span of the chain was exported.
        let arrived = await receiver.output.wait(timeout: .seconds(60)) { _, _ in
            let spans = receiver.spans
            let hooks = receiver.webhooks.compactMap { $0["traceparent"] as? String }
            return hooks.contains { $0.contains(traceId) } && hooks.contains { $0.contains(droppedTrace) }
                && Self.chainNames.allSatisfy { name in spans.contains { $0["name"] as? String == name && $0["traceId"] as? String == traceId } }
                && spans.contains { $0["traceId"] as? String == queryTrace && $0["kind"] as? Int == 2 }
        }
        let spans = receiver.spans.filter { $0["traceId"] as? String == traceId }
        try #require(arrived, "no traced webhook delivery within 60 s; spans of the trace: \(spans.map { $0["name"] ?? "?" })")
        let byId = Dictionary(spans.map { ($0["spanId"] as? String ?? "", $0) }, uniquingKeysWith: { first, _ in first })

        let request = try #require(spans.first { $0["name"] as? String == "POST /notifications" }, "\(spans.map { $0["name"] ?? "?" })")
        #expect(request["parentSpanId"] as? String == callerSpan, "the request did not continue the caller's trace")
        #expect(request["instance"] as? String == "node-a")
        let requestAttributes = request["attributes"] as? [String: Any] ?? [:]
        #expect(requestAttributes["http.route"] as? String == "/notifications")
        #expect(requestAttributes["http.response.status_code"] as? Int == 202)
        #expect(requestAttributes["cairn.tenant_id"] is String)
        let queried = receiver.spans.first { $0["traceId"] as? String == queryTrace && $0["kind"] as? Int == 2 }
        #expect((queried?["attributes"] as? [String: Any])?["url.query"] as? String == "access_token=***", "\(queried ?? [:])")
        #expect(!receiver.output.text.contains(token), "a token reached a span")
        let spanText = receiver.records("span").map { "\($0)" }.joined()
        #expect(!spanText.contains(hookKey), "the webhook URL's credential reached a span")

        // The chain from the webhook's HTTP call up to the request.
        let delivery = try #require(spans.first { $0["name"] as? String == "webhook delivery" })
        var chain: [[String: Any]] = [delivery]
        while let parent = chain.last?["parentSpanId"] as? String, let span = byId[parent] { chain.append(span) }
        let names = chain.map { $0["name"] as? String ?? "?" }
        let attempt = try #require(chain.first { $0["name"] as? String == "job notifications.broadcast" }, "chain: \(names)")
        let publish = try #require(chain.first { $0["name"] as? String == "notification publish" }, "chain: \(names)")
        #expect(chain.contains { $0["name"] as? String == "job notifications.webhook" }, "chain: \(names)")
        #expect(chain.last?["spanId"] as? String == request["spanId"] as? String, "the delivery does not descend from the request: \(names)")
        // request → … → broadcast attempt → … → publish → … → webhook delivery.
        let position = { (span: [String: Any]) in chain.firstIndex { $0["spanId"] as? String == span["spanId"] as? String } ?? -1 }
        #expect(position(delivery) < position(publish) && position(publish) < position(attempt) && position(attempt) < chain.count - 1)
        #expect(attempt["instance"] as? String == "node-b", "the job attempt ran on \(attempt["instance"] ?? "?")")
        #expect(spans.contains { ($0["attributes"] as? [String: Any])?["db.system.name"] as? String == "postgresql" }, "no database span")

        let traceparent = try #require(
            receiver.webhooks.compactMap { $0["traceparent"] as? String }.first { $0.contains(traceId) }, "the webhook came without traceparent")
        let droppedParent = try #require(receiver.webhooks.compactMap { $0["traceparent"] as? String }.first { $0.contains(droppedTrace) })
        #expect(droppedParent.hasSuffix("-00"), "the unsampled trace went out as \(droppedParent)")
        #expect(!receiver.spans.contains { $0["traceId"] as? String == droppedTrace }, "a span of the unsampled trace was exported")
        #expect(traceparent.split(separator: "-").dropFirst().first.map(String.init) == traceId)
        #expect(traceparent.split(separator: "-").dropFirst(2).first.map(String.init) == delivery["spanId"] as? String)

        // Log lines within spans carry their ids: JSON on node A, text on node B.
        #expect(nodeA.output.contains("\"trace_id\":\"\(traceId)\""), "no JSON log line of node A carries the trace id")
        #expect(nodeB.output.contains("trace_id=\(traceId)"), "no text log line of node B carries the trace id")
        #expect(try await nodeA.stop() == 0)
        #expect(try await nodeB.stop() == 0)
    }

    /// The `job discarded` warning carries the trace and span ids of the attempt that failed,
    /// as the attempt's other log lines do: it was written after the attempt's span had ended,
    /// outside its context, with neither.
    @Test func theJobDiscardedLineCarriesItsAttemptsSpan() async throws {
        let receiver = try await Self.startReceiver()
        defer { receiver.child.signal(SIGKILL) }
        let server = try await receiver.startNode(["CAIRN_LOG_FORMAT": "json"])
        defer { server.child.signal(SIGKILL) }
        let base = server.baseURL
        _ = try await curl("POST", "\(base)/auth/register", json: ["email": "discard@example.com", "password": "discard password!", "name": "D"])
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "discard@example.com", "password": "discard password!"])
        let token = try #require(login.json["accessToken"] as? String)
        let traceId = Self.hex(16)
        let created = try await curl(
            "POST", "\(base)/jobs", json: ["kind": "noop", "args": ["fail": "permanent"]], token: token, headers: Self.traceparent(traceId))
        let id = try #require(created.json["id"] as? String, "\(created.body)")
        _ = try await followJob(base, id, token: token) { $0["state"] as? String == "discarded" }
        @Sendable func discarded(_ text: String) -> [String: Any]? {
            text.split(separator: "\n").lazy.compactMap { line in
                try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            }.first { $0["msg"] as? String == "job discarded" && $0["job_id"] as? String == id }
        }
        let logged = await server.waitForOutput(timeout: .seconds(30)) { discarded($0) != nil }
        let line = try #require(logged ? discarded(server.output) : nil, "no job discarded line: \(server.output.suffix(2_000))")
        // The attempt's span, once exported.
        _ = await receiver.output.wait(timeout: .seconds(30)) { _, _ in
            receiver.spans.contains { $0["name"] as? String == "job noop" && $0["traceId"] as? String == traceId }
        }
        let attempt = try #require(
            receiver.spans.first { $0["name"] as? String == "job noop" && $0["traceId"] as? String == traceId }, "the attempt's span was not exported"
        )
        #expect(line["trace_id"] as? String == traceId, "\(line)")
        #expect(line["span_id"] as? String == attempt["spanId"] as? String, "\(line)")
        #expect(try await server.stop() == 0)
    }

    /// A request with no caller's context starts a trace the sampler decides before any span
    /// is made (`traceidratio` at 0.5 here, over 40 requests: both outcomes, all but surely).
    /// Every request's log line carries a trace id of its own; a recorded trace exports its
    /// server span under that id, a dropped one (flags 0) exports nothing.
    @Test func newTracesAreDecidedByTheRatioBeforeAnySpanIsMade() async throws {
        let receiver = try await Self.startReceiver()
        defer { receiver.child.signal(SIGKILL) }
        let server = try await receiver.startNode(
            [
                "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5", "CAIRN_LOG_LEVEL": "debug", "CAIRN_LOG_FORMAT": "json",
            ])
        defer { server.child.signal(SIGKILL) }
        let requests = 40
        for _ in 0..<requests { #expect(try await curl("GET", "\(server.baseURL)/health/live").status == 200) }
        @Sendable func requestLines(_ text: String) -> [[String: Any]] {
            text.split(separator: "\n").compactMap { line in
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    object["msg"] as? String == "Request", object["hb.request.path"] as? String == "/health/live"
                else { return nil }
                return object
            }
        }
        let logged = await server.waitForOutput(timeout: .seconds(30)) { requestLines($0).count >= requests }
        try #require(logged, "not every request was logged: \(server.output.suffix(2_000))")
        let lines = requestLines(server.output)
        let traces = lines.compactMap { $0["trace_id"] as? String }
        #expect(traces.count == requests, "a request's log line has no trace id")
        #expect(Set(traces).count == requests, "two requests share a trace")
        #expect(traces.allSatisfy { $0.count == 32 && $0 != String(repeating: "0", count: 32) })
        let dropped = Set(lines.filter { "\($0["trace_flags"] ?? "")" == "0" }.compactMap { $0["trace_id"] as? String })
        let recorded = Set(traces).subtracting(dropped)
        #expect(!dropped.isEmpty && !recorded.isEmpty, "\(dropped.count) of \(requests) dropped at 0.5")

        // Every recorded trace exports its server span; no dropped one exports anything.
        let exported = await receiver.output.wait(timeout: .seconds(30)) { _, _ in
            let ids = Set(receiver.spans.compactMap { $0["traceId"] as? String })
            return recorded.isSubset(of: ids)
        }
        let spans = receiver.spans
        #expect(exported, "recorded traces without a span: \(recorded.subtracting(spans.compactMap { $0["traceId"] as? String }))")
        #expect(spans.allSatisfy { recorded.contains($0["traceId"] as? String ?? "") }, "a span outside the recorded traces")
        #expect(spans.filter { $0["name"] as? String == "GET /health/live" }.count == recorded.count)
        #expect(try await server.stop() == 0)
    }

    /// Span ends are handed to the exporter in batches (`BatchedEndTracer`); those still
    /// waiting when SIGTERM comes are exported by the final flush. The export delay is a minute,
    /// so only the flush at shutdown can send them.
    @Test func spansEndedJustBeforeShutdownAreExported() async throws {
        let receiver = try await Self.startReceiver()
        defer { receiver.child.signal(SIGKILL) }
        let server = try await receiver.startNode(exportingEvery: 60_000)
        let traceId = Self.hex(16)
        let traced = try await curl(
            "GET", "\(server.baseURL)/health/live", headers: Self.traceparent(traceId))
        #expect(traced.status == 200)
        server.child.signal(SIGTERM)
        let status = await server.child.waitForExit(timeout: .seconds(20))
        if status == nil { server.child.signal(SIGKILL) }
        #expect(status == 0)
        _ = await receiver.output.wait(timeout: .seconds(10)) { text, _ in text.contains(traceId) }
        let spans = receiver.spans.filter { $0["traceId"] as? String == traceId }
        #expect(spans.map { $0["name"] as? String } == ["GET /health/live"], "spans of the trace: \(spans)")
    }

    /// A collector that accepts connections and never answers neither slows requests down nor
    /// holds the node's exit: SIGTERM ends it within 10 s (the exporter is stopped 5 s after the
    /// shutdown signal at the latest; without the bounds it retries for 30 s).
    @Test func aHangingCollectorDoesNotDelayShutdown() async throws {
        let blackhole = try await Self.startReceiver(["blackhole"])
        defer { blackhole.child.signal(SIGKILL) }
        let server = try await blackhole.startNode()
        for _ in 0..<5 {
            #expect(try await curl("GET", "\(server.baseURL)/health/live").status == 200)
        }
        // Spans are waiting to be exported (to a collector that never answers) when SIGTERM comes.
        server.child.signal(SIGTERM)
        let status = await server.child.waitForExit(timeout: .seconds(10))
        if status == nil { server.child.signal(SIGKILL) }
        #expect(status == 0, "cairn did not exit within 10 s of SIGTERM with a hanging collector")
    }
}
