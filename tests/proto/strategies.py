"""Hypothesis strategies for the protocol tests: messages, type patterns, a valid frame of every
kind, and msgpack values of any shape."""

from __future__ import annotations

from hypothesis import strategies as st

from gravpy.message import Message
from gravpy.proto import frames as f

ids = st.text(min_size=1, max_size=64)
msg_types = st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}", fullmatch=True)
messages = st.builds(
    Message,
    uuid=ids,
    parent_id=st.text(max_size=64),
    reply_to=st.text(max_size=64),
    type=msg_types,
    timestamp=st.floats(allow_nan=False),
    data=st.binary(max_size=256),
    headers=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4),
)
tokens = st.from_regex(r"[a-z0-9_-]{1,6}", fullmatch=True) | st.just("*")
patterns = st.just(">") | st.builds(
    lambda toks, rest: ".".join(toks) + (".>" if rest else ""),
    st.lists(tokens, min_size=1, max_size=4),
    st.booleans(),
)
nonces = st.integers(0, 2**64 - 1)
FRAMES: dict[f.FrameKind, st.SearchStrategy[f.Frame]] = {
    f.FrameKind.HELLO: st.builds(
        f.Hello,
        node_uuid=ids,
        role=st.text(min_size=1, max_size=16),
        belongs_to=st.text(min_size=1, max_size=32),
        endpoint=st.text(max_size=64),
        nonce=st.binary(min_size=16, max_size=64),
        keyed=st.booleans(),
        version=st.integers(0, 0xFFFF),
    ),
    f.FrameKind.AUTH: st.builds(f.Auth, st.binary(min_size=32, max_size=32)),
    f.FrameKind.ACCEPT: st.just(f.Accept()),
    f.FrameKind.REJECT: st.builds(f.Reject, st.text(min_size=1, max_size=64), st.text(max_size=99)),
    f.FrameKind.MSGS: st.lists(messages, min_size=1, max_size=8).flatmap(
        lambda batch: st.builds(
            f.Msgs,
            st.just(batch),
            st.none()
            | st.lists(st.integers(-(2**63), 2**63 - 1), min_size=len(batch), max_size=len(batch)),
        )
    ),
    f.FrameKind.INTERESTS: st.builds(
        f.Interests,
        st.lists(patterns, max_size=10).map(tuple),
        st.lists(
            st.tuples(st.sampled_from(["workers", "gravctl.reply"]), patterns, st.integers(1, 9)),
            max_size=4,
        ).map(tuple),
    ),
    f.FrameKind.PEERS: st.builds(
        f.Peers, st.lists(st.tuples(ids, st.text(min_size=1, max_size=64)), max_size=10).map(tuple)
    ),
    f.FrameKind.WITHDRAW: st.just(f.Withdraw()),
    f.FrameKind.WITHDRAW_ACK: st.just(f.WithdrawAck()),
    f.FrameKind.PING: st.builds(f.Ping, nonces),
    f.FrameKind.PONG: st.builds(f.Pong, nonces),
    f.FrameKind.CLOSE: st.builds(f.Close, st.text(min_size=1, max_size=64), st.text(max_size=99)),
    f.FrameKind.MOVED: st.just(f.Moved()),
}
any_frame = st.one_of(*FRAMES.values())

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=8)
        | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), inner, max_size=4)
    ),
    max_leaves=16,
)
