import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A loopback TCP proxy in front of a server (moto, for a store outage): while it is up it
/// relays bytes both ways; ``goDown()`` cuts every connection and refuses new ones (each is
/// accepted and closed at once) until ``comeUp()``. ``goDown(afterForwarding:)`` arms the cut
/// for the moment the clients have sent that many more bytes, so an upload loses its store
/// half-way, deterministically.
package final class TCPProxy: Sendable {
    /// The loopback port clients connect to.
    package let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let state = Mutex(State())

    private struct State {
        var up = true
        var closed = false
        /// Bytes clients may still send before the proxy goes down; nil: no cut armed.
        var budget: Int?
        /// The descriptors of live connections (both sides), to cut them.
        var open: Set<Int32> = []
        /// Connections accepted while up, since the start.
        var accepted = 0
    }

    /// Listens on a free loopback port and relays to 127.0.0.1:`upstreamPort`.
    /// - Throws: `POSIXError` when no socket can be bound.
    package init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            Glibc.close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    deinit { Glibc.close(listener) }

    /// Connections accepted while up so far.
    package var acceptedConnections: Int { state.withLock { $0.accepted } }

    /// Whether the proxy relays now.
    package var isUp: Bool { state.withLock { $0.up } }

    /// Cuts every connection now and refuses new ones.
    package func goDown() {
        // Under the lock: a descriptor leaves `open` before it is closed, so none is reused
        // (by another socket of the test process) while it is shut down here.
        state.withLock { state in
            state.up = false
            state.budget = nil
            for fd in state.open { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// Goes down once clients have sent `bytes` more bytes through the proxy (the chunk that
    /// crosses the mark is not relayed).
    package func goDown(afterForwarding bytes: Int) {
        state.withLock { $0.budget = bytes }
    }

    /// Relays again.
    package func comeUp() {
        state.withLock { $0.up = true }
    }

    /// Stops listening and cuts every connection.
    package func close() {
        goDown()
        let first = state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        if first { shutdown(listener, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let relay = state.withLock { state -> Bool in
                if state.up { state.accepted += 1 }
                return state.up
            }
            guard relay, let upstream = try? loopbackSocket(port: upstreamPort) else {
                Glibc.close(client)
                continue
            }
            state.withLock { state in
                state.open.insert(client)
                state.open.insert(upstream)
            }
            // Each side is closed once both directions have ended.
            let ends = Mutex(0)
            let finish: @Sendable () -> Void = { [self] in
                let both = ends.withLock { count in
                    count += 1
                    return count == 2
                }
                guard both else { return }
                state.withLock { state in
                    state.open.remove(client)
                    state.open.remove(upstream)
                }
                Glibc.close(client)
                Glibc.close(upstream)
            }
            Thread { [self] in
                pump(from: client, to: upstream, counted: true)
                finish()
            }.start()
            Thread { [self] in
                pump(from: upstream, to: client, counted: false)
                finish()
            }.start()
        }
    }

    /// Copies bytes until either side ends; then shuts both down so the other pump ends too.
    private func pump(from source: Int32, to destination: Int32, counted: Bool) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        loop: while true {
            let read = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if read <= 0 { break }
            if counted {
                let cut = state.withLock { state -> Bool in
                    guard state.up else { return true }
                    guard let budget = state.budget else { return false }
                    if read > budget { return true }
                    state.budget = budget - read
                    return false
                }
                if cut {
                    goDown()
                    break
                }
            }
            var offset = 0
            while offset < read {
                let sent = buffer[offset..<read].withUnsafeBytes { send(destination, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent <= 0 { break loop }
                offset += sent
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
    }
}
