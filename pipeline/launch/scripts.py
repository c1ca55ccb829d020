"""Constant Python scripts deploy runs inside the containers (`docker exec C python3 -c SCRIPT ARGS…`).
Values arrive as arguments, never pasted into the code; the image's own python3 runs them (3.8+).
"""

from __future__ import annotations

import shlex

# The reach check: the head listens on the master address until every expected worker has connected
# from its own address (the one NCCL and Gloo will use), answering 1 to each; a connection from any other
# address is answered 0 and named, and counts for nothing. A worker connects from its address and waits
# for the answer, so a failure is reported by the worker it concerns. Arguments: host port seconds, then
# pairs of worker label and address.
LISTEN = (
    "import socket,sys,time\n"
    "host,port,secs=sys.argv[1],int(sys.argv[2]),float(sys.argv[3]);pairs=sys.argv[4:]\n"
    "names=dict(zip(pairs[1::2],pairs[0::2]));want={}\n"
    "for ip,name in names.items():\n"
    " try:\n  want.update({a[4][0]:name for a in socket.getaddrinfo(ip,None)})\n"
    " except OSError:\n  pass\n"
    "s=socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((host,port));s.listen(64);end=time.monotonic()+secs;seen=set()\n"
    "while len(seen)<len(set(names.values())) and time.monotonic()<end:\n"
    " s.settimeout(max(0.1,end-time.monotonic()))\n"
    " try:\n  c,peer=s.accept()\n except OSError:\n  continue\n"
    " name=want.get(peer[0])\n"
    " try:\n  c.sendall(b'0' if name is None else b'1')\n except OSError:\n  pass\n"
    " c.close()\n"
    " if name is None:\n  print(f'refused a connection from {peer[0]}: not an expected worker',file=sys.stderr)\n"
    " else:\n  seen.add(name)\n"
)
# A worker connects to the master address from its own address (bound: the head sees which worker it is)
# and waits for the head's answer. Arguments: host port seconds source.
CONNECT = (
    "import socket,sys,time\n"
    "host,port,secs,src=sys.argv[1],int(sys.argv[2]),float(sys.argv[3]),sys.argv[4]\n"
    "end=time.monotonic()+secs;err=''\n"
    "while time.monotonic()<end:\n"
    " try:\n"
    "  c=socket.create_connection((host,port),timeout=3,source_address=(src,0) if src else None)\n"
    "  answer=c.recv(1);c.close()\n"
    " except OSError as e:\n  err=str(e) or type(e).__name__;time.sleep(0.3);continue\n"
    " if answer==b'1':\n  sys.exit(0)\n"
    " if answer==b'0':\n"
    "  print(f'{host}:{port} saw this connection come from another address than {src}',file=sys.stderr)\n"
    "  sys.exit(1)\n"
    " err='the connection closed without an answer';time.sleep(0.3)\n"
    "print(f'cannot reach {host}:{port} from {src or \"any address\"}: {err}',file=sys.stderr);sys.exit(1)\n"
)
# The served port must be free on the head: another server there would answer the health check for ours.
FREE = (
    "import socket,sys\nport=int(sys.argv[1])\ns=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "try:\n s.bind(('0.0.0.0',port))\nexcept OSError as e:\n"
    " print(f'port {port} is taken on this node: {e.strerror}',file=sys.stderr);sys.exit(1)\n"
)
# Whether the server answers on its own node: /health, then /v1/models with the container's own
# VLLM_API_KEY (read from its environment: the key never enters argv), on loopback, then on the node's
# cluster address (VLLM_HOST_IP), so it works whichever address the server listens on. Argument: port.
PROBE = (
    "import os,sys,urllib.request\n"
    "port=sys.argv[1];key=os.environ.get('VLLM_API_KEY','');err='no address to ask'\n"
    "o=urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "for h in dict.fromkeys(('127.0.0.1',os.environ.get('VLLM_HOST_IP',''))):\n"
    " if not h:\n  continue\n"
    " u='http://'+('['+h+']' if ':' in h else h)+':'+port\n"
    " try:\n"
    "  for p in ('/health','/v1/models'):\n"
    "   q=urllib.request.Request(u+p,headers={'Authorization':'Bearer '+key} if key else {})\n"
    "   o.open(q,timeout=3).read(65536)\n"
    "  print('ok');sys.exit(0)\n"
    " except Exception as e:\n  err=u+p+': '+str(e)\n"
    "print(err);sys.exit(1)\n"
)
# `ray start` without its client server (port 10001: whoever reaches it runs code). `ray start` has no
# switch for it and refuses port 0, so this runs Ray's own entry point (`ray = ray.scripts.scripts:main`)
# with its client-dependency probe answering "absent", the state in which `ray start` leaves the server
# out; a Ray without that probe starts as it always does (doctor then lists 10001). Arguments: ray's.
RAY_START = (
    "import sys\nimport ray.scripts.scripts as s\n"
    "if hasattr(s,'get_ray_client_dependency_error'):\n"
    " s.get_ray_client_dependency_error=lambda:ImportError('off: deploy --ray-client turns it on')\n"
    "sys.argv[0]='ray'\ns.main()\n"
)
_SHOWN = {
    LISTEN: "<listen: host port seconds worker address…>",
    CONNECT: "<connect: host port seconds source>",
    FREE: "<port-free: port>",
    PROBE: "<answers: port>",
    RAY_START: "<ray without its client server>",
}


def shown(joined: str) -> str:
    """A joined argv with each script replaced by a short name (dry runs, errors)."""
    for script, name in _SHOWN.items():
        joined = joined.replace(shlex.quote(script), name)
    return joined


def probe_argv(container: str, port: int) -> list[str]:
    return ["docker", "exec", container, "python3", "-c", PROBE, str(port)]
