import Foundation
import KilnWorker
import Testing

@Suite("Worker configuration")
struct WorkerConfigurationTests {
    func file(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-\(UUID().uuidString).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theSampleFileIsTheDefaults() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sample = try WorkerConfiguration.load(file: root.appendingPathComponent("deploy/worker.yaml").path, environment: [:])
        #expect(sample == WorkerConfiguration())
    }

    @Test func defaultsNeedNoFile() throws {
        let configuration = try WorkerConfiguration.load(file: nil, environment: [:])
        #expect(configuration == WorkerConfiguration())
        #expect(configuration.profiles["small"]?.memoryMB == 128)
    }

    @Test func fileValuesOverDefaultsAndEnvironmentOverTheFile() throws {
        let path = try file("""
        amqp:
          url: amqp://kiln:pw@broker:5672/prod
          prefetch: 32
        profiles:
          large: {vcpus: 2, memory_mb: 512}
        method_lifecycles:
          burn: {max_uses: 1}
          fail: {destroy_on_error: true}
        metrics:
          listen: 0.0.0.0:9500
        """)
        let configuration = try WorkerConfiguration.load(file: path, environment: [
            "KILN_AMQP_PREFETCH": "64", "KILN_POOL_MEMORY_RESERVE_MB": "2048", "KILN_AMQP_PORT": "5999", "HOME": "/root",
            "KILN_LIFECYCLE_DESTROY_ON_CRASH": "false",
        ])
        #expect(configuration.amqp.url == "amqp://kiln:pw@broker:5672/prod")
        #expect(configuration.amqp.prefetch == 64)
        #expect(configuration.amqp.heartbeatSeconds == 10)
        #expect(configuration.pool.memoryReserveMB == 2_048)
        #expect(configuration.profiles.keys.sorted() == ["large"])
        #expect(configuration.profiles["large"]?.minIdle == 1)
        #expect(configuration.methodLifecycles["burn"]?.maxUses == 1)
        #expect(configuration.methodLifecycles["burn"]?.idleTTLSeconds == 10)
        #expect(configuration.methodLifecycles["fail"]?.destroyOnError == true)
        #expect(configuration.methodLifecycles["burn"]?.destroyOnError == false)
        #expect(configuration.lifecycle.destroyOnCrash == false)
        #expect(configuration.methodLifecycles["burn"]?.destroyOnCrash == false, "a method's lifecycle starts from the configured one")
        #expect(configuration.metrics.listen == "0.0.0.0:9500")
    }

