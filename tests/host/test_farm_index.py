"""``chamlab farm run --night`` and the farm's ``index.html`` across nights (docs/farm.md).

The runs use stand-in devices (tests/host/farm_devices.py: everything real but the measurement, whose
samples are each device's own value), so drift is deterministic; the index is parsed with the
standard library's HTML parser, and every link it holds is resolved on disk (fragments included).
"""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import chamlab
from farm_devices import ARCH, stand_in_farm

from chamlab.core.errors import InputError
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.workflows.farm import check_night, run_farm
from chamlab.host.workflows.farm_index import build_index, write_index

NOW = dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC)
HOSTILE = "<script>alert('x')</script> & \"co\""


class Page(HTMLParser):
    """Tags with their attributes, in order, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def with_class(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and cls in a.get("class", "").split()]


def _check_links(out: Path, page: Page) -> list[str]:
    """Every href of the page resolves: a file under ``out`` and, with a fragment, an element of that
    id in it (or in the page itself for ``#...``). Returns the hrefs."""
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    ids = {a["id"] for _, a in page.tags if "id" in a}
    for href in hrefs:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc, href  # relative: the page is self-contained
        frag = unquote(parts.fragment)
        if not parts.path:
            assert frag in ids, href
            continue
        target = out / unquote(parts.path)
        assert target.is_file(), href
        if frag:
            assert frag in {a.get("id") for _, a in Page(target.read_text()).tags}, href
    return hrefs


def test_night_labels_a_missed_night_and_the_index_follows_the_nights(tmp_path: Path) -> None:
    devices, values = stand_in_farm(tmp_path, ["d1", "d2"], sleep_s=0.01)
    table = '[devices.d1]\ntransport = "local"\n'
    described = table + f'description = "{HOSTILE.replace(chr(34), "")}"\n'
    devices.write_text(devices.read_text().replace(table, described))
    reg, out = parse_devices_file(devices), tmp_path / "farm"
    # a missed night, run two days later
    first = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=NOW, night="2026-11-19")
    assert first.date == "2026-11-19" and first.exit_code == 0
    summary = json.loads((out / "2026-11-19" / "summary.json").read_text())
    assert summary["date"] == "2026-11-19" and summary["started_at"].startswith("2026-11-21")
    assert all("farm-2026-11-19" in e["run_id"] for e in summary["devices"].values())
    assert summary["devices"]["d1"]["reference_latency_ms"]["all-identity"] > 0  # ARCH is all-identity
    # tonight: d1 got 50 % slower
    values["d1"].write_text("1.5\n")
    second = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=NOW)
    assert second.date == "2026-11-21" and second.exit_code == 3
    d1 = second.devices["d1"]["drift"]
    assert d1["drifted"] and d1["previous"].endswith("2026-11-19/d1.parquet")
    assert d1["reference_median_drift_pct"] == pytest.approx(50.0, rel=0.05)  # the network slowed down too
    # a damaged night and a folder without a summary: listed, never a crash of the run that follows
    (out / "2026-11-18").mkdir()
    (out / "2026-11-18" / "summary.json").write_text('{"devices": {"d1": ')
    (out / "2026-11-17").mkdir()
    # the missed night in between, filled in afterwards: diffed against the night before it, and
    # latest stays at the newest night
    third = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=NOW, night="2026-11-20")
    assert third.devices["d1"]["drift"]["previous"].endswith("2026-11-19/d1.parquet")
    assert third.devices["d1"]["drift"]["drifted"] and not third.devices["d2"]["drift"]["drifted"]
    assert (out / "latest").readlink() == Path("2026-11-21") and not third.write_errors

    page = Page((out / "index.html").read_text())
    rows = [a["data-night"] for a in page.having("tr") if "data-night" in a]
    assert rows == ["2026-11-21", "2026-11-20", "2026-11-19", "2026-11-18", "2026-11-17"]  # newest first
    bad = page.with_class("tr", "unreadable")
    assert [a["data-night"] for a in bad] == ["2026-11-18", "2026-11-17"]
    words = " ".join(page.text)
    assert "summary.json unreadable: not JSON" in words and "no summary.json" in words
    hrefs = _check_links(out, page)
    for night in ("2026-11-19", "2026-11-20", "2026-11-21"):
        assert f"{night}/report.html" in hrefs
        for device in ("d1", "d2"):
            assert f"{night}/report.html#device-{device}" in hrefs
    assert "#trend-d1" in hrefs and "#trend-d2" in hrefs
    marked = {(s.get("id"), a["data-night"]) for s, a in _in_sections(page, "g", "drifted")}
    assert marked == {("trend-d1", "2026-11-20"), ("trend-d1", "2026-11-21")}  # d2 never drifted
    ops = {(s.get("id"), a["data-night"]) for s, a in _in_sections(page, "circle", "ops")}
    assert ops == {(f"trend-{d}", n) for d in ("d1", "d2") for n in ("2026-11-20", "2026-11-21")}
    refs = {(s.get("id"), a["data-night"]) for s, a in _in_sections(page, "rect", "refs")}
    assert refs == ops  # the reference networks' predicted latency, the same nights
    first_night = {(s.get("id"), a["data-night"]) for s, a in _in_sections(page, "text", "novalue")}
    assert first_night == {("trend-d1", "2026-11-19"), ("trend-d2", "2026-11-19")}  # no previous run
    raw = (out / "index.html").read_text()
    assert "<script" not in raw and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in raw

    # a re-run of a night replaces its entries: 2026-11-21 is now diffed against 2026-11-20 (same speed)
    fourth = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=NOW, night="2026-11-21")
    assert fourth.devices["d1"]["measured_ops"] == 0  # resumed: its LUT was complete
    assert fourth.devices["d1"]["drift"]["previous"].endswith("2026-11-20/d1.parquet")
    page = Page((out / "index.html").read_text())
    assert [a["data-night"] for a in page.having("tr") if "data-night" in a].count("2026-11-21") == 1
    marked = {(s.get("id"), a["data-night"]) for s, a in _in_sections(page, "g", "drifted")}
    assert marked == {("trend-d1", "2026-11-20")}


