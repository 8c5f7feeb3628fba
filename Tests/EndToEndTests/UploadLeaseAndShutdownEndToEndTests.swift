import CairnTestSupport
import Foundation
import Testing

/// Issue 20, "What a new user found": a tus upload after a crash, and WebSockets on SIGTERM,
/// with the real binary, real signals and real clients.
@Suite("End to end: tus after kill -9, WebSocket close on SIGTERM", .serialized)
struct UploadLeaseAndShutdownEndToEndTests {
    /// Registers a user on `server` and returns an access token.
    private func accessToken(_ server: ServerProcess, email: String) async throws -> String {
        let base = server.baseURL
        #expect(try await curl("POST", "\(base)/auth/register", json: ["email": email, "password": "e2e password!", "name": "E2E"]).status == 201)
        let login = try await curl("POST", "\(base)/auth/login", json: ["email": email, "password": "e2e password!"])
        return try #require(login.json["accessToken"] as? String)
    }

    /// A node killed with SIGKILL in the middle of a tus PATCH leaves no lease behind: once it
    /// is back, the client's next PATCH is accepted at once. Before, the dead PATCH's lease
    /// answered 409 "another PATCH in progress" for up to 60 s after the restart, longer than tus
    /// clients retry.
    @Test(arguments: E2EEngine.available)
    func aPatchCutByKill9LeavesNoLeaseBehind(engine: E2EEngine) async throws {
        let dataDir = try temporaryDirectory()
        let environment = try await engine.environment()
        var server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let token = try await accessToken(server, email: "tus-crash@example.com")
        let length = 4 << 20
        let created = try await curl(
            "POST", "\(server.baseURL)/uploads", token: token,
            headers: ["Tus-Resumable": "1.0.0", "Upload-Length": String(length), "Upload-Metadata": "filename ZGF0YS5jc3Y="])
        #expect(created.status == 201)
        let location = try #require(created.headers["location"])
        let id = String(location.split(separator: "/").last!)

        // A PATCH that sends 1.5 MiB of its 4 MiB, then stalls (a raw socket: no client library
        // finishes or retries it behind the test's back).
        let peer = LogBuffer()
        let script = """
            import socket, sys
            port, path, token, length = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall((f"PATCH {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: Bearer {token}\\r\\nTus-Resumable: 1.0.0\\r\\n"
                       f"Content-Type: application/offset+octet-stream\\r\\nUpload-Offset: 0\\r\\nContent-Length: {length}\\r\\n\\r\\n").encode())
            s.sendall(b"a" * (3 << 19))
            print("sent", flush=True)
            s.recv(1)
            """
        let client = try await ChildProcess(
            "/usr/bin/env", ["python3", "-c", script, String(server.port), location, token, String(length)], includeErrors: true
        ) { data in
            if let data { peer.append(String(decoding: data, as: UTF8.self)) } else { peer.end() }
        }
        #expect(await peer.wait(timeout: .seconds(30)) { text, _ in text.contains("sent") })
        // The server holds the lease once it writes the body: its partial file grows (another
        // process's file, so polled).
        try await pollUntil("the PATCH's bytes on disk") {
            let found = FileManager.default.enumerator(atPath: dataDir + "/blobs")?.allObjects.compactMap { $0 as? String }
                .first { $0.hasSuffix(id + ".part") }
            guard let found else { return false }
            let size = (try? FileManager.default.attributesOfItem(atPath: dataDir + "/blobs/" + found)[.size] as? Int) ?? 0
            return size >= 1 << 20
        }
        await server.kill()
        _ = await client.waitForExit(timeout: .seconds(30))

        server = try await ServerProcess.start(dataDir: dataDir, environment: environment)
        let head = try await runChild(
            "/usr/bin/env",
            ["curl", "-s", "-I", "-H", "Authorization: Bearer \(token)", "-H", "Tus-Resumable: 1.0.0", "\(server.baseURL)\(location)"])
        let offsetLine = head.text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("upload-offset:") }
        let offset = try #require(offsetLine.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }, "\(head.text)")
        let body = FileManager.default.temporaryDirectory.appendingPathComponent("tus-rest-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: body) }
        try Data(repeating: UInt8(ascii: "b"), count: length - offset).write(to: URL(fileURLWithPath: body))
        let started = ContinuousClock.now
        let resumed = try await runChild(
            "/usr/bin/env",
            [
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %header{upload-offset}", "-X", "PATCH", "-H", "Authorization: Bearer \(token)",
                "-H", "Tus-Resumable: 1.0.0", "-H", "Content-Type: application/offset+octet-stream", "-H", "Upload-Offset: \(offset)",
                "--data-binary", "@\(body)", "\(server.baseURL)\(location)",
            ])
        let elapsed = ContinuousClock.now - started
        #expect(resumed.text == "204 \(length)", "the PATCH after the restart: \(resumed.text) after \(elapsed)")
        print("tus PATCH after kill -9 and restart (\(engine)): \(resumed.text) in \(elapsed)")
        #expect(try await server.stop() == 0)
    }

    /// SIGTERM closes live WebSockets with 1001 "going away" (RFC 6455 §7.4.1), as the README
    /// promises, so clients reconnect; before, the server's WebSocket layer closed them with 1000
    /// first. The client is websocket-client, a real one.
    @Test func sigtermClosesWebSocketsWith1001() async throws {
        let dataDir = try temporaryDirectory()
        let server = try await ServerProcess.start(dataDir: dataDir)
        let token = try await accessToken(server, email: "ws-sigterm@example.com")
        let peer = LogBuffer()
        let script = """
            import sys, websocket
            ws = websocket.create_connection(f"ws://127.0.0.1:{sys.argv[1]}/ws", subprotocols=["cairn.v1", "bearer." + sys.argv[2]], timeout=60)
            print("first", ws.recv(), flush=True)
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    print("close", int.from_bytes(data[:2], "big") if len(data) >= 2 else None, flush=True)
                    break
            """
        let client = try await ChildProcess(
            "/usr/bin/env", ["python3", "-c", script, String(server.port), token], includeErrors: true
        ) { data in
            if let data { peer.append(String(decoding: data, as: UTF8.self)) } else { peer.end() }
        }
        #expect(await peer.wait(timeout: .seconds(30)) { text, ended in text.contains("\"ready\"") || ended }, "\(peer.text)")
        #expect(try await server.stop() == 0)
        #expect(await peer.wait(timeout: .seconds(30)) { text, ended in text.contains("close ") || ended })
        #expect(peer.text.contains("close 1001"), "\(peer.text)")
        _ = await client.waitForExit(timeout: .seconds(10))
    }
}
