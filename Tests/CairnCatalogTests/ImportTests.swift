import CairnFormats
import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CairnCatalog

/// Sends a raw body.
func send(
    _ client: any TestClientProtocol, _ path: String, body: String, contentType: String, token: String
) async throws -> TestResponse {
    try await client.execute(
        uri: path, method: .post, headers: [.contentType: contentType, .authorization: "Bearer \(token)"], body: ByteBuffer(string: body))
}

/// Waits (on job events) for an import job to finish and returns it as `GET /jobs/{id}` shows it.
func finishedJob(_ app: TestApp, _ id: String, token: String) async throws -> [String: Any] {
    try await app.components.jobs.waitUntilFinished(id)
    return try await app.client.json(.get, "/jobs/\(id)", token: token).object
}

/// Runs an import of a raw body, expects it to succeed and returns its job's `progress`.
func importSucceeding(_ app: TestApp, body: String, contentType: String, token: String) async throws -> [String: Any] {
    let accepted = try await send(app.client, "/products:import", body: body, contentType: contentType, token: token)
    try #require(accepted.status == .accepted)
    let job = try await finishedJob(app, try #require(accepted.object["id"] as? String), token: token)
    #expect(job["state"] as? String == "succeeded")
    return try #require(job["progress"] as? [String: Any])
}

@Suite("Catalog: imports")
struct ProductImportTests {
    @Test(arguments: TestEngine.available)
    func csvImportUpsertsBySKUAndRecordsRowErrors(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "import@example.com")
            try await createProduct(client, token: token, ["sku": "KEEP-1", "name": "Old name", "priceMinor": 1])
            let csv =
                "sku,name,description,priceMinor,currency,category,stock,attributes\r\n"
                + "KEEP-1,New name,\"Has, comma and \"\"quotes\"\"\",2500,EUR,tools,3,\"{\"\"color\"\":\"\"red\"\"}\"\r\n"
                + "NEW-1,Fresh,\"multi\nline\",100,USD,,0,\r\n"
                + "BAD-1,No price,,abc,EUR,,,\r\n"
                + "BAD-2,Bad currency,,5,EURO,,,\r\n"
                + "bad sku,x,,5,EUR,,,\r\n"
                + "NEW-2,Zürich Café,,700,CHF,food,1,\r\n"
            let accepted = try await send(client, "/products:import", body: csv, contentType: "text/csv", token: token)
            #expect(accepted.status == .accepted)
            let jobId = try #require(accepted.object["id"] as? String)
            #expect(accepted.headers[.location] == "/jobs/\(jobId)")
            let job = try await finishedJob(app, jobId, token: token)
            #expect(job["state"] as? String == "succeeded")
            let progress = try #require(job["progress"] as? [String: Any])
            #expect(progress["imported"] as? Int == 3)
            #expect(progress["failed"] as? Int == 3)
            let errors = progress["errors"] as? [[String: Any]] ?? []
            #expect(errors.map { $0["row"] as? Int } == [3, 4, 5])
            #expect(errors.map { $0["field"] as? String } == ["priceMinor", "currency", "sku"])

            let kept = try await client.json(.get, "/products/by-sku/KEEP-1", token: token)
            #expect(kept.object["name"] as? String == "New name")
            #expect(kept.object["description"] as? String == "Has, comma and \"quotes\"")
            #expect(kept.object["version"] as? Int == 2)
            #expect((kept.object["attributes"] as? [String: Any])?["color"] as? String == "red")
            #expect(try await client.json(.get, "/products/by-sku/NEW-1", token: token).object["description"] as? String == "multi\nline")
            #expect(try await client.json(.get, "/products/by-sku/NEW-2", token: token).object["name"] as? String == "Zürich Café")
            #expect(try await client.json(.get, "/products/by-sku/BAD-1", token: token).status == .notFound)
        }
    }

    @Test(arguments: TestEngine.available)
    func ndjsonImportAndRefusals(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "nd@example.com")
            let ndjson = """
                {"sku":"J-1","name":"One","priceMinor":100,"currency":"EUR","attributes":{"size":"L"}}
                not json
                {"sku":"J-2","name":"Two","priceMinor":"200","currency":"GBP","stock":4}

                {"sku":"J-3","priceMinor":1,"currency":"EUR"}
                {"sku":"J-4","name":"Four","priceMinor":1,"currency":"EUR","colour":"red"}
                {"sku":"J-5","name":"Five","priceMinor":1,"currency":"EUR","name":"Six"}
                """
            let accepted = try await send(client, "/products:import", body: ndjson, contentType: "application/x-ndjson", token: token)
            #expect(accepted.status == .accepted)
            let job = try await finishedJob(app, try #require(accepted.object["id"] as? String), token: token)
            let progress = try #require(job["progress"] as? [String: Any])
            #expect(progress["imported"] as? Int == 2)
            #expect(progress["failed"] as? Int == 4)
            // Unknown and repeated keys are row errors, as an unknown CSV column is refused.
            let errors = progress["errors"] as? [[String: Any]] ?? []
            let found = Set(errors.map { "\($0["row"] as? Int ?? 0) \($0["field"] as? String ?? "") \($0["issue"] as? String ?? "")" })
            #expect(found.contains("5 colour \(ImportRows.unknownIssue(kind: "field"))"), "\(found)")
            #expect(found.contains("6 name appears more than once"), "\(found)")
            #expect(Set(errors.map { $0["field"] as? String ?? "" }) == ["row", "name", "colour"])
            #expect(try await client.json(.get, "/products/by-sku/J-4", token: token).status == .notFound)
            #expect(try await client.json(.get, "/products/by-sku/J-5", token: token).status == .notFound)
            #expect(try await client.json(.get, "/products/by-sku/J-2", token: token).object["stock"] as? Int == 4)

            #expect(try await send(client, "/products:import", body: "x", contentType: "text/plain", token: token).status == .unsupportedMediaType)
            #expect(try await send(client, "/products:import", body: "  \n", contentType: "text/csv", token: token).status == .badRequest)
            let member = try await client.addUser(email: "m@example.com", token: token).tokens.accessToken
            #expect(try await send(client, "/products:import", body: "sku\r\n", contentType: "text/csv", token: member).status == .forbidden)
            // A header naming unknown columns is refused at once, naming each and the known ones.
            let badHeader = try await send(
                client, "/products:import", body: "sku,colour,size\r\nA,red,L\r\n", contentType: "text/csv", token: token)
            #expect(badHeader.status == .badRequest)
            let issue = try #require((badHeader.object["errors"] as? [[String: Any]])?.first)
            #expect(issue["field"] as? String == "body")
            let text = try #require(issue["issue"] as? String)
            #expect(text.contains("\"colour\"") && text.contains("\"size\"") && text.contains("priceMinor"), "\(text)")
        }
    }

    /// An import stored with a header the job cannot use (one accepted before the header was
    /// checked up front) is discarded with a message naming the column, and a progress error on it.
    @Test(arguments: TestEngine.available)
    func aJobRefusingAHeaderNamesTheColumn(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let (token, tenantId) = try await owner(app.client, "bad-header-job@example.com")
            let importId = try await app.components.catalog.store.saveImport(tenantId: tenantId, format: "csv", body: "sku,colour\r\nA,red\r\n")
            let (job, _) = try await app.components.jobs.enqueue(
                ImportProducts(importId: importId, format: "csv"), tenantId: tenantId, createdBy: nil)
            let failed = try await finishedJob(app, job.id, token: token)
            #expect(failed["state"] as? String == "discarded")
            #expect(((failed["progress"] as? [String: Any])?["errors"] as? [[String: Any]])?.first?["field"] as? String == "colour")
            let message = try #require((failed["errors"] as? [[String: Any]])?.last?["error"] as? String)
            #expect(message.contains("colour is not a known column") && message.contains("priceMinor"), "\(message)")
        }
    }

    /// An import row equal to the stored product (CSV or NDJSON, all columns or some) writes
    /// nothing: `version` and `updatedAt` stay, though the row counts as imported (accepted);
    /// a row with one differing value is a change.
    @Test(arguments: TestEngine.available)
    func anImportRowEqualToTheProductChangesNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "same-import@example.com")
            let created = try await createProduct(
                client, token: token,
                [
                    "sku": "SAME-1", "name": "Same", "description": "Kept", "priceMinor": 250, "currency": "EUR", "category": "tools",
                    "stock": 42, "attributes": ["color": "red", "size": 2],
                ])
            let stamped = try #require(Timestamp.parseMilliseconds(created["updatedAt"] as? String ?? ""))
            // Past the creation's millisecond, so any write would carry a later `updatedAt`.
            try await withDeadline(.seconds(5), "the wall clock to move on") {
                while WallClock.milliseconds() <= stamped { await Task.yield() }
            }
            func run(_ body: String, _ contentType: String) async throws -> [String: Any] {
                try await importSucceeding(app, body: body, contentType: contentType, token: token)
            }
            let imports: [(body: String, type: String)] = [
                (
                    "sku,name,description,priceMinor,currency,category,stock,attributes\r\n"
                        + "SAME-1,Same,Kept,250,EUR,tools,42,\"{\"\"size\"\":2,\"\"color\"\":\"\"red\"\"}\"\r\n", "text/csv"
                ),
                ("sku,name,stock\r\nSAME-1,Same,42\r\n", "text/csv"),
                (
                    #"{"sku":"SAME-1","name":"Same","priceMinor":250,"currency":"EUR","attributes":{"color":"red","size":2}}"# + "\n",
                    "application/x-ndjson"
                ),
            ]
            for (body, type) in imports {
                let progress = try await run(body, type)
                #expect(progress["imported"] as? Int == 1, "\(body)")
                #expect(progress["failed"] as? Int == 0, "\(body)")
                let product = try await client.json(.get, "/products/by-sku/SAME-1", token: token).object
                #expect(product["version"] as? Int == 1, "\(body)")
                #expect(product["updatedAt"] as? String == created["updatedAt"] as? String, "\(body)")
            }
            _ = try await run("sku,name,stock\r\nSAME-1,Same,43\r\n", "text/csv")
            let changed = try await client.json(.get, "/products/by-sku/SAME-1", token: token).object
            #expect(changed["version"] as? Int == 2)
            #expect(changed["stock"] as? Int == 43)
        }
    }

    /// Issue 20: an import is an upsert by SKU of the columns its file has. A CSV without the
    /// optional columns (or an NDJSON record without their keys) leaves them as they are; an
    /// explicit null clears an optional column; a row that would create a product without a
    /// required column is a row error naming it.
    @Test(arguments: TestEngine.available)
    func anImportUpdatesOnlyTheColumnsItsFileHas(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "partial-import@example.com")
            try await createProduct(
                client, token: token,
                ["sku": "FULL-1", "name": "Full", "description": "Kept", "category": "tools", "stock": 42, "attributes": ["color": "red"]])
            // Read once, so a stale cache entry would show if the import forgot to invalidate.
            #expect(try await client.json(.get, "/products/by-sku/FULL-1", token: token).object["stock"] as? Int == 42)
            func run(_ body: String, _ contentType: String) async throws -> [String: Any] {
                try await importSucceeding(app, body: body, contentType: contentType, token: token)
            }
            func product(_ sku: String) async throws -> [String: Any] {
                try await client.json(.get, "/products/by-sku/\(sku)", token: token).object
            }

            var progress = try await run("sku,name,priceMinor,currency\r\nFULL-1,Renamed,250,EUR\r\n", "text/csv")
            #expect(progress["imported"] as? Int == 1)
            var full = try await product("FULL-1")
            #expect(full["name"] as? String == "Renamed")
            #expect(full["priceMinor"] as? Int == 250)
            #expect(full["stock"] as? Int == 42)
            #expect(full["description"] as? String == "Kept")
            #expect(full["category"] as? String == "tools")
            #expect((full["attributes"] as? [String: Any])?["color"] as? String == "red")
            #expect(full["version"] as? Int == 2)

            // An update needs only the SKU and what changes; a new SKU needs the required columns.
            progress = try await run("sku,stock\r\nFULL-1,7\r\nNEW-9,3\r\n", "text/csv")
            #expect(progress["imported"] as? Int == 1)
            #expect(progress["failed"] as? Int == 1)
            var errors = progress["errors"] as? [[String: Any]] ?? []
            #expect(errors.map { $0["row"] as? Int } == [2])
            #expect(errors.map { $0["field"] as? String } == ["name"])
            #expect(try await client.json(.get, "/products/by-sku/NEW-9", token: token).status == .notFound)
            full = try await product("FULL-1")
            #expect(full["stock"] as? Int == 7)
            #expect(full["name"] as? String == "Renamed")
            #expect(full["description"] as? String == "Kept")

            // NDJSON: a key left out stays, a null clears an optional column (and may not null a
            // required one); two rows of one SKU apply in order.
            let ndjson = """
                {"sku":"FULL-1","description":null,"attributes":null}
                {"sku":"FULL-1","category":null}
                {"sku":"FULL-1","name":null}
                {"sku":"NEW-2","name":"Created","priceMinor":5,"currency":"USD"}
                {"sku":"NEW-3","priceMinor":5,"currency":"USD"}
                """
            progress = try await run(ndjson, "application/x-ndjson")
            #expect(progress["imported"] as? Int == 3)
            errors = progress["errors"] as? [[String: Any]] ?? []
            #expect(errors.map { $0["row"] as? Int } == [3, 5])
            #expect(errors.map { $0["field"] as? String } == ["name", "name"])
            full = try await product("FULL-1")
            #expect(full["description"] is NSNull)
            #expect(full["category"] is NSNull)
            #expect((full["attributes"] as? [String: Any])?.isEmpty == true)
            #expect(full["stock"] as? Int == 7)
            #expect(full["name"] as? String == "Renamed")
            #expect(full["priceMinor"] as? Int == 250)
            let created = try await product("NEW-2")
            #expect(created["stock"] as? Int == 0)
            #expect(created["description"] is NSNull)
        }
    }

    @Test(arguments: TestEngine.available)
    func brokenQuotingFailsTheWholeFileBeforeAnyRowIsWritten(engine: TestEngine) async throws {
        try await withTestApp(engine, runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "broken-quote@example.com")
            // More good rows than one batch, then a quote that is never closed.
            let good = ProductImporter.batchSize + 10
            let csv = "sku,name,priceMinor,currency\r\n" + (1...good).map { "S-\($0),Name,1,EUR\r\n" }.joined() + "LAST,\"open,1,EUR\r\n"
            let accepted = try await send(client, "/products:import", body: csv, contentType: "text/csv", token: token)
            let job = try await finishedJob(app, try #require(accepted.object["id"] as? String), token: token)
            #expect(job["state"] as? String == "discarded")
            let progress = try #require(job["progress"] as? [String: Any])
            #expect(progress["imported"] as? Int == 0)
            let errors = try #require(progress["errors"] as? [[String: Any]])
            #expect(errors.map { $0["field"] as? String } == ["body"])
            #expect(errors.first?["row"] as? Int == good + 1)
            #expect(try await client.json(.get, "/products/by-sku/S-1", token: token).status == .notFound)
        }
    }

    @Test(arguments: TestEngine.available, TestBlobBackend.available)
    func anUploadedFileCanBeImportedByItsId(engine: TestEngine, backend: TestBlobBackend) async throws {
        try await withTestApp(engine, configure: try await backend.configure(), runServices: true) { app in
            let client = app.client
            let (token, _) = try await owner(client, "import-file@example.com")
            // With the byte-order mark Excel writes in front of "CSV UTF-8" files.
            let csv = "\u{FEFF}sku,name,priceMinor,currency\r\nF-1,From a file,990,EUR\r\nF-2,Second,10,USD\r\n"
            let uploaded = try await send(client, "/files", body: csv, contentType: "text/csv", token: token)
            #expect(uploaded.status == .created)
            let fileId = try #require(uploaded.object["id"] as? String)
            let accepted = try await client.json(.post, "/products:import", ["fileId": fileId], token: token)
            #expect(accepted.status == .accepted)
            let job = try await finishedJob(app, try #require(accepted.object["id"] as? String), token: token)
            #expect((job["progress"] as? [String: Any])?["imported"] as? Int == 2)
            #expect(try await client.json(.get, "/products/by-sku/F-1", token: token).object["priceMinor"] as? Int == 990)

            // Another tenant's file does not exist for this one; an XML file is not an import.
            let (stranger, _) = try await owner(client, "import-file-2@example.com")
            #expect(try await client.json(.post, "/products:import", ["fileId": fileId], token: stranger).status == .notFound)
            let xml = try await send(client, "/files", body: "<a/>", contentType: "application/xml", token: token)
            let wrong = try await client.json(.post, "/products:import", ["fileId": try #require(xml.object["id"] as? String)], token: token)
            #expect(wrong.status == .badRequest)
            #expect(try await client.json(.post, "/products:import", ["fileId": 5], token: token).status == .badRequest)

            // A file whose header names an unknown column is refused before any job, naming it.
            let odd = try await send(client, "/files", body: "sku,name,colour\r\nF-3,Odd,red\r\n", contentType: "text/csv", token: token)
            let refused = try await client.json(.post, "/products:import", ["fileId": try #require(odd.object["id"] as? String)], token: token)
            #expect(refused.status == .badRequest)
            let issue = try #require((refused.object["errors"] as? [[String: Any]])?.first)
            #expect(issue["field"] as? String == "fileId")
            #expect((issue["issue"] as? String)?.contains("an unknown column, \"colour\" (the known columns are attributes,") == true, "\(issue)")
        }
    }
}

/// All rows of an import body, as `(line, fields or the issue)`.
func importRows(_ format: String, _ body: String, chunkSize: Int = 1 << 20) throws -> [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] {
    var rows = try ImportRows(format: format, source: MemoryByteSource(body, chunkSize: chunkSize))
    var all: [(line: Int, row: Result<ImportRows.Row, ImportIssue>)] = []
    while let next = try rows.next() { all.append(next) }
    return all
}

@Suite("Catalog: import rows, streamed")
struct ImportRowsTests {
    @Test func csvRowsAreTextByColumnNameAndARaggedRowIsOneBadRow() throws {
        let csv = "\u{FEFF} sku ,name,stock\r\nA;x,NA,\r\n\r\nB,\"two\r\nlines, \"\"q\"\"\",5\nC,1\nD,,7"
        for chunk in [1, 5, 1 << 20] {
            let rows = try importRows("csv", csv, chunkSize: chunk)
            #expect(rows.map(\.line) == [1, 2, 3, 4], "a blank line is not a row")
            #expect(try rows[0].row.get() == ["sku": .text("A;x"), "name": .text("NA"), "stock": .text("")], "NA and empty stay text")
            #expect(try rows[1].row.get()["name"] == .text("two\r\nlines, \"q\""))
            #expect(throws: ImportIssue.self) { try rows[2].row.get() }
            #expect(try rows[3].row.get()["stock"] == .text("7"))
        }
    }

    @Test func csvHeadersNameKnownColumnsOnly() throws {
        #expect(throws: ImportIssue.self) { try importRows("csv", "sku,colour\r\nA,red\r\n") }
        #expect(throws: ImportIssue.self) { try importRows("csv", "sku,\"name\n") }
        #expect(try importRows("csv", "sku\r\n").isEmpty)
    }

    @Test(arguments: ["sku,name\nA,x\nB,\"open\nC,y\n", "sku,name\nA,x\nB,\"quoted\"after\nC,y\n"])
    func brokenQuotingFailsTheWholeFile(_ csv: String) throws {
        var rows = try ImportRows(format: "csv", source: MemoryByteSource(csv))
        #expect(try rows.next()?.line == 1)
        do {
            _ = try rows.next()
            Issue.record("the broken record was read")
        } catch let issue as ImportIssue {
            #expect(issue.field == "body")
            #expect(issue.row == 2)
        }
    }

    @Test func ndjsonLinesAreObjectsAndABadLineIsOneBadRow() throws {
        let ndjson =
            "{\"sku\":\"A\",\"priceMinor\":1,\"attributes\":{\"a\":[1]}}\n\n  \nnot json\n{\"sku\":\"B\"} {\"sku\":\"C\"}\n{\"sku\":\"D\",\n\"x\":1}\n{\"sku\":\"E\",\"sku\":\"F\"}"
        for chunk in [1, 7, 1 << 20] {
            let rows = try importRows("ndjson", ndjson, chunkSize: chunk)
            #expect(rows.map(\.line) == [1, 2, 3, 4, 5, 6])
            #expect(try rows[0].row.get() == ["sku": .text("A"), "priceMinor": .integer(1), "attributes": .json(#"{"a":[1]}"#)])
            for bad in [1, 2, 3, 4] { #expect(throws: ImportIssue.self) { try rows[bad].row.get() } }
            // A repeated key is refused, not resolved in favour of one copy.
            #expect(throws: ImportIssue(row: 6, field: "sku", issue: "appears more than once")) { try rows[5].row.get() }
        }
    }

    /// Issue 20: NDJSON is as strict as a CSV header: a key that is no product field is a row
    /// error naming it (not silently dropped), and reading goes on with the next line.
    @Test func ndjsonKeysMustBeKnownAndUnique() throws {
        let ndjson = """
            {"sku":"A","colour":"red"}
            {"sku":"B","name":"b","name":"c"}
            {"sku":"C","priceMinor":1}
            """
        let rows = try importRows("ndjson", ndjson)
        #expect(rows.map(\.line) == [1, 2, 3])
        #expect(throws: ImportIssue(row: 1, field: "colour", issue: ImportRows.unknownIssue(kind: "field"))) { try rows[0].row.get() }
        #expect(throws: ImportIssue(row: 2, field: "name", issue: "appears more than once")) { try rows[1].row.get() }
        #expect(try rows[2].row.get() == ["sku": .text("C"), "priceMinor": .integer(1)])
        #expect(ImportRows.unknownIssue(kind: "field").hasPrefix("is not a known field (attributes, category, "))
    }

    @Test func ndjsonValuesBecomeProductFieldsAsInPostProducts() throws {
        func product(_ fields: ImportRows.Row) -> Result<Product, ImportIssue> {
            ProductImporter.product(from: fields, line: 1, tenantId: "t", now: 0).map(\.upsert.product)
        }
        let good = try product([
            "sku": .text("A"), "name": .text(" A "), "priceMinor": .real(100), "currency": .text("EUR"), "stock": .text(" 4 "),
            "attributes": .json(#"{"size":"L"}"#),
        ]).get()
        #expect(good.priceMinor == 100 && good.stock == 4 && good.name == "A")
        #expect(good.attributes == #"{"size":"L"}"#)
        let base: ImportRows.Row = ["sku": .text("A"), "name": .text("A"), "priceMinor": .integer(1), "currency": .text("EUR")]
        for (field, value, issue) in [
            ("priceMinor", FieldValue.real(1.5), "must be an integer"), ("priceMinor", .integer(9_000_000_000_000_000), "must be an integer"),
            ("priceMinor", .bool(true), "must be an integer"), ("priceMinor", .null, "must not be null"), ("sku", .integer(1), "must be a string"),
            ("attributes", .json("[1]"), "must be a JSON object"), ("attributes", .text("{"), "must be a JSON object"),
            ("attributes", .integer(1), "must be a JSON object"),
        ] {
            var fields = base
            fields[field] = value
            #expect(throws: ImportIssue.self, "\(field) \(value)") { try product(fields).get() }
            if case .failure(let failure) = product(fields) {
                #expect(failure.field == field)
                #expect(failure.issue == issue)
            }
        }
    }
}
