"""A throw-away single-node SLURM cluster for the integration tests.

`SlurmCluster(workdir)` writes a munge key and a `slurm.conf` under `workdir`, starts `munged`,
`slurmctld` and `slurmd` in the foreground (`-F` / `-D`) as child processes of this Python process,
so it knows and owns their process ids, and waits until `sinfo` shows the node idle. On exit it
cancels any jobs still queued, then stops the three daemons by process id (SIGTERM, then SIGKILL)
and removes the state it made outside `workdir` (none unless the munge socket path was too long).

    with SlurmCluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

Everything lives under `workdir`: the munge key and socket, the controller's state, slurmd's spool,
the logs. Free TCP ports are picked at start so several clusters (or a system SLURM) can coexist
on one machine. Nothing is written to /etc and no system service is touched.

Client commands find this cluster through `cluster.env`: `SLURM_CONF` points at the generated
slurm.conf, and `PATH` starts with `<workdir>/bin`, which holds wrappers (`srun`, `sbatch`, `squeue`,
...) that set `SLURM_CONF` themselves before running the real binary. The wrappers are needed
because Snakemake's `slurm-jobstep` executor removes every `SLURM_*` variable except the job's
identity (SLURM_CONF included) before it calls `srun` inside a job, so a bare `srun` would look for
/etc/slurm/slurm.conf (or DNS SRV records) and fail with "Could not establish a configuration source".
A real cluster has its config at the default path; the wrappers stand in for that.

Design choices that the SLURM executor of Snakemake relies on:
- no accounting storage (no slurmdbd), so `sacct` cannot see finished jobs; `MinJobAge` is set high
  (3600 s) so finished jobs stay visible to `squeue --states=all` and the executor can query status
  with `--slurm-status-command squeue`;
- `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none`: no cgroups needed (containers);
- `SelectType=select/cons_tres` with `CR_Core_Memory`: jobs get the cores and memory they ask for,
  so independent jobs run side by side on the one node;
- the node has the machine's real CPUs and memory (from `slurmd -C`), and one partition `debug`
  (Default=YES).

Requirements: the `munged`, `slurmctld`, `slurmd`, `sinfo`, `squeue`, `sbatch`, `scancel`
binaries (Debian: `.ci/install-slurm.sh`), and root (slurmd must run as root to start jobs).
`SlurmUnavailable` is raised, with the reason, when they are missing or the cluster does not come up.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "scontrol", "srun")
# client commands that get a wrapper in `<workdir>/bin` pinning SLURM_CONF to this cluster
WRAPPED = CLIENTS + ("sacct", "salloc", "sstat", "sshare", "sacctmgr")
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin")
INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "install-slurm.sh"
TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT",
}


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; the message says why."""


def find_binary(name: str) -> str | None:
    """The path of a SLURM/munge binary: in the system bin/sbin directories (daemons are in sbin,
    often not on a user's PATH), else on PATH. System directories come first so that a test
    cluster's wrappers on PATH are never mistaken for the real binaries."""
    for directory in SYSTEM_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if find_binary(name) is None]


