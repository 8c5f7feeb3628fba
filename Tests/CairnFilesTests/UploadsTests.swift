import CairnFiles
import CairnHTTP
import CairnServer
import CairnStorage
import CairnTestSupport
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

@Suite("Uploads: tus 1.0 and multipart/form-data")
struct UploadsTests {
    /// An upload is its uploader's (issue 13): another member of the tenant can neither read
    /// its offset, append to it nor terminate it (403 `forbidden`, as for files and jobs);
    /// admins and owners can; another tenant does not see it at all (404).
    @Test(arguments: TestEngine.available)
    func onlyTheUploaderAndAdminsMayUseAnUpload(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "tus-owner@example.com") { client, _, owner in
            func member(_ email: String, role: String) async throws -> String {
                try await client.addUser(email: email, role: role, token: owner).tokens.accessToken
            }
            let uploader = try await member("tus-uploader@example.com", role: "member")
            let other = try await member("tus-other@example.com", role: "member")
            let admin = try await member("tus-admin@example.com", role: "admin")
            let stranger = try await client.registerAndLogin(email: "tus-stranger@example.com").tokens.accessToken
            let metadata = "filename \(base64("data.csv")),filetype \(base64("text/csv"))"
            let created = try await tusRequest(
                client, .post, "/uploads", token: uploader, headers: [uploadLength: "10", uploadMetadata: metadata])
            try #require(created.status == .created)
            let location = try #require(created.headers[.location])

            #expect(try await tusRequest(client, .head, location, token: other).status == .forbidden)
            let refused = try await patch(client, location, token: other, offset: 0, Array("hello".utf8))
            #expect(refused.status == .forbidden)
            #expect(refused.code == "forbidden")
            #expect(refused.headers[tus] == "1.0.0")
            let notTerminated = try await tusRequest(client, .delete, location, token: other)
            #expect(notTerminated.status == .forbidden)
            #expect(notTerminated.code == "forbidden")
            #expect(try await tusRequest(client, .head, location, token: stranger).status == .notFound)

            #expect(try await patch(client, location, token: uploader, offset: 0, Array("hello".utf8)).status == .noContent)
            let seenByAdmin = try await tusRequest(client, .head, location, token: admin)
            #expect(seenByAdmin.status == .ok)
            #expect(seenByAdmin.headers[uploadOffset] == "5")
            #expect(try await patch(client, location, token: admin, offset: 5, Array("world".utf8)).status == .noContent)
            #expect(try await tusRequest(client, .delete, location, token: owner).status == .noContent)
            #expect(try await tusRequest(client, .head, location, token: uploader).status == .notFound)
        }
    }

    /// A creation-with-upload whose `Upload-Checksum` cannot be read is refused before the
    /// upload is recorded: before, it was recorded and leased first, so the 400 left an upload
    /// that no request could append to until its lease ran out.
    @Test(arguments: TestEngine.available)
    func aCreationWithAMalformedChecksumRecordsNothing(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "tus-sum@example.com") { client, components, token in
            let refused = try await tusRequest(
                client, .post, "/uploads", token: token,
                headers: [
                    uploadLength: "5", .contentType: "application/offset+octet-stream", HTTPField.Name("Upload-Checksum")!: "crc32 AAAA",
                    uploadMetadata: "filename ZGF0YS5jc3Y=",
                ],
                body: Array("hello".utf8))
            #expect(refused.status == .badRequest)
            #expect(refused.code == "invalid_input")
            let uploads = try await components.database.rowCount("uploads")
            #expect(uploads == 0)
        }
    }

    /// A filename whose metadata holds a NUL is refused whole, never stored cut at the NUL (a
    /// fresh-user trial reported `evil\0.csv` kept as `evil`; over tus' metadata it is a 400).
    @Test(arguments: TestEngine.available)
    func aFilenameWithANulIsRefusedNotCut(engine: TestEngine) async throws {
        try await withTestApp(engine, owner: "tus-nul@example.com") { client, _, token in
            let name = Data("evil\u{0}.csv".utf8).base64EncodedString()
            let refused = try await tusRequest(
                client, .post, "/uploads", token: token, headers: [uploadLength: "5", uploadMetadata: "filename \(name)"])
            #expect(refused.status == .badRequest, "\(refused.status) \(refused.text)")
            #expect(refused.code == "invalid_input")
        }
    }

    @Test(arguments: TestEngine.available)
    func theTusProtocolOverRealHTTP(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, configure: { $0.files.quotas.maxFileBytes = 1000 }, runServices: false) { app in
            let (client, components) = (app.client, app.components)
            let token = try await client.registerAndLogin(email: "tus@example.com").tokens.accessToken
            let options = try await client.execute(uri: "/uploads", method: .options, headers: [:])
            #expect(options.status == .noContent)
            #expect(options.headers[HTTPField.Name("Tus-Version")!] == "1.0.0")
            #expect(options.headers[HTTPField.Name("Tus-Extension")!]?.contains("checksum") == true)
            #expect(options.headers[HTTPField.Name("Tus-Max-Size")!] == "1000")
            #expect(options.headers[HTTPField.Name("Tus-Checksum-Algorithm")!]?.contains("sha256") == true)

            let metadata = "filename \(base64("data.csv")),filetype \(base64("text/csv"))"
            let wrongVersion = try await tusRequest(
                client, .post, "/uploads", token: token,
                headers: [tus: "0.2.2", uploadLength: "10", uploadMetadata: metadata])
            #expect(wrongVersion.status == .preconditionFailed)
            #expect(wrongVersion.headers[HTTPField.Name("Tus-Version")!] == "1.0.0")
            #expect(wrongVersion.code == "precondition_failed")

            let tooBig = try await tusRequest(client, .post, "/uploads", token: token, headers: [uploadLength: "1001"])
            #expect(tooBig.status == .contentTooLarge)
            #expect(tooBig.code == "payload_too_large")

            let created = try await tusRequest(
                client, .post, "/uploads", token: token, headers: [uploadLength: "10", uploadMetadata: metadata])
            #expect(created.status == .created)
            let location = try #require(created.headers[.location])
            #expect(location.hasPrefix("/uploads/"))
            #expect(created.headers[HTTPField.Name("Upload-Expires")!]?.hasSuffix("GMT") == true)
            let head = try await tusRequest(client, .head, location, token: token)
            #expect(head.status == .ok)
            #expect(head.headers[uploadOffset] == "0")
            #expect(head.headers[uploadLength] == "10")
            #expect(head.headers[.cacheControl] == "no-store")
            // tus 1.0.0: HEAD answers the creation's Upload-Metadata as sent (it was left out).
            #expect(head.headers[uploadMetadata] == metadata)

            let wrongType = try await tusRequest(
                client, .patch, location, token: token, headers: [.contentType: "text/plain", uploadOffset: "0"], body: Array("hello".utf8))
            #expect(wrongType.status == .unsupportedMediaType)
            let mismatch = try await patch(client, location, token: token, offset: 3, Array("hello".utf8))
            #expect(mismatch.status == .conflict)
            #expect(mismatch.code == "conflict")
            let badSum = try await patch(
                client, location, token: token, offset: 0, Array("hello".utf8),
                extra: [HTTPField.Name("Upload-Checksum")!: "sha256 \(Data(SHA256.hash(data: Data("other".utf8))).base64EncodedString())"])
            #expect(badSum.status.code == 460)
            #expect(badSum.code == "checksum_mismatch")
            #expect(try await tusRequest(client, .head, location, token: token).headers[uploadOffset] == "0", "the chunk was not kept")

            let first = try await patch(
                client, location, token: token, offset: 0, Array("hello".utf8),
                extra: [HTTPField.Name("Upload-Checksum")!: "sha256 \(Data(SHA256.hash(data: Data("hello".utf8))).base64EncodedString())"])
            #expect(first.status == .noContent)
            #expect(first.headers[uploadOffset] == "5")
            // Past Upload-Length: 413, as tus 1.0.0 says (it was 400), and nothing of it kept.
            let tooLong = try await patch(client, location, token: token, offset: 5, Array("world!".utf8))
            #expect(tooLong.status == .contentTooLarge, "\(tooLong.text)")
            #expect(tooLong.code == "payload_too_large")
            #expect(tooLong.headers[tus] == "1.0.0")
            #expect(try await tusRequest(client, .head, location, token: token).headers[uploadOffset] == "5")

            let stranger = try await client.registerAndLogin(email: "tus-other@example.com").tokens.accessToken
            #expect(try await tusRequest(client, .head, location, token: stranger).status == .notFound)
            #expect(try await patch(client, location, token: stranger, offset: 5, Array("world".utf8)).status == .notFound)
            #expect(try await tusRequest(client, .delete, location, token: stranger).status == .notFound)

            let last = try await patch(client, location, token: token, offset: 5, Array("world".utf8))
            #expect(last.status == .noContent)
            #expect(last.headers[uploadOffset] == "10")
            let fileId = try #require(last.headers[fileIdHeader])
            #expect(try await tusRequest(client, .head, location, token: token).headers[fileIdHeader] == fileId)
            let file = try await client.json(.get, "/files/\(fileId)", token: token).object
            #expect(file["sha256"] as? String == hex(SHA256.hash(data: Data("helloworld".utf8))))
            #expect(file["name"] as? String == "data.csv")
            #expect(file["format"] as? String == "csv")
            let listed = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(listed?.map { $0["id"] as? String } == [fileId])
            let after = try await patch(client, location, token: token, offset: 10, [1])
            #expect(after.status == .conflict, "a finished upload takes no more")
            #expect(after.text.contains("complete"), "\(after.text)")

            // creation-with-upload, then termination.
            let withBody = try await tusRequest(
                client, .post, "/uploads", token: token,
                headers: [
                    uploadLength: "8", .contentType: "application/offset+octet-stream", uploadMetadata: "filename ZGF0YS5jc3Y=",
                ],
                body: Array("abc".utf8))
            #expect(withBody.status == .created)
            #expect(withBody.headers[uploadOffset] == "3")
            let second = try #require(withBody.headers[.location])
            // The store's folder (the file store by default), not the node's own.
            let partials = components.configuration.dataDir + "/blobs"
            let onDisk = {
                FileManager.default.enumerator(atPath: partials)?.allObjects.compactMap { $0 as? String }.filter { $0.hasSuffix(".part") } ?? []
            }
            #expect(onDisk().count == 1)
            #expect(try await tusRequest(client, .delete, second, token: token).status == .noContent)
            #expect(try await tusRequest(client, .head, second, token: token).status == .notFound)
            #expect(onDisk().isEmpty, "termination removes the bytes")

            // expiration: an upload past its time answers 404, and the sweeper removes its bytes.
            let third = try #require(
                try await tusRequest(
                    client, .post, "/uploads", token: token,
                    headers: [uploadLength: "8", uploadMetadata: "filename ZGF0YS5jc3Y="]
                ).headers[.location])
            #expect(try await patch(client, third, token: token, offset: 0, Array("abcd".utf8)).status == .noContent)
            let id = String(third.dropFirst("/uploads/".count))
            try await components.database.write { db in
                try await db.raw("UPDATE uploads SET expires_at = 0 WHERE id = \(bind: id)").run()
            }
            #expect(try await tusRequest(client, .head, third, token: token).status == .notFound)
            #expect(try await patch(client, third, token: token, offset: 4, Array("efgh".utf8)).status == .notFound)
            let sweeper = UploadExpiryService(
                store: UploadStore(database: components.database), blobs: components.blobs, logger: testLogger)
            #expect(try await sweeper.sweep() == 1)
            #expect(onDisk().isEmpty)
        }
    }

    @Test(arguments: TestEngine.available)
    func aFinishedUploadStillMeetsTheTotalQuota(engine: TestEngine) async throws {
        try await withTotalQuota(engine, 15, owner: "tus-quota@example.com") { app, token in
            let client = app.client
            let a = try #require(
                try await tusRequest(
                    client, .post, "/uploads", token: token,
                    headers: [uploadLength: "10", uploadMetadata: "filename ZGF0YS5jc3Y="]
                ).headers[.location])
            // The first upload's 10 bytes are reserved from its creation (UploadQuotaTests has more).
            let refused = try await tusRequest(
                client, .post, "/uploads", token: token, headers: [uploadLength: "10", uploadMetadata: "filename ZGF0YS5jc3Y="])
            #expect(refused.status == .contentTooLarge, "10 + 10 bytes exceed the 15-byte total")
            #expect(try await patch(client, a, token: token, offset: 0, Array(repeating: 0x61, count: 10)).status == .noContent)
            let items = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(items?.count == 1)
            #expect(
                try await tusRequest(
                    client, .post, "/uploads", token: token,
                    headers: [uploadLength: "6", uploadMetadata: "filename ZGF0YS5jc3Y="]
                ).status == .contentTooLarge)
        }
    }

    /// tuspy against two nodes on one database and one store: `plain` sends chunks of 3 and 7
    /// MiB to the nodes in turn; `cut` loses its connection to node A mid-PATCH and resumes on
    /// node B from HEAD's offset. Both end with hashlib's SHA-256.
    @Test(arguments: TestBlobBackend.available)
    func tuspyUploadsFlightsAndResumesAfterACutConnection(backend: TestBlobBackend) async throws {
        try await TusAnyNodeTests.withTwoNodes(ObjectStoreFilesTests.sharedEngine, backend, mode: .live) { app, other, _ in
            let (client, bases) = (app.client, "http://127.0.0.1:\(app.port!),http://127.0.0.1:\(other.port!)")
            let token = try await client.registerAndLogin(email: "tuspy@example.com").tokens.accessToken
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-tus-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let csv = directory.appendingPathComponent("flights.csv").path
            try await runProcess("/bin/sh", ["-c", "gzip -dc '\(sharedData)/flights.csv.gz' > '\(csv)'"])
            let script = directory.appendingPathComponent("tus_client.py").path
            try Data(tusClientScript.utf8).write(to: URL(fileURLWithPath: script))
            for mode in ["plain", "cut"] {
                let output = try await runProcess("/usr/bin/env", ["python3", script, bases, token, csv, mode])
                let report = try JSONSerialization.jsonObject(with: output) as! [String: Any]
                let fileId = try #require(report["fileId"] as? String)
                let file = try await client.json(.get, "/files/\(fileId)", token: token).object
                #expect(file["sha256"] as? String == report["sha256"] as? String, "\(mode): the server's SHA-256 is hashlib's")
                #expect(file["size"] as? Int == report["size"] as? Int)
                if mode == "cut" {
                    let resumedAt = try #require(report["resumedAt"] as? Int)
                    #expect(resumedAt > 0 && resumedAt < (report["size"] as? Int ?? 0), "the upload resumed mid-way, at \(resumedAt)")
                }
                // 31 MB: fetched by curl into a file, not by the test client, whose 20 s read
                // timeout a loaded machine can exceed on a body this size.
                let downloaded = directory.appendingPathComponent("\(mode).download").path
                try await runProcess(
                    "/usr/bin/curl",
                    ["-sS", "--fail", "-H", "Authorization: Bearer \(token)", "-o", downloaded, "\(app.baseURL)/files/\(fileId)/content"])
                #expect(hex(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: downloaded)))) == report["sha256"] as? String)
            }
        }
    }
}

