"""The dashboard in a real browser: Debian's chromium driven by Playwright, three real gravd.

The tests open the first node's page and assert on what a person sees: the nodes and links drawn
on the graph, a published message in the live tail, a killed node turning dead. Each view's
screenshot is written under the test's temporary directory (``docs/dashboard-mesh.png`` was taken
from one). They skip, saying why, where chromium or Playwright is missing.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from gravpy.testing.gravd import Gravd, gravctl, running_gravd

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright is not installed")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/system-packages installs it)"
)
expect = playwright_api.expect
QUICK = ("--ping-interval", "0.2", "--dead-after", "1")
SEEN = 10_000  # ms: how long the page may take to show a mesh change (a hang guard, not a timing)
TAIL_WITHIN = 1_000  # ms: the tail shows a published message within a second
UNANSWERED = (
    20_000  # ms: a hang guard for the page to notice gravd stopped answering (5 s + a poll)
)


@pytest.fixture
async def mesh() -> AsyncIterator[list[Gravd]]:
    """Three gravd meshed on 127.0.0.1: b and c dial a, and learn each other from it."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_gravd(*QUICK))
        b = await stack.enter_async_context(running_gravd(*QUICK, "--peer", a.endpoint))
        c = await stack.enter_async_context(running_gravd(*QUICK, "--peer", a.endpoint))
        for node in (a, b, c):
            await node.wait_peers(2)
        yield [a, b, c]


