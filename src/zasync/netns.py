"""Several "hosts" on one Linux machine, for tests and benchmarks of workers
on other hosts: each host is a network namespace (``ip netns``) with an
address of its own, joined to the machine's root namespace by a veth pair
on a bridge.  The database servers stay in the root namespace and listen
on the bridge's address; a process started on a host (`Hosts.popen`)
reaches them only through its link, so `Hosts.cut` (the link down) cuts
that host off as a pulled cable would, and `Hosts.rejoin` plugs it back.

PostgreSQL usually listens on 127.0.0.1 alone, an address no namespace can
route to.  Rather than reconfigure and restart the machine's server, or
depend on iptables (DNAT) being installed, `Relay` forwards the bridge's
address and a port of its own to it: a child process that copies bytes
both ways between two TCP connections, nothing more.  It is one more hop
on the way, so figures measured through it are if anything low.

Creating namespaces needs root (CAP_NET_ADMIN); `check_permitted` says why
it cannot be done here, or None.  Everything made is removed by `close`,
and every process started is ended by its pid.  Names and the /24 subnet
are chosen at random, so that two runs at once do not meet.

    with Hosts(3) as hosts:                      # h0, h1, h2
        server = ZEOServer(path, host=hosts.server_address).start()
        worker = hosts.popen(0, [sys.executable, "-m", "zasync", "worker", ...])
        hosts.cut(0); ...; hosts.rejoin(0)
"""

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time

from zasync.interfaces import ZasyncError

IP = "ip"


def _ip(*args, netns=None, check=True):
    argv = [IP, *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed with status {done.returncode}: "
                         f"{done.stderr.strip()}")
    return done


class NetnsError(ZasyncError):
    """Raised when a namespace, link or address cannot be set up."""


def check_permitted():
    """None if network namespaces can be made here; else why not (text)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    name = f"zasync-probe-{secrets.token_hex(4)}"
    try:
        done = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if done.returncode != 0:
        return f"`ip netns add` is not permitted: {done.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def _used_subnets():
    shown = _ip("-4", "-o", "addr", "show", check=False).stdout
    return {word.rsplit(".", 1)[0] for word in shown.split() if word.startswith("10.")}


class Hosts:
    """`count` hosts h0 .. h(count-1), each a namespace with an address on
    a bridge whose root-namespace address is `server_address`."""

    def __init__(self, count):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count={count!r}: expected a number of hosts >= 1")
        self.count = count
        self.tag = secrets.token_hex(3)
        used = _used_subnets()
        choices = [f"10.{a}.{b}" for a in (213, 214, 215) for b in range(256)]
        free = [net for net in choices if net not in used]
        if not free:
            raise NetnsError("no free 10.213-215.x.0/24 subnet for the hosts")
        self.subnet = random.choice(free)
        self.server_address = f"{self.subnet}.1"
        self.bridge = f"zb{self.tag}"
        self.names = [f"zasync-{self.tag}-h{i}" for i in range(count)]
        self.addresses = [f"{self.subnet}.{10 + i}" for i in range(count)]
        self.processes = []
        self._made = []          # what close() removes, in reverse order

    def _link(self, index):
        return f"zv{self.tag}{index}"

    def open(self):
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", self.bridge))
            _ip("addr", "add", f"{self.server_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, (name, address) in enumerate(zip(self.names, self.addresses)):
                _ip("netns", "add", name)
                self._made.append(("netns", name))
                outside, inside = self._link(index), f"zp{self.tag}{index}"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                self._made.append(("link", outside))
                _ip("link", "set", inside, "netns", name)
                _ip("link", "set", inside, "name", "eth0", netns=name)
                _ip("addr", "add", f"{address}/24", "dev", "eth0", netns=name)
                _ip("link", "set", "eth0", "up", netns=name)
                _ip("link", "set", "lo", "up", netns=name)
                _ip("link", "set", outside, "master", self.bridge)
                _ip("link", "set", outside, "up")
        except BaseException:
            self.close()
            raise
        return self

    def popen(self, index, argv, **kwargs):
        """Start `argv` on host `index` (``ip netns exec`` execs it: the pid
        is the process's own); it is ended by its pid at `close`."""
        process = subprocess.Popen([IP, "netns", "exec", self.names[index], *argv],
                                   **kwargs)
        self.processes.append(process)
        return process

    def cut(self, index):
        """Take host `index`'s link down: its packets go nowhere."""
        _ip("link", "set", self._link(index), "down")

    def rejoin(self, index):
        """Bring host `index`'s link up again."""
        _ip("link", "set", self._link(index), "up")

    def close(self):
        """End the processes started here by their pids, then remove the
        namespaces, links and bridge (each step runs even if one fails)."""
        for process in self.processes:
            end_process(process)
        self.processes = []
        for kind, name in reversed(self._made):
            if kind == "netns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self._made = []

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()


def end_process(process, timeout=10.0):
    """SIGTERM to `process` by its pid, SIGKILL to its process group (when
    it leads one) after `timeout`; reap it.  A process already reaped is
    left alone: its pid may belong to another since."""
    if process.poll() is not None:
        return process.returncode
    try:
        os.kill(process.pid, signal.SIGTERM)
        return process.wait(timeout)
    except ProcessLookupError:
        return process.wait()
    except subprocess.TimeoutExpired:
        try:
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.wait()


class Relay:
    """A child process forwarding TCP connections from (`host`, `port`) to
    (`target_host`, `target_port`): `start` returns once it listens,
    `stop` ends it by its pid."""

    def __init__(self, host, target_host, target_port, port=None):
        self.host, self.target = host, (target_host, int(target_port))
        if port is None:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self.port = port
        self.process = None

    def start(self, timeout=30.0):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zasync.netns", "relay", self.host, str(self.port),
             self.target[0], str(self.target[1])],
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NetnsError(f"the relay to {self.target} exited with status "
                                 f"{self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise NetnsError(f"the relay did not listen on {self.host}:{self.port} in "
                         f"{timeout} s")

    def stop(self):
        if self.process is not None:
            end_process(self.process)
            self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


async def _copy(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _relay(host, port, target_host, target_port):
    async def accept(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                target_host, target_port)
        except OSError:
            writer.close()
            return
        for sock in (writer.get_extra_info("socket"),
                     upstream_writer.get_extra_info("socket")):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_copy(reader, upstream_writer),
                             _copy(upstream_reader, writer))

    server = await asyncio.start_server(accept, host, port)
    async with server:
        await server.serve_forever()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 5 or argv[0] != "relay":
        sys.exit("usage: python -m zasync.netns relay HOST PORT TARGET_HOST TARGET_PORT")
    _, host, port, target_host, target_port = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(_relay(host, int(port), target_host, int(target_port)))


if __name__ == "__main__":
    main()
