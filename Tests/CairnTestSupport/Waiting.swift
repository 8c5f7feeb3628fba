import Synchronization

/// A wait whose condition did not hold before its deadline.
public struct WaitTimeout: Error, CustomStringConvertible {
    /// What was awaited, and for how long.
    public var description: String

    /// Creates the error for a wait on `what` that gave up after `timeout`.
    public init(_ what: String, after timeout: Duration) {
        description = "\(what): not within \(timeout)"
    }
}

/// Runs `body`, failing with ``WaitTimeout`` when it has not returned after `timeout`.
///
/// The deadline bounds a failure; a passing test never sits through it, so it can be generous
/// without slowing anything down, and a loaded machine does not make a correct test fail.
public func withDeadline<R: Sendable>(
    _ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: DeadlineOutcome<R>.self) { group in
        group.addTask { .value(try await body()) }
        group.addTask {
            // The failure bound itself, the one sleep a wait may contain.
            try await Task.sleep(for: timeout)
            return .expired
        }
        defer { group.cancelAll() }
        switch try await group.next() {
        case .value(let value)?: return value
        case .expired?, nil: throw WaitTimeout(what, after: timeout)
        }
    }
}

/// What finished first in ``withDeadline(_:_:_:)``.
private enum DeadlineOutcome<R: Sendable>: Sendable {
    case value(R)
    case expired
}

/// Wake-ups for tasks waiting on a condition over state that changes when something happens
/// (a job event, bytes from a peer, a line from a child process): whoever changes the state
/// calls ``notify()``, and each waiter re-checks its condition then — never on a timer.
public final class ChangeSignal: Sendable {
    private let waiters = Mutex<(next: UInt64, all: [UInt64: AsyncStream<Void>.Continuation])>((0, [:]))

    /// Creates a signal with no waiters.
    public init() {}

    /// Wakes every waiter, which re-checks its condition.
    public func notify() {
        for waiter in waiters.withLock({ Array($0.all.values) }) { waiter.yield() }
    }

    /// Returns once `condition` holds; it is checked at once and again after each
    /// ``notify()``. Throws ``WaitTimeout`` after `timeout`, or what `condition` throws.
    public func wait(
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
public final class Observed<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    private let signal = ChangeSignal()

    /// Starts with `value`.
    public init(_ value: Value) {
        state = Mutex(value)
    }

    /// The current value.
    public var value: Value { state.withLock { $0 } }

    /// Changes the value and wakes the waiters.
    public func update(_ change: (inout Value) -> Void) {
        state.withLock { change(&$0) }
        signal.notify()
    }

    /// Returns the first value that satisfies `predicate`, checked now and after each update.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    public func wait(_ what: String, timeout: Duration = .seconds(30), until predicate: @escaping @Sendable (Value) -> Bool) async throws
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
public func firstElement<S: AsyncSequence & Sendable>(
    of sequence: S, _ what: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (S.Element) -> Bool
) async throws -> S.Element where S.Element: Sendable {
    try await withDeadline(timeout, what) {
        for try await element in sequence where predicate(element) { return element }
        throw WaitTimeout("\(what) (the sequence ended)", after: timeout)
    }
}
