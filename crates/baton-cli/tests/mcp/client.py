"""A real MCP client (the official Python SDK) driving `baton mcp` over stdio and `/mcp` on
`baton serve` over streamable HTTP. Run by crates/baton-cli/tests/mcp.rs; each mode exits 0
when every assertion held and prints one JSON line of findings."""

import asyncio
import json
import sys
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def stdio(baton, data_dir, agent):
    params = StdioServerParameters(
        command=baton, args=["--data-dir", data_dir, "mcp", "--agent", agent]
    )
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def http(url, token):
    import httpx2

    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with streamable_http_client(url, http_client=client) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            yield session


async def call(session, tool, **args):
    result = await session.call_tool(tool, args)
    assert not result.is_error, f"{tool} {args}: {result.content[0].text}"
    return result.structured_content


async def error(session, tool, args):
    result = await session.call_tool(tool, args)
    assert result.is_error, f"{tool} {args} should fail: {result.structured_content}"
    text = result.content[0].text
    code = result.structured_content["error"]["code"]
    assert text.startswith(code), text
    assert result.structured_content["error"]["hint"], text
    return code


async def workflow(planner, worker):
    listed = await planner.list_tools()
    names = {t.name for t in listed.tools}
    size = len(json.dumps({"tools": [t.model_dump(by_alias=True, exclude_none=True) for t in listed.tools]}))
    for tool in ["task_create", "task_get", "task_update", "task_brief", "plan_apply", "claim",
                 "heartbeat", "complete", "fail", "release", "context_add", "steps", "deps", "artifacts", "query"]:
        assert tool in names, tool
    assert size < 12000, size

    parent = (await call(planner, "task_create", title="Ship search", intent="Users find tasks by text"))["task"]
    first = (await call(planner, "task_create", title="Index titles", parent_id=parent["id"]))["task"]
    second = (await call(planner, "task_create", title="Search endpoint", parent_id=parent["id"]))["task"]
    await call(planner, "deps", task_id=second["id"], action="add", blocker_id=first["id"])
    assert (await call(planner, "task_get", task_id=second["id"]))["task"]["status"] == "blocked"
    decided = (await call(planner, "context_add", task_id=parent["id"], type="decision", content="Use SQLite FTS5"))["context"]
    # Fields are set by update, and null clears one a task may be without.
    await call(planner, "task_update", task_id=parent["id"], description="draft", timeout="2h",
               budget={"max_cost": 5}, due_at="2031-01-01T00:00:00Z")
    await call(planner, "task_update", task_id=parent["id"], description=None, budget=None)
    shown = (await call(planner, "task_get", task_id=parent["id"], detail=True))["task"]
    assert "description" not in shown and "budget" not in shown, shown
    assert shown["timeout"] == "2h" and shown["due_at"].startswith("2031-01-01"), shown

    # An idempotency key makes a write safe to repeat after a lost answer: the same call is
    # answered as before and done once; another call under the key is refused.
    once = dict(title="Once", draft=True, idempotency_key="c0ffee-1")
    made = (await call(planner, "task_create", **once))["task"]
    assert (await call(planner, "task_create", **once))["task"]["id"] == made["id"]
    other = await error(planner, "task_create", {**once, "title": "Twice"})
    assert other == "IDEMPOTENCY_MISMATCH", other
    # The same key on another tool is another call: refused too, nothing written.
    other = await error(planner, "context_add", {"task_id": made["id"], "type": "note", "content": "x",
                                                 "idempotency_key": "c0ffee-1"})
    assert other == "IDEMPOTENCY_MISMATCH", other
    await call(planner, "task_update", task_id=made["id"], action="cancel", idempotency_key="c0ffee-2")
    again = await call(planner, "task_update", task_id=made["id"], action="cancel", idempotency_key="c0ffee-2")
    assert again["task"]["status"] == "canceled", again

    claims = (await call(worker, "claim", idempotency_key="c0ffee-3"))["claims"]
    assert [c["task"]["id"] for c in claims] == [first["id"]], claims
    repeat = (await call(worker, "claim", idempotency_key="c0ffee-3"))["claims"]
    assert repeat == claims, (repeat, claims)
    beat = await call(worker, "heartbeat", task_id=first["id"], progress=0.5, message="indexing")
    assert "signals" in beat
    await call(worker, "context_add", task_id=parent["id"], type="discovery", content="Titles need stemming")
    # An artifact attached by the holder belongs to its run (the session sends its lease).
    report = (await call(worker, "artifacts", action="add", task_id=first["id"], name="index.txt",
                         content="3 titles"))["artifact"]
    assert report["run_id"] and report["size"] == 8, report
    blob = (await call(worker, "artifacts", action="add", task_id=first["id"], name="blob",
                       content_base64="AP8="))["artifact"]
    files = (await call(worker, "artifacts", action="list", task_id=first["id"]))["artifacts"]
    assert [a["id"] for a in files] == [report["id"], blob["id"]], files
    got = await call(worker, "artifacts", action="get", artifact_id=blob["id"])
    assert got["content_base64"] == "AP8=" and "content" not in got, got
    got = await call(worker, "artifacts", action="get", artifact_id=report["id"])
    assert got["content"] == "3 titles", got
    # A refused lease operation leaves the lease with the server: the agent still holds the task.
    refused = await error(worker, "fail", {"task_id": first["id"], "error": "e", "class": "cosmic"})
    assert refused == "INVALID_INPUT", refused
    refused = await error(worker, "complete", {"task_id": first["id"], "lease": "lse_not_mine"})
    assert refused == "LEASE_LOST", refused
    done = await call(worker, "complete", task_id=first["id"], output={"indexed": 3}, outcome="indexed",
                      idempotency_key="c0ffee-5")
    assert done["task"]["status"] == "done", done
    # Repeated after the answer was lost (here the server has let go of the lease, as a
    # restarted one would have): the first answer, nothing done twice.
    again = await call(worker, "complete", task_id=first["id"], output={"indexed": 3}, outcome="indexed",
                       idempotency_key="c0ffee-5")
    assert again == done, (again, done)

    ready = (await call(worker, "query", name="ready"))["tasks"]
    assert [t["id"] for t in ready] == [second["id"]], ready
    children = (await call(worker, "query", name="children_of", task_id=parent["id"]))["tasks"]
    assert {t["id"] for t in children} == {first["id"], second["id"]}
    ancestors = (await call(worker, "query", name="ancestors_of", task_id=second["id"]))["tasks"]
    assert [t["id"] for t in ancestors] == [parent["id"]]
    recent = (await call(worker, "query", name="recent_activity", limit=5))["events"]
    assert len(recent) == 5 and all("seq" in e and "data" not in e for e in recent), recent

    brief = (await call(worker, "task_brief", task_id=parent["id"]))["brief"]
    kinds = {c["type"]: c["content"] for c in brief["context"]}
    assert kinds.get("decision") == "Use SQLite FTS5", brief["context"]
    assert kinds.get("discovery") == "Titles need stemming", brief["context"]
    states = {c["id"]: c["status"] for c in brief["children"]}
    assert states == {first["id"]: "done", second["id"]: "ready"}, states

    # A lease that lapsed under the session: the agent's next note as holder is refused, so
    # it learns to stop; called again, the note is anyone's; a lease operation still says why.
    claims = (await call(worker, "claim", lease_ttl="1s"))["claims"]
    assert [c["task"]["id"] for c in claims] == [second["id"]], claims
    await asyncio.sleep(1.5)
    lost = await error(worker, "context_add", {"task_id": second["id"], "type": "note", "content": "late"})
    assert lost == "LEASE_LOST", lost
    note = (await call(worker, "context_add", task_id=second["id"], type="note", content="late"))["context"]
    assert note["run_id"] is None, note
    beat = await worker.call_tool("heartbeat", {"task_id": second["id"]})
    assert beat.is_error and "holds no lease" not in beat.content[0].text, beat.content[0].text

    # Arguments the API refuses are named as the tool's arguments, by field, not as an
    # HTTP body placed by line and column.
    bad = await planner.call_tool("task_create", {"title": "x", "priority": "high"})
    text = bad.content[0].text
    assert bad.is_error and text.startswith("INVALID_INPUT: invalid arguments: priority:"), text
    assert "line 1" not in text and "input schema" in text, text
    codes = {
        "unknown tool": await error(worker, "no_such_tool", {}),
        "wrong type": await error(worker, "task_get", {"task_id": 5}),
        "unknown id": await error(worker, "task_get", {"task_id": "tsk_nope"}),
        "stale lease": await error(worker, "complete", {"task_id": first["id"], "lease": "lse_stale"}),
        "no lease held": await error(worker, "heartbeat", {"task_id": second["id"]}),
        "bad enum": await error(worker, "context_add", {"task_id": parent["id"], "type": "gossip", "content": "x"}),
        "limit out of range": await error(worker, "query", {"name": "tasks", "limit": -1}),
        "overlong filter": await error(worker, "query", {"name": "tasks", "label": "x" * 100_000}),
        "release of no task": await error(worker, "release", {"task_id": "tsk_nope"}),
        "empty id": await error(worker, "task_get", {"task_id": ""}),
        "detail not a flag": await error(worker, "task_get", {"task_id": first["id"], "detail": "yes"}),
        "negative after": await error(worker, "query", {"name": "events_since", "after": -5}),
        "argument a query ignores": await error(worker, "query", {"name": "ready", "task_id": first["id"]}),
        "children of no task": await error(worker, "query", {"name": "children_of", "task_id": "tsk_nope"}),
        "fractional max_bytes": await error(worker, "task_brief", {"task_id": first["id"], "max_bytes": 1.5}),
        "claim as another agent": await error(worker, "claim", {"agent": "somebody-else"}),
        "after on the newest events": await error(worker, "query", {"name": "recent_activity", "after": 3}),
        "artifact without bytes": await error(worker, "artifacts", {"action": "add", "task_id": parent["id"], "name": "x"}),
        "artifact not there": await error(worker, "artifacts", {"action": "get", "artifact_id": "art_nope"}),
        "idempotency key not text": await error(worker, "claim", {"idempotency_key": 7}),
    }
    assert codes == {
        "unknown tool": "NOT_FOUND", "wrong type": "INVALID_INPUT", "unknown id": "NOT_FOUND",
        "stale lease": "LEASE_LOST", "no lease held": "LEASE_LOST", "bad enum": "INVALID_INPUT",
        "limit out of range": "INVALID_INPUT", "overlong filter": "TOO_LARGE",
        "release of no task": "NOT_FOUND", "empty id": "INVALID_INPUT",
        "detail not a flag": "INVALID_INPUT", "negative after": "INVALID_INPUT",
        "argument a query ignores": "INVALID_INPUT", "children of no task": "NOT_FOUND",
        "fractional max_bytes": "INVALID_INPUT", "claim as another agent": "INVALID_INPUT",
        "after on the newest events": "INVALID_INPUT", "artifact without bytes": "INVALID_INPUT",
        "artifact not there": "NOT_FOUND", "idempotency key not text": "INVALID_INPUT",
    }, codes
    return {"tools_list_bytes": size, "tools": len(names), "errors": codes, "decided_by": decided["created_by"]}


async def race(baton, data_dir, agents):
    async def work(agent):
        got = []
        async with stdio(baton, data_dir, agent) as s:
            while True:
                claims = (await call(s, "claim"))["claims"]
                if not claims:
                    return got
                tid = claims[0]["task"]["id"]
                got.append(tid)
                await call(s, "complete", task_id=tid)

    results = await asyncio.gather(*(work(a) for a in agents))
    return {"claimed": results}


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        baton, data_dir = sys.argv[2], sys.argv[3]
        async with stdio(baton, data_dir, "planner") as planner, stdio(baton, data_dir, "worker-1") as worker:
            out = await workflow(planner, worker)
        # A stdio server given --agent records its writes as that agent's, not as "mcp".
        assert out["decided_by"] == "planner", out
    elif mode == "http":
        url, planner_key, worker_key = sys.argv[2], sys.argv[3], sys.argv[4]
        async with http(url, planner_key) as planner, http(url, worker_key) as worker:
            out = await workflow(planner, worker)
    elif mode == "race":
        out = await race(sys.argv[2], sys.argv[3], ["racer-a", "racer-b"])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


asyncio.run(main())
