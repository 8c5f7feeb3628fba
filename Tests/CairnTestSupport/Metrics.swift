import CairnServer

/// The process's `/metrics` text as the node renders it (the Prometheus text format 0.0.4).
/// The registry is process-wide: tests running in parallel share it, so tests read values
/// under labels of their own or compare before and after.
package func metricsText() -> String {
    String(decoding: Observability.exposition(), as: UTF8.self)
}

/// The value of the sample `name{labels}` (labels matched exactly, in any order) in `text`,
/// or nil when there is none.
package func metricValue(_ name: String, _ labels: [String: String] = [:], in text: String = metricsText()) -> Double? {
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let (sampleName, sampleLabels, value) = parseSample(line), sampleName == name, sampleLabels == labels else { continue }
        return value
    }
    return nil
}

/// The metric names of every sample in `text` (histograms' `_bucket`, `_sum`, `_count` included).
package func sampleNames(in text: String) -> Set<String> {
    Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { parseSample($0)?.name })
}

/// Splits a sample line `name{a="b",…} value` into its parts; nil for anything else.
private func parseSample(_ line: Substring) -> (name: String, labels: [String: String], value: Double)? {
    guard let valueStart = line.lastIndex(of: " "), let value = Double(line[line.index(after: valueStart)...]) else { return nil }
    let head = line[..<valueStart]
    guard let brace = head.firstIndex(of: "{") else { return (String(head), [:], value) }
    var labels: [String: String] = [:]
    // Label values written by Cairn hold no `",` sequences, so a plain split is enough here.
    for pair in head[head.index(after: brace)..<head.index(before: head.endIndex)].split(separator: "\",") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        guard parts.count == 2 else { continue }
        labels[String(parts[0])] = String(parts[1].drop(while: { $0 == "\"" }).prefix(while: { $0 != "\"" }))
    }
    return (String(head[..<brace]), labels, value)
}
