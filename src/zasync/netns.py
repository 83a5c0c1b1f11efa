"""Several "hosts" on one Linux machine, for tests and benchmarks of workers
on other hosts: each host is a network namespace (``ip netns``) with an
address of its own, joined to the machine's root namespace by a veth pair
on a bridge.  The database servers stay in the root namespace and listen
on the bridge's address; a process started on a host (`Hosts.popen`)
reaches them only through its link, so `Hosts.cut` (the link down) cuts
that host off as a pulled cable would, and `Hosts.rejoin` plugs it back.

PostgreSQL usually listens on 127.0.0.1 alone, an address no namespace can
route to.  Rather than reconfigure and restart the machine's server,
`Hosts.forward` has the kernel forward a port of the bridge's address to it
(iptables DNAT), as a router would: no process copies the bytes, so the
forwarding takes no CPU time from the workers measured.  (A relay process
that did, in Python, drained no-op jobs with 2 workers over RelStorage at
428 a second where the kernel's forwarding drains 561, medians of 3 on 2
cores.)

Creating namespaces needs root (CAP_NET_ADMIN); `check_permitted` says why
it cannot be done here, or None; `check_forwarding` says the same of
forwarding (which needs the iptables command).  Everything made is removed by `close`,
and every process started is ended by its pid.  Names and the /24 subnet
are chosen at random, so that two runs at once do not meet.

    with Hosts(3) as hosts:                      # h0, h1, h2
        server = ZEOServer(path, host=hosts.server_address).start()
        pg_port = hosts.forward("127.0.0.1", 5432)   # PostgreSQL, to the hosts
        worker = hosts.popen(0, [sys.executable, "-m", "zasync", "worker", ...])
        hosts.cut(0); ...; hosts.rejoin(0)
"""

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys

from zasync.interfaces import ZasyncError

IP = "ip"


IPTABLES = "iptables"


def _ip(*args, netns=None, check=True):
    return _run(IP, *(("-n", netns) if netns else ()), *args, check=check)


def _run(*argv, check=True):
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


def check_forwarding():
    """None if `Hosts.forward` can forward ports here; else why not (text)."""
    if shutil.which(IPTABLES) is None:
        return (f"the `{IPTABLES}` command is not installed (Debian: apt-get install "
                f"iptables), which forwards the hosts' connections to PostgreSQL")
    done = _run(IPTABLES, "-w", "-t", "nat", "-S", "PREROUTING", check=False)
    if done.returncode != 0:
        return f"`{IPTABLES} -t nat` is not permitted: {done.stderr.strip()}"
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

    def forward(self, target_host, target_port, port=None):
        """Make (`server_address`, `port`) reach (`target_host`,
        `target_port`) in the root namespace, for the hosts' connections,
        in the kernel (iptables DNAT); return the port (`target_port`
        unless given).  Removed at `close`.

        A loopback target (PostgreSQL on 127.0.0.1) needs two more things:
        the bridge must route to loopback addresses (``route_localnet``,
        which goes with the bridge), and the connections must come from
        127.0.0.1 (SNAT), which is what the server's access rules (its
        pg_hba.conf) allow, not the hosts' addresses."""
        why_not = check_forwarding()
        if why_not is not None:
            raise NetnsError(why_not)
        port = int(target_port if port is None else port)
        tag = ("-m", "comment", "--comment", f"zasync-{self.tag}")
        loopback = target_host.startswith("127.")
        if loopback:
            # (written directly: the sysctl command need not be installed)
            with open(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet", "w") as f:
                f.write("1")
        rules = [("PREROUTING", "-i", self.bridge, "-d", self.server_address, "-p", "tcp",
                  "--dport", str(port), *tag, "-j", "DNAT",
                  "--to-destination", f"{target_host}:{int(target_port)}")]
        if loopback:
            rules.append(("INPUT", "-s", f"{self.subnet}.0/24", "-d", target_host,
                          "-p", "tcp", "--dport", str(int(target_port)), *tag,
                          "-j", "SNAT", "--to-source", target_host))
        for chain, *rule in rules:
            _run(IPTABLES, "-w", "-t", "nat", "-A", chain, *rule)
            self._made.append(("nat", (chain, *rule)))
        return port

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
            if kind == "nat":
                _run(IPTABLES, "-w", "-t", "nat", "-D", *name, check=False)
            elif kind == "netns":
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
