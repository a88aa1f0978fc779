"""What following live resources costs `dispatch mcp` (BENCHMARKS.md, "MCP").

Usage: mcp_cost.py DISPATCH_BINARY [TASKS ...]   (default: 1 8 32)

For each count N: a fresh local daemon (a temp DISPATCH_HOME), N sim tasks each waiting on a
question, and one `dispatch mcp` that follows each task's plan and output (2N resources,
through resources/subscribe). Reports the server's resident memory and CPU while the tasks
wait (10 s), then answers every question and reports how long until every task's output was
said to have changed, and the CPU that took. Not run by the test suite.
"""
import asyncio
import os
import subprocess
import sys
import tempfile
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

dispatch = sys.argv[1]
counts = [int(a) for a in sys.argv[2:]] or [1, 8, 32]
TICK = os.sysconf("SC_CLK_TCK")


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def mcp_pid():
    for c in children(os.getpid()):
        with open(f"/proc/{c}/cmdline", "rb") as f:
            if f.read().split(b"\0")[1:2] == [b"mcp"]:
                return c
    raise RuntimeError("no `dispatch mcp` child")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def updated_uri(message):
    m = getattr(message, "root", message)
    if getattr(m, "method", None) != "notifications/resources/updated":
        return None
    return str(m.params.uri)


async def measure(n, home):
    # Room on the local node for every task to wait at once.
    env = dict(os.environ, DISPATCH_HOME=home, DISPATCH_LOCAL_MAX_TASKS=str(n))
    env.pop("DISPATCH_COORDINATOR", None)
    params = StdioServerParameters(command=dispatch, args=["mcp"], env=env, cwd=home)
    outputs_heard = set()
    all_heard = asyncio.Event()

    async def on_message(message):
        uri = updated_uri(message)
        if uri and uri.endswith("/output"):
            outputs_heard.add(uri)
            if len(outputs_heard) == n:
                all_heard.set()

    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as s:
            await s.initialize()
            ids = [f"cost-{i}" for i in range(n)]
            for i in ids:
                r = await s.call_tool("dispatch_task", {
                    "prompt": "wait for me", "backend": "sim", "id": i,
                    "steps": ["ask (ask: go?)", "done"],
                })
                assert not r.is_error, r
            for i in ids:
                w = (await s.call_tool("wait_for_task", {"id": i, "timeout_seconds": 60})).structured_content
                assert w["why"] == "question", w
            pid = mcp_pid()
            base_rss = rss_kib(pid)
            for i in ids:
                await s.subscribe_resource(f"dispatch://tasks/{i}/plan")
                await s.subscribe_resource(f"dispatch://tasks/{i}/output")
            await asyncio.sleep(1)
            cpu0, t0 = cpu_s(pid), time.monotonic()
            await asyncio.sleep(10)
            idle_cpu = (cpu_s(pid) - cpu0) / (time.monotonic() - t0)
            rss = rss_kib(pid)
            cpu1, t1 = cpu_s(pid), time.monotonic()
            for i in ids:
                r = await s.call_tool("answer_question", {"id": i, "text": "go"})
                assert not r.is_error, r
            await asyncio.wait_for(all_heard.wait(), 120)
            took = time.monotonic() - t1
            busy_cpu = cpu_s(pid) - cpu1
    print(
        f"{n:>3} tasks, {2 * n:>3} resources followed: RSS {rss / 1024:.1f} MiB "
        f"({(rss - base_rss) / max(1, 2 * n):.0f} KiB per resource over {base_rss / 1024:.1f} MiB before); "
        f"idle CPU {idle_cpu * 1000:.2f} ms/s; answers → every output notified in {took * 1000:.0f} ms, "
        f"{busy_cpu * 1000:.0f} ms CPU"
    )


async def main():
    for n in counts:
        home = tempfile.mkdtemp(prefix="dispatch-mcp-cost-")
        try:
            await measure(n, home)
        finally:
            subprocess.run([dispatch, "daemon", "stop"], env=dict(os.environ, DISPATCH_HOME=home),
                           cwd=home, capture_output=True)


asyncio.run(main())
