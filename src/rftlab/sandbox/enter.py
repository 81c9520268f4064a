"""The sandbox launcher: confines itself, then runs the untrusted command.

Run by path with the standard library only (`python -I -S enter.py SPEC_JSON -- CMD...`), so it starts in a few
milliseconds and imports nothing that the command could tamper with. `python -I -S enter.py --probe` prints, as
JSON, what this host offers. SPEC_JSON (built by rftlab.sandbox.process) holds no secrets: the command's
environment is the launcher's own.

Order of steps, each one needing the previous:
1. unshare the user, network, PID and mount namespaces (a user namespace first, so that an unprivileged process
   may create the others; as root it also leaves every capability of the host behind), and mount a size-bounded
   tmpfs over the scratch folder;
2. fork: the child is PID 1 of the new PID namespace, so when it dies the kernel kills everything it forked
   (a child that calls setsid() included); the launcher stays as its parent and passes on its exit status;
3. in the child: resource limits, PR_SET_NO_NEW_PRIVS, no capabilities, a Landlock domain (read-only and
   read-write path rules, no TCP, no signals or abstract sockets outside the domain), then execve.
Without a PID namespace the launcher confines itself and execs directly; the process group is then the tree.
A step that the spec asks for and that fails ends the launcher with EXIT_SETUP_FAILED and a message on stderr;
the command never runs half-confined.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import sys

EXIT_SETUP_FAILED = 125

SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_RIGHTS = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
WRITE_RIGHTS = (
    FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522

RLIMITS = {
    "address_space_bytes": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "processes": resource.RLIMIT_NPROC,
}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class SetupFailed(Exception):
    pass


class RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise SetupFailed(f"{what}: {os.strerror(code)} (errno {code})")
    return result


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers; 0 when Landlock is off or absent."""
    version = libc.syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(0, int(version))


def handled_fs_rights(abi: int) -> int:
    rights = READ_RIGHTS | WRITE_RIGHTS | FS_MAKE_CHAR | FS_MAKE_BLOCK
    if abi < 2:
        rights &= ~FS_REFER
    if abi < 3:
        rights &= ~FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def apply_landlock(abi: int, read_only: list[str], read_write: list[str], network: bool) -> None:
    handled = handled_fs_rights(abi)
    attr = RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4 and not network:
        attr.handled_access_net, size = NET_BIND_TCP | NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL, 24
    ruleset = _check(
        libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "landlock_create_ruleset",
    )
    try:
        for paths, rights in ((read_only, READ_RIGHTS), (read_write, READ_RIGHTS | WRITE_RIGHTS)):
            for path in paths:
                _allow(ruleset, path, rights & handled)
        _check(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a default path this host does not have
    except OSError as error:
        raise SetupFailed(f"cannot open {path} for a Landlock rule: {error.strerror}") from None
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            rights &= FILE_RIGHTS
        rule = PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _check(
            libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock_add_rule({path})",
        )
    finally:
        os.close(fd)


def enter_namespaces(flags: int) -> None:
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(flags), "unshare")
    if flags & CLONE_NEWUSER:  # map ourselves to ourselves, so files keep their owners
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)


def mount_private_folders(scratch: str, size_bytes: int) -> list[str]:
    """A tmpfs of `size_bytes` over the scratch folder, and one over /dev/shm (so that multiprocessing works
    without sharing the host's), seen only in our mount namespace and gone with it: what the command writes is
    bounded in total, not only file by file. Returns the folders the command may write."""
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
    options = f"size={size_bytes},mode=0700".encode()
    mounted = []
    for folder in (scratch, "/dev/shm"):
        if os.path.isdir(folder):
            flags = MS_NOSUID | MS_NODEV
            _check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", flags, options), f"mounting {folder}")
            mounted.append(folder)
    os.mkdir(os.path.join(scratch, "tmp"))
    return mounted


