#define _GNU_SOURCE
#include "kiln_host.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

static const char *const step_names[] = {"clone", "cgroup", "signals", "session", "hold", "fds", "exec", "user", "chroot", "chdir"};

/// What the child needs; it lives on the parent's stack, which the child shares (CLONE_VM) while
/// the parent is suspended (CLONE_VFORK).
typedef struct {
    const kiln_spawn_request *request;
    int error_pipe;
    pid_t parent;
} child_context;

static int run_child(void *argument) {
    const child_context *context = argument;
    const kiln_spawn_request *request = context->request;
    int error_pipe = context->error_pipe;
    // Join the cgroups first: "0" names the writing process itself, in any PID namespace.
    for (int i = 0; i < request->cgroup_procs_count; i++) {
        if (write(request->cgroup_procs_fds[i], "0", 1) != 1) fail_child(error_pipe, 1, errno);
    }
    // Own copies of the signal dispositions (no CLONE_SIGHAND): reset them all, unblock all.
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &fallback, NULL);
    sigset_t all;
    sigemptyset(&all);
    if (sigprocmask(SIG_SETMASK, &all, NULL) != 0) fail_child(error_pipe, 2, errno);
    if (request->die_with_parent) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail_child(error_pipe, 2, errno);
        // The parent may have died before the death signal was armed. In a new PID namespace
        // getppid() is 0.
        if (!(request->namespace_flags & CLONE_NEWPID) && getppid() != context->parent) _exit(127);
    }
    if (setsid() < 0) fail_child(error_pipe, 3, errno);
    if (request->set_oom_score_adj) {
        char text[16];
        int length = snprintf(text, sizeof text, "%d", request->oom_score_adj);
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, text, (size_t)length) != length) fail_child(error_pipe, 7, errno);
        close(fd);
    }
    // The root and working folder while still privileged to chroot.
    if (request->root != NULL && chroot(request->root) != 0) fail_child(error_pipe, 8, errno);
    if (request->cwd != NULL || request->root != NULL) {
        if (chdir(request->cwd != NULL ? request->cwd : "/") != 0) fail_child(error_pipe, 9, errno);
    }
    // Limits first, while still allowed to set any; then the user, group before user.
    if (request->max_processes > 0) {
        struct rlimit processes = {(rlim_t)request->max_processes, (rlim_t)request->max_processes};
        if (setrlimit(RLIMIT_NPROC, &processes) != 0) fail_child(error_pipe, 7, errno);
    }
    if (request->change_user) {
        if (setgroups(0, NULL) != 0) fail_child(error_pipe, 7, errno);
        if (setresgid(request->gid, request->gid, request->gid) != 0) fail_child(error_pipe, 7, errno);
        if (setresuid(request->uid, request->uid, request->uid) != 0) fail_child(error_pipe, 7, errno);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail_child(error_pipe, 7, errno);
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
    return 127;
}

pid_t kiln_spawn(const kiln_spawn_request *request, int *error, const char **step) {
    int error_pipe[2];
    if (pipe2(error_pipe, O_CLOEXEC) != 0) {
        *error = errno;
        *step = "pipe";
        return -1;
    }
    // Like posix_spawn: the child borrows the parent's memory until it executes (no page tables
    // are copied), on a stack of its own.
    enum { STACK_SIZE = 256 * 1024 };
    void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        *error = errno;
        *step = "mmap";
        close(error_pipe[0]);
        close(error_pipe[1]);
        return -1;
    }
    child_context context = {request, error_pipe[1], getpid()};
    pid_t pid = clone(run_child, (char *)stack + STACK_SIZE,
                      CLONE_VM | CLONE_VFORK | SIGCHLD | (int)request->namespace_flags, &context);
    int clone_errno = errno;
    munmap(stack, STACK_SIZE);
    close(error_pipe[1]);
    if (pid < 0) {
        *error = clone_errno;
        *step = "clone";
        close(error_pipe[0]);
        return -1;
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
