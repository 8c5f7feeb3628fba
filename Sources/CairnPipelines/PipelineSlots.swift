import Synchronization

/// The node's pipeline slots, shared fairly between tenants: at most `capacity` runs at once,
/// at most `perTenant` of them one tenant's. A freed slot goes to the earliest waiting run of
/// the tenant with the fewest runs going, so one tenant's queue of long runs never keeps
/// another tenant's run waiting for more than one slot's turn.
///
/// The job queue's own per-tenant cap (`CAIRN_JOBS_MAX_RUNNING_PER_TENANT`) counts every kind
/// of job; this one counts the expensive part, the sandbox processes.
final class PipelineSlots: Sendable {
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

    let capacity: Int
    let perTenant: Int
    private let state = Mutex(State())

    init(capacity: Int, perTenant: Int) {
        self.capacity = max(1, capacity)
        self.perTenant = max(1, min(perTenant, capacity))
    }

    /// Runs `body` holding a slot for `tenantId`, waiting for one first.
    /// - Throws: `CancellationError` when cancelled while waiting; what `body` throws.
    func withSlot<R: Sendable>(tenantId: String, _ body: () async throws -> R) async throws -> R {
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

    /// Slots held and runs waiting, per tenant (for tests and metrics).
    func snapshot() -> (running: [String: Int], waiting: [String: Int]) {
        state.withLock { state in
            var waiting: [String: Int] = [:]
            for waiter in state.waiting { waiting[waiter.tenantId, default: 0] += 1 }
            return (state.running.filter { $0.value > 0 }, waiting)
        }
    }

    private func acquire(tenantId: String) async throws {
        let id = state.withLock { state -> Int? in
            // With runs waiting, this one queues behind them and `grant` picks the order.
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

    /// Starts waiting runs while slots are free: each time the earliest run of the tenant with
    /// the fewest runs going.
    private func grant() {
        let started = state.withLock { state -> [Waiter] in
            var started: [Waiter] = []
            while state.total < capacity {
                // The earliest waiting run among the tenants with the fewest runs going.
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
