import Synchronization

/// Slots of one scarce resource of the node, shared fairly between tenants: at most `capacity`
/// holders at once, at most `perTenant` of them one tenant's. A freed slot goes to the earliest
/// waiter of the tenant with the fewest slots held, so one tenant's queue of long work never
/// keeps another tenant waiting for more than one slot's turn.
///
/// Pipeline runs use it for their sandbox processes (the job queue's own per-tenant cap counts
/// every kind of job), the catalog for its database reads (so one tenant's slow queries cannot
/// hold the connection pool).
package final class FairSlots: Sendable {
    private struct Waiter {
        let id: Int
        let tenantId: String
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var running: [String: Int] = [:]
        var total = 0
        var waiting: [Waiter] = []
        var nextId = 0
    }

    /// Slots in all.
    package let capacity: Int
    /// Slots one tenant may hold at once.
    package let perTenant: Int
    private let state = Mutex(State())

    /// Creates the slots; both counts are at least 1, and `perTenant` at most `capacity`.
    package init(capacity: Int, perTenant: Int) {
        self.capacity = max(1, capacity)
        self.perTenant = max(1, min(perTenant, capacity))
    }

    /// Runs `body` holding a slot for `tenantId`, waiting for one first (cancellable).
    /// - Throws: `CancellationError` when cancelled while waiting; what `body` throws.
    package func withSlot<R: Sendable>(tenantId: String, _ body: () async throws -> R) async throws -> R {
        try await acquire(tenantId: tenantId)
        do {
            let result = try await body()
            release(tenantId: tenantId)
            return result
        } catch {
            release(tenantId: tenantId)
            throw error
        }
    }

    /// Slots held and waiters, per tenant (for tests and metrics).
    package func snapshot() -> (running: [String: Int], waiting: [String: Int]) {
        state.withLock { state in
            var waiting: [String: Int] = [:]
            for waiter in state.waiting { waiting[waiter.tenantId, default: 0] += 1 }
            return (state.running.filter { $0.value > 0 }, waiting)
        }
    }

    private func acquire(tenantId: String) async throws {
        let id = state.withLock { state -> Int? in
            // With others waiting, this one queues behind them and `grant` picks the order.
            if state.waiting.isEmpty && canStart(tenantId, in: state) {
                state.running[tenantId, default: 0] += 1
                state.total += 1
                return nil
            }
            state.nextId += 1
            return state.nextId
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { state -> Bool in
                    // Cancelled before waiting: the handler below found nothing to remove.
                    if Task.isCancelled { return true }
                    state.waiting.append(Waiter(id: id, tenantId: tenantId, continuation: continuation))
                    return false
                }
                if resumeNow {
                    continuation.resume(throwing: CancellationError())
                } else {
                    grant()
                }
            }
        } onCancel: {
            let removed = state.withLock { state -> Waiter? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index)
            }
            removed?.continuation.resume(throwing: CancellationError())
        }
    }

    private func release(tenantId: String) {
        state.withLock { state in
            state.running[tenantId, default: 1] -= 1
            if state.running[tenantId] == 0 { state.running[tenantId] = nil }
            state.total -= 1
        }
        grant()
    }

    /// Starts waiters while slots are free: each time the earliest waiter of the tenant with
    /// the fewest slots held.
    private func grant() {
        let started = state.withLock { state -> [Waiter] in
            var started: [Waiter] = []
            while state.total < capacity {
                // The earliest waiter among the tenants with the fewest slots held.
                var chosen: Int?
                var fewest = Int.max
                for (index, waiter) in state.waiting.enumerated() where canStart(waiter.tenantId, in: state) {
                    let going = state.running[waiter.tenantId, default: 0]
                    if going < fewest {
                        fewest = going
                        chosen = index
                    }
                }
                guard let chosen else { break }
                let waiter = state.waiting.remove(at: chosen)
                state.running[waiter.tenantId, default: 0] += 1
                state.total += 1
                started.append(waiter)
            }
            return started
        }
        for waiter in started { waiter.continuation.resume() }
    }

    private func canStart(_ tenantId: String, in state: State) -> Bool {
        state.total < capacity && state.running[tenantId, default: 0] < perTenant
    }
}
