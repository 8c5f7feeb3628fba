import CompressNIO
import NIOCore

/// Streaming gzip (RFC 1952) over zlib, through compress-nio. Runs in the report's task, never
/// on an event loop. Level 1: reports are large and CPU is shared, so speed beats ratio (CSV
/// still shrinks 4–6×).
final class GzipStream {
    private let compressor: ZlibCompressor
    private var window: ByteBuffer

    init() throws {
        compressor = try ZlibCompressor(algorithm: .gzip, configuration: ZlibConfiguration(windowSize: 15, compressionLevel: 1, memoryLevel: 8))
        window = ByteBufferAllocator().buffer(capacity: 64 * 1024)
    }

    /// Compresses `input`; with `finish`, also flushes everything and writes the gzip trailer.
    /// Output is whatever whole windows filled up (possibly nothing).
    func compress(_ input: ByteBuffer, finish: Bool) throws -> ByteBuffer {
        var input = input
        var output = ByteBufferAllocator().buffer(capacity: 0)
        try input.compressStream(with: compressor, window: &window, flush: finish ? .finish : .no) { filled in
            output.writeImmutableBuffer(filled)
        }
        return output
    }
}
