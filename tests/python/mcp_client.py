"""dispatch's MCP server driven by the Python `mcp` SDK (an independent client).

Usage: mcp_client.py DISPATCH_BINARY  (DISPATCH_HOME etc. come from the environment)

Lists the tools, dispatches a sim task with a question, waits, answers, waits again, reads
the output — all through MCP — and checks that bad input is a tool error with the CLI's
message, never a crash of the server.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
try:  # the SDK's 2.x name, and 1.x's
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:
    from mcp.shared.exceptions import McpError

dispatch = sys.argv[1]
expected_errors = json.loads(sys.argv[2])


def field(obj, snake, camel):
    """A result field in the SDK's 2.x (snake_case) or 1.x (camelCase) spelling."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def sc(result):
    return field(result, "structured_content", "structuredContent")


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main():
    params = StdioServerParameters(command=dispatch, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            assert field(init, "server_info", "serverInfo").name == "dispatch", init
            tools = {t.name: t for t in (await s.list_tools()).tools}
            for name in [
                "dispatch_task", "task_status", "wait_for_task", "answer_question",
                "add_note", "cancel_task", "retry_task", "task_output", "task_diff",
                "list_nodes", "inbox",
            ]:
                assert name in tools, sorted(tools)
                assert field(tools[name], "input_schema", "inputSchema")["type"] == "object", tools[name]
            assert "prompt" in field(tools["dispatch_task"], "input_schema", "inputSchema")["required"]

            r = await s.call_tool("dispatch_task", {
                "prompt": "find the way", "backend": "sim", "id": "mcp-task",
                "steps": ["look around (ask: left or right?)", "walk"],
            })
            assert not field(r, "is_error", "isError"), text_of(r)
            task = sc(r)
            assert task["id"] == "mcp-task" and task["backend"] == "sim", task

            w = sc(await s.call_tool("wait_for_task", {"id": "mcp-task", "timeout_seconds": 60}))
            assert w["why"] == "question" and w["exit_code"] == 10, w
            assert "left or right?" in w["message"], w

            inbox = sc(await s.call_tool("inbox", {}))
            assert [q["task"] for q in inbox["questions"]] == ["mcp-task"], inbox

            r = await s.call_tool("answer_question", {"id": "mcp-task", "text": "left"})
            assert not field(r, "is_error", "isError"), text_of(r)
            w = sc(await s.call_tool("wait_for_task", {"id": "mcp-task", "timeout_seconds": 60}))
            assert w["why"] == "completed" and w["exit_code"] == 0, w

            out = sc(await s.call_tool("task_output", {"id": "mcp-task"}))
            assert out["markdown"].strip(), out
            st = sc(await s.call_tool("task_status", {"id": "mcp-task"}))
            assert st["state"] == "completed", st
            assert st["questions"][0]["answer"] == "left", st
            nodes = sc(await s.call_tool("list_nodes", {}))
            assert any(n["name"] == "local" for n in nodes["nodes"]), nodes

            # Bad input: a tool error carrying the CLI's message; the server lives on.
            for name, args, expected in expected_errors:
                r = await s.call_tool(name, args)
                assert field(r, "is_error", "isError"), (name, args, r)
                got = text_of(r)
                assert expected in got, (name, args, got, expected)
            try:
                await s.call_tool("no_such_tool", {})
                raise AssertionError("an unknown tool was accepted")
            except McpError as e:
                assert "no tool `no_such_tool`" in str(e), e
            st = await s.call_tool("task_status", {})
            assert not field(st, "is_error", "isError") and sc(st)["tasks"], st
    print("mcp ok")


asyncio.run(main())
