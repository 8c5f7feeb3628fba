import Foundation
package import Testing

/// A task executor (SE-0417) of its own threads, for tests whose work is synchronous and
/// CPU-bound: parsing a 31 MB file or fuzzing a decoder in an unoptimised build.
///
/// Tests run on the same few executor threads as the nodes other tests start in the same
/// process (one per core). A test that computes for seconds there makes every one of those
/// nodes wait: on a busy machine, requests waited past the test client's 20 s timeout and
/// session reads past their deadline. On threads of their own, such tests share the cores
/// through the kernel's scheduler instead, and the nodes' work never queues behind them.
package final class DedicatedThreads: TaskExecutor, @unchecked Sendable {
    /// The process-wide threads that ``Trait/dedicatedThreads`` tests run on.
    package static let shared = DedicatedThreads(count: 2, name: "cairn-cpu")

    /// The prefix of the threads' names (as debuggers and `perf` show them).
    package let name: String
    // `jobs` and `threads` are guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var threads: [pthread_t] = []

    /// Starts `count` threads named `name-<n>`; they live as long as the process.
    init(count: Int, name: String) {
        self.name = name
        for index in 0..<count {
            Thread {
                Thread.current.name = "\(name)-\(index)"
                self.condition.lock()
                self.threads.append(pthread_self())
                self.condition.unlock()
                self.run()
            }.start()
        }
    }

    /// Whether the caller runs on one of these threads.
    package var isCurrent: Bool {
        let current = pthread_self()
        condition.lock()
        defer { condition.unlock() }
        return threads.contains { pthread_equal($0, current) != 0 }
    }

    /// Queues `job` for the next free thread.
    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs each test it applies to (every test of a suite) with ``DedicatedThreads/shared`` as its
/// task executor preference; see ``DedicatedThreads`` for why. Only for tests that start no
/// node: the preference passes to child tasks, so a node started inside would run there too.
package struct DedicatedThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    /// Applies to every test of a suite it is attached to.
    package var isRecursive: Bool { true }

    /// Scopes each test case, not the suite as a whole.
    package func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? { testCase == nil ? nil : self }

    /// Runs `function` preferring the dedicated threads.
    package func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await withTaskExecutorPreference(DedicatedThreads.shared) { try await function() }
    }
}

extension Trait where Self == DedicatedThreadsTrait {
    /// Runs the test (or every test of the suite) on threads of its own, off the executor the
    /// nodes of other tests use: for synchronous, CPU-bound tests (see ``DedicatedThreads``).
    package static var dedicatedThreads: Self { DedicatedThreadsTrait() }
}