def ensure_installed(allow_install: bool = True, timeout: float = 900) -> None:
    """Make sure the SLURM and munge binaries are present, running `.ci/install-slurm.sh` if not.

    Raises `SlurmUnavailable` naming what is missing and why it could not be installed.
    """
    missing = missing_binaries()
    if not missing:
        return
    if not allow_install:
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}) and installing is disabled")
    if not INSTALL_SCRIPT.is_file():
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}) and {INSTALL_SCRIPT} not found")
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmUnavailable(f"could not run {INSTALL_SCRIPT}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SlurmUnavailable(
            f"{INSTALL_SCRIPT.name} failed (exit {proc.returncode}): " + " | ".join(tail)
        )
    missing = missing_binaries()
    if missing:
        raise SlurmUnavailable(f"after {INSTALL_SCRIPT.name}, still missing: {', '.join(missing)}")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent exits (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # not Linux: stop() and atexit still apply
        pass


def _free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def node_hardware(slurmd: str) -> dict[str, str]:
    """The node line of `slurmd -C` (CPUs, Boards, SocketsPerBoard, ..., RealMemory) as a dict."""
    out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    if "CPUs" not in fields or "RealMemory" not in fields:
        cpus = str(os.cpu_count() or 1)
        mem = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
        return {"CPUs": cpus, "RealMemory": mem}
    fields.pop("NodeName", None)
    return fields


class SlurmCluster:
    """One controller + one compute node on this machine; see the module docstring."""

    def __init__(self, workdir, *, partition: str = "debug", min_job_age: int = 3600,
                 start_timeout: float = 60.0, cluster_name: str = "batchscale-test"):
        self.workdir = Path(workdir).resolve()
        self.partition = partition
        self.min_job_age = min_job_age
        self.start_timeout = start_timeout
        self.cluster_name = cluster_name
        self.nodename = socket.gethostname().split(".")[0]
        self.conf = self.workdir / "slurm.conf"
        self.logdir = self.workdir / "log"
        self.bindir = self.workdir / "bin"
        self.procs: dict[str, subprocess.Popen] = {}
        self._log_handles = []
        self._socket_dir: Path | None = None  # outside workdir only when its path is too long
        self.hardware: dict[str, str] = {}
        self.ports: list[int] = []

    # -- environment -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """`os.environ` with SLURM_CONF pointing at this cluster and its wrappers first on PATH.

        Pass it to every process that talks to this cluster (sbatch, snakemake --executor slurm);
        jobs inherit it (sbatch --export=ALL), so `srun` inside a job finds the cluster too."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', os.defpath)}"
        # do not let a surrounding allocation leak into jobs submitted to this cluster
        for key in list(env):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and key != "SLURM_CONF":
                del env[key]
        return env

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def run(self, *args: str, check: bool = True, timeout: float = 60, **kwargs):
        """Run a SLURM client command against this cluster; returns the CompletedProcess."""
        cmd = [find_binary(args[0]) or args[0], *args[1:]]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check,
                              timeout=timeout, **kwargs)

    # -- jobs ------------------------------------------------------------------------------
    def sbatch(self, *args: str) -> str:
        """Submit with `sbatch --parsable ARGS`; returns the job id."""
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return out.split(";")[0]

    def job_state(self, jobid: str) -> str | None:
        out = self.run("squeue", "--noheader", "--states=all", "--format=%T", "--jobs", jobid,
                       check=False).stdout.split()
        return out[0] if out else None

    def wait_job(self, jobid: str, timeout: float = 120) -> str:
        """Wait until the job reaches a terminal state; return that state."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(jobid)
            if state in TERMINAL_STATES:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"SLURM job {jobid} still {state} after {timeout:.0f} s\n{self.log_tail()}")

    # -- start / stop ----------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise SlurmUnavailable(f"SLURM binaries not found: {', '.join(missing)}")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root to start jobs, and this is not root")
        atexit.register(self.stop)
        try:
            self._write_files()
            self._start_daemons()
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def _write_files(self) -> None:
        for sub in ("munge", "state", "spool", "log", "bin"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        munge_dir = self.workdir / "munge"
        os.chmod(munge_dir, 0o700)
        key = munge_dir / "munge.key"
        if key.exists():
            key.chmod(0o600)
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge_dir / "munge.socket"
        if len(str(socket_path)) > 100:  # AF_UNIX paths are limited to 108 bytes
            self._socket_dir = Path(tempfile.mkdtemp(prefix="bsmunge-"))
            socket_path = self._socket_dir / "sock"
        self.munge_socket = socket_path

        self.hardware = node_hardware(find_binary("slurmd"))
        hw = " ".join(f"{k}={v}" for k, v in self.hardware.items()
                      if k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                               "ThreadsPerCore", "RealMemory"))
        for name in WRAPPED:
            real = find_binary(name)
            if real is None:
                continue
            wrapper = self.bindir / name
            wrapper.write_text(
                f"#!/bin/sh\n# test cluster wrapper: always talk to {self.workdir}\n"
                f"SLURM_CONF='{self.conf}'\nexport SLURM_CONF\nexec '{real}' \"$@\"\n"
            )
            wrapper.chmod(0o755)
        ctld_port, slurmd_port = self.ports = _free_ports(2)
        w = self.workdir
        self.conf.write_text(f"""\
# generated by tests/slurm_cluster.py: a single-node test cluster, all state under {w}
ClusterName={self.cluster_name}
SlurmctldHost={self.nodename}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/slurmctld.pid
SlurmdPidFile={w}/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# keep finished jobs visible to `squeue --states=all` (no sacct without accounting storage)
MinJobAge={self.min_job_age}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
SchedulerParameters=sched_interval=2
NodeName={self.nodename} NodeAddr=127.0.0.1 {hw} State=UNKNOWN
PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        handle = open(self.logdir / f"{name}.out", "ab")
        self._log_handles.append(handle)
        # Own session: a Ctrl-C in the terminal reaches pytest (which then stops the cluster in
        # order), not the daemons. Parent-death signal: if this process dies without running
        # stop() (SIGKILL, say), the kernel sends the daemons SIGTERM, so none is left behind.
        self.procs[name] = subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent,
        )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{name} exited with status {proc.returncode} during start-up\n{self.log_tail()}"
                )

    def _start_daemons(self) -> None:
        w = self.workdir
        # --force: munged refuses a socket whose directories are not executable by everyone, and
        # pytest's tmp dirs are 0700; every client here runs as root, so that is no obstacle.
        self._spawn("munged", [
            find_binary("munged"), "--foreground", "--force",
            f"--key-file={w}/munge/munge.key", f"--socket={self.munge_socket}",
            f"--pid-file={w}/munge/munged.pid", f"--log-file={w}/log/munged.log",
            f"--seed-file={w}/munge/munged.seed",
        ])
        self._wait_for(lambda: self.munge_socket.exists(), "the munge socket", 15)
        self._spawn("slurmctld", [find_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: "UP" in self.run("scontrol", "ping", check=False).stdout,
                       "slurmctld to answer `scontrol ping`", self.start_timeout)
        self._spawn("slurmd", [find_binary("slurmd"), "-D", "-N", self.nodename, "-f", str(self.conf)])

    def _wait_for(self, predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if predicate():
                return
            time.sleep(0.3)
        raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tail()}")

    def node_state(self) -> str:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%T", "--nodes", self.nodename,
                       check=False)
        return out.stdout.strip()

    def _wait_idle(self) -> None:
        self._wait_for(lambda: self.node_state() == "idle", f"node {self.nodename} to be idle",
                       self.start_timeout)

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logdir.glob("*")) if self.logdir.is_dir() else []:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel jobs, stop the daemons by process id (idempotent), close logs."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", f"--partition={self.partition}", check=False, timeout=15)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    out = self.run("squeue", "--noheader", "--states=RUNNING,COMPLETING,PENDING",
                                   "--format=%i", check=False, timeout=15).stdout.strip()
                    if not out:
                        break
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):  # compute node first, munge last
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for handle in self._log_handles:
            handle.close()
        self._log_handles.clear()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def alive(self) -> dict[str, bool]:
        """Whether each daemon's process is still running (by pid)."""
        return {name: proc.poll() is None for name, proc in self.procs.items()}

