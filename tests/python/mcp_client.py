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


def updated_uri(message):
    """The URI of a `notifications/resources/updated`, or None for any other message."""
    m = getattr(message, "root", message)
    if getattr(m, "method", None) != "notifications/resources/updated":
        return None
    return str(m.params.uri)


async def main():
    params = StdioServerParameters(command=dispatch, args=["mcp"], env=dict(os.environ))
    updated = {}  # uri -> asyncio.Event, set on each notifications/resources/updated

    async def on_message(message):
        uri = updated_uri(message)
        if uri is not None:
            updated.setdefault(uri, asyncio.Event()).set()

    async def heard(uri):
        await asyncio.wait_for(updated.setdefault(uri, asyncio.Event()).wait(), 30)

    plan_uri, output_uri = "dispatch://tasks/mcp-task/plan", "dispatch://tasks/mcp-task/output"
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as s:
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
                # Each says what it returns; the SDK checks every result below against it.
                assert field(tools[name], "output_schema", "outputSchema")["type"] == "object", tools[name]
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
            # The host is pointed to tools, not to CLI commands it cannot run.
            assert "answer_question" in w["message"] and "dispatch answer" not in w["message"], w

            # Resources: the templates, and the plan of the waiting task, followed live (the
            # 2025 protocol's resources/subscribe: this session negotiated one of those).
            templates = field(await s.list_resource_templates(), "resource_templates", "resourceTemplates")
            assert sorted(field(t, "uri_template", "uriTemplate") for t in templates) == [
                "dispatch://tasks/{id}/output", "dispatch://tasks/{id}/plan"], templates
            plan = (await s.read_resource(plan_uri)).contents[0].text
            assert "look around (ask: left or right?)" in plan and "[ ] walk" in plan, plan
            listed = [str(r.uri) for r in (await s.list_resources()).resources]
            assert plan_uri in listed and output_uri not in listed, listed
            await s.subscribe_resource(plan_uri)
            await s.subscribe_resource(output_uri)

            inbox = sc(await s.call_tool("inbox", {}))
            assert [q["task"] for q in inbox["questions"]] == ["mcp-task"], inbox

            r = await s.call_tool("answer_question", {"id": "mcp-task", "text": "left"})
            assert not field(r, "is_error", "isError"), text_of(r)
            w = sc(await s.call_tool("wait_for_task", {"id": "mcp-task", "timeout_seconds": 60}))
            assert w["why"] == "completed" and w["exit_code"] == 0, w
            assert "task_output" in w["message"] and "dispatch output" not in w["message"], w

            out = sc(await s.call_tool("task_output", {"id": "mcp-task"}))
            assert out["markdown"].strip(), out
            # The checklist ticked and output.md was written: both were said to have changed,
            # and reading them now shows it.
            await heard(plan_uri)
            await heard(output_uri)
            plan = (await s.read_resource(plan_uri)).contents[0].text
            assert "[x] look around" in plan and "[x] walk" in plan, plan
            r = (await s.read_resource(output_uri)).contents[0]
            assert r.text == out["markdown"] and field(r, "mime_type", "mimeType") == "text/markdown", r
            assert output_uri in [str(r.uri) for r in (await s.list_resources()).resources]
            await s.unsubscribe_resource(plan_uri)
            for uri, expected in [
                ("dispatch://tasks/no-such-task/plan", expected_errors[0][2]),
                ("file:///etc/passwd", "is not a dispatch resource"),
                ("dispatch://tasks/mcp-task/log", "dispatch://tasks/ID/plan (the checklist)"),
            ]:
                try:
                    await s.read_resource(uri)
                    raise AssertionError(f"{uri} was read")
                except McpError as e:
                    assert expected in str(e), (uri, str(e), expected)
            try:
                await s.subscribe_resource("dispatch://tasks/no-such-task/output")
                raise AssertionError("a subscription to an unknown task was accepted")
            except McpError as e:
                assert expected_errors[0][2] in str(e), e
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
    await listen_on_the_2026_protocol(params)
    print("mcp ok")


async def listen_on_the_2026_protocol(params):
    """A host on protocol 2026-07-28 follows a task with subscriptions/listen."""
    from mcp import Client
    from mcp.client.subscriptions import ResourceUpdated

    async with Client(params) as c:
        assert c.protocol_version == "2026-07-28", c.protocol_version
        r = await c.call_tool("dispatch_task", {
            "prompt": "pick a door", "backend": "sim", "id": "mcp-live",
            "steps": ["look (ask: red or blue?)", "open it"],
        })
        assert not field(r, "is_error", "isError"), text_of(r)
        w = sc(await c.call_tool("wait_for_task", {"id": "mcp-live", "timeout_seconds": 60}))
        assert w["why"] == "question", w
        plan, output = "dispatch://tasks/mcp-live/plan", "dispatch://tasks/mcp-live/output"
        seen = set()
        async with c.listen(resource_subscriptions=[plan, output]) as sub:
            honored = field(sub.honored, "resource_subscriptions", "resourceSubscriptions")
            assert sorted(honored) == sorted([plan, output]), sub.honored
            r = await c.call_tool("answer_question", {"id": "mcp-live", "text": "blue"})
            assert not field(r, "is_error", "isError"), text_of(r)
            async with asyncio.timeout(30):
                async for event in sub:
                    if isinstance(event, ResourceUpdated):
                        seen.add(str(event.uri))
                    if seen == {plan, output}:
                        break
        text = (await c.read_resource(plan)).contents[0].text
        assert "[x] open it" in text, text


asyncio.run(main())
