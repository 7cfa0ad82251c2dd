#ifndef KILN_HOST_H
#define KILN_HOST_H

// Linux calls that Swift's Glibc module does not bring: epoll, eventfd, clone flags, mounts,
// pidfds, and a safe fork/clone + exec.
#include <linux/sched.h>  // CLONE_NEW* without _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/types.h>

/// What `kiln_spawn` starts, and how.
typedef struct {
    /// The program (an absolute path: no PATH search) and its argv and envp, NULL-terminated.
    const char *path;
    char *const *argv;
    char *const *envp;
    /// `fds[i]` becomes descriptor i in the child; -1 makes it /dev/null. Every other descriptor
    /// is closed at exec.
    const int *fds;
    int fd_count;
    /// CLONE_NEW* flags for the child (0 for a plain fork).
    unsigned long namespace_flags;
    /// Open `cgroup.procs` files the child joins before it executes anything.
    const int *cgroup_procs_fds;
    int cgroup_procs_count;
    /// Non-zero: the child gets SIGKILL when the thread that spawned it ends.
    int die_with_parent;
    /// Non-zero: the child runs as `uid` and `gid` (no supplementary groups, no new privileges
    /// through set-id files) from before it executes anything.
    int change_user;
    uid_t uid;
    gid_t gid;
    /// More than zero: the child's RLIMIT_NPROC (the processes its user may have).
    long max_processes;
    /// Non-zero: the child's oom_score_adj becomes `oom_score_adj` (a child inherits its
    /// parent's, and a parent that shields itself from the out-of-memory killer must not shield
    /// what it starts).
    int set_oom_score_adj;
    int oom_score_adj;
    /// Non-NULL: the child's root (chroot) before it changes user; its working folder is then
    /// `cwd`, or `/`.
    const char *root;
    /// Non-NULL: the child's working folder (inside `root` when one is given).
    const char *cwd;
} kiln_spawn_request;

/// Starts a child in its own session. Returns its PID, or -1 with `*error` set to the errno of the
/// step that failed (`*step` names it: "clone", "cgroup", "exec", …). The child is already reaped
/// when -1 is returned. Only async-signal-safe calls run between clone and exec.
pid_t kiln_spawn(const kiln_spawn_request *request, int *error, const char **step);

/// pidfd_open(2): a descriptor that becomes readable when `pid` exits.
int kiln_pidfd_open(pid_t pid);

#endif
