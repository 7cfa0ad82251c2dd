/// The guest's `/init`: a busybox shell script that mounts the kernel file systems, loads the
/// virtio modules in order, and hands PID 1 to the agent.
enum InitScript {
    static func text(modules: [String]) -> String {
        let inserts = modules.map { module in
            "insmod \(GuestLayout.modules)/\(module).ko || echo \"init: insmod \(module) failed\" >&2"
        }.joined(separator: "\n")
        return """
            #!/bin/sh
            # Kiln guest init: kernel file systems, virtio modules, then kiln-agent as PID 1.
            mount -t proc -o nosuid,nodev,noexec proc /proc
            mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
            mount -t devtmpfs -o nosuid devtmpfs /dev
            mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs \(GuestLayout.scratch)
            mkdir -p /dev/shm && mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
            \(inserts)
            hostname kiln-guest
            # Only the scratch folder stays writable for methods.
            mount -o remount,ro / 2>/dev/null
            exec \(GuestLayout.agent) --port \(GuestLayout.agentPortName) --scratch \(GuestLayout.scratch)

            """
    }
}