def drop_capabilities() -> None:
    """No capability survives into the command (root's included): bounding set, ambient, then the rest."""
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    with open("/proc/sys/kernel/cap_last_cap") as file:
        last = int(file.read())
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() not in (
            errno.EINVAL,
            errno.EPERM,
        ):
            _check(-1, f"PR_CAPBSET_DROP({cap})")
    header, data = CapHeader(CAPABILITY_VERSION_3, 0), (CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def set_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        try:
            resource.setrlimit(RLIMITS[name], (value, value))
        except (ValueError, OSError) as error:
            raise SetupFailed(f"setrlimit {name}={value}: {error}") from None


def confine(spec: dict) -> None:
    """Everything after the namespaces, in the process that will exec the command."""
    set_limits(spec["limits"])
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    drop_capabilities()
    if spec["landlock_abi"]:
        own_proc = "/proc/" + os.readlink(
            "/proc/self"
        )  # the host's number for us, also inside a PID namespace
        read_only = [*spec["read_only"], own_proc]  # of /proc, the command sees only its own entry
        apply_landlock(spec["landlock_abi"], read_only, spec["read_write"], spec["network"])


def run_as_pid_one(spec: dict, command: list[str]) -> int:
    """Fork the command as PID 1 of the new namespace; wait for it and return its exit status as ours."""
    alive_read, alive_write = os.pipe()  # the child sees EOF here once the launcher is gone
    child = os.fork()
    if child == 0:
        os.close(alive_write)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if select.select([alive_read], [], [], 0)[0]:  # the launcher died before PDEATHSIG was set
            os._exit(EXIT_SETUP_FAILED)
        exec_confined(spec, command)
    os.close(alive_read)
    parent = parent_handle(spec["parent_pid"])

    def end_child(signum: int, _frame: object) -> None:
        os.kill(child, signal.SIGKILL)  # PID 1 ignores other signals it has no handler for

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end_child)
    watched = [os.pidfd_open(child)] if parent is None else [os.pidfd_open(child), parent]
    if parent is None or parent in select.select(watched, [], [])[0]:
        os.kill(child, signal.SIGKILL)  # whoever started us is gone: so is the command
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return os.waitstatus_to_exitcode(status)


def parent_handle(parent_pid: int) -> int | None:
    """A pidfd that turns readable when the process that started us ends; None if it has ended already.

    Not PR_SET_PDEATHSIG: that fires when the parent's *thread* ends, and the evaluator pool starts workers
    from short-lived threads."""
    try:
        handle = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return None
    return handle if os.getppid() == parent_pid else None


def exec_confined(spec: dict, command: list[str]) -> None:
    try:
        confine(spec)
        os.execvp(command[0], command)
    except (SetupFailed, OSError) as error:
        print(f"sandbox: {error}", file=sys.stderr, flush=True)
    os._exit(EXIT_SETUP_FAILED)


def probe() -> dict:
    """What this host lets this process use, each namespace tried in a throwaway child."""

    def can_unshare(flags: int) -> bool:
        child = os.fork()
        if child == 0:
            try:
                enter_namespaces(flags)
                os._exit(0)
            except BaseException:
                os._exit(1)
        return os.waitpid(child, 0)[1] == 0

    user = can_unshare(CLONE_NEWUSER)
    base = CLONE_NEWUSER if user else 0
    return {
        "landlock_abi": landlock_abi(),
        "user_namespace": user,
        "net_namespace": can_unshare(base | CLONE_NEWNET),
        "pid_namespace": can_unshare(base | CLONE_NEWPID),
        "mount_namespace": can_unshare(base | CLONE_NEWNS),
        "root": os.getuid() == 0,
    }


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    spec, command = json.loads(argv[0]), argv[2:]
    flags = (CLONE_NEWUSER if spec["user_namespace"] else 0) | (CLONE_NEWPID if spec["pid_namespace"] else 0)
    if spec["net_namespace"] and not spec["network"]:
        flags |= CLONE_NEWNET
    if spec["mount_namespace"]:
        flags |= CLONE_NEWNS
    try:
        if flags:
            enter_namespaces(flags)
        if spec["mount_namespace"]:
            spec["read_write"] += mount_private_folders(spec["scratch"], spec["scratch_bytes"])
    except (SetupFailed, OSError) as error:
        print(f"sandbox: {error}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    if spec["pid_namespace"]:
        return run_as_pid_one(spec, command)
    exec_confined(spec, command)
    return EXIT_SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
