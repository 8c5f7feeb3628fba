import HummingbirdCore
package import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The process's limit on open files (`RLIMIT_NOFILE`, POSIX `getrlimit(2)`): every connection,
/// database file, pipe and socket to PostgreSQL or a provider takes one.
package enum FileDescriptorLimit {
    /// The soft limit now, or nil when it cannot be read or is unlimited.
    package static var current: Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return Int(clamping: limit.rlim_cur)
    }

    /// Raises the soft limit to the hard one, as Go's runtime does at start since 1.19: systemd
    /// starts services with a soft limit of 1,024 and a hard one of 524,288, and a node that
    /// runs out of descriptors fails in places that cannot recover (libdispatch stops the
    /// process when it cannot open `/proc`). Returns the soft limit before and after (equal when
    /// nothing changed or the call failed).
    @discardableResult
    package static func raiseToHardLimit() -> (before: Int?, after: Int?) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (nil, nil) }
        let before = limit.rlim_cur == rlim_t.max ? nil : Int(clamping: limit.rlim_cur)
        guard limit.rlim_cur != limit.rlim_max else { return (before, before) }
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 else { return (before, before) }
        return (before, current)
    }

    /// The connections a node serves at once by default with `limit` descriptors: the limit less
    /// an eighth of it (at least 256) kept for everything else, and at least 16.
    package static func defaultMaxConnections(limit: Int?) -> Int {
        guard let limit else { return 1_000_000 }
        return max(16, limit - max(256, limit / 8))
    }
}

/// How many connections the HTTP server holds at once (`CAIRN_HTTP_MAX_CONNECTIONS`): at the
/// maximum it stops accepting, and the kernel queues new connections (up to the listen backlog)
/// until one closes, as nginx does at `worker_connections`. Counted on the server channel by
/// Hummingbird's `AvailableConnectionsChannelHandler`; WebSockets and SSE streams count as the
/// connections they are. Logs a warning when the maximum is reached, and again only after the
/// count has fallen below nine tenths of it: a flood that keeps the server at its limit must not
/// also flood the log.
package struct ConnectionLimit: AvailableConnectionsDelegate {
    /// The most connections held at once.
    package let maximum: Int
    let logger: Logger
    private var open = 0
    private var warned = false

    /// A limit of `maximum` connections, warning on `logger`.
    package init(maximum: Int, logger: Logger) {
        self.maximum = maximum
        self.logger = logger
    }

    /// Counts a connection the server accepted.
    package mutating func connectionOpened() {
        open += 1
        if open >= maximum, !warned {
            warned = true
            logger.warning(
                "at the connection limit: new connections wait until one closes (CAIRN_HTTP_MAX_CONNECTIONS)",
                metadata: ["max_connections": .stringConvertible(maximum)])
        }
    }

    /// Counts a connection that closed.
    package mutating func connectionClosed() {
        open -= 1
        if open < maximum - maximum / 10 { warned = false }
    }

    /// Whether the server may accept another connection.
    package func isAcceptingNewConnections() -> Bool {
        open < maximum
    }
}
