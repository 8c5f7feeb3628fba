/// A failed attempt whose handler chooses when the next one runs: the job is retried `delay`
/// after the failure, on the node's clock, instead of after the queue's exponential backoff
/// (a webhook's retry schedule, hours apart). A last attempt is discarded as after any error.
package struct RetryJobLater: Error, CustomStringConvertible {
    /// How long after this attempt's failure the next attempt is due.
    package var delay: Duration
    /// Why the attempt failed (kept in the job's `errors`).
    package var message: String

    /// Creates the error: retry after `delay` (negative counts as zero).
    package init(after delay: Duration, _ message: String) {
        self.delay = max(.zero, delay)
        self.message = message
    }

    /// The message.
    package var description: String { message }

    /// ``delay`` in whole milliseconds.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = delay.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

/// Thrown by a handler that waits for other work (a chunked pipeline run for its chunk jobs):
/// the job goes back to `scheduled` until `delay` has passed, or until ``JobQueue/wake(id:tenantId:)``
/// makes it due, without spending an attempt or recording an error (River's `JobSnooze`). It
/// holds no worker slot while it waits. A job woken while it ran is due again at once.
package struct SnoozeJob: Error, CustomStringConvertible {
    /// How long the job waits at most.
    package var delay: Duration

    /// Creates the error: run again within `delay` (negative counts as zero).
    package init(upTo delay: Duration) {
        self.delay = max(.zero, delay)
    }

    /// What it is.
    package var description: String { "snoozed" }

    /// ``delay`` in whole milliseconds.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = delay.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
