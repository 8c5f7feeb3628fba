package import Foundation

/// One Server-Sent Event (WHATWG HTML §9.2).
package struct ServerSentEvent: Sendable {
    /// The `id:` field, if any.
    package var id: String?
    /// The `event:` field (`message` when absent).
    package var event: String
    /// The `data:` lines, joined.
    package var data: String

    /// The data as a JSON object, or nil.
    package var object: [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
    }

    /// The data decoded as `T` (see ``testJSONDecoder``).
    package func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try testJSONDecoder.decode(T.self, from: Data(data.utf8))
    }

    /// The complete events in `text` (a block not yet ended by a blank line is left out).
    package static func parse(_ text: String) -> [ServerSentEvent] {
        var blocks = text.components(separatedBy: "\n\n")
        blocks.removeLast()  // what follows the last blank line is incomplete (or empty)
        return blocks.compactMap { block in
            var event = ServerSentEvent(id: nil, event: "message", data: "")
            var hasData = false
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { continue }
                if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") {
                    event.data += (hasData ? "\n" : "") + line.dropFirst(6)
                    hasData = true
                }
            }
            return hasData ? event : nil
        }
    }
}

/// A `curl -N` reading a `text/event-stream` response into memory as it arrives. Tests await
/// what they expect with ``wait(_:timeout:until:)``, which re-checks on every chunk received.
package final class EventStreamReader: Sendable {
    /// What arrived so far.
    package struct Received: Sendable {
        /// Everything received (bytes: a character may be split between chunks).
        package var data: Data
        /// Everything received, as text.
        package var text: String { String(decoding: data, as: UTF8.self) }
        /// True once the server ended the stream.
        package var ended: Bool
        /// The complete events received.
        package var events: [ServerSentEvent] { ServerSentEvent.parse(text) }
    }

    private let received: Observed<Received>
    private let child: ChildProcess

    /// Starts reading `url` with extra request `headers` (`Name: value`).
    /// - Throws: `SubprocessError` when curl cannot be started.
    package init(url: String, headers: [String] = []) async throws {
        let received = Observed(Received(data: Data(), ended: false))
        self.received = received
        child = try await ChildProcess("/usr/bin/curl", ["-sN"] + headers.flatMap { ["-H", $0] } + [url]) { data in
            received.update { state in
                if let data { state.data.append(data) } else { state.ended = true }
            }
        }
    }

    /// What arrived so far.
    package var current: Received { received.value }
    /// Everything received so far, as text.
    package var text: String { received.value.text }
    /// True once the server ended the stream.
    package var ended: Bool { received.value.ended }

    /// Returns what arrived once `predicate` holds for it, re-checked on each chunk.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable (Received) -> Bool) async throws
        -> Received
    {
        try await received.wait(what, timeout: timeout, until: predicate)
    }

    /// Stops curl (SIGKILL).
    package func stop() {
        child.signal(SIGKILL)
    }
}