/// tuspy (a real tus client) against two nodes (`base,other`). `plain`: uploads the file in
/// chunks of 3 and 7 MiB, to the nodes in turn. `cut`: uploads to the first node through a
/// loopback proxy that drops the connection after 3 MB, waits (bounded) for the server to commit
/// what arrived, then resumes with tuspy on the other node from HEAD's offset. Prints
/// `{fileId, sha256, size, resumedAt}`.
let tusClientScript = #"""
    import hashlib, json, os, socket, sys, threading, time
    import requests
    from tusclient import client as tus

    bases, token, path, mode = sys.argv[1:5]
    base, other = bases.split(",")
    auth = {"Authorization": "Bearer " + token}
    size = os.path.getsize(path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    meta = {"filename": "flights.csv", "filetype": "text/csv"}

    def head(url):
        r = requests.head(url, headers={**auth, "Tus-Resumable": "1.0.0"})
        return r

    resumed_at = None
    if mode == "plain":
        first = tus.TusClient(base + "/uploads", headers=auth).uploader(path, chunk_size=3 << 20, metadata=meta)
        first.upload_chunk()
        upload_id = first.url.rsplit("/", 1)[1]
        offset, turn = first.offset, 1
        while offset < size:
            node = (base, other)[turn % 2]
            chunk = (3 << 20, 7 << 20)[turn % 2]
            uploader = tus.TusClient(node + "/uploads", headers=auth).uploader(path, url=node + "/uploads/" + upload_id, chunk_size=chunk)
            assert uploader.offset == offset, (uploader.offset, offset)
            uploader.upload_chunk()
            offset, turn = uploader.offset, turn + 1
        url = base + "/uploads/" + upload_id
    else:
        port = int(base.rsplit(":", 1)[1])
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        proxy_port = listener.getsockname()[1]
        budget = [3_000_000]

        def pipe(src, dst, count):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if count:
                        budget[0] -= len(data)
                        if budget[0] < 0:
                            break
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

        def serve():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", port))
                threading.Thread(target=pipe, args=(conn, upstream, True), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, conn, False), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        proxied = tus.TusClient("http://127.0.0.1:%d/uploads" % proxy_port, headers=auth).uploader(path, metadata=meta)
        try:
            proxied.upload()
            raise SystemExit("the proxy did not cut the upload")
        except SystemExit:
            raise
        except Exception:
            pass
        listener.close()
        url = other + "/uploads/" + proxied.url.rsplit("/", 1)[1]
        # The server commits what arrived once it sees the cut; wait for that, bounded.
        deadline = time.time() + 30
        while int(head(url).headers["Upload-Offset"]) == 0 and time.time() < deadline:
            time.sleep(0.05)
        uploader = tus.TusClient(other + "/uploads", headers=auth).uploader(path, url=url, chunk_size=4 << 20)
        resumed_at = uploader.offset
        uploader.upload()

    print(json.dumps({"fileId": head(url).headers["Cairn-File-Id"], "sha256": digest, "size": size, "resumedAt": resumed_at}))
    """#

@Suite("Files: multipart/form-data uploads")
struct MultipartUploadTests {
    @Test(arguments: TestEngine.available)
    func aFormUploadStreamsItsOneFilePart(engine: TestEngine) async throws {
        try await withTestApp(engine, mode: .live, runServices: false) { app in
            let (port, client, components) = (app.port!, app.client, app.components)
            let token = try await client.registerAndLogin(email: "form@example.com").tokens.accessToken
            let penguins = "\(sharedData)/penguins.csv"
            let output = try await runProcess(
                "/usr/bin/curl",
                [
                    "-sS", "-H", "Authorization: Bearer \(token)", "-F", "note=hello", "-F", "file=@\(penguins);type=text/csv",
                    "http://127.0.0.1:\(port)/files",
                ])
            let file = try JSONSerialization.jsonObject(with: output) as! [String: Any]
            let bytes = try Data(contentsOf: URL(fileURLWithPath: penguins))
            #expect(file["sha256"] as? String == hex(SHA256.hash(data: bytes)))
            #expect(file["size"] as? Int == bytes.count)
            #expect(file["name"] as? String == "penguins.csv")
            #expect(file["format"] as? String == "csv")

            func form(_ body: String, boundary: String = "XyZ") async throws -> TestResponse {
                try await client.execute(
                    uri: "/files", method: .post,
                    headers: [.authorization: "Bearer \(token)", .contentType: "multipart/form-data; boundary=\(boundary)"],
                    body: ByteBuffer(string: body.replacingOccurrences(of: "\n", with: "\r\n")))
            }
            let part = "--XyZ\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\nContent-Type: text/csv\n\na,b\n1,2\n"
            let named = try await form(
                "--XyZ\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.bin\n\nx\n"
                    + "--XyZ\nContent-Disposition: form-data; name=\"format\"\n\nndjson\n--XyZ--\n")
            #expect(named.status == .created)
            #expect(named.object["name"] as? String == "café.bin")
            #expect(named.object["format"] as? String == "ndjson")
            let cases: [(String, String, String)] = [
                ("two files", part + part + "--XyZ--\n", "file"),
                ("no file", "--XyZ\nContent-Disposition: form-data; name=\"name\"\n\nx.csv\n--XyZ--\n", "file"),
                ("truncated", part, "body"),
                ("truncated in a header", part + "--XyZ\nContent-Disp", "body"),
            ]
            for (label, body, field) in cases {
                let refused = try await form(body)
                #expect(refused.status == .badRequest, "\(label)")
                #expect(refused.code == "invalid_input")
                #expect((refused.object["errors"] as? [[String: Any]])?.first?["field"] as? String == field, "\(label)")
            }
            #expect(try await form(part + "--XyZ--\n", boundary: "").status == .badRequest)
            let items = try await client.json(.get, "/files", token: token).object["items"] as? [[String: Any]]
            #expect(items?.count == 2, "refused forms leave no file")
            let blobs = FileManager.default.enumerator(atPath: components.configuration.dataDir + "/blobs")?.allObjects as? [String] ?? []
            #expect(blobs.filter { !$0.contains("/.") && $0.contains("/") }.count == 2, "and no blob")
        }
    }
}
