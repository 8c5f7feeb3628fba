import CairnStorage
import Synchronization

/// A wait whose condition did not hold before its deadline.
package struct WaitTimeout: Error, CustomStringConvertible {
    /// What was awaited, and for how long.
    package var description: String

    /// Creates the error for a wait on `what` that gave up after `timeout`.
    package init(_ what: String, after timeout: Duration) {
        description = "\(what): not within \(timeout)"
    }
}

/// Runs `body`, failing with ``WaitTimeout`` when it has not returned after `timeout`.
///
/// The deadline bounds a failure; a passing test never sits through it, so it can be generous
/// without slowing anything down, and a loaded machine does not make a correct test fail.
/// It holds even when `body` is stuck on something that ignores cancellation: the wait fails
/// at the deadline and leaves `body` behind (CairnStorage's `withDeadline`), so a hang shows
/// as a failed test naming what was awaited, not as a run that never ends.
package func withDeadline<R: Sendable>(
    _ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    do {
        return try await CairnStorage.withDeadline(timeout, body)
    } catch is DeadlineExceeded {
        throw WaitTimeout(what, after: timeout)
    }
}

/// Re-checks `condition` every `interval` until it holds. Only for state that changes with no
/// event to wait on (a periodic maintenance pass, another process's output file); every call
/// site says why it cannot wait on an event instead.
/// - Throws: ``WaitTimeout`` after `timeout`, or what `condition` throws.
package func pollUntil(
    _ what: String, every interval: Duration = .milliseconds(100), timeout: Duration = .seconds(30),
    _ condition: @escaping @Sendable () async throws -> Bool
) async throws {
    try await pollFor(what, every: interval, timeout: timeout) { try await condition() ? () : nil }
}

/// Re-runs `attempt` every `interval` until it returns a value, and returns that value; for
/// the same cases as ``pollUntil(_:every:timeout:_:)``.
/// - Throws: ``WaitTimeout`` after `timeout`, or what `attempt` throws.
package func pollFor<T: Sendable>(
    _ what: String, every interval: Duration = .milliseconds(100), timeout: Duration = .seconds(30),
    _ attempt: @escaping @Sendable () async throws -> T?
) async throws -> T {
    try await withDeadline(timeout, what) {
        while true {
            if let value = try await attempt() { return value }
            // The poll interval: there is nothing to wait on (see the call site).
            try await Task.sleep(for: interval)
        }
    }
}

/// Wake-ups for tasks waiting on a condition over state that changes when something happens
/// (a job event, bytes from a peer, a line from a child process): whoever changes the state
/// calls ``notify()``, and each waiter re-checks its condition then — never on a timer.
package final class ChangeSignal: Sendable {
    private let waiters = Mutex<(next: UInt64, all: [UInt64: AsyncStream<Void>.Continuation])>((0, [:]))

    /// Creates a signal with no waiters.
    package init() {}

    /// Wakes every waiter, which re-checks its condition.
    package func notify() {
        for waiter in waiters.withLock({ Array($0.all.values) }) { waiter.yield() }
    }

    /// Returns once `condition` holds; it is checked at once and again after each
    /// ``notify()``. Throws ``WaitTimeout`` after `timeout`, or what `condition` throws.
    package func wait(
        _ what: String, timeout: Duration = .seconds(30), until condition: @escaping @Sendable () async throws -> Bool
    ) async throws {
        // Registered before the first check, so a change between that check and the wait
        // still wakes it (the stream keeps the one pending wake-up).
        let (wakeUps, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = waiters.withLock { waiters -> UInt64 in
            waiters.next += 1
            waiters.all[waiters.next] = continuation
            return waiters.next
        }
        defer { _ = waiters.withLock { $0.all.removeValue(forKey: id) } }
        try await withDeadline(timeout, what) {
            if try await condition() { return }
            for await _ in wakeUps {
                if try await condition() { return }
            }
            throw CancellationError()
        }
    }
}

/// A value that tasks update and other tasks await.
package final class Observed<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    private let signal = ChangeSignal()

    /// Starts with `value`.
    package init(_ value: Value) {
        state = Mutex(value)
    }

    /// The current value.
    package var value: Value { state.withLock { $0 } }

    /// Changes the value and wakes the waiters.
    package func update(_ change: (inout Value) -> Void) {
        state.withLock { change(&$0) }
        signal.notify()
    }

    /// Returns the first value that satisfies `predicate`, checked now and after each update.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable (Value) -> Bool) async throws
        -> Value
    {
        let seen = Mutex<Value?>(nil)
        try await signal.wait(what, timeout: timeout) {
            let value = self.value
            guard predicate(value) else { return false }
            seen.withLock { $0 = value }
            return true
        }
        return seen.withLock { $0 }!
    }
}

/// Returns the first element of `sequence` that satisfies `predicate`.
/// - Throws: ``WaitTimeout`` after `timeout`, or when the sequence ends first.
@discardableResult
package func firstElement<S: AsyncSequence & Sendable>(
    of sequence: S, _ what: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (S.Element) -> Bool
) async throws -> S.Element where S.Element: Sendable {
    try await withDeadline(timeout, what) {
        for try await element in sequence where predicate(element) { return element }
        throw WaitTimeout("\(what) (the sequence ended)", after: timeout)
    }
}

/// A door that tasks (job handlers, publishing hooks) wait at until the test opens it, so a
/// test holds work in a known state instead of sizing sleeps to outlast it.
package final class Gate: Sendable {
    private let state = Observed((open: false, arrived: 0))

    /// A closed gate.
    package init() {}

    /// How many waits reached the gate.
    package var arrived: Int { state.value.arrived }

    /// Waits until the gate is open.
    /// - Throws: `CancellationError` when the waiting task is cancelled (a node shutting down
    ///   cancels its handlers), so a closed gate never hangs a test's shutdown.
    package func wait() async throws {
        state.update { $0.arrived += 1 }
        do {
            try await state.wait("the gate opening", timeout: .seconds(3600)) { $0.open }
        } catch is WaitTimeout {
            throw CancellationError()
        }
    }

    /// Opens the gate: waiting tasks go on, later ones pass.
    package func open() {
        state.update { $0.open = true }
    }

    /// Returns once `count` waits have reached the gate.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    package func waitForArrivals(_ count: Int, timeout: Duration = .seconds(30)) async throws {
        try await state.wait("\(count) arrivals at the gate", timeout: timeout) { $0.arrived >= count }
    }
}
