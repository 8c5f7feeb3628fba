import Metrics
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Metrics of the sandbox child processes of pipeline runs:
/// - `cairn_pipeline_children_running` (gauge): children alive now;
/// - `cairn_pipeline_children_finished_total` (counter): children that ended (however);
/// - `cairn_pipeline_children_cpu_seconds_total` (counter): user + system CPU seconds of
///   finished children;
/// - `cairn_pipeline_children_max_rss_bytes` (gauge): the largest peak resident set size of
///   any finished child.
///
/// The CPU and memory figures come from `getrusage(RUSAGE_CHILDREN)` (POSIX), read after each
/// child is reaped: swift-subprocess reaps with `waitid`, which reports no resource use per
/// child, so CPU is the growth of the process-wide total since the last reading (sandbox
/// children are the only children a server has) and peak memory is the kernel's maximum over
/// all reaped children.
enum ChildMetrics {
    /// Children alive now, and the CPU total (microseconds) already counted.
    private struct State {
        var running = 0
        var countedCPUMicroseconds: Int64 = 0
    }
    private static let state = Mutex(State())

    /// Runs `body` (which starts and awaits one child) counted as a running child, then records
    /// its end and the resources it used.
    static func tracking<R>(_ body: () async throws -> R) async rethrows -> R {
        let running = state.withLock { state in
            state.running += 1
            return state.running
        }
        Gauge(label: "cairn_pipeline_children_running").record(running)
        defer { finished() }
        return try await body()
    }

    /// Publishes the gauges and counters at zero, so the series exist from start-up.
    static func publishAll() {
        let running = state.withLock { $0.running }
        Gauge(label: "cairn_pipeline_children_running").record(running)
        Counter(label: "cairn_pipeline_children_finished_total").increment(by: 0)
        FloatingPointCounter(label: "cairn_pipeline_children_cpu_seconds_total").increment(by: 0)
        var usage = rusage()
        if getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage) == 0 {
            Gauge(label: "cairn_pipeline_children_max_rss_bytes").record(Int64(usage.ru_maxrss) * 1024)
        }
    }

    private static func finished() {
        var usage = rusage()
        let measured = getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage) == 0
        let cpu = Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
        let (running, newCPU) = state.withLock { state -> (Int, Int64) in
            state.running -= 1
            guard measured else { return (state.running, 0) }
            let delta = max(0, cpu - state.countedCPUMicroseconds)
            state.countedCPUMicroseconds = max(cpu, state.countedCPUMicroseconds)
            return (state.running, delta)
        }
        Gauge(label: "cairn_pipeline_children_running").record(running)
        Counter(label: "cairn_pipeline_children_finished_total").increment()
        FloatingPointCounter(label: "cairn_pipeline_children_cpu_seconds_total").increment(by: Double(newCPU) / 1_000_000)
        // ru_maxrss is in kibibytes on Linux.
        if measured { Gauge(label: "cairn_pipeline_children_max_rss_bytes").record(Int64(usage.ru_maxrss) * 1024) }
    }
}
