import ArgumentParser
import KilnDashboard
import KilnWorker
import Logging
import ServiceLifecycle

/// `kiln dashboard`: a live web page of the fleet, fed from `kiln.telemetry`.
struct DashboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve a live web page of the fleet: workers, pools, invocations and their placements, predicted against measured.",
        discussion: """
            One consumer of kiln.telemetry (every worker's events) feeds a window of the last 5 minutes kept in memory; \
            every page open on it gets the window once a second over server-sent events. It goes on across broker restarts. \
            GET / (the page), /api/state (the window as JSON), /events (the stream), /healthz.
            """)

    @OptionGroup var broker: BrokerOptions

    @Option(help: "Where to listen: HOST:PORT (port 0: any free port, logged).")
    var listen = "127.0.0.1:8080"

    func validate() throws {
        guard HostAndPort(listen) != nil else { throw ValidationError("--listen: HOST:PORT, e.g. 127.0.0.1:8080") }
    }

    func run() async throws {
        Kiln.bootstrapLogging(defaultLevel: .info)
        let logger = Logger(label: "kiln.dashboard")
        let address = HostAndPort(listen)!
        let (endpoints, names) = try broker.endpoints(connectionName: "kiln dashboard")
        let hub = DashboardHub(logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: hub),
                .init(service: TelemetryFeed(endpoints: endpoints, names: names, hub: hub, logger: logger)),
                .init(service: DashboardServer(host: address.host, port: address.port, hub: hub, logger: logger)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
