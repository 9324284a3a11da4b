"""Who may answer ``gravd.info`` as a node: the auth-file rules docs/security.md gives for it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy.errors import PermissionDenied
from gravpy.identity import keygen
from gravpy.message import Message
from gravpy.testing.gravd import Gravd, running_gravd

# docs/security.md, "Node documents": what keeps an app from answering as a node
APP_RULES = (
    'publish = { allow = [">"], deny = ["gravd.info.reply"] }\n'
    'subscribe = { allow = [">"], deny = ["gravd.info"] }\n'
)
OPEN_RULES = 'publish = { allow = [">"], deny = [] }\nsubscribe = { allow = [">"], deny = [] }\n'


async def publish_denied(node: Gravd) -> float:
    status, text = await node.get("/metrics")
    assert status == 200
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gravd_publish_denied_total"
    )


def identity(name: str, key_line: str, rules: str) -> str:
    return f'[[identities]]\nname = "{name}"\npublic_key = "{key_line}"\n{rules}\n'


async def test_an_app_under_the_documented_rules_cannot_answer_as_a_node(tmp_path: Path) -> None:
    """Under the rules docs/security.md gives, an app may ask gravd.info but can neither take its
    requests nor answer one it learnt of elsewhere: its made-up node document is dropped,
    counted, and the mesh view shows only the real node."""
    posing_key, watcher_key = tmp_path / "posing.key", tmp_path / "watcher.key"
    auth = tmp_path / "auth.toml"
    auth.write_text(
        identity("posing", keygen(posing_key), APP_RULES)
        + identity("watcher", keygen(watcher_key), OPEN_RULES)
    )
    made_up = {"uuid": "made-up-node", "peers": [], "leaves": [], "pods": {"count": 1}}
    async with (
        running_gravd("--auth-file", str(auth)) as node,
        gravpy.connect(node.endpoint, identity_file=posing_key) as posing,
        gravpy.connect(node.endpoint, identity_file=watcher_key) as watcher,
    ):
        posing_pod = posing.connect()
        with pytest.raises(PermissionDenied):
            posing_pod.on_type("gravd.info", lambda _: None)
        # it may still ask, and so learn where gravd's answers come from
        asked = await posing_pod.send(Message.new("gravd.info")).wait_until(5)
        assert json.loads(asked.data)["uuid"] == (await node.node())["uuid"]
        # the watcher may receive the survey's request: it hands the request to the posing app,
        # which answers it as gravd does
        answered = asyncio.Event()

        def hand_over(request: Message) -> None:
            posing_pod.reply_to(request, Message.new("gravd.info.reply", json.dumps(made_up)))
            answered.set()

        watcher.connect().on_type("gravd.info", hand_over)
        denied_before = await publish_denied(node)
        status, body = await node.get("/v1/mesh")
        assert status == 200
        assert answered.is_set()
        assert [n["uuid"] for n in json.loads(body)["nodes"]] == [(await node.node())["uuid"]]
        assert await publish_denied(node) == denied_before + 1
