import CairnCatalog
import CairnFormats
import CairnHTTP
import CairnNotifications
import CairnServer
import CairnStorage
import CairnTasks
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

// MARK: - Helpers

/// Downloads `path` with curl into a temporary file and parses it with Python's csv module.
/// Returns the rows (header first) and the response headers curl saw.
func downloadCSV(port: Int, path: String, token: String, compressed: Bool = false) async throws -> (rows: [[String]], headers: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-report-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("report.csv").path
    let headerFile = directory.appendingPathComponent("headers.txt").path
    var arguments = ["-sS", "--fail", "-o", file, "-D", headerFile, "-H", "Authorization: Bearer \(token)"]
    if compressed { arguments.append("--compressed") }
    arguments.append("http://127.0.0.1:\(port)\(path)")
    try await runProcess("/usr/bin/curl", arguments)
    let script = """
        import csv, json, sys
        with open(sys.argv[1], newline='', encoding='utf-8') as f:
            print(json.dumps(list(csv.reader(f, strict=True))))
        """
    let json = try await runPython(script, [file])
    let rows = try JSONSerialization.jsonObject(with: json) as? [[String]] ?? []
    return (rows, (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? "")
}

/// The value of a Prometheus sample (`name{labels} value`), summed over matching lines.
func metric(_ text: String, _ name: String, label: String? = nil) -> Double {
    var total = 0.0
    for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
        let rest = line.dropFirst(name.count)
        guard rest.first == "{" || rest.first == " " else { continue }
        if let label, !line.contains(label) { continue }
        if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { total += value }
    }
    return total
}

/// A newly registered owner (the admin of a new tenant).
func owner(_ client: any TestClientProtocol, _ email: String) async throws -> (token: String, tenantId: String, userId: String) {
    let (user, tokens) = try await client.registerAndLogin(email: email)
    return (tokens.accessToken, user.tenantId, user.id)
}

/// OWASP neutralisation as the report applies it.
func neutralised(_ value: String) -> String {
    guard let first = value.unicodeScalars.first, ["=", "+", "-", "@", "\t", "\r"].contains(first) else { return value }
    return "'" + value
}

func timestamp(_ milliseconds: Int64) -> String { Timestamp.format(milliseconds: milliseconds) }

/// Titles that exercise quoting, line breaks, non-ASCII text and formula injection.
let trickyTexts = [
    "plain", "with, comma", "with \"quotes\"", "line\nbreak", "crlf\r\nbreak", "Zürich — 東京 🚀 naïve", "=cmd|' /C calc'!A0",
    "+SUM(1,2)", "-2+3", "@HYPERLINK(\"http://x\")", "\tTabbed", "\rCarriage", "trailing space ", "\"", ",", "'already quoted",
]

// MARK: - Tests

