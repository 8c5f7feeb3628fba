import CairnHTTP
import Crypto
import Foundation
import HTTPTypes
import HummingbirdBcrypt
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// bcrypt password hashing (OWASP Password Storage Cheat Sheet) on a dedicated thread pool,
/// never on an event loop. The pool is small on purpose: at cost 12 a hash takes ~190 ms of
/// CPU, so bounding concurrent hashes keeps a login burst from starving request handling.
///
/// The queue in front of the pool is bounded too: at most `queueLimit` hashes run or wait at
/// once, and the next is refused with 503 `unavailable` and `Retry-After` at once. Otherwise a
/// flood of guesses would make every login wait behind it (with one thread at cost 12, 1,000
/// queued hashes are over three minutes) and hold a connection and memory per waiting request.
package final class PasswordHasher: Sendable {
    /// bcrypt cost factor (4...31). 12 in production; tests use 4.
    package let cost: Int
    /// Hashes admitted at once, running or waiting for a thread.
    package let queueLimit: Int
    private let pool: NIOThreadPool
    private let dummyHash: String
    private let admitted = Mutex(0)
    private let gate = Mutex<(@Sendable () async throws -> Void)?>(nil)
    private let poolStart = Mutex<(@Sendable () -> Void)?>(nil)

    /// Creates a hasher with its own pool of `threads` threads admitting `queueLimit` hashes at
    /// once, and precomputes the dummy hash that unknown emails are checked against (so both
    /// answers take about the same time).
    package init(cost: Int, threads: Int, queueLimit: Int = 64) {
        precondition((4...31).contains(cost), "bcrypt cost must be within 4...31")
        self.cost = cost
        self.queueLimit = max(1, queueLimit)
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.pool.start()
        self.dummyHash = Bcrypt.hash(Self.prehash("cairn-dummy-password-for-timing"), cost: UInt8(cost))
    }

    /// Hashes and checks admitted but not finished (running or queued).
    package var inFlight: Int { admitted.withLock { $0 } }

    /// Makes every admitted hash first await `hold` (tests hold the queue full with it); nil
    /// removes it.
    package func holdAdmittedWork(_ hold: (@Sendable () async throws -> Void)?) {
        gate.withLock { $0 = hold }
    }

    /// Runs `observe` on the pool's thread as each hash or check starts there (tests count the
    /// hashes that ran, and hold the thread with it); nil removes it.
    package func observePoolWork(_ observe: (@Sendable () -> Void)?) {
        poolStart.withLock { $0 = observe }
    }

    /// 503 `unavailable` for a full queue. `Retry-After` is one second: a slot frees as soon as
    /// one hash ends, which at cost 12 is about 0.2 s per thread.
    static let queueFull = AppError(
        .serviceUnavailable, code: .unavailable, detail: "The server is busy checking passwords. Try again shortly.",
        headers: [.retryAfter: "1"])

    /// Runs `work` on the pool if the queue has room, unless the calling task is cancelled
    /// before the work starts: a request cut off (its connection closed at the drain's
    /// deadline, which cancels its task) must not cost a hash, nor hold the node's exit while
    /// the hashes queued before it run.
    /// - Throws: 503 `unavailable` (``queueFull``) when `queueLimit` hashes are already admitted;
    ///   `CancellationError` when the task is cancelled before the work starts (a queued hash is
    ///   dropped: NIO's pool skips the work of a cancelled `runIfActive`).
    private func admit<R: Sendable>(_ work: @escaping @Sendable () -> R) async throws -> R {
        try Task.checkCancellation()
        let limit = queueLimit
        let entered = admitted.withLock { count -> Bool in
            guard count < limit else { return false }
            count += 1
            return true
        }
        guard entered else { throw Self.queueFull }
        defer { admitted.withLock { $0 -= 1 } }
        if let hold = gate.withLock({ $0 }) { try await hold() }
        try Task.checkCancellation()
        let observe = poolStart.withLock { $0 }
        return try await pool.runIfActive {
            Self.lowerThreadPriority()
            observe?()
            return work()
        }
    }

    /// Hashes a password.
    /// - Throws: 503 `unavailable` when the hashing queue is full.
    package func hash(_ password: String) async throws -> String {
        let cost = UInt8(self.cost)
        let input = Self.prehash(password)
        return try await admit { Bcrypt.hash(input, cost: cost) }
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
    /// - Throws: 503 `unavailable` when the hashing queue is full.
    package func verify(_ password: String, against hash: String?) async throws -> Bool {
        let target = hash ?? dummyHash
        let input = Self.prehash(password)
        let matches = try await admit { Bcrypt.verify(input, hash: target) }
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