    @Test(arguments: [
        ("amqp:\n  prefetch: lots\n", ConfigurationError(field: "amqp.prefetch", problem: "expected a whole number")),
        ("amqp:\n  prefetchh: 3\n", ConfigurationError(field: "amqp.prefetchh", problem: "is not a known setting (did you mean prefetch?)")),
        ("amqp:\n  colour: 3\n", ConfigurationError(field: "amqp.colour", problem: "is not a known setting")),
        ("pools:\n  x: 1\n", ConfigurationError(field: "pools", problem: "is not a configuration section (did you mean pool?)")),
        ("vm:\n  manifest: examples/methods.json\n", ConfigurationError(
            field: "vm.manifest",
            problem: "is no longer read: a worker runs the methods of its image (vm.image), which `kiln image build --manifest` builds from the manifest; remove the line")),
        ("vm:\n  backend: docker\n", ConfigurationError(field: "vm.backend", problem: "must be auto, qemu or process, not docker")),
        ("profiles:\n  tiny: {memory_mb: 16}\n", ConfigurationError(field: "profiles.tiny.memory_mb", problem: "must be 64 to 1048576")),
        ("profiles:\n  small: {memory_mb: 128, max_memory_mb: 100}\n", ConfigurationError(
            field: "profiles.small.max_memory_mb", problem: "must be 0 (the default) or from memory_mb to 16 x memory_mb")),
        ("adaptive:\n  relax_after_s: 1e300\n", ConfigurationError(field: "adaptive.relax_after_s", problem: "must be 0 to 86400")),
        ("lifecycle:\n  idle_ttl_s: 1e300\n", ConfigurationError(field: "lifecycle.idle_ttl_s", problem: "must be at most 2592000 (30 days)")),
        ("profiles:\n  small: {memory_mb: 128, max_memory_mb: 256}\nadaptive:\n  enabled: false\n", ConfigurationError(
            field: "profiles.small.max_memory_mb", problem: "needs adaptive.enabled: without the allocator nothing gives a VM more memory")),
        ("profiles:\n  p: {min_idle: 3, max_total: 2}\n", ConfigurationError(field: "profiles.p.max_total", problem: "must be at least 1 and at least min_idle")),
        ("profiles:\n  p: {min_idle: 2, max_idle: 1}\n", ConfigurationError(field: "profiles.p.max_idle", problem: "must be at least min_idle")),
        ("amqp:\n  url: http://x\n", ConfigurationError(field: "amqp.url", problem: "must be amqp:// or amqps:// URLs (a cluster's nodes as a list, or separated by commas)")),
        ("metrics:\n  listen: nowhere\n", ConfigurationError(field: "metrics.listen", problem: "must be host:port, not nowhere")),
        ("- a list\n", ConfigurationError(field: "(file)", problem: "")),
    ])
    func badValuesNameTheField(yaml: String, expected: ConfigurationError) throws {
        let path = try file(yaml)
        do {
            _ = try WorkerConfiguration.load(file: path, environment: [:])
            Issue.record("\(yaml) was accepted")
        } catch let error as ConfigurationError {
            #expect(error.field == expected.field)
            if !expected.problem.isEmpty { #expect(error.problem == expected.problem) }
        }
    }

    @Test func badEnvironmentValuesNameTheField() {
        #expect(throws: ConfigurationError(field: "limits.max_depth", problem: "must be 1 to 31")) {
            try WorkerConfiguration.load(file: nil, environment: ["KILN_LIMITS_MAX_DEPTH": "99"])
        }
        #expect(throws: ConfigurationError(field: "vm.backend", problem: "must be auto, qemu or process, not docker")) {
            try WorkerConfiguration.load(file: nil, environment: ["KILN_VM_BACKEND": "docker"])
        }
        #expect(throws: ConfigurationError(field: "amqp.prefetch", problem: "expected a whole number")) {
            try WorkerConfiguration.load(file: nil, environment: ["KILN_AMQP_PREFETCH": "lots"])
        }
    }

    /// An environment variable's value is read as the field it sets: a name that looks like a
    /// number is still a name, a number for a fractional field is that number.
    @Test func environmentValuesTakeTheTypeOfTheirField() throws {
        let configuration = try WorkerConfiguration.load(file: nil, environment: [
            "KILN_WORKER_NAME": "42", "KILN_AMQP_PREFIX": "true", "KILN_POOL_CPU_RESERVE_CORES": "2",
            "KILN_ADAPTIVE_ENABLED": "false", "KILN_PREDICT_MODEL": "rls", "KILN_VM_BACKEND": "process",
        ])
        #expect(configuration.worker.name == "42")
        #expect(configuration.amqp.prefix == "true")
        #expect(configuration.pool.cpuReserveCores == 2)
        #expect(configuration.adaptive.enabled == false)
        #expect(configuration.predict.model == .ridge)
        #expect(configuration.vm.backend == .process)
    }

    /// A `KILN_*` variable that sets nothing is reported with the one it most likely meant;
    /// the variables of the local broker, the tests and the CLI are not.
    @Test func variablesThatSetNothingAreReported() {
        let warnings = WorkerConfiguration.environmentWarnings([
            "KILN_AMQP_URLL": "amqp://x", "KILN_PROFILES_SMALL_VCPUS": "2", "KILN_FROBNICATE": "1",
            "KILN_AMQP_URL": "amqp://y", "KILN_POOL_MEMORY_RESERVE_MB": "10", "KILN_CONFIG": "/etc/kiln.yaml",
            "KILN_AMQP_PORT": "5673", "KILN_RABBITMQ_NODENAME": "n@h", "KILN_TEST_LOG": "debug", "KILN_LOG_LEVEL": "info",
            "PATH": "/bin",
        ])
        #expect(warnings == [
            "KILN_AMQP_URLL is not a Kiln variable (did you mean KILN_AMQP_URL?); it is ignored",
            "KILN_FROBNICATE is not a Kiln variable; it is ignored",
            "KILN_PROFILES_SMALL_VCPUS cannot be set from the environment: set profiles in the configuration file",
        ])
        #expect(WorkerConfiguration.settableVariables.contains("KILN_AMQP_PUBLISH_WINDOW"))
        #expect(WorkerConfiguration.settableVariables.contains("KILN_HISTORY_PATH"))
        #expect(!WorkerConfiguration.settableVariables.contains { $0.hasPrefix("KILN_PROFILES") })
    }

    /// A cluster's nodes as a YAML list, or separated by commas in the variable.
    @Test func aBrokerURLMayListTheNodesOfACluster() throws {
        let path = try file("amqp:\n  url: [amqp://a:1/%2f, amqp://b:2/%2f]\n")
        #expect(try WorkerConfiguration.load(file: path, environment: [:]).amqp.url == "amqp://a:1/%2f,amqp://b:2/%2f")
        let fromEnvironment = try WorkerConfiguration.load(file: nil, environment: ["KILN_AMQP_URL": "amqp://a:1/%2f, amqps://b:2/%2f"])
        #expect(fromEnvironment.amqp.url == "amqp://a:1/%2f, amqps://b:2/%2f")
        #expect(throws: ConfigurationError.self) {
            try WorkerConfiguration.load(file: nil, environment: ["KILN_AMQP_URL": "amqp://a:1/%2f,http://b"])
        }
    }
}
