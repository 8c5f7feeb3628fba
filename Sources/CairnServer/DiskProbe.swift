import Metrics
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Samples the file system holding the data directory every `interval` (`statvfs`, POSIX):
/// `cairn_data_dir_free_bytes` (bytes available to the server) and
/// `cairn_data_dir_capacity_bytes` (the file system's size), for the disk-space alert.
package struct DiskProbe: Service {
    /// The data directory.
    let path: String
    /// The time between samples.
    let interval: Duration

    /// Creates a probe of the file system holding `path`.
    package init(path: String, interval: Duration = .seconds(30)) {
        self.path = path
        self.interval = interval
    }

    /// Samples until graceful shutdown.
    package func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                sample()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Samples once; a path that cannot be read records nothing.
    package func sample() {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return }
        let blockSize = Int64(stats.f_frsize)
        Gauge(label: "cairn_data_dir_free_bytes").record(Int64(stats.f_bavail) * blockSize)
        Gauge(label: "cairn_data_dir_capacity_bytes").record(Int64(stats.f_blocks) * blockSize)
    }
}
