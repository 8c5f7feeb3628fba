package import NIOCore

/// A request body that must hold exactly the bytes its `Content-Length` announced (RFC 9112
/// §6.2): ending sooner throws ``IncompleteBody`` instead of ending, so a blob write that reads
/// it aborts and nothing of a cut-off upload is stored.
///
/// Needed because Hummingbird's body iterator ends quietly when the connection closes before
/// the request's end (a client killed mid-upload), which would otherwise read as a shorter,
/// complete file.
package struct DeclaredLengthBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    package typealias Element = ByteBuffer

    let base: Base
    let declared: Int64

    /// Wraps `base`, which must hold `declared` bytes.
    package init(base: Base, declared: Int64) {
        self.base = base
        self.declared = declared
    }

    /// Reads the base body, counting.
    package struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let declared: Int64
        var received: Int64 = 0

        /// The next chunk; at the end, throws ``IncompleteBody`` unless `declared` bytes came.
        package mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await base.next() else {
                if received != declared { throw IncompleteBody(received: received, declared: declared) }
                return nil
            }
            received += Int64(chunk.readableBytes)
            return chunk
        }
    }

    /// Starts reading.
    package func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), declared: declared)
    }
}

/// A request body that ended before the bytes its `Content-Length` announced.
package struct IncompleteBody: Error, CustomStringConvertible {
    /// The bytes that came.
    package let received: Int64
    /// The bytes `Content-Length` announced.
    package let declared: Int64

    /// What happened, in words.
    package var description: String { "the body ended after \(received) of the \(declared) bytes its Content-Length announced" }
}
