"""Tests for gravpy.filter: type patterns and the allow/deny filter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.errors import UsageError
from gravpy.filter import Filter, Pattern


def test_literal_pattern_matches_only_its_own_type() -> None:
    """A pattern without wildcards matches exactly one type."""
    p = Pattern("sensor.kitchen.temp")
    assert p.is_literal
    assert p.matches("sensor.kitchen.temp")
    assert not p.matches("sensor.kitchen")
    assert not p.matches("sensor.kitchen.temp.c")
    assert not p.matches("sensor.kitchen.tem")


def test_star_matches_exactly_one_token() -> None:
    """`*` stands for one token, never zero and never two."""
    p = Pattern("sensor.*.temp")
    assert not p.is_literal
    assert p.matches("sensor.kitchen.temp")
    assert p.matches("sensor.hall.temp")
    assert not p.matches("sensor.temp")
    assert not p.matches("sensor.a.b.temp")
    assert not p.matches("sensor.kitchen.humidity")
    assert Pattern("*").matches("a")
    assert not Pattern("*").matches("a.b")
    assert Pattern("*.*").matches("a.b")


def test_tail_matches_one_or_more_trailing_tokens() -> None:
    """`>` at the end stands for one or more tokens, so `sensor.>` does not match `sensor`."""
    p = Pattern("sensor.>")
    assert not p.is_literal
    assert p.matches("sensor.kitchen")
    assert p.matches("sensor.kitchen.temp")
    assert not p.matches("sensor")
    assert not p.matches("sensors.kitchen")
    assert Pattern(">").matches("anything.at.all")
    assert Pattern(">").matches("x")
    assert Pattern("*.>").matches("a.b")
    assert not Pattern("*.>").matches("a")


@pytest.mark.parametrize(
    "bad",
    ["", ".", "a.", ".a", "a..b", "a b", "a*", "*a", "a.>b", ">.a", "a.>.b", "x" * 256],
)
def test_invalid_patterns_are_refused(bad: str) -> None:
    """Empty tokens, whitespace, partial wildcards, `>` before the end and over-long text are refused."""
    with pytest.raises(UsageError, match="invalid type pattern"):
        Pattern(bad)


@pytest.mark.parametrize("bad", [None, 1, ["a"], "a.\ud800"])
def test_non_string_patterns_are_refused(bad: object) -> None:
    """A pattern must be a str of valid Unicode."""
    with pytest.raises(UsageError):
        Pattern(bad)  # type: ignore[arg-type]


def test_patterns_compare_and_hash_by_text() -> None:
    """Two patterns with the same text are equal and hash alike."""
    assert Pattern("a.*") == Pattern("a.*")
    assert Pattern("a.*") != Pattern("a.>")
    assert len({Pattern("a.*"), Pattern("a.*")}) == 1
    assert repr(Pattern("a.*")) == "Pattern('a.*')"


def test_empty_filter_admits_everything() -> None:
    """With no rules at all every type and uuid passes."""
    f = Filter()
    assert f.admits("any.type", "any-uuid")
    assert f.allowed_patterns() is None
    assert not f.has_uuid_rules


def test_allow_patterns_restrict_types() -> None:
    """Once a type pattern is allowed, only types matching some allow pattern pass."""
    f = Filter()
    f.filter_type("sensor.*", allow=True)
    f.filter_type("alarm", allow=True)
    assert f.admits_type("sensor.hall")
    assert f.admits_type("alarm")
    assert not f.admits_type("sensor.hall.temp")
    assert not f.admits_type("other")
    assert f.allowed_patterns() == ("sensor.*", "alarm")


def test_deny_beats_allow() -> None:
    """A type matching a deny pattern is refused even when an allow pattern matches it too."""
    f = Filter()
    f.filter_type("sensor.>", allow=True)
    f.filter_type("sensor.secret.*", allow=False)
    assert f.admits_type("sensor.hall.temp")
    assert not f.admits_type("sensor.secret.key")
    assert f.allowed_patterns() == ("sensor.>",)


def test_deny_only_admits_everything_else() -> None:
    """Deny rules alone refuse what they match and admit the rest."""
    f = Filter()
    f.filter_type("debug.>", allow=False)
    assert not f.admits_type("debug.trace")
    assert f.admits_type("info")
    assert f.allowed_patterns() is None


def test_allowing_a_pattern_lifts_its_deny_and_back() -> None:
    """Allowing a denied pattern removes the deny rule, and denying an allowed one removes the allow."""
    f = Filter()
    f.filter_type("a.b", allow=False)
    assert not f.admits_type("a.b")
    f.filter_type("a.b", allow=True)
    assert f.admits_type("a.b")
    f.filter_type("a.b", allow=False)
    assert not f.admits_type("a.b")
    assert f.allowed_patterns() is None


def test_set_type_allow_replaces_allow_rules_and_keeps_denies() -> None:
    """set_type_allow replaces the allow list; unrelated deny rules stay, same-pattern ones go."""
    f = Filter()
    f.filter_type("a", allow=True)
    f.filter_type("x.secret", allow=False)
    f.filter_type("b", allow=False)
    f.set_type_allow(["x.*", "b"])
    assert not f.admits_type("a")
    assert f.admits_type("x.y")
    assert not f.admits_type("x.secret")
    assert f.admits_type("b")


def test_filter_type_refuses_invalid_patterns() -> None:
    """An invalid pattern is refused and the filter is left unchanged."""
    f = Filter()
    with pytest.raises(UsageError):
        f.filter_type("a..b", allow=True)
    with pytest.raises(UsageError):
        f.set_type_allow(["ok", "a b"])
    assert f.admits_type("anything")


def test_admits_type_cache_is_dropped_when_rules_change() -> None:
    """A cached answer does not outlive a rule change."""
    f = Filter()
    assert f.admits_type("a.b")
    f.filter_type("a.*", allow=False)
    assert not f.admits_type("a.b")
    f.set_type_allow(["a.*"])
    assert f.admits_type("a.b")


def test_uuid_deny_refuses_that_message_only() -> None:
    """A denied uuid is refused; other uuids still pass."""
    f = Filter()
    f.filter_uuid("u1", allow=False)
    assert f.has_uuid_rules
    assert not f.admits("t", "u1")
    assert f.admits("t", "u2")


def test_uuid_allow_admits_only_allowed_uuids() -> None:
    """Once a uuid is allowed, only allowed uuids pass."""
    f = Filter()
    f.filter_uuid("u1", allow=True)
    assert f.admits_uuid("u1")
    assert not f.admits_uuid("u2")
    f.filter_uuid("u1", allow=False)
    assert not f.admits_uuid("u1")
    assert f.admits_uuid("u2")


def test_filter_uuid_refuses_empty_or_non_str() -> None:
    """A uuid rule needs a non-empty str."""
    f = Filter()
    with pytest.raises(UsageError):
        f.filter_uuid("", allow=True)
    with pytest.raises(UsageError):
        f.filter_uuid(None, allow=True)  # type: ignore[arg-type]


def test_admits_needs_both_type_and_uuid() -> None:
    """A message passes only if both its type and its uuid pass."""
    f = Filter()
    f.filter_type("a", allow=True)
    f.filter_uuid("bad", allow=False)
    assert f.admits("a", "good")
    assert not f.admits("b", "good")
    assert not f.admits("a", "bad")


def reference_match(pattern: list[str], tokens: list[str]) -> bool:
    """An independent matcher, recursive over token lists."""
    if not pattern:
        return not tokens
    head, rest = pattern[0], pattern[1:]
    if head == ">":
        return not rest and len(tokens) >= 1
    if not tokens:
        return False
    return (head == "*" or head == tokens[0]) and reference_match(rest, tokens[1:])


alphabet_tokens = st.sampled_from(["a", "b", "ab"])
msg_types = st.lists(alphabet_tokens, min_size=1, max_size=4)
pattern_tokens = st.lists(alphabet_tokens | st.just("*"), min_size=1, max_size=4)
patterns = pattern_tokens | pattern_tokens.map(lambda ts: [*ts, ">"]) | st.just([">"])


@given(patterns, msg_types)
def test_pattern_matches_agrees_with_a_reference_matcher(
    pattern: list[str], tokens: list[str]
) -> None:
    """Pattern.matches gives the same answer as a simple recursive matcher."""
    assert Pattern(".".join(pattern)).matches(".".join(tokens)) == reference_match(pattern, tokens)


@given(st.lists(patterns, max_size=3), st.lists(patterns, max_size=3), msg_types)
def test_filter_agrees_with_its_rules(
    allow: list[list[str]], deny: list[list[str]], tokens: list[str]
) -> None:
    """A filter admits a type iff no deny pattern matches and some allow pattern does (or none exist)."""
    f = Filter()
    allow_text = {".".join(p) for p in allow}
    deny_text = {".".join(p) for p in deny} - allow_text
    for p in deny_text:
        f.filter_type(p, allow=False)
    for p in allow_text:
        f.filter_type(p, allow=True)
    denied = any(reference_match(p.split("."), tokens) for p in deny_text)
    allowed = not allow_text or any(reference_match(p.split("."), tokens) for p in allow_text)
    assert f.admits_type(".".join(tokens)) == (allowed and not denied)
