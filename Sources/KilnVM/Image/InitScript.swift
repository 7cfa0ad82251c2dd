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
            # What is free at boot, and what would be with the profile's memory (kiln.memory_mb)
            # when the guest boots with a ceiling above it that a balloon will hold back.
            free_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
            total_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
            profile_mb=$(sed -n 's/.*kiln[.]memory_mb=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
            profile_kb=$(( ${profile_mb:-0} * 1024 ))
            base_kb=$free_kb
            if [ "$profile_kb" -gt 0 ] && [ "$profile_kb" -lt "$total_kb" ]; then base_kb=$((free_kb - (total_kb - profile_kb))); fi
            # (The ceiling's own page structures count as used: never below a sixteenth of what is free.)
            if [ "$base_kb" -lt $((free_kb / 16)) ]; then base_kb=$((free_kb / 16)); fi
            # Scratch space is RAM the image has not taken: a third of what is free with the
            # profile's memory for /tmp, a sixteenth for /dev/shm.
            mount -t tmpfs -o nosuid,nodev,mode=1777,size=$((base_kb / 3))k tmpfs \(GuestLayout.scratch)
            mkdir -p /dev/shm && mount -t tmpfs -o nosuid,nodev,mode=1777,size=$((base_kb / 16))k tmpfs /dev/shm
            # Methods run in a cgroup of their own: all that is free at boot but half of what
            # is free with the profile's memory (half of all without a ceiling), and 256
            # processes. A memory bomb or a fork bomb meets its limit there, fast, and the agent
            # and the kernel outside it keep the rest (below a ceiling, the guest's OOM killer
            # acts first; the agent is exempt from it). With the cpu controller the cgroup's
            # processes share one weight, as many as they are: the agent, outside, keeps half of
            # the vCPU against a fork bomb's hundreds and ends it at its deadline.
            if mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup 2>/dev/null; then
                echo "+memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
                echo "+cpu" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
                mkdir -p \(GuestLayout.methodCgroup)
                echo $(((free_kb - base_kb / 2) * 1024)) >\(GuestLayout.methodCgroup)/memory.max
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