/// Report tests share process-wide counters, so they run one at a time.
@Suite("Reports: streamed CSV", .serialized)
struct ReportsTests {
    @Test(arguments: TestEngine.available)
    func tasksReportParsesIntoExactlyTheDatabaseRows(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (port, client, components) = (app.port!, app.client, app.components)
            let (token, tenantId, userId) = try await owner(client, "owner@example.com")
            let otherTenant = try await owner(client, "other@example.com").tenantId

            // Tricky rows plus enough plain ones to span several read batches.
            var items: [TaskItem] = []
            let now = WallClock.milliseconds()
            for (index, text) in trickyTexts.enumerated() {
                items.append(
                    TaskItem(
                        id: UUIDv7.make(), tenantId: tenantId, title: text, description: index % 2 == 0 ? nil : text, completed: index % 3 == 0,
                        createdBy: userId, version: 1, createdAt: now + Int64(index), updatedAt: now + Int64(index)))
            }
            for index in 0..<4500 {
                items.append(
                    TaskItem(
                        id: UUIDv7.make(), tenantId: tenantId, title: "Task \(index), \"numbered\"", description: "line one\nline two",
                        completed: index % 2 == 0, createdBy: userId, version: 1, createdAt: now, updatedAt: now))
            }
            try await components.tasks.insertBatch(items)
            // Another tenant's rows never appear.
            try await components.tasks.insertBatch([
                TaskItem(
                    id: UUIDv7.make(), tenantId: otherTenant, title: "secret", description: nil, completed: false, createdBy: userId,
                    version: 1, createdAt: now, updatedAt: now)
            ])

            // What the database holds, read through the store in id order.
            var expected: [TaskItem] = []
            var after: String?
            while true {
                let batch = try await components.tasks.batch(tenantId: tenantId, after: after, limit: 1000)
                expected += batch
                guard batch.count == 1000 else { break }
                after = batch.last?.id
            }
            #expect(expected.count == items.count)

            let header = ["id", "title", "description", "completed", "createdBy", "createdAt", "updatedAt"]
            func row(_ task: TaskItem, raw: Bool) -> [String] {
                let text: (String?) -> String = { value in raw ? (value ?? "") : neutralised(value ?? "") }
                return [
                    task.id, text(task.title), text(task.description), task.completed ? "true" : "false", task.createdBy,
                    timestamp(task.createdAt), timestamp(task.updatedAt),
                ]
            }

            let (rows, headers) = try await downloadCSV(port: port, path: "/reports/tasks.csv", token: token)
            #expect(headers.lowercased().contains("content-type: text/csv; charset=utf-8"))
            #expect(rows.first == header)
            #expect(rows.count == expected.count + 1)
            #expect(Array(rows.dropFirst()) == expected.map { row($0, raw: false) })
            // The injection cells really came out neutralised.
            #expect(rows.contains { $0[1] == "'=cmd|' /C calc'!A0" })
            #expect(!rows.contains { $0[1] == "secret" })

            // ?raw=true returns the values untouched.
            let (rawRows, _) = try await downloadCSV(port: port, path: "/reports/tasks.csv?raw=true", token: token)
            #expect(Array(rawRows.dropFirst()) == expected.map { row($0, raw: true) })

            // gzip on request: curl decompresses it into the same rows.
            let (gzipRows, gzipHeaders) = try await downloadCSV(port: port, path: "/reports/tasks.csv", token: token, compressed: true)
            #expect(gzipHeaders.lowercased().contains("content-encoding: gzip"))
            #expect(gzipRows == rows)

            // Filters as on the list endpoint.
            let (doneRows, _) = try await downloadCSV(port: port, path: "/reports/tasks.csv?completed=true", token: token)
            #expect(Array(doneRows.dropFirst()) == expected.filter(\.completed).map { row($0, raw: false) })
        }
    }

    @Test(arguments: TestEngine.available)
    func reportsAreForAdminsAndValidateTheirParameters(engine: TestEngine) async throws {
        try await withTestApp(engine) { client, _ in
            let token = try await owner(client, "boss@example.com").token
            // A member of the same tenant.
            let memberToken = try await client.addUser(email: "member@example.com", token: token).tokens.accessToken
            for path in ["/reports/tasks.csv", "/reports/products.csv"] {
                let forbidden = try await client.json(.get, path, token: memberToken)
                #expect(forbidden.status == .forbidden)
                #expect(forbidden.code == "forbidden")
                let anonymous = try await client.json(.get, path)
                #expect(anonymous.status == .unauthorized)
                let bad = try await client.json(.get, path + "?raw=maybe", token: token)
                #expect(bad.status == .badRequest)
                #expect(bad.code == "invalid_input")
            }
            let badPrice = try await client.json(.get, "/reports/products.csv?minPrice=abc", token: token)
            #expect(badPrice.status == .badRequest)
            let empty = try await client.json(.get, "/reports/products.csv", token: token)
            #expect(empty.status == .ok)
            #expect(empty.text == "id,sku,name,description,priceMinor,currency,category,stock,attributes,createdAt,updatedAt\r\n")
        }
    }

    @Test(arguments: TestEngine.available)
    func productsReportFollowsTheListFilters(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (port, client, components) = (app.port!, app.client, app.components)
            let (token, tenantId, _) = try await owner(client, "shop@example.com")
            let now = WallClock.milliseconds()
            var products: [Product] = []
            for (index, text) in trickyTexts.enumerated() {
                products.append(
                    Product(
                        id: UUIDv7.make(), tenantId: tenantId, sku: "SKU-\(index)", name: text.isEmpty ? "x" : text, description: text,
                        priceMinor: Int64(index * 100), currency: index % 2 == 0 ? "EUR" : "USD", category: index % 2 == 0 ? "even" : "odd",
                        stock: Int64(index), attributes: "{\"n\":\(index),\"s\":\"a,b\"}", version: 1, createdAt: now, updatedAt: now))
            }
            try await components.catalog.store.upsert(products)
            let stored = try await components.catalog.store.batch(tenantId: tenantId, filter: ProductFilter(), after: nil, limit: 1000)
            func row(_ product: Product) -> [String] {
                [
                    product.id, product.sku, neutralised(product.name), neutralised(product.description ?? ""), String(product.priceMinor),
                    product.currency, product.category ?? "", String(product.stock), product.attributes, timestamp(product.createdAt),
                    timestamp(product.updatedAt),
                ]
            }
            let (rows, _) = try await downloadCSV(port: port, path: "/reports/products.csv", token: token)
            #expect(rows.count == products.count + 1)
            #expect(Array(rows.dropFirst()) == stored.map(row))
            let (even, _) = try await downloadCSV(port: port, path: "/reports/products.csv?category=even&minPrice=200", token: token)
            #expect(Array(even.dropFirst()) == stored.filter { $0.category == "even" && $0.priceMinor >= 200 }.map(row))
        }
    }

    @Test(arguments: TestEngine.available)
    func notificationsReportHoldsEveryUsersNotificationsOfTheTenant(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (port, client, components) = (app.port!, app.client, app.components)
            let (token, tenantId, ownerId) = try await owner(client, "inbox-report@example.com")
            let memberId = try await client.addUser(email: "inbox-member@example.com", token: token).user.id
            for text in trickyTexts where !text.isEmpty {
                _ = try await components.notifications.publish(
                    NotificationDraft(type: "message", title: text, body: text), to: [ownerId, memberId], tenantId: tenantId)
            }
            _ = try await components.notifications.publish(
                NotificationDraft(type: "system_alert", title: "alert"), to: [memberId], tenantId: tenantId)
            // Another tenant's notifications never appear.
            let other = try await owner(client, "inbox-other@example.com")
            _ = try await components.notifications.publish(
                NotificationDraft(type: "message", title: "secret"), to: [other.userId], tenantId: other.tenantId)

            let stored = try await components.notifications.store.batch(tenantId: tenantId, type: nil, after: nil, limit: 10_000)
            let (rows, _) = try await downloadCSV(port: port, path: "/reports/notifications.csv", token: token)
            #expect(rows.first == ["id", "userId", "seq", "type", "title", "body", "data", "createdAt", "readAt"])
            #expect(rows.count == stored.count + 1)
            #expect(stored.count == 2 * trickyTexts.count + 1)
            #expect(
                Array(rows.dropFirst())
                    == stored.map {
                        [
                            $0.id, $0.userId, String($0.seq), $0.type, neutralised($0.title), neutralised($0.body), $0.data,
                            timestamp($0.createdAt), "",
                        ]
                    })
            #expect(!rows.contains { $0.contains("secret") })
            let (alerts, _) = try await downloadCSV(port: port, path: "/reports/notifications.csv?type=system_alert", token: token)
            #expect(alerts.dropFirst().map { $0[4] } == ["alert"])
        }
    }

    @Test(arguments: TestEngine.available)
    func disconnectMidReportStopsTheDatabaseWorkAndTheServerStaysHealthy(engine: TestEngine) async throws {
        let log = CapturedLog()
        try await withTestApp(engine, mode: .live, runServices: false, logger: log.logger(level: .notice)) { app in
            let (port, client, components) = (app.port!, app.client, app.components)
            let (token, tenantId, userId) = try await owner(client, "big@example.com")
            // About 60 MB of CSV: far more than socket buffers hold, 40 read batches.
            let filler = String(repeating: "lorem ipsum dolor sit amet ", count: 30)
            let now = WallClock.milliseconds()
            for _ in 0..<8 {
                let items = (0..<10_000).map { index in
                    TaskItem(
                        id: UUIDv7.make(), tenantId: tenantId, title: "Task \(index)", description: filler, completed: false,
                        createdBy: userId, version: 1, createdAt: now, updatedAt: now)
                }
                try await components.tasks.insertBatch(items)
            }
            let totalBatches = 80_000 / 2000
            let before = try await client.json(.get, "/metrics").text
            let abortedBefore = metric(before, "cairn_reports_aborted_total", label: "tasks")
            let batchesBefore = metric(before, "cairn_report_batches_read_total", label: "tasks")

            // A client that reads 256 KiB, then resets the connection.
            let script = """
                import socket, struct, sys
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
                s.sendall(("GET /reports/tasks.csv HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer " + sys.argv[2] + "\\r\\n\\r\\n").encode())
                got = 0
                while got < 262144:
                    chunk = s.recv(65536)
                    if not chunk: break
                    got += len(chunk)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                print(got)
                """
            let received = try await runPython(script, [String(port), token])
            #expect((Int(String(decoding: received, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 262_144)

            // The server notices at its next write, counts the abort and stops reading.
            try await log.wait(forLineContaining: "report stopped before the end")
            #expect(metric(try await client.json(.get, "/metrics").text, "cairn_reports_aborted_total", label: "tasks") >= abortedBefore + 1)
            // The active gauge goes down as the report's task unwinds, just after that line:
            // nothing marks that moment, so it is polled.
            try await pollUntil("no report active") { metric(try await client.json(.get, "/metrics").text, "cairn_reports_active") == 0 }
            let after = try await client.json(.get, "/metrics").text
            let batchesRead = metric(after, "cairn_report_batches_read_total", label: "tasks") - batchesBefore
            #expect(batchesRead < Double(totalBatches))
            #expect(batchesRead >= 1)

            // Healthy: other requests still work.
            #expect(try await client.json(.get, "/health/live").status == .ok)
            #expect(try await client.json(.get, "/tasks?limit=5", token: token).status == .ok)
        }
    }
}
