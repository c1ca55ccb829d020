"""The system OpenSSH client, for bulk data (model copies, image pulls through a tunnel): the control
traffic goes through paramiko (nodes/hosts.py), but OpenSSH encrypts several times faster."""

from __future__ import annotations

import os
import shlex

from pipeline.config.cluster import NodeSpec, SshSpec


def ssh_command(node: NodeSpec, ssh: SshSpec) -> list[str]:
    """The system ssh with cluster.yaml's trust (its key, its known_hosts, strict unless accept-new) and
    nothing from ~/.ssh/config: bulk data goes through OpenSSH, several times faster than paramiko."""
    # AES-GCM first: with AES instructions (x86, and Grace's Neoverse cores) it encrypts several times faster
    # than OpenSSH's default ChaCha20; a node without it falls back down the list.
    cmd = [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(node.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        "-o",
        f"ConnectTimeout={ssh.connect_timeout}",
        "-o",
        f"UserKnownHostsFile={os.path.expanduser(ssh.known_hosts)}",
        "-o",
        f"StrictHostKeyChecking={'accept-new' if ssh.host_keys == 'accept-new' else 'yes'}",
    ]
    key = node.key or ssh.key
    if key:
        cmd += ["-i", os.path.expanduser(key), "-o", "IdentitiesOnly=yes"]
    return cmd


def run_argv(node: NodeSpec, ssh: SshSpec, argv: list[str], *options: str) -> list[str]:
    """`ssh [options] user@node 'argv'` with the node's argv quoted for its shell."""
    # `--`: whatever follows is the destination and the command, never an option of ssh's
    return [*ssh_command(node, ssh), *options, "--", f"{node.user}@{node.address}", shlex.join(argv)]
