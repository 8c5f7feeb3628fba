import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking TCP socket connected to 127.0.0.1:`port`, for tests that send bytes no HTTP library
/// would; `configure` runs on it before it connects (socket options). The caller closes it.
/// - Throws: `POSIXError` when no socket can be made or the connection is refused.
package func loopbackSocket(port: Int, configure: (Int32) -> Void = { _ in }) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    configure(fd)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw POSIXError(.ECONNREFUSED)
    }
    return fd
}

/// Runs blocking socket calls on a thread of their own, off the concurrency pool.
package func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// Sends all of `bytes` on the connected socket `fd` (stops quietly if the peer is gone).
package func sendAll(_ bytes: [UInt8], on fd: Int32) async {
    await offThePool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return }
            offset += sent
        }
    }
}

extension [UInt8] {
    /// Whether `text`'s UTF-8 bytes occur in these bytes.
    package func containsText(_ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}

/// A WebSocket upgrade request (RFC 6455 §4.1) for `path`, as the bytes a raw socket sends;
/// `headers` are further header lines (`Name: value`), after the handshake's own.
package func webSocketUpgradeRequest(path: String = "/ws", headers: [String] = []) -> [UInt8] {
    let lines =
        [
            "GET \(path) HTTP/1.1", "Host: 127.0.0.1", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ] + headers
    return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
}

/// Reads from the connected socket `fd` until `done` holds for what was read, the peer ends
/// the connection (EOF or reset), or `deadline` passes.
/// - Returns: the bytes read, and whether the peer ended the connection.
package func receive(
    _ fd: Int32, deadline: Duration, until done: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }
) async -> (bytes: [UInt8], ended: Bool) {
    await offThePool {
        let end = ContinuousClock.now + deadline
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while ContinuousClock.now < end, !done(received) {
            let left = ContinuousClock.now.duration(to: end).components
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000) + 1) > 0 else { continue }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 || (count < 0 && errno == ECONNRESET) { return (received, true) }
            if count < 0 { break }
            received += chunk[0..<count]
        }
        return (received, false)
    }
}

/// A masked client frame (RFC 6455 §5.2) of `payload` (at most 125 bytes), as a raw socket
/// sends it: `opcode` 0x1 text, 0x0 continuation, 0x8 close, 0x9 ping.
package func maskedClientFrame(opcode: UInt8, fin: Bool = true, _ payload: [UInt8]) -> [UInt8] {
    precondition(payload.count <= 125)
    let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
    return [(fin ? 0x80 : 0) | opcode, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
}
