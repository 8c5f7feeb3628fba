import HummingbirdBcrypt
import NIOPosix

/// bcrypt password hashing (OWASP Password Storage Cheat Sheet) on a dedicated thread pool,
/// never on an event loop. The pool is small on purpose: at cost 12 a hash takes ~190 ms of
/// CPU, so bounding concurrent hashes keeps a login burst from starving request handling.
public final class PasswordHasher: Sendable {
    /// bcrypt cost factor (4...31). 12 in production; tests use 4.
    public let cost: Int
    private let pool: NIOThreadPool
    private let dummyHash: String

    /// Creates a hasher with its own pool of `threads` threads, and precomputes the dummy hash
    /// that unknown emails are checked against (so both answers take about the same time).
    public init(cost: Int, threads: Int) {
        precondition((4...31).contains(cost), "bcrypt cost must be within 4...31")
        self.cost = cost
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.pool.start()
        self.dummyHash = Bcrypt.hash("cairn-dummy-password-for-timing", cost: UInt8(cost))
    }

    /// Hashes a password.
    public func hash(_ password: String) async throws -> String {
        let cost = UInt8(self.cost)
        return try await pool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    /// Verifies a password against a stored hash; with `nil`, checks the dummy hash and returns
    /// false, taking the same time as a real check.
    public func verify(_ password: String, against hash: String?) async throws -> Bool {
        let target = hash ?? dummyHash
        let matches = try await pool.runIfActive { Bcrypt.verify(password, hash: target) }
        return hash != nil && matches
    }

    /// Stops the pool.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
