import CairnAccounts
import CairnTestSupport
import Dispatch
import Synchronization
import Testing

@Suite("Password hasher")
struct PasswordHasherTests {
    /// A fresh-user trial: 60 logins at cost 12 queued behind one hashing thread when SIGTERM
    /// came, and the node exited 10 s after its drain's deadline, hashing for clients it had
    /// already cut off. A hash whose task is cancelled before it starts never runs: with the
    /// one thread held by a first hash, eight more queue, are cancelled, and end with
    /// `CancellationError` once the thread is free, without a hash performed for any of them.
    @Test func aQueuedHashWhoseTaskIsCancelledNeverRuns() async throws {
        let hasher = PasswordHasher(cost: 4, threads: 1, queueLimit: 64)
        let performed = Atomic(0)
        let started = Observed(0)
        let admitted = Observed(0)
        let release = DispatchSemaphore(value: 0)
        hasher.observePoolWork {
            let count = performed.add(1, ordering: .relaxed).newValue
            started.update { $0 = count }
            // Holds the one thread (a thread of the hasher's own pool, not the test's).
            if count == 1 { release.wait() }
        }
        hasher.holdAdmittedWork { admitted.update { $0 += 1 } }
        let first = Task { try await hasher.hash("the first password") }
        try await started.wait("the first hash on the thread") { $0 == 1 }
        let queued = (0..<8).map { index in Task { try await hasher.hash("queued password \(index)") } }
        try await admitted.wait("the eight hashes queued") { $0 == 9 }
        for task in queued { task.cancel() }
        release.signal()

        for task in queued {
            await #expect(throws: CancellationError.self) { try await task.value }
        }
        #expect(try await first.value.hasPrefix("$2"))
        #expect(performed.load(ordering: .relaxed) == 1)
        #expect(hasher.inFlight == 0)
        // The thread is free again for those that were not cancelled.
        #expect(try await hasher.verify("the first password", against: try await first.value))
        #expect(performed.load(ordering: .relaxed) == 2)
        await hasher.shutdown()
    }
}
