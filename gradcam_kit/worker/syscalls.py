"""The worker's system-call filter (seccomp), built with libseccomp.

Student code has no use for the kernel's administrative and cross-process interfaces, and some of
them are not isolated by namespaces: the kernel's keyrings (a key in the grader's session keyring,
or in the worker uid's user keyring, would be readable and writable from a worker), tracing other
processes, mounting, loading BPF programs or kernel modules, creating namespaces. The filter
denies, with ``EPERM``, at least every system call that Docker's default seccomp profile denies
(:data:`DENIED`; ``clone`` with a namespace flag too, and ``clone3``, which a filter cannot inspect,
with ``ENOSYS`` so that the C library falls back to ``clone``); system calls of another
architecture's ABI (32-bit calls on x86-64) kill the process.

Where the worker has no IPC namespace of its own (the ``uid`` and ``process`` levels), the System V
and POSIX message-queue calls are denied as well (:data:`IPC`): their objects would land in the
grader's namespace. At the ``bwrap`` level the sandbox has its own IPC namespace, which the zygote
empties between two workers.

At the ``bwrap`` level the filter is given to bubblewrap (``--seccomp FD``, :func:`filter_fd`) and
holds for every process of the sandbox, the zygote included; at the other levels the worker loads
it itself (:func:`install`) before any student code runs.
"""

from __future__ import annotations

import errno
import os

__all__ = ["DENIED", "IPC", "build_filter", "filter_fd", "install"]

DENIED = (
    # keyrings: not namespaced
    "add_key", "keyctl", "request_key",
    # other processes' memory and execution
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # file systems and namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr", "name_to_handle_at", "open_by_handle_at", "quotactl",
    "swapon", "swapoff",
    # the kernel itself
    "bpf", "perf_event_open", "userfaultfd", "init_module", "finit_module", "delete_module", "create_module",
    "query_module", "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "acct", "syslog",
    "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "iopl", "ioperm", "vm86", "vm86old",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # clocks: not namespaced
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
    # memory policy (Docker gates it behind CAP_SYS_NICE)
    "get_mempolicy", "set_mempolicy", "mbind", "move_pages",
)
"""Denied with ``EPERM`` at every level."""

IPC = ("msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget", "shmat",
       "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
       "mq_getsetattr")
"""Denied where the worker shares the grader's IPC namespace."""

_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 \
    | 0x00000080
"""``CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME``."""
_PERSONALITY_FLAGS = (0x0040000, 0x0400000, 0x0200000)
"""``ADDR_NO_RANDOMIZE``, ``READ_IMPLIES_EXEC``, ``ADDR_COMPAT_LAYOUT``: turning address-space
randomisation off (Docker allows only plain personalities)."""


def build_filter(private_ipc: bool):
    """The filter, as a ``pyseccomp.SyscallFilter`` (default: allow).

    Parameters
    ----------
    private_ipc : bool
        The worker has an IPC namespace of its own (``bwrap``); otherwise :data:`IPC` is denied too.
    """
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    denied = DENIED if private_ipc else DENIED + IPC
    for name in denied:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, OSError, RuntimeError):
            pass  # no such call on this architecture: nothing to deny
    for flag in (bit for bit in range(32) if _CLONE_NAMESPACES & (1 << bit)):
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, 1 << flag, 1 << flag))
    for flag in _PERSONALITY_FLAGS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "personality", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    try:
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except (ValueError, OSError, RuntimeError):
        pass
    return rules


def filter_fd(private_ipc: bool = True) -> int:
    """A file descriptor (inheritable, at offset 0) holding the compiled BPF program of the filter,
    for ``bwrap --seccomp FD``. The caller closes it once bwrap has started."""
    fd = os.memfd_create("gradcam-worker-seccomp", 0)
    with os.fdopen(os.dup(fd), "wb") as program:
        build_filter(private_ipc).export_bpf(program)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def install(private_ipc: bool) -> None:
    """Load the filter into this process (and its future children), with ``no_new_privs``."""
    build_filter(private_ipc).load()
