"""Two "hosts" on one machine: Linux network namespaces joined by a veth pair.

Each namespace has only its loopback and its end of the pair, on a /30 that exists
nowhere else, so a process in one reaches the other only through the address it
was given, and nothing outside the two namespaces is ever sent a packet. Needs
root (CI runs as root) and iproute2.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# A private /30 used only inside the namespaces these tests create.
SERVICES_ADDRESS = "10.213.77.1"
WORKER_ADDRESS = "10.213.77.2"
PREFIX_LENGTH = 30
STOP_TIMEOUT_S = 10.0


def ip(*args: str) -> None:
    """Run `ip ARGS`, failing with its own words when it refuses."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}"
        )


@dataclass(frozen=True)
class Hosts:
    services: str
    worker: str


@contextmanager
def two_hosts(tag: str) -> Iterator[Hosts]:
    """Namespaces `tksvc-<tag>` and `tkwrk-<tag>` joined by a veth; deleted after."""
    hosts = Hosts(services=f"tksvc-{tag}", worker=f"tkwrk-{tag}")
    # Interface names are limited to 15 characters.
    services_end, worker_end = f"tks{tag[:8]}", f"tkw{tag[:8]}"
    created: list[str] = []
    try:
        for name in (hosts.services, hosts.worker):
            ip("netns", "add", name)
            created.append(name)
        ip("link", "add", services_end, "type", "veth", "peer", "name", worker_end)
        for namespace, end, address in (
            (hosts.services, services_end, SERVICES_ADDRESS),
            (hosts.worker, worker_end, WORKER_ADDRESS),
        ):
            ip("link", "set", end, "netns", namespace)
            ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", end)
            ip("-n", namespace, "link", "set", end, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        yield hosts
    finally:
        # Deleting a namespace deletes the veth end in it, and with it the pair.
        for name in reversed(created):
            ip("netns", "del", name)


@dataclass
class Processes:
    """Processes started in namespaces, each in its own session, logged to files."""

    log_dir: Path
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self,
        name: str,
        namespace: str,
        argv: list[str],
        env: Mapping[str, str],
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        command = ["ip", "netns", "exec", namespace]
        if user is not None:
            # `ip netns exec` needs root; the server itself runs as `user`.
            command += ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [*command, *argv],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.log_dir if user is not None else None,
            )
        self.started[name] = process
        return process

    def run(
        self,
        name: str,
        namespace: str,
        argv: list[str],
        env: Mapping[str, str],
        timeout_s: float,
    ) -> str:
        """Run a one-shot to completion in `namespace`; its output, or fail."""
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        (self.log_dir / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(
                f"{name} exited {done.returncode}:\n{done.stdout}"
                f"\n{done.stderr}\n{self.tails()}"
            )
        return done.stdout

    def run_as_user(
        self, name: str, user: str, argv: list[str], env: Mapping[str, str]
    ) -> None:
        """Run a one-shot as `user` (no namespace needed: it opens no socket)."""
        done = subprocess.run(
            ["setpriv", "--reuid", user, "--regid", user, "--init-groups", *argv],
            env=dict(env),
            cwd=self.log_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        (self.log_dir / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(f"{name} exited {done.returncode}:\n{done.stderr}")

    def check_alive(self) -> None:
        for name, process in self.started.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"{name} exited {process.returncode}\n{self.tails()}"
                )

    def stop_all(self) -> None:
        """SIGTERM every group, then SIGKILL what is left after a grace period."""
        for process in self.started.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.started.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def tails(self, lines: int = 25) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def package_file(package: str, *parts: str) -> Path:
    """A file shipped in an installed wheel (the project's embedded servers)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def give_to(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
