/// Holds invocations while the host's CPU is saturated: when it is busier than
/// ``PoolLimits/saturatedCPU`` and as many VMs as it should keep busy are already working
/// (``PoolLimits/saturatedBusyLimit``), a new VM would only slow every VM down, so an invocation
/// waits for one of those at work instead. The pool holds the waiting line; this decides.
struct SaturationGate {
    /// The host's CPU utilisation (0…1) from which it counts as saturated.
    let saturatedCPU: Double
    /// VMs at work (running or resetting) that a saturated host should keep busy.
    let busyLimit: Int

    init(limits: PoolLimits) {
        saturatedCPU = limits.saturatedCPU
        busyLimit = limits.saturatedBusyLimit
    }

    /// Whether an invocation must wait, with the host at `sample` and `working` VMs at work.
    func holds(_ sample: HostSample, working: Int) -> Bool {
        sample.cpuUtilization >= saturatedCPU && working >= busyLimit
    }
}
