import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// bcrypt password hashing (OWASP Password Storage Cheat Sheet) on a dedicated thread pool,
/// never on an event loop. The pool is small on purpose: at cost 12 a hash takes ~190 ms of
/// CPU, so bounding concurrent hashes keeps a login burst from starving request handling.
package final class PasswordHasher: Sendable {
    /// bcrypt cost factor (4...31). 12 in production; tests use 4.
    package let cost: Int
    private let pool: NIOThreadPool
    private let dummyHash: String

    /// Creates a hasher with its own pool of `threads` threads, and precomputes the dummy hash
    /// that unknown emails are checked against (so both answers take about the same time).
    package init(cost: Int, threads: Int) {
        precondition((4...31).contains(cost), "bcrypt cost must be within 4...31")
        self.cost = cost
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.pool.start()
        self.dummyHash = Bcrypt.hash(Self.prehash("cairn-dummy-password-for-timing"), cost: UInt8(cost))
    }

    /// Hashes a password.
    package func hash(_ password: String) async throws -> String {
        let cost = UInt8(self.cost)
        let input = Self.prehash(password)
        return try await pool.runIfActive {
            Self.lowerThreadPriority()
            return Bcrypt.hash(input, cost: cost)
        }
    }

    /// Hashing threads run under Linux's `SCHED_IDLE` policy (value 5 in `<linux/sched.h>`,
    /// not exported to Swift): they get CPU only when no normal thread wants it, so a burst of
    /// logins uses idle time rather than time from the event loops serving other requests.
    static func lowerThreadPriority() {
        #if os(Linux)
            var parameters = sched_param()
            parameters.sched_priority = 0
            _ = pthread_setschedparam(pthread_self(), 5, &parameters)
        #endif
    }

    /// Verifies a password against a stored hash; with `nil`, checks the dummy hash and returns
    /// false, taking the same time as a real check.
    package func verify(_ password: String, against hash: String?) async throws -> Bool {
        let target = hash ?? dummyHash
        let input = Self.prehash(password)
        let matches = try await pool.runIfActive {
            Self.lowerThreadPriority()
            return Bcrypt.verify(input, hash: target)
        }
        return hash != nil && matches
    }

    /// bcrypt reads at most 72 bytes and stops at a NUL byte, so a long password would be cut
    /// short and `"\0…"` would equal `""`. Every password is first reduced to base64(SHA-256),
    /// 44 printable bytes (the pre-hashing OWASP's Password Storage Cheat Sheet describes).
    static func prehash(_ password: String) -> String {
        Data(SHA256.hash(data: Array(password.utf8))).base64EncodedString()
    }

    /// Stops the pool.
    package func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
