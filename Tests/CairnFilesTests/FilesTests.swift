import CairnFiles
import CairnHTTP
import CairnServer
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Files: upload, download, quotas")
struct FilesTests {
    @Test(arguments: TestEngine.available)
    func anUploadIsStoredHashedListedDownloadedAndDeleted(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "files@example.com") { client, components, token in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(sharedData)/penguins.csv")))
            let created = try await upload(
                client, token: token, bytes, headers: [.contentDisposition: "attachment; filename=\"../../etc/passwd\""])
            #expect(created.status == .created)
            let file = created.object
            let id = try #require(file["id"] as? String)
            #expect(created.headers[.location] == "/files/\(id)")
            #expect(file["name"] as? String == "../../etc/passwd", "a name is only a label")
            #expect(file["size"] as? Int == bytes.count)
            #expect(file["sha256"] as? String == hex(SHA256.hash(data: bytes)))
            #expect(file["format"] as? String == "csv")
            // The blob is named by id inside the tenant's folder, never by the given name.
            let onDisk = components.configuration.dataDir + "/blobs"
            let stored = FileManager.default.enumerator(atPath: onDisk)?.allObjects as? [String] ?? []
            #expect(stored.contains { $0.hasSuffix("/" + id) })
            #expect(!stored.contains { $0.contains("passwd") })

            let listed = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(listed?.map { $0["id"] as? String } == [id])
            let whole = try await client.execute(uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)"])
            #expect(whole.status == .ok)
            #expect(Array(whole.body.readableBytesView) == bytes)
            #expect(whole.headers[.acceptRanges] == "bytes")

            let part = try await client.execute(
                uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=10-19"])
            #expect(part.status == .partialContent)
            #expect(Array(part.body.readableBytesView) == Array(bytes[10...19]))
            #expect(part.headers[.contentRange] == "bytes 10-19/\(bytes.count)")
            let tail = try await client.execute(
                uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=-5"])
            #expect(Array(tail.body.readableBytesView) == Array(bytes.suffix(5)))
            let beyond = try await client.execute(
                uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(token)", .range: "bytes=\(bytes.count)-"])
            #expect(beyond.status == .rangeNotSatisfiable)
            #expect(beyond.headers[.contentRange] == "bytes */\(bytes.count)")

            // Another tenant sees nothing.
            let stranger = try await client.registerAndLogin(email: "files-other@example.com").tokens.accessToken
            #expect(try await client.json(.get, "/files/\(id)", token: stranger).status == .notFound)
            #expect(try await client.json(.get, "/files/\(id)/content", token: stranger).status == .notFound)
            #expect(try await client.json(.delete, "/files/\(id)", token: stranger).status == .notFound)

            #expect(try await client.json(.delete, "/files/\(id)", token: token).status == .noContent)
            #expect(try await client.json(.get, "/files/\(id)", token: token).status == .notFound)
            let left = FileManager.default.enumerator(atPath: onDisk)?.allObjects as? [String] ?? []
            #expect(!left.contains { $0.hasSuffix("/" + id) })
        }
    }

    @Test(arguments: TestEngine.available)
    func formatsMediaTypesAndNamesAreChecked(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "files-types@example.com") { client, _, token in
            let json = try await upload(client, token: token, Array("[{\"a\":1}]".utf8), contentType: "application/json; charset=utf-8")
            #expect(json.object["format"] as? String == "json")
            #expect(json.object["name"] as? String == "upload.json")
            let octet = try await upload(
                client, token: token, Array("<a/>".utf8), contentType: "application/octet-stream", query: "?format=xml&name=na%C3%AFve.xml")
            #expect(octet.object["format"] as? String == "xml")
            #expect(octet.object["name"] as? String == "naïve.xml")
            let extended = try await upload(
                client, token: token, Array("a\n1\n".utf8), headers: [.contentDisposition: "attachment; filename*=UTF-8''caf%C3%A9.csv"])
            #expect(extended.object["name"] as? String == "café.csv")
            let noFormat = try await upload(client, token: token, [1, 2, 3], contentType: "application/octet-stream")
            #expect(noFormat.status == .badRequest)
            #expect(noFormat.code == "invalid_input")
            let image = try await upload(client, token: token, [1, 2, 3], contentType: "image/png")
            #expect(image.status == .unsupportedMediaType)
            #expect(image.code == "unsupported_media_type")
            let badName = try await upload(client, token: token, [0x61], query: "?name=a%0Ab")
            #expect(badName.status == .badRequest)
        }
    }

    @Test(arguments: TestEngine.available)
    func quotasRefuseBeforeTheDiskFills(engine: TestEngine) async throws {
        try await withTestApp(
            engine,
            configure: {
                $0.files.quotas.maxFileBytes = 1000
                $0.files.quotas.maxTotalBytes = 2500
                $0.files.quotas.maxBytesPerHour = 4000
            }
        ) { client, components in
            let token = try await client.registerAndLogin(email: "files-quota@example.com").tokens.accessToken
            let big = try await upload(client, token: token, [UInt8](repeating: 0x61, count: 1001))
            #expect(big.status == .contentTooLarge)
            #expect(big.code == "payload_too_large")
            for _ in 0..<2 { #expect(try await upload(client, token: token, [UInt8](repeating: 0x61, count: 1000)).status == .created) }
            let over = try await upload(client, token: token, [UInt8](repeating: 0x61, count: 600))
            #expect(over.status == .contentTooLarge, "2,000 + 600 bytes exceed the 2,500-byte total")
            let items = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(items?.count == 2, "nothing half-written is listed")
            // Deleting frees room, but the hourly volume still counts what was uploaded.
            for item in items ?? [] { _ = try await client.json(.delete, "/files/\(item["id"] as! String)", token: token) }
            #expect(try await upload(client, token: token, [UInt8](repeating: 0x61, count: 1000)).status == .created)
            #expect(try await upload(client, token: token, [UInt8](repeating: 0x61, count: 1000)).status == .created)
            let hourly = try await upload(client, token: token, [UInt8](repeating: 0x61, count: 10))
            #expect(hourly.status == .tooManyRequests)
            #expect(hourly.headers[.retryAfter] != nil)
            let blobs = FileManager.default.enumerator(atPath: components.configuration.dataDir + "/blobs")?.allObjects as? [String] ?? []
            #expect(blobs.filter { !$0.contains("/.") && $0.contains("/") }.count == 2, "refused uploads leave no blob behind")
        }
    }

    @Test(arguments: TestEngine.available)
    func uploadsFinishingTogetherCannotExceedTheTotalQuota(engine: TestEngine) async throws {
        try await withTestApp(
            engine,
            configure: {
                $0.files.quotas.maxFileBytes = 100_000; $0.files.quotas.maxTotalBytes = 250_000
            }
        ) { client, _ in
            let token = try await client.registerAndLogin(email: "files-race@example.com").tokens.accessToken
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<8 { group.addTask { try await upload(client, token: token, [UInt8](repeating: 0x61, count: 100_000)).status } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .created }.count == 2, "\(statuses)")
            #expect(statuses.filter { $0 == .contentTooLarge }.count == 6)
            let items = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(items?.count == 2)
        }
    }

    @Test func namesRangesAndMembersFollowTheRules() async throws {
        try await withTestApp(.sqlite) { client, _ in
            let (_, ownerTokens) = try await client.registerAndLogin(email: "files-rules@example.com")
            let owner = ownerTokens.accessToken
            let quoted = try await upload(client, token: owner, [0x61], headers: [.contentDisposition: #"attachment; filename="a;b \"c\".csv""#])
            #expect(quoted.object["name"] as? String == #"a;b "c".csv"#)
            let latin1 = try await upload(
                client, token: owner, [0x61], headers: [.contentDisposition: "attachment; filename*=ISO-8859-1''%E9t%E9.csv"])
            #expect(latin1.object["name"] as? String == "été.csv")
            for bad in [#"attachment; filename="abc"#, "attachment; filename*=UTF-8''%FF%FE.csv", "attachment; filename*=UTF-8''a%ZZb.csv"] {
                let refused = try await upload(client, token: owner, [0x61], headers: [.contentDisposition: bad])
                #expect(refused.status == .badRequest, "\(bad)")
            }
            #expect(try await upload(client, token: owner, [0x61], query: "?name=%FF").status == .badRequest)

            let id = try #require(latin1.object["id"] as? String)
            func fetch(_ range: String) async throws -> TestResponse {
                try await client.execute(uri: "/files/\(id)/content", method: .get, headers: [.authorization: "Bearer \(owner)", .range: range])
            }
            #expect(try await fetch("bytes=99999999999999999999999-").status == .rangeNotSatisfiable)
            #expect(try await fetch("bytes=+0-0").status == .ok)
            #expect(try await fetch("bytes=-+1").status == .ok)
            #expect(try await fetch("bytes=0-99999999999999999999999").status == .partialContent)

            // A member deletes only what they uploaded.
            let member = try await client.addUser(email: "files-member@example.com", token: owner).tokens.accessToken
            #expect(try await client.json(.delete, "/files/\(id)", token: member).status == .forbidden)
            let own = try await upload(client, token: member, [0x62])
            #expect(try await client.json(.delete, "/files/\(own.object["id"] as! String)", token: member).status == .noContent)
            #expect(try await client.json(.delete, "/files/\(id)", token: owner).status == .noContent)
        }
    }
}
