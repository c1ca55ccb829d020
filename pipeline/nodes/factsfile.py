"""Saved node facts: what each node answered to the discovery script, as JSON, so a plan can be made
offline (`doctor --save-facts FILE`, then `deploy --dry-run --facts FILE`). Pure: the CLI reads and
writes the file. The same format holds the interface-layout test fixtures.

    {"spark-pipeline-facts": 1,
     "nodes": [{"node": "spark1", "address": "192.168.100.10", "error": "",
                "answers": {"hostname": "spark1", "home": "/home/me",
                            "nvidia-smi": "NVIDIA GB10, 12.1",        # or ABSENT
                            "ibdev2netdev": "rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)",   # or ABSENT
                            "ip": [ …`ip -j addr`… ],                  # JSON, or its text
                            "docker": "28.3.1", "root": "/var/lib/docker",
                            "df": "/dev/nvme0n1p2 3.6T 1.2T 2.4T 34% /", "image": "sha256:…",
                            "container": "missing", "exit": "", "end": ""}}]}

Nodes are matched to the cluster's by name (label), else by address. Each answer is the text of one
section of discovery's script (discover.SCRIPT); `ip` may be given as JSON for readability.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pipeline.config.cluster import ClusterSpec
from pipeline.errors import ConfigError
from pipeline.nodes.discover import NodeFacts, parse_facts, script_output

FORMAT_KEY = "spark-pipeline-facts"
VERSION = 1


def to_json(facts: list[NodeFacts]) -> dict[str, Any]:
    nodes = []
    for f in facts:
        answers: dict[str, Any] = dict(f.answers)
        with contextlib.suppress(ValueError):  # else kept as the text the node sent: loading parses it the same
            answers["ip"] = json.loads(answers["ip"]) if "ip" in answers else []
        nodes.append({"node": f.node.label, "address": f.node.address, "error": f.error, "answers": answers})
    return {FORMAT_KEY: VERSION, "nodes": nodes}


def from_json(data: object, cluster: ClusterSpec, label: str) -> list[NodeFacts]:
    """The cluster's nodes' facts from a saved file (every node of the cluster must be in it)."""
    if not isinstance(data, dict) or data.get(FORMAT_KEY) != VERSION or not isinstance(data.get("nodes"), list):
        raise ConfigError(
            f'{label}: not a facts file (expected {{"{FORMAT_KEY}": {VERSION}, "nodes": [...]}}, '
            "as `doctor --save-facts` writes)"
        )
    entries: list[dict[str, Any]] = []
    for i, e in enumerate(data["nodes"]):
        if not isinstance(e, dict) or not isinstance(e.get("node"), str) or not isinstance(e.get("answers"), dict):
            raise ConfigError(f'{label}:nodes.{i}: expected {{"node": NAME, "answers": {{...}}}}')
        entries.append(e)
    out = []
    for node in cluster.ordered():
        entry = next((e for e in entries if e["node"] == node.label), None) or next(
            (e for e in entries if e.get("address") == node.address), None
        )
        if entry is None:
            raise ConfigError(
                f"{label}: no facts for node {node.label} (the file has "
                f"{', '.join(str(e['node']) for e in entries) or 'none'})"
            )
        if entry.get("error"):
            out.append(NodeFacts(node=node, error=str(entry["error"])))
            continue
        answers = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entry["answers"].items()}
        answers.setdefault("end", "")
        out.append(parse_facts(node, script_output(answers)))
    return out
