import NIOCore
import NIOPosix

/// A task executor (SE-0417) with one thread of its own: work run under
/// `withTaskExecutorPreference(executor)` (its child tasks, and the default actors they call)
/// runs on that thread instead of the global executor.
///
/// Why: on SQLite the global executor is SwiftNIO's event loops (`CAIRN_CONCURRENCY_EXECUTOR`),
/// the threads that serve the connections. Background work put there (swift-otel's span
/// streams, batch processor and OTLP encoding) queued in front of requests on the same loop and
/// woke loops from other threads: at 10 % sampling a node's `GET /tasks` p99 rose by about half
/// and its CPU per request by about a tenth, against about 1 % on the runtime's pool.
package final class DedicatedTaskExecutor: TaskExecutor {
    private let loop: any EventLoop

    /// Starts the executor's thread (it lives as long as the process).
    package init() {
        loop = MultiThreadedEventLoopGroup(numberOfThreads: 1).next()
    }

    /// Runs `job` on the executor's thread, in the order enqueued.
    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Whether the caller runs on the executor's thread (for tests).
    package var isCurrent: Bool { loop.inEventLoop }
}
