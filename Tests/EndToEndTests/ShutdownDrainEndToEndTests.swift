import CairnTestSupport
import Foundation
import Testing

/// A fresh-user trial: SIGTERM waited for in-flight requests with no bound, and only then
/// started the jobs' shutdown grace (a `POST /files` trickling its body for 20 s kept the node
/// up 29.7 s, its jobs handed back after 30 s instead of 10 s). With the real binary, a real
/// signal and a raw-socket client.
@Suite("End to end: SIGTERM with a request still sending its body", .serialized)
struct ShutdownDrainEndToEndTests {
    /// Registers an owner, logs in, returns the access token.
    private func owner(_ base: String) async throws -> String {
        let account: [String: Any] = ["email": "drain@example.com", "password": "drain password!", "name": "Drain"]
        #expect(try await curl("POST", "\(base)/auth/register", json: account).status == 201)
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": "drain@example.com", "password": "drain password!"])
        return try #require(login.json["accessToken"] as? String)
    }

    /// One value read from the node's database by its engine's own client (the node is still
    /// running, or gone: it serves no request while it drains).
    private func query(_ sql: String, engine: E2EEngine, environment: [String: String], dataDir: String) async throws -> String {
        let arguments =
            switch engine {
            case .sqlite: ["sqlite3", "-cmd", ".timeout 5000", dataDir + "/cairn.sqlite", sql]
            case .postgres:
                ["psql", (environment["CAIRN_DATABASE_URL"] ?? "").replacingOccurrences(of: "?sslmode=disable", with: ""), "-Atq", "-c", sql]
            }
        let result = try await runChild("/usr/bin/env", arguments)
        guard result.status == 0 else { throw E2EError("\(arguments[0]) failed: \(result.errorText)") }
        return result.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The regular files under `path`, at any depth.
    private func files(under path: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: path)
        var found: [String] = []
        while let name = enumerator?.nextObject() as? String {
            if enumerator?.fileAttributes?[.type] as? FileAttributeType == .typeRegular { found.append(name) }
        }
        return found
    }

    /// A job runs and an upload trickles its body when SIGTERM arrives: the job is handed back
    /// (its row `available` again, no attempt spent) within its grace of the signal, while the
    /// upload still sends; then the drain's deadline closes the upload's connection, the node
    /// exits 0, and nothing of the upload is stored. Before, the worker heard of the shutdown
    /// only once the last request had ended, and nothing bounded that.
    @Test(arguments: E2EEngine.available)
    func jobsGoBackWithinTheirGraceWhileAnUploadTricklesAndTheDrainDeadlineEndsIt(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        // A grace far inside the drain's deadline, so the order of the two shows which began at the signal.
        let environment = try await engine.environment().merging(["CAIRN_JOBS_SHUTDOWN_GRACE": "1", "CAIRN_HTTP_DRAIN_TIMEOUT": "15"]) { $1 }
        let server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        // A failed expectation must not leave the node running (a no-op once it exited).
        defer { server.child.signal(SIGKILL) }
        let token = try await owner(server.baseURL)
        let created = try await curl(
            "POST", "\(server.baseURL)/jobs", json: ["kind": "noop", "args": ["sleepMs": 600_000, "checkpointEvery": 100]], token: token)
        #expect(created.status == 201)
        let id = try #require(created.json["id"] as? String)
        _ = try await followJob(server.baseURL, id, token: token) { $0["state"] as? String == "running" }

        // A CSV announced as 1 MiB, sent 4 bytes every 100 ms (never a pause the body timeout
        // would cut) until the server closes the connection; a raw socket, so no client
        // library finishes or retries it behind the test's back.
        let peer = LogBuffer()
        let script = """
            import socket, sys, time
            port, token = int(sys.argv[1]), sys.argv[2]
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall((f"POST /files HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer {token}\\r\\n"
                       f"Content-Type: text/csv\\r\\nContent-Length: {1 << 20}\\r\\n\\r\\nid,name\\n").encode())
            print("sent", flush=True)
            try:
                for _ in range(1200):
                    time.sleep(0.1)
                    s.sendall(b"1,a\\n")
                print("still open after 2 minutes", flush=True)
            except OSError as error:
                print("closed", type(error).__name__, flush=True)
            """
        let client = try await ChildProcess("/usr/bin/env", ["python3", "-c", script, String(server.port), token], includeErrors: true) {
            data in
            if let data { peer.append(String(decoding: data, as: UTF8.self)) } else { peer.end() }
        }
        defer { client.signal(SIGKILL) }
        #expect(await peer.wait(timeout: .seconds(30)) { text, ended in text.contains("sent") || ended }, "\(peer.text)")
        // The upload is being written once its tenant's blob folder exists (another process's
        // files: polled).
        try await pollUntil("the upload reaching the blob store") {
            let blobs = dataDir + "/blobs"
            return ((try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? []).contains { name in
                var folder: ObjCBool = false
                return FileManager.default.fileExists(atPath: blobs + "/" + name, isDirectory: &folder) && folder.boolValue
            }
        }

        let signalled = ContinuousClock.now
        server.child.signal(SIGTERM)
        let handedBack = await server.waitForOutput(timeout: .seconds(60)) { $0.contains("released running jobs for other nodes") }
        let handedBackAfter = ContinuousClock.now - signalled
        try #require(handedBack, "the running job was not handed back within 60 s of SIGTERM:\n\(server.output.suffix(3000))")
        #expect(!peer.text.contains("closed"), "the job went back only once the upload's connection was closed: \(peer.text)")
        #expect(!server.output.contains("drain deadline passed"), "the job went back only after the drain's deadline")
        let row = try await query(
            "SELECT state || ' ' || attempt FROM jobs WHERE id = '\(id)'", engine: engine, environment: environment, dataDir: dataDir)
        #expect(row == "available 0", "the job's row after the hand-back: \(row)")

        let status = await server.child.waitForExit(timeout: .seconds(60))
        let exitedAfter = ContinuousClock.now - signalled
        print("SIGTERM with a trickling upload (\(engine)): job handed back after \(handedBackAfter), exit after \(exitedAfter)")
        #expect(status == 0, "the node did not exit 0 within 60 s of SIGTERM:\n\(server.output.suffix(3000))")
        #expect(server.output.contains("drain deadline passed"), "no line says the deadline closed connections")
        #expect(await peer.wait(timeout: .seconds(30)) { text, ended in text.contains("closed") || ended })
        #expect(peer.text.contains("closed"), "the upload's connection outlived the node: \(peer.text)")
        _ = await client.waitForExit(timeout: .seconds(10))

        // Nothing half-written: no file row, no bytes left in the blob store.
        let rows = try await query("SELECT COUNT(*) FROM files", engine: engine, environment: environment, dataDir: dataDir)
        #expect(rows == "0", "a cut upload was recorded")
        #expect(files(under: dataDir + "/blobs").isEmpty, "bytes of a cut upload were left: \(files(under: dataDir + "/blobs"))")
    }
}
