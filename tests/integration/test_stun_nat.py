"""The STUN test from hosts behind real NATs: network namespaces, veth pairs and nftables.

    [host-open  10.20.1.2] ─┐                        ┌─ STUN server 203.0.113.1 / .2
    [host-cone  10.20.2.2] ─┤                        │  (the sandbox's, RFC 5780)
    [host-sym   10.20.3.2] ─┼─ router ─ 203.0.113.254 ┘
    [host-drop  10.20.4.2] ─┤   routes host-open and host-wall as they are, masquerades
    [host-wall  10.20.5.2] ─┤   host-cone, masquerades host-sym with random ports, drops
    [host-addr  10.20.6.2] ─┘   host-drop's UDP, lets only replies reach host-wall, and lets
                                into host-addr only addresses it has sent to

Each host runs stun.py alone, as deploy ships it, and must see its own NAT. Needs root, `ip`
and `nft` (the Makefile's `system` target installs nftables); skipped only where the machine
cannot make namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradientlab.agent import stun
from gradientlab.agent.stun import Behaviour, NatType, TapReadiness

EI = Behaviour.ENDPOINT_INDEPENDENT
AD = Behaviour.ADDRESS_DEPENDENT
APD = Behaviour.ADDRESS_AND_PORT_DEPENDENT
PUBLIC_NAT = "203.0.113.254"
STUN_PRIMARY, STUN_ALTERNATE, STUN_PORT, STUN_ALT_PORT = "203.0.113.1", "203.0.113.2", 3478, 3479
HOSTS = {"open": 1, "cone": 2, "sym": 3, "drop": 4, "wall": 5, "addr": 6}
TAG = f"gl{os.getpid() % 100000}"

NFT_RULES = """
table ip {table} {{
  set contacted {{ type ipv4_addr; flags dynamic, timeout; timeout 5m; }}
  chain translation {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.20.2.0/24 oifname "{tag}u" masquerade
    ip saddr 10.20.3.0/24 oifname "{tag}u" masquerade fully-random
  }}
  chain forwarding {{
    type filter hook forward priority filter; policy accept;
    ip saddr 10.20.4.0/24 meta l4proto udp drop
    ip daddr 10.20.5.0/24 ct state new drop
    ip saddr 10.20.6.2 update @contacted {{ ip daddr }}
    ip daddr 10.20.6.2 ip saddr != @contacted drop
  }}
}}
"""

STUN_SERVER = f"""
import signal, sys
from gradientlab.sandbox.stun import StunServer
server = StunServer({STUN_PRIMARY!r}, {STUN_ALTERNATE!r}, {STUN_PORT}, {STUN_ALT_PORT})
print(server.start(), flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
server.stop()
"""


def sh(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


def in_ns(ns: str, *args: str) -> None:
    sh("ip", "netns", "exec", ns, *args)


def cannot_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (make system installs it)"
    probe = f"{TAG}probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"this machine cannot make network namespaces: {done.stderr.strip()}"
    try:
        nft = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "probe"],
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if nft.returncode != 0:
        return f"this kernel has no nftables: {nft.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The namespaces above and the STUN server in the public one; host name -> namespace."""
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(reason)
    pub, router = f"{TAG}-pub", f"{TAG}-rtr"
    hosts = {name: f"{TAG}-{name}" for name in HOSTS}
    made: list[str] = []
    server: subprocess.Popen[str] | None = None
    try:
        for ns in (pub, router, *hosts.values()):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        # the public side: the STUN server's two addresses, and the router's public one
        sh("ip", "link", "add", f"{TAG}p", "netns", pub, "type", "veth", "peer", "name",
           f"{TAG}u", "netns", router)  # fmt: skip
        for address in (STUN_PRIMARY, STUN_ALTERNATE):
            in_ns(pub, "ip", "addr", "add", f"{address}/24", "dev", f"{TAG}p")
        in_ns(pub, "ip", "link", "set", f"{TAG}p", "up")
        in_ns(pub, "ip", "route", "add", "10.20.0.0/16", "via", PUBLIC_NAT)
        in_ns(router, "ip", "addr", "add", f"{PUBLIC_NAT}/24", "dev", f"{TAG}u")
        in_ns(router, "ip", "link", "set", f"{TAG}u", "up")
        in_ns(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for name, i in HOSTS.items():
            ns, inside, outside = hosts[name], f"{TAG}h{i}", f"{TAG}r{i}"
            sh("ip", "link", "add", inside, "netns", ns, "type", "veth", "peer", "name",
               outside, "netns", router)  # fmt: skip
            in_ns(ns, "ip", "addr", "add", f"10.20.{i}.2/24", "dev", inside)
            in_ns(ns, "ip", "link", "set", inside, "up")
            in_ns(ns, "ip", "route", "add", "default", "via", f"10.20.{i}.1")
            in_ns(router, "ip", "addr", "add", f"10.20.{i}.1/24", "dev", outside)
            in_ns(router, "ip", "link", "set", outside, "up")
        rules = tmp_path_factory.mktemp("nft") / "rules.nft"
        rules.write_text(NFT_RULES.format(table=TAG, tag=TAG))
        in_ns(router, "nft", "-f", str(rules))

        server = subprocess.Popen(
            ["ip", "netns", "exec", pub, sys.executable, "-c", STUN_SERVER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert server.stdout is not None
        started = server.stdout.readline().strip()
        assert started == f"{STUN_PRIMARY}:{STUN_PORT}", (
            started,
            server.stderr and server.stderr.read(),
        )
        yield hosts
    finally:
        if server is not None:
            server.terminate()  # this test's own process, by its id
            server.wait(timeout=10)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def results(
    network: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TapReadiness]:
    """stun.py run alone in every host namespace at once, as deploy ships it to a host."""
    lone = tmp_path_factory.mktemp("host") / "stun.py"
    lone.write_bytes(Path(stun.__file__).read_bytes())
    server = f"{STUN_PRIMARY}:{STUN_PORT}"
    runs = {
        name: subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-I",
                str(lone),
                server,
                "--rto",
                "0.1",
                "--attempts",
                "4",
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, ns in network.items()
    }
    out = {}
    for name, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, (name, stderr)
        out[name] = TapReadiness.from_json(stdout.strip().splitlines()[-1])
    return out


def test_a_routed_host_is_open(results: dict[str, TapReadiness]) -> None:
    r = results["open"]
    assert r.error is None and r.udp_reachable and r.rfc5780
    assert (r.mapped_address, r.mapped_port) == ("10.20.1.2", r.local_port)
    assert (r.behind_nat, r.mapping, r.filtering, r.nat_type) == (False, EI, EI, NatType.OPEN)


def test_a_masquerading_nat_keeps_its_mapping_and_filters_by_address_and_port(
    results: dict[str, TapReadiness],
) -> None:
    r = results["cone"]
    assert r.error is None and r.local_address == "10.20.2.2"
    assert r.mapped_address == PUBLIC_NAT and r.behind_nat
    assert (r.mapping, r.filtering) == (EI, APD)
    assert r.nat_type == NatType.PORT_RESTRICTED_CONE


def test_a_port_randomising_nat_is_symmetric(results: dict[str, TapReadiness]) -> None:
    r = results["sym"]
    assert r.error is None and r.mapped_address == PUBLIC_NAT and r.behind_nat
    assert r.mapping == APD
    assert r.nat_type == NatType.SYMMETRIC


def test_a_host_whose_udp_is_dropped_is_udp_blocked(results: dict[str, TapReadiness]) -> None:
    r = results["drop"]
    assert not r.udp_reachable and r.nat_type == NatType.UDP_BLOCKED
    assert r.error == f"no answer from {STUN_PRIMARY}:{STUN_PORT} over UDP"


def test_a_public_host_behind_a_stateful_firewall(results: dict[str, TapReadiness]) -> None:
    r = results["wall"]
    assert r.error is None and not r.behind_nat
    assert (r.mapping, r.filtering, r.nat_type) == (EI, APD, NatType.FIREWALL)


def test_a_public_host_whose_firewall_admits_the_addresses_it_contacted(
    results: dict[str, TapReadiness],
) -> None:
    r = results["addr"]
    assert r.error is None and not r.behind_nat
    assert (r.mapping, r.filtering, r.nat_type) == (EI, AD, NatType.FIREWALL)