@pytest.fixture
async def page(mesh: list[Gravd]) -> AsyncIterator[Any]:
    """The first node's dashboard, open in headless chromium."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(mesh[0].monitor + "/")
            yield page
        finally:
            await browser.close()


# the texts of the mesh graph that do not lie within its viewBox (clipped where the page shows it)
OUTSIDE = """graph => {
  const box = graph.viewBox.baseVal;
  return [...graph.querySelectorAll("text")].filter((t) => {
    const b = t.getBBox(), m = t.closest("g").transform.baseVal.consolidate()?.matrix;
    const x = b.x + (m ? m.e : 0), y = b.y + (m ? m.f : 0);
    return x < box.x || y < box.y || x + b.width > box.x + box.width || y + b.height > box.y + box.height;
  }).map((t) => t.textContent);
}"""


async def _view(page: Any, name: str, shots: Path) -> None:
    await page.get_by_role("button", name=name, exact=True).click()
    await page.screenshot(path=shots / f"{name.lower().replace(' ', '-')}.png", full_page=True)


async def test_three_nodes_and_their_links_are_drawn(
    page: Any, mesh: list[Gravd], tmp_path: Path
) -> None:
    """The mesh view draws the three nodes, labelled, with three open links and their transport."""
    graph = page.locator("#mesh-graph")
    await expect(graph.locator("g.node")).to_have_count(3, timeout=SEEN)
    await expect(graph.locator("line.link.open")).to_have_count(3, timeout=SEEN)
    for node in mesh:
        await expect(graph).to_contain_text(node.uuid[:8])
    await expect(graph.locator(f'g.node[data-uuid="{mesh[0].uuid}"]')).to_contain_text("this node")
    # b and c dial a's WebSocket URL; every gravd listens with TCP too, so the links move there
    await expect(graph.locator("text.link-label").first).to_contain_text("tcp")
    await expect(graph.locator("rect.link-label-bg")).to_have_count(3)  # lines go behind labels
    assert await graph.evaluate(OUTSIDE) == []
    await page.screenshot(path=tmp_path / "mesh.png", full_page=True)
    await _view(page, "Pods & interests", tmp_path)
    await expect(page.locator("#interests tbody tr")).to_have_count(3)
    await expect(page.locator("#interests")).to_contain_text("gravd.info")
    await _view(page, "Traffic", tmp_path)
    await expect(page.locator("#traffic-node svg.chart")).to_have_count(1, timeout=SEEN)
    await expect(page.locator("#traffic-links .chart-box")).to_have_count(2, timeout=SEEN)


async def test_published_message_appears_in_the_tail(
    page: Any, mesh: list[Gravd], tmp_path: Path
) -> None:
    """A message published with gravctl pub on another node shows in the tail on sensor.>."""
    b = mesh[1]
    await page.get_by_role("button", name="Live tail", exact=True).click()
    await page.locator("#tail-pattern").fill("sensor.>")
    await page.locator("#tail-start").click()
    await b.wait_interest("sensor.hall.temp")  # the tail's pod on a asked the mesh for sensor.>
    result = await gravctl("--url", b.endpoint, "pub", "sensor.hall.temp", '{"celsius": 21.5}')
    assert result.code == 0, result.stderr
    rows = page.locator("#tail tbody tr")
    await expect(rows).to_have_count(1, timeout=TAIL_WITHIN)
    await expect(rows.first).to_contain_text("sensor.hall.temp")
    await expect(rows.first).to_contain_text('{"celsius": 21.5}')
    nobody = await gravctl("--url", b.endpoint, "pub", "other.thing", "x")
    assert nobody.code == 3, nobody.stderr  # gravctl's exit for a type nobody on the mesh wants
    await page.locator("#tail-preview").select_option("hex")
    await page.screenshot(path=tmp_path / "tail.png", full_page=True)
    await expect(rows).to_have_count(1)  # other.thing does not match the pattern
    await page.locator("#tail-clear").click()
    await expect(rows).to_have_count(0)


async def test_killed_node_turns_dead_on_the_graph(
    page: Any, mesh: list[Gravd], tmp_path: Path
) -> None:
    """Killing a node (SIGKILL) turns it dead on the graph, while the other two stay serving."""
    a, b, c = mesh
    graph = page.locator("#mesh-graph")
    victim = graph.locator(f'g.node[data-uuid="{c.uuid}"]')
    await expect(victim).to_have_attribute("data-state", "serving", timeout=SEEN)
    c.process.proc.kill()
    await c.process.wait()
    await expect(victim).to_have_attribute("data-state", "dead", timeout=SEEN)
    await expect(victim.locator("text.node-state")).to_have_text("dead")
    for alive in (a, b):
        await expect(graph.locator(f'g.node[data-uuid="{alive.uuid}"]')).to_have_attribute(
            "data-state", "serving"
        )
    await page.screenshot(path=tmp_path / "mesh-dead.png", full_page=True)


async def test_events_inbox_lists_filters_and_marks_read(page: Any, tmp_path: Path) -> None:
    """The inbox shows the node's own events (peers linked); a category filter shows only that
    category; "Mark read" turns an event read, and the status filter finds it."""
    await _view(page, "Events", tmp_path)
    rows = page.locator("#events tbody tr")
    await expect(rows.first).to_be_visible(timeout=SEEN)
    when = rows.first.locator("td").first  # made moments ago, shown as a local date and time
    hours_off = await when.evaluate(
        "td => Math.abs(Date.parse(td.textContent) - Date.now()) / 3.6e6"
    )
    assert hours_off < 1, await when.inner_text()
    await page.fill("#events-category", "peer")
    await page.get_by_role("button", name="Filter").click()
    cells = page.locator("#events tbody tr td:nth-child(3)")
    # (the unfiltered rows stay until the filtered page replaces them: wait for that)
    await expect(cells.filter(has_not_text="peer")).to_have_count(0, timeout=SEEN)
    await expect(rows.first).to_be_visible(timeout=SEEN)
    categories = await cells.all_inner_texts()
    assert categories
    assert set(categories) == {"peer"}
    first = rows.first
    event_id = await first.get_attribute("data-id")
    await first.get_by_role("button", name="Mark read").click()
    marked = page.locator(f'#events tbody tr[data-id="{event_id}"] td:nth-child(6)')
    await expect(marked).to_have_text("read", timeout=SEEN)
    await page.select_option("#events-status", "read")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator(f'#events tbody tr[data-id="{event_id}"]')).to_be_visible(
        timeout=SEEN
    )
    await expect(page.locator("#events tbody tr.unread")).to_have_count(0, timeout=SEEN)
    statuses = await page.locator("#events tbody tr td:nth-child(6)").all_inner_texts()
    assert set(statuses) == {"read"}
    await page.screenshot(path=tmp_path / "events-read.png", full_page=True)


async def test_two_nodes_are_drawn_with_every_label_inside_the_graph(tmp_path: Path) -> None:
    """With two nodes, one above the other, both nodes' three label lines are inside the graph."""
    async with (
        running_gravd(*QUICK) as a,
        running_gravd(*QUICK, "--peer", a.endpoint) as b,
        playwright_api.async_playwright() as pw,
    ):
        await a.wait_peers(1)
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(a.monitor + "/")
            graph = page.locator("#mesh-graph")
            await expect(graph.locator("line.link.open")).to_have_count(1, timeout=SEEN)
            lower = graph.locator(f'g.node[data-uuid="{b.uuid}"]')
            await expect(lower.locator("text.node-leaves")).to_contain_text("pods")
            assert await graph.evaluate(OUTSIDE) == []
            await page.screenshot(path=tmp_path / "mesh-two.png", full_page=True)
        finally:
            await browser.close()


