import Foundation
import KilnTestSupport
import KilnWorker
import Testing

/// The operator's files: `deploy/prometheus/kiln-rules.yml` passes `promtool check rules` and
/// its unit tests (`kiln-rules.test.yml`: each alert fires on the series it is for, and only
/// there), and the rules and `deploy/grafana/kiln.json` name only metrics the worker exports.
@Suite("Prometheus rules and the Grafana dashboard")
struct OperatorFilesTests {
    static let rules = repositoryRoot.appendingPathComponent("deploy/prometheus/kiln-rules.yml").path
    static let ruleTests = repositoryRoot.appendingPathComponent("deploy/prometheus/kiln-rules.test.yml").path
    static let dashboard = repositoryRoot.appendingPathComponent("deploy/grafana/kiln.json").path

    /// Every series name a scrape of a worker can hold.
    static let exported = Set(KilnMetric.allCases.flatMap(\.seriesNames))

    /// The `kiln_…` metric names in a PromQL text (recording rules' `kiln:…` names excluded).
    static func metricNames(in text: String) -> Set<String> {
        let pattern = try! NSRegularExpression(pattern: "(?<![A-Za-z0-9_:])kiln_[a-z0-9_]+")
        let range = NSRange(text.startIndex..., in: text)
        return Set(pattern.matches(in: text, range: range).map { String(text[Range($0.range, in: text)!]) })
    }

    @Test func promtoolAcceptsTheRulesAndTheirUnitTestsPass() throws {
        let check = try runToCompletion("/usr/bin/env", ["promtool", "check", "rules", Self.rules])
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("SUCCESS"), "\(check.output)")
        let unit = try runToCompletion("/usr/bin/env", ["promtool", "test", "rules", Self.ruleTests])
        #expect(unit.status == 0, "\(unit.output)")
    }

    @Test func theRulesNameOnlyExportedMetrics() throws {
        let text = try String(contentsOfFile: Self.rules, encoding: .utf8)
        // The comments may name a histogram by its family; the rules must name its series.
        let rules = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces).hasPrefix("#") ? "" : String($0) }
        let names = Self.metricNames(in: rules.joined(separator: "\n"))
        #expect(names.count >= 8, "\(names)")
        #expect(names.subtracting(Self.exported).isEmpty, "not exported: \(names.subtracting(Self.exported).sorted())")
        // The alerts the operator was promised.
        for alert in ["KilnNoWarmVMsWhileInvocationsWait", "KilnDeadLettersRising", "KilnPredictionErrorDrifting", "KilnWorkerGone", "KilnNoWorkers"] {
            #expect(text.contains("alert: \(alert)"))
        }
    }

    @Test func theDashboardQueriesOnlyExportedMetrics() throws {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.dashboard))) as? [String: Any]
        let panels = try #require(json?["panels"] as? [[String: Any]])
        // Panels, and the panels inside collapsed rows.
        func expressions(in panels: [[String: Any]]) -> [String] {
            panels.flatMap { panel in
                (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String }
                    + expressions(in: panel["panels"] as? [[String: Any]] ?? [])
            }
        }
        var expressions = expressions(in: panels)
        let templating = (json?["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        expressions += templating.compactMap { $0["definition"] as? String }
        let names = expressions.reduce(into: Set<String>()) { $0.formUnion(Self.metricNames(in: $1)) }
        #expect(expressions.count >= 20)
        #expect(names.subtracting(Self.exported).isEmpty, "not exported: \(names.subtracting(Self.exported).sorted())")
        // What the issue asks the dashboard to show.
        for needed: KilnMetric in [.invocationsTotal, .totalSeconds, .poolIdleVms, .vmLifetimeSeconds, .hostCpuUtilization,
                                   .deadLettersTotal, .modelErrorRatio] {
            #expect(names.contains { $0.hasPrefix(needed.rawValue) }, "the dashboard does not show \(needed.rawValue)")
        }
    }

    @Test func theNameFinderSeesThroughPromQL() {
        let names = Self.metricNames(in: #"histogram_quantile(0.5, sum by (le) (rate(kiln_total_seconds_bucket{a="kiln_x"}[5m]))) / kiln:rate1m"#)
        #expect(names == ["kiln_total_seconds_bucket", "kiln_x"])
    }
}
