// Parser throughput, one core: `swift run -c release cairn-bench csv|json|ndjson FILE [--library]`,
// or `cairn-bench xml FILE RECORDPATH`. Prints records, bytes and MB/s; `Benchmarks/ingest/run.sh`
// and `Benchmarks/pipelines/run.sh` run it beside Python's csv module.
import CSV
import CairnFormats
import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: cairn-bench csv FILE [--library]\n".utf8))
    exit(2)
}
let path = arguments[2]
let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
let start = ContinuousClock.now
var records = 0
var cells = 0
switch (arguments[1], arguments.dropFirst(3).first) {
case ("csv", "--library"):
    // yaslab/CSV.swift, streaming from an InputStream (STACK-NOTES: it never throws; errors land
    // in `reader.error`).
    let reader = try CSVReader(stream: InputStream(fileAtPath: path)!, hasHeaderRow: true)
    while let row = reader.next() {
        records += 1
        cells += row.count
    }
case ("csv", _):
    let reader = try CairnFormats.CSVReader(source: try FileByteSource(path: path))
    while let row = try reader.next() {
        records += 1
        cells += row.count
    }
case ("json", _), ("ndjson", _):
    var options = JSONOptions()
    options.layout = arguments[1] == "ndjson" ? .lines : .array
    let reader = try JSONRecordReader(source: try FileByteSource(path: path), options: options)
    while let record = try reader.next() {
        records += 1
        cells += record.count
    }
case ("xml", let recordPath?):
    try XMLRecordReader(path: path, recordPath: recordPath).forEachRecord { record in
        records += 1
        cells += record.count
    }
default:
    FileHandle.standardError.write(Data("unknown format \(arguments[1])\n".utf8))
    exit(2)
}
let elapsed = (ContinuousClock.now - start).components
let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
print(String(format: "%d records, %d cells, %.1f MB in %.2f s: %.1f MB/s", records, cells, Double(size) / 1e6, seconds, Double(size) / 1e6 / seconds))