async def test_the_page_says_when_gravd_stops_answering_and_when_its_tail_is_cut(
    tmp_path: Path,
) -> None:
    """A gravd that stops answering (SIGSTOP: its sockets stay open, nothing comes back) is
    reported in the header and the picture is greyed, instead of the last "updated" time
    staying as if all were well; once it answers again the page recovers. When gravd is then
    killed, the live tail says its stream was interrupted instead of going quiet."""
    async with running_gravd(*QUICK) as node, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(node.monitor + "/")
            status, body = page.locator("#status"), page.locator("body")
            await expect(status).to_contain_text("updated", timeout=SEEN)
            await page.get_by_role("button", name="Live tail", exact=True).click()
            await page.locator("#tail-start").click()
            await expect(page.locator("#tail-info")).to_contain_text("skipped", timeout=SEEN)
            node.process.signal(signal.SIGSTOP)
            try:
                await expect(status).to_contain_text("unreachable", timeout=UNANSWERED)
                await expect(body).to_have_class("stale")
            finally:
                node.process.signal(signal.SIGCONT)
            await expect(status).to_contain_text("updated", timeout=UNANSWERED)
            await expect(body).not_to_have_class("stale")
            await expect(page.locator("#tail-error")).to_be_hidden()
            node.process.proc.kill()
            await node.process.wait()
            await expect(page.locator("#tail-error")).to_contain_text("interrupted", timeout=SEEN)
            await page.screenshot(path=tmp_path / "gravd-gone.png", full_page=True)
        finally:
            await browser.close()


async def test_mark_read_says_so_under_the_filters_when_gravd_is_gone(tmp_path: Path) -> None:
    """ "Mark read" on a gravd that is gone says it could not, where the click was, and raises
    nothing unhandled in the page."""
    async with (
        running_gravd(*QUICK) as a,
        running_gravd(*QUICK, "--peer", a.endpoint),
        playwright_api.async_playwright() as pw,
    ):
        await a.wait_peers(1)
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(a.monitor + "/")
            await _view(page, "Events", tmp_path)
            mark = page.locator("#events tbody tr").first.get_by_role("button", name="Mark read")
            await expect(mark).to_be_visible(timeout=SEEN)
            a.process.proc.kill()
            await a.process.wait()
            await mark.click()
            message = page.locator("#events-message")
            await expect(message).to_contain_text("Could not mark the event read", timeout=SEEN)
            await expect(message).to_contain_text("gravd unreachable")
            assert errors == []
        finally:
            await browser.close()
