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
            # Scratch space is RAM the image has not taken: a third of what is free at boot for
            # /tmp, a sixteenth for /dev/shm.
            free_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
            mount -t tmpfs -o nosuid,nodev,mode=1777,size=$((free_kb / 3))k tmpfs \(GuestLayout.scratch)
            mkdir -p /dev/shm && mount -t tmpfs -o nosuid,nodev,mode=1777,size=$((free_kb / 16))k tmpfs /dev/shm
            # Methods run in a cgroup of their own: half of what is free at boot, and 256
            # processes. A memory bomb or a fork bomb meets its limit there, fast, and the agent
            # and the kernel outside it keep the rest. With the cpu controller the cgroup's
            # processes share one weight, as many as they are: the agent, outside, keeps half of
            # the vCPU against a fork bomb's hundreds and ends it at its deadline.
            if mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup 2>/dev/null; then
                echo "+memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
                echo "+cpu" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
                mkdir -p \(GuestLayout.methodCgroup)
                echo $((free_kb / 2 * 1024)) >\(GuestLayout.methodCgroup)/memory.max
                echo 0 >\(GuestLayout.methodCgroup)/memory.swap.max 2>/dev/null
                echo 256 >\(GuestLayout.methodCgroup)/pids.max
            fi
            \(inserts)
            hostname kiln-guest
            # Only the scratch folder stays writable for methods.
            mount -o remount,ro / 2>/dev/null
            exec \(GuestLayout.agent) --port \(GuestLayout.agentPortName) --scratch \(GuestLayout.scratch) --method-cgroup \(GuestLayout.methodCgroup)

            """
    }
}