def _in_sections(page: Page, tag: str, cls: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(the enclosing device section's attributes, the element's) for each ``tag`` of class ``cls``."""
    found, section = [], {}
    for t, a in page.tags:
        if t == "section":
            section = a
        elif t == tag and cls in a.get("class", "").split():
            found.append((section, a))
    return found


def test_bad_night_is_exit_2_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    today = dt.date(2026, 11, 21)
    assert check_night("2026-11-21", today, 30) == "2026-11-21"
    for night, why in (
        ("2026-13-01", "is not a date: give YYYY-MM-DD"),
        ("21-11-2026", "is not a date"),
        ("2026-11-22", "is after today (2026-11-21, UTC)"),
        ("2026-10-21", "is older than --keep-days 30 keeps (oldest 2026-10-22)"),
    ):
        with pytest.raises(InputError, match=r"--night .*" + why.replace("(", r"\(").replace(")", r"\)")):
            check_night(night, today, 30)
    devices, _ = stand_in_farm(tmp_path, ["n1"])
    out = tmp_path / "farm"
    res = chamlab("farm", "run", "--devices", devices, "--space", "macro-cifar10", "--out", out,
                  "--night", "2026-02-30")  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --night '2026-02-30' is not a date: give YYYY-MM-DD (a UTC night, e.g. "
        f"{dt.datetime.now(dt.UTC).date()})"
    ]
    assert not out.exists()


def test_index_escapes_hostile_names_and_survives_damaged_summaries(tmp_path: Path) -> None:
    """Summaries written by hand (or by anything else): a hostile device name, a non-object entry,
    numbers that are not numbers, a summary that is JSON but not a farm's, an unreadable one."""
    out = tmp_path / "farm"
    evil = '<img src=x onerror="alert(1)">'
    nights = {
        "2026-11-01": {"drift_threshold_pct": 10, "exit_code": 0, "devices": {evil: {"status": "ok",
                       "drift": None, "description": "<b>bold</b>"}}},
        "2026-11-02": {"drift_threshold_pct": 10, "exit_code": 3, "devices": {evil: {"status": "ok",
                       "error": "</td><script>x()</script>", "drift": {"median_drift_pct": 42.0,
                       "reference_median_drift_pct": "NaN", "drifted": True}}, "weird": [1, 2]}},
        "2026-11-03": {"drift_threshold_pct": 10, "exit_code": 1, "devices": {evil: {"status": "failed",
                       "error": "link died", "drift": None}}},
        "2026-11-04": [1, 2, 3],
    }  # fmt: skip
    for night, summary in nights.items():
        (out / night).mkdir(parents=True)
        (out / night / "summary.json").write_text(json.dumps(summary))
    (out / "2026-11-01" / "report.html").write_text(
        f'<h2 id="device-{evil.replace(chr(34), "&quot;")}">x</h2>'
    )
    (out / "2026-11-05").mkdir()
    (out / "2026-11-05" / "summary.json").write_bytes(b"\xff\xfe not text")
    raw = build_index(out)
    page = Page(raw)
    assert not page.having("script") and not page.having("img") and not page.having("b")
    assert "onerror=" not in raw.replace("onerror=&quot;", "")  # only ever as escaped text
    assert evil in " ".join(page.text)  # shown as text, as it is
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in raw
    _check_links(out, page)  # the hostile name's fragment resolves to its (escaped) id
    unreadable = {a["data-night"] for a in page.with_class("tr", "unreadable")}
    assert unreadable == {"2026-11-04", "2026-11-05"}
    words = " ".join(page.text)
    assert 'not a farm summary (no "devices" object)' in words and "not UTF-8 text" in words
    marked = [a["data-night"] for s, a in _in_sections(page, "g", "drifted")]
    assert marked == ["2026-11-02"]
    assert "entry unreadable" in words  # "weird" on 2026-11-02
    # the CLI rebuilds it; a folder that is not there is exit 2
    assert chamlab("farm", "index", "--out", out).returncode == 0
    assert write_index(out) == out / "index.html"
    res = chamlab("farm", "index", "--out", tmp_path / "nowhere")
    assert res.returncode == 2 and "does not exist" in res.stderr
