"""Deploy from Python, without click: `Deployer(spec).deploy(DeployRequest(...))` discovers, decides
and applies, here on the FakeHosts double (the discovery script answered with a node's facts) and a
real HTTP server on loopback standing in for the vLLM server."""

from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.config.cluster import ClusterSpec
from pipeline.deploy.service import Deployer, DeployRequest
from pipeline.launch.apply import WATCH
from pipeline.launch.secrets import Secrets
from pipeline.nodes.discover import MARK, script_argv
from pipeline.report import ListReporter
from tests.doubles import FakeHosts
from tests.unit.test_apply import IMAGE_ID

FACTS = f"""{MARK} hostname
spark1
{MARK} home
/home/me
{MARK} nvidia-smi
ABSENT
{MARK} ibdev2netdev
ABSENT
{MARK} ip
[{{"ifname": "eth0", "flags": ["UP", "LOWER_UP"], "operstate": "UP",
   "addr_info": [{{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}}]}}]
{MARK} docker
28.2.2
{MARK} root
/var/lib/docker
{MARK} df
/dev/vda 100 1 100000000 1% /
{MARK} image
{IMAGE_ID}
{MARK} container
missing
{MARK} exit
{MARK} end
"""


class Docker:
    def content_id(self, ref: str) -> str:
        return IMAGE_ID


def test_deploy_from_python(server: int, isolated_cache: Path) -> None:
    spec = ClusterSpec.model_validate({"nodes": [{"address": "127.0.0.1", "name": "spark1"}]})
    hosts = FakeHosts(spec)
    discover = script_argv("vllm-node", "vllm_node", "127.0.0.1")
    hosts.expect("spark1", discover, stdout=FACTS)
    request = DeployRequest(command=("vllm", "serve", "m", "--port", str(server)), gpus="none")
    reporter = ListReporter()
    deployer = Deployer(spec, reporter=reporter, hosts=hosts, docker=Docker())  # type: ignore[arg-type]
    mods = deployer.load_mods(request)
    dp = deployer.plan(request, mods, Secrets())
    for phase in dp.steps.phases:
        for ns in phase.nodes:
            for c in ns.commands:
                if c.kind == "run":
                    hosts.expect(ns.node, c.argv)
    hosts.expect("spark1", ["sh", "-c", WATCH, "sh", "vllm_node"], stdout="true\n@@\n", repeat=True)
    hosts.expect("spark1", ["docker", "logs", "--tail", "400", "vllm_node"], stdout="Starting vLLM API server 0")
    result = deployer.apply(dp, request, Secrets())
    assert not result.skipped and result.dep.states["spark1"].status == "ready"
    assert "  spark1: nothing to do, because it has vllm-node (aaaaaaaaaaaa)" in dp.steps.lines()
    assert any(shlex.split(c)[:2] == ["docker", "run"] for _, c in hosts.ran) and not hosts.unused()
    assert reporter.lines[0] == "[1/5] ship vllm-node to the nodes that lack it"
