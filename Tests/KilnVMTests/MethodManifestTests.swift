import Foundation
import Testing

@testable import KilnVM

@Suite("Method manifest")
struct MethodManifestTests {
    private func parse(_ json: String) throws(VMError) -> MethodManifest {
        try MethodManifest.parse(Data(json.utf8), path: "test.json")
    }

    @Test func readsTheExamplesManifest() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let manifest = try MethodManifest.load(path: root + "/examples/methods.json")
        #expect(Set(manifest.methods.keys.filter { !$0.hasPrefix("hostile-") })
            == ["echo", "sleep", "fail", "burn", "sha256", "allocate", "echo-serve", "wordcount", "noop", "py-echo", "py-thumbnail"])
        #expect(manifest.methods.keys.filter { $0.hasPrefix("hostile-") }.count == 7)
        #expect(manifest.guestEntry(for: "sleep") == ["/kiln/bin/kiln-examples", "sleep"])
        #expect(manifest.methods["burn"]?.lifecycle == .fresh)
        #expect(manifest.methods["burn"]?.mode == .exec)
        #expect(manifest.methods["echo"]?.deadlineMs == 5000)
        #expect(manifest.methods["echo-serve"]?.mode == .serve)
        #expect(manifest.methods["wordcount"]?.warm == true)
        #expect(manifest.guestEntry(for: "noop") == ["kiln:noop"])
        #expect(manifest.programs["kiln-examples"] == "swift:kiln-examples")
    }

    @Test func fillsDefaults() throws {
        let manifest = try parse(#"{"version":1,"programs":{},"methods":{"sh":{"entry":["/bin/sh","-c","true"]}}}"#)
        let method = try #require(manifest.methods["sh"])
        #expect(method.deadlineMs == 30_000)
        #expect(method.mode == .exec)
        #expect(method.warm == false)
        #expect(method.lifecycle == .reuse)
        #expect(method.resources == .init(vcpus: 1, memoryMB: 128))
        #expect(manifest.guestEntry(for: "sh") == ["/bin/sh", "-c", "true"])
        #expect(manifest.guestEntry(for: "missing") == nil)
    }

    @Test(arguments: [
        (#"{"version":2,"programs":{},"methods":{"a":{"entry":["/x"]}}}"#, "version 2"),
        (#"{"version":1,"programs":{},"methods":{}}"#, "no methods"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":[]}}}"#, "entry is empty"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["tool"]}}}"#, "not in programs"),
        (#"{"version":1,"programs":{},"methods":{"a/b":{"entry":["/x"]}}}"#, "method name"),
        (#"{"version":1,"programs":{"../x":"y"},"methods":{"a":{"entry":["/x"]}}}"#, "program name"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"deadline_ms":0}}}"#, "deadline_ms"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"resources":{"vcpus":0}}}}"#, "vcpus"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"mode":"sometimes"}}}"#, "sometimes"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"mode":"fresh"}}}"#, #""lifecycle": "fresh""#),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"lifecycle":"serve"}}}"#, "serve"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"warm":true}}}"#, "warm needs"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["kiln:dance"]}}}"#, "kiln:noop"),
        (#"{"version":1,"methods":{"a":{"entry":["/x"]}}}"#, "programs"),
        (#"{"version":1,"programs":{},"methods":{"a":{}}}"#, "entry"),
        // Unknown keys: a typo is an error naming the key it most likely meant.
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"deadine_ms":100}}}"#,
         "methods.a.deadine_ms is not a manifest key (did you mean deadline_ms?)"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"resources":{"vcpu":2}}}}"#,
         "methods.a.resources.vcpu is not a manifest key (did you mean vcpus?)"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"dependencies":{"size":2}}}}"#,
         "methods.a.dependencies.size is not a manifest key (did you mean size_mb?); methods.a.dependencies takes runtime, files, size_mb"),
        (#"{"version":1,"program":{},"methods":{"a":{"entry":["/x"]}}}"#, "program is not a manifest key (did you mean programs?)"),
        (#"{"version":1,"programs":{},"methods":{"a":{"entry":["/x"],"colour":"blue"}}}"#, "colour is not a manifest key; methods.a takes entry,"),
        (#"[1, 2]"#, "must be a JSON object"),
        // Root file systems.
        (#"{"version":1,"programs":{},"rootfs":"py","methods":{"a":{"entry":["x"]}}}"#, "rootfs 'py' is not in root_filesystems"),
        (#"{"version":1,"programs":{},"root_filesystems":{"python":{"directory":"d"}},"methods":{"a":{"entry":["x"],"rootfs":"pyhton"}}}"#,
         "methods.a.rootfs 'pyhton' is not in root_filesystems (did you mean python?)"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"directory":"d","oci":"i.tar"}},"methods":{"a":{"entry":["/x"]}}}"#,
         "exactly one of debian, oci or directory, not 2"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"debian":{"packages":["Python3"]}}},"methods":{"a":{"entry":["/x"]}}}"#,
         "'Python3' is not a Debian package name"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"debian":{"packages":[]}}},"methods":{"a":{"entry":["/x"]}}}"#,
         "root_filesystems.r.debian.packages is empty"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"debian":{"packages":["p1"],"suit":"sid"}}},"methods":{"a":{"entry":["/x"]}}}"#,
         "root_filesystems.r.debian.suit is not a manifest key (did you mean suite?)"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"directory":"d","copy":{"app":"src"}}},"methods":{"a":{"entry":["/x"]}}}"#,
         "copy: 'app' must be an absolute path inside the root"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"directory":"d","copy":{"/a/../../etc":"src"}}},"methods":{"a":{"entry":["/x"]}}}"#,
         "without '..'"),
        (#"{"version":1,"programs":{},"root_filesystems":{"r":{"directory":"d"}},"methods":{"a":{"rootfs":"r"}}}"#, "methods.a.entry is empty"),
        // Syntax errors say where.
        ("{\n  \"version\": 1,\n  \"programs\" {}\n}", "not valid JSON at line 3, column 14"),
        ("{\"version\": 1,\n\"methods\": {\"ä\": [1 2]}}", "not valid JSON at line 2, column 21"),
    ])
    func rejectsWithAReason(json: String, reason: String) throws {
        do {
            _ = try parse(json)
            Issue.record("accepted: \(json)")
        } catch {
            guard case .manifestInvalid(let path, let message) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(path == "test.json")
            #expect(message.contains(reason), "\(message)")
        }
    }

    @Test(arguments: [
        ("deadine_ms", "deadline_ms"), ("vpcus", "vcpus"), ("memory", "memory_mb"), ("MEMORY_MB", "memory_mb"),
        ("size", "size_mb"), ("xyz", nil), ("colour", nil), ("", nil), ("me", nil),
    ] as [(String, String?)])
    func suggestsTheNearestKnownName(typed: String, meant: String?) {
        #expect(ClosestName.to(typed, among: ["deadline_ms", "vcpus", "memory_mb", "size_mb", "entry", "mode"]) == meant)
    }
}
