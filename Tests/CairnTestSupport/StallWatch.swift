import Foundation
import NIOCore
import NIOPosix

/// With `CAIRN_TEST_STALL_LOG` set, watches the test process's shared executors from threads of
/// their own and prints `STALL <executor> <seconds> s from <unix time>` to standard error when
/// one took more than 2 s to start a no-op: the concurrency pool (where every node's handlers
/// and most tests run) and each of NIO's singleton event loops (every node's sockets).
///
/// A diagnostic for loaded runs: a request that timed out, with stalls printed around it,
/// waited behind other work in this process rather than for the machine; `perf record -g -p`
/// over such a run shows which test's frames held the executor.
let stallWatch: Void = {
    guard ProcessInfo.processInfo.environment["CAIRN_TEST_STALL_LOG"] != nil else { return }
    watchForStalls("concurrency-pool") { done in Task.detached { done.signal() } }
    for (index, loop) in MultiThreadedEventLoopGroup.singleton.makeIterator().enumerated() {
        watchForStalls("event-loop-\(index)") { done in loop.execute { done.signal() } }
    }
}()

/// Every 100 ms, submits a no-op with `submit` and reports it if it ran more than 2 s later.
private func watchForStalls(_ executor: String, _ submit: @escaping @Sendable (DispatchSemaphore) -> Void) {
    Thread {
        while true {
            let start = Date()
            let done = DispatchSemaphore(value: 0)
            submit(done)
            done.wait()
            let waited = Date().timeIntervalSince(start)
            if waited > 2 {
                let line = "STALL \(executor) \(String(format: "%.1f", waited)) s from \(start.timeIntervalSince1970)\n"
                FileHandle.standardError.write(Data(line.utf8))
            }
            usleep(100_000)
        }
    }.start()
}
