package import CairnNotifications

extension NotificationHub {
    /// Returns once the node's live connection count satisfies `predicate`: checked on the
    /// current count and on every connection that registers or leaves.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    package func waitForConnections(
        _ what: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (Int) -> Bool
    ) async throws {
        try await firstElement(of: connectionCounts(), what, timeout: timeout, where: predicate)
    }
}
