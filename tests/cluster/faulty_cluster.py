"""A real cluster with a netfault proxy on every link, for the network-fault tests and the
chaos script.

    etcd m0 m1 m2  <- each component has its own proxy to each member (its --join / --etcd
         ^            lists its three proxies), so one agent can be cut off from etcd, or
         |            one member from everyone
    agentN's etcd links, gatewayN's etcd links
    gateway, peers -> [agentN's API proxy] -> agentN (--agent-port P, --advertise PROXY)

The API proxy in front of each agent names the source of every connection (the process
that opened it, from /proc), so an agent can be cut off from its peers in both directions
while the gateway still reaches them. Clients reach the gateways and each agent's own
FAISSx port directly (never through a proxy): a test can write to a partitioned primary
"from its side of the partition".

Faults: `cut_etcd(who)`, `cut_api(agent)`, `partition(agent)` (both), `slow(agent, ms)`,
`cut_etcd_member(i)`, each taking a netfault mode (BLACKHOLE by default; delay(ms),
loss(direction) or REFUSE as well), `heal()`; processes: `agents[id].kill9()`, `.sigstop()`,
`.sigcont()`, `restart(id)`, `etcd.kill(i)`, `etcd.start(i)`.
"""
import pathlib
import time

from harness import (Agent, Children, EtcdCluster, Gateway, cluster_status, free_port, help_of,
                     now, tail)
from netfault import BLACKHOLE, Proxy, delay, pid_of_peer

__all__ = ["FaultyCluster"]


class FaultyCluster:
    """etcd (`etcd_members` members), `agents` agents, `gateways` gateways, all behind
    proxies. `replicas` goes to each gateway's --replicas; `gateway_args`, `agent_args` are
    added to their command lines. Not thread-safe: one controlling thread."""

    def __init__(self, workdir, agents=3, gateways=1, etcd_members=3, lease_ttl=2, replicas=2,
                 gateway_args=(), agent_args=(), children=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.children = children or Children()
        self.lease_ttl = lease_ttl
        self.proxies = []
        self.etcd_links = {}  # component id -> [Proxy to member 0, 1, ...]
        self.api = {}         # agent id -> the Proxy in front of its agent API
        self.agents = {}
        self.gateways = []
        try:
            self._start(agents, gateways, etcd_members, replicas, gateway_args, agent_args)
        except BaseException:
            self.close()
            raise

    def _start(self, agents, gateways, etcd_members, replicas, gateway_args, agent_args):
        self.etcd = EtcdCluster(self.children, self.workdir, etcd_members)
        self.etcd.wait_healthy()
        grpc = "--grpc-port" in help_of("serve")
        for i in range(agents):
            aid = f"agent{i + 1}"
            agent_port, proxy_port = free_port(), free_port()
            api = self._proxy(("127.0.0.1", agent_port), f"{aid}-api", proxy_port,
                              identify=lambda peer, port=proxy_port: self._who(peer, port))
            self.api[aid] = api
            a = Agent(self.children, self.workdir, i + 1, self._links(aid), self.lease_ttl, grpc,
                      advertise=api.address, agent_port=agent_port, extra=agent_args)
            self.agents[aid] = a
            a.start()
        self.wait(lambda: self.live_agents() >= set(self.agents), 30, "the agents to register")
        for j in range(gateways):
            gid = f"gateway{j + 1}"
            g = Gateway(self.children, self.workdir, j + 1, self._links(gid), grpc,
                        ["--replicas", replicas, *gateway_args])
            self.gateways.append(g)
            g.start()
        for g in self.gateways:
            g.wait_ready()
        time.sleep(0.5)  # the gateways' member directories catch up with etcd

    def _proxy(self, upstream, name, port=0, identify=None):
        p = Proxy(upstream, port=port, name=name, identify=identify).start()
        self.proxies.append(p)
        return p

    def _links(self, component):
        """`component`'s own proxies to each etcd member, as the URL list it is given."""
        links = [self._proxy(("127.0.0.1", port), f"{component}->etcd-{name}")
                 for port, name in zip(self.etcd.client_ports, self.etcd.names)]
        self.etcd_links[component] = links
        return ",".join(f"http://{p.address}" for p in links)

    def _who(self, peer, proxy_port):
        """The component (agent or gateway id) that opened a connection to a proxy."""
        pids = {c.pid: c.id for c in [*self.agents.values(), *self.gateways] if c.pid}
        return pids.get(pid_of_peer(peer, proxy_port, list(pids)))

    # ------------------------------------------------------------------- faults

    def cut_etcd(self, component, mode=BLACKHOLE):
        """`component` (an agent or gateway id) from every etcd member."""
        for p in self.etcd_links[component]:
            p.set(mode)

    def cut_api(self, agent, mode=BLACKHOLE):
        """`agent` from the gateways and its peers, both ways: their calls to its agent API,
        and its calls to theirs."""
        self.api[agent].set(mode)
        for other, p in self.api.items():
            if other != agent:
                p.set(mode, source=agent)

    def partition(self, agent, mode=BLACKHOLE):
        """`agent` from everything (etcd, gateways, peers). Its own FAISSx port stays open."""
        self.cut_etcd(agent, mode)
        self.cut_api(agent, mode)

    def slow(self, agent, ms=200):
        """Every link of `agent` delays each chunk by `ms` (each way)."""
        self.partition(agent, delay(ms))

    def cut_etcd_member(self, i, mode=BLACKHOLE):
        """etcd member i's client port, for every agent and gateway."""
        for links in self.etcd_links.values():
            links[i].set(mode)

    def heal(self):
        for p in self.proxies:
            p.heal()

    def reset_all(self):
        for p in self.proxies:
            p.reset()

    def restart(self, agent):
        a = self.agents[agent]
        if a.alive():
            a.kill9()
        a.start()

    # ------------------------------------------------------------------- state

    def status(self):
        """`vecgpu cluster status --json` against the members themselves (no proxy)."""
        return cluster_status(self.etcd.url)

    def live_agents(self):
        st = self.status()
        return {m["id"] for m in st["members"]} if st else set()

    def maps(self):
        """collection name -> its shard map, read from etcd directly (None: no answer)."""
        kvs = self.etcd.get_prefix("/vecgpu/collections/")
        return None if kvs is None else {m["name"]: m for m in kvs.values() if "name" in m}

    def map(self, name):
        return (self.maps() or {}).get(name)

    def shard(self, name, i=0):
        m = self.map(name)
        return m["shards"][i] if m else None

    def wait(self, pred, timeout, what="a condition"):
        deadline = now() + timeout
        while now() < deadline:
            r = pred()
            if r:
                return r
            time.sleep(0.1)
        r = pred()
        if not r:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        return r

    def logs(self, lines=40):
        """The last lines of every process's log, for a failure message."""
        out = []
        for f in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {f.name}\n{tail(f, lines)}")
        return "\n".join(out)

    def grep(self, needle, component=None):
        """Lines of the logs (of one component, or all) that contain `needle`."""
        found = []
        files = [self.workdir / f"{component}.log"] if component else sorted(
            self.workdir.glob("*.log"))
        for f in files:
            try:
                found += [f"{f.stem}: {line}" for line in
                          f.read_text(errors="replace").splitlines() if needle in line]
            except OSError:
                pass
        return found

    def close(self):
        for a in self.agents.values():
            if a.stopped and a.alive():
                a.sigcont()
        self.children.kill_all()
        for p in self.proxies:
            try:
                p.close()
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

