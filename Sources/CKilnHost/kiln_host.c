#define _GNU_SOURCE
#include "kiln_host.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

enum { HIGH_FD_BASE = 512 };

/// Reports `err` for `code` on the error pipe and exits. Child side only.
static void fail_child(int error_pipe, unsigned char code, int err) {
    unsigned char message[1 + sizeof(int)];
    message[0] = code;
    memcpy(message + 1, &err, sizeof(int));
    (void)!write(error_pipe, message, sizeof message);
    _exit(127);
}

static const char *const step_names[] = {"clone", "cgroup", "signals", "session", "hold", "fds", "exec"};

static void run_child(const kiln_spawn_request *request, int error_pipe, int hold_pipe, pid_t parent) {
    sigset_t all;
    sigemptyset(&all);
    if (sigprocmask(SIG_SETMASK, &all, NULL) != 0) fail_child(error_pipe, 2, errno);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    if (request->die_with_parent) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail_child(error_pipe, 2, errno);
        // The parent may have died before the death signal was armed. In a new PID namespace
        // getppid() is 0, and the parent is certainly waiting on the hold pipe.
        if (!(request->namespace_flags & CLONE_NEWPID) && getppid() != parent) _exit(127);
    }
    if (setsid() < 0) fail_child(error_pipe, 3, errno);
    if (hold_pipe >= 0) {
        char go;
        ssize_t got;
        do { got = read(hold_pipe, &go, 1); } while (got < 0 && errno == EINTR);
        if (got != 1) _exit(127);  // the parent gave up (its cgroup write failed)
        close(hold_pipe);
    }
    // Move every source descriptor out of the way first, so that fds[i] == j for j < i works.
    int moved[64];
    if (request->fd_count > 64) fail_child(error_pipe, 5, EMFILE);
    for (int i = 0; i < request->fd_count; i++) {
        int source = request->fds[i];
        if (source < 0) source = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (source < 0) fail_child(error_pipe, 5, errno);
        moved[i] = fcntl(source, F_DUPFD_CLOEXEC, HIGH_FD_BASE);
        if (moved[i] < 0) fail_child(error_pipe, 5, errno);
    }
    for (int i = 0; i < request->fd_count; i++) {
        if (dup2(moved[i], i) < 0) fail_child(error_pipe, 5, errno);
    }
    // Everything else, the error pipe included, closes at exec.
    if (syscall(SYS_close_range, (unsigned)request->fd_count, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        fail_child(error_pipe, 5, errno);
    }
    execve(request->path, request->argv, request->envp);
    fail_child(error_pipe, 6, errno);
}

pid_t kiln_spawn(const kiln_spawn_request *request, int *error, const char **step) {
    int error_pipe[2];
    int hold_pipe[2] = {-1, -1};
    if (pipe2(error_pipe, O_CLOEXEC) != 0) {
        *error = errno;
        *step = "pipe";
        return -1;
    }
    if (request->cgroup_procs_count > 0 && pipe2(hold_pipe, O_CLOEXEC) != 0) {
        *error = errno;
        *step = "pipe";
        close(error_pipe[0]);
        close(error_pipe[1]);
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD | request->namespace_flags, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(error_pipe[0]);
        if (hold_pipe[1] >= 0) close(hold_pipe[1]);
        run_child(request, error_pipe[1], hold_pipe[0], parent);
    }
    int clone_errno = errno;
    close(error_pipe[1]);
    if (hold_pipe[0] >= 0) close(hold_pipe[0]);
    if (pid < 0) {
        *error = clone_errno;
        *step = "clone";
        close(error_pipe[0]);
        if (hold_pipe[1] >= 0) close(hold_pipe[1]);
        return -1;
    }
    if (hold_pipe[1] >= 0) {
        char text[24];
        int length = snprintf(text, sizeof text, "%d\n", (int)pid);
        for (int i = 0; i < request->cgroup_procs_count; i++) {
            if (write(request->cgroup_procs_fds[i], text, (size_t)length) != length) {
                *error = errno;
                *step = "cgroup";
                close(hold_pipe[1]);  // the child sees EOF and exits
                close(error_pipe[0]);
                kill(pid, SIGKILL);
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
                return -1;
            }
        }
        (void)!write(hold_pipe[1], "g", 1);
        close(hold_pipe[1]);
    }
    unsigned char message[1 + sizeof(int)];
    ssize_t got;
    do { got = read(error_pipe[0], message, sizeof message); } while (got < 0 && errno == EINTR);
    close(error_pipe[0]);
    if (got == (ssize_t)sizeof message) {
        memcpy(error, message + 1, sizeof(int));
        *step = message[0] < sizeof step_names / sizeof step_names[0] ? step_names[message[0]] : "child";
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        return -1;
    }
    return pid;
}

int kiln_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}
