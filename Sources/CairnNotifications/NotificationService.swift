import CairnStorage
import Foundation
package import Logging
import ServiceLifecycle

/// The module's background work on each node, as one `Service`: retention pruning of read
/// notifications, and closing live connections on shutdown. (Job status notifications are
/// ``JobStatusService``'s, which stops after the job worker.)
package struct NotificationService: Service {
    let center: Notifier
    let logger: Logger

    /// Creates the service.
    package init(center: Notifier, logger: Logger) {
        self.center = center
        self.logger = logger
    }

    /// Runs until graceful shutdown.
    package func run() async throws {
        await withGracefulShutdownHandler {
            await cancelWhenGracefulShutdown {
                await prune()
            }
        } onGracefulShutdown: { [center] in
            center.hub.closeAll()
        }
        center.hub.closeAll()
        center.hub.stop()
    }

    private func prune() async {
        while !Task.isCancelled {
            let cutoff = center.clock.milliseconds - Int64(center.settings.retentionSeconds) * 1000
            do {
                while try await center.store.pruneRead(before: cutoff) >= 1000 {}
            } catch {
                logger.warning("notification retention pruning failed; retrying later")
            }
            do { try await Task.sleep(for: center.settings.pruneInterval) } catch { return }
        }
    }
}
