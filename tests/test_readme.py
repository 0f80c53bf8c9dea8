"""The README as a newcomer meets it: its tour runs as written, its links resolve, its Layout is the tree.

The tour is the ``sh`` block after the ``<!-- tour: ... -->`` marker. Its lines run in order, through
the installed ``chamlab``, in a fresh copy of the repository's tracked files (what a clone holds; only
local-cpu's measurement policy is made fast, as in every test's devices): each
must exit 0, and a ``# ... -> PATH`` comment is a promise that the line made PATH. Every relative link
in README.md and docs/*.md must name an existing file and, with ``#anchor``, a heading of it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BIN = Path(sys.executable).parent
TOUR_MARKER = "<!-- tour:"
PACKAGES = ("core", "agent", "operators", "chamnet", "host")


def tour_lines(text: str) -> list[str]:
    """The command lines of the first ``sh`` block after the tour marker (blank and comment lines dropped)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TOUR_MARKER)), None)
    assert start is not None, f"README.md has no {TOUR_MARKER!r} marker"
    opening = lines[start + 1]
    assert opening == "```sh", f"the tour marker must be followed by a ```sh block, found {opening!r}"
    end = lines.index("```", start + 2)
    return [line for line in lines[start + 2 : end] if line.strip() and not line.lstrip().startswith("#")]


def promised_paths(line: str) -> list[str]:
    """``# ... -> luts/x.parquet`` in a tour line's comment: the paths it promises to make."""
    _, _, comment = line.partition("#")
    return re.findall(r"->\s*(\S+)", comment)


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout
    return [name for name in out.split("\0") if name and (REPO / name).is_file()]


def test_tour_block_shows_the_main_commands() -> None:
    lines = tour_lines(README.read_text())
    commands = set()
    for line in lines:
        argv = shlex.split(line, comments=True)
        assert argv[0] == "chamlab", f"a tour line that is not a chamlab command: {line!r}"
        commands.add(" ".join(argv[1:3]) if argv[1] in ("lut", "farm") else argv[1])
    main = {"devices", "spaces", "profile", "predict", "measure", "calibrate", "farm run", "search", "adapt"}
    assert main <= commands, f"the tour lacks {sorted(main - commands)}"
    assert {"lut merge", "lut validate", "lut show", "lut diff"} <= commands


FAST_POLICY = """[devices.local-cpu.measure]
num_executions = 5
min_time_ms = 10
warmup_runs = 1
retries = 0
"""


def fast_measurement_policy(devices: Path) -> None:
    """Swap the copy's ``[devices.local-cpu.measure]`` table for a fast policy (few executions, no
    re-measure), as the other tests' devices do: every tour line still runs as written, measuring for
    real, only not 30 times 300 ms per op."""
    text = devices.read_text()
    section = re.search(r"^\[devices\.local-cpu\.measure\][^\n]*\n(?:(?!\[)[^\n]*\n)*", text, flags=re.M)
    assert section is not None, f"{devices} has no [devices.local-cpu.measure] table"
    devices.write_text(text[: section.start()] + FAST_POLICY + "\n" + text[section.end() :])


def test_fast_policy_replaces_only_the_measure_table(tmp_path: Path) -> None:
    devices = tmp_path / "devices.toml"
    shutil.copy2(REPO / "devices.toml", devices)
    fast_measurement_policy(devices)
    shipped = tomllib.loads((REPO / "devices.toml").read_text())["devices"]
    fast = tomllib.loads(devices.read_text())["devices"]
    assert fast["local-cpu"]["measure"] == tomllib.loads(FAST_POLICY)["devices"]["local-cpu"]["measure"]
    assert {k: v for k, v in fast["local-cpu"].items() if k != "measure"} == {
        k: v for k, v in shipped["local-cpu"].items() if k != "measure"
    }
    assert {k: v for k, v in fast.items() if k != "local-cpu"} == {
        k: v for k, v in shipped.items() if k != "local-cpu"
    }


@pytest.mark.serial  # its calibrate measures latency spread: beside another worker p40 left no budget
def test_tour_runs_as_written_in_a_fresh_copy(tmp_path: Path) -> None:
    clone = tmp_path / "chamlab"
    for name in tracked_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    fast_measurement_policy(clone / "devices.toml")
    exe = shutil.which("chamlab", path=str(BIN))
    assert exe is not None, f"no installed chamlab in {BIN}"
    done: list[str] = []
    for line in tour_lines(README.read_text()):
        argv = shlex.split(line, comments=True)
        proc = subprocess.run(
            [exe, *argv[1:]], cwd=clone, capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, (
            f"README tour line {len(done) + 1} exited {proc.returncode}: {line}\n"
            f"after: {done}\nstderr (end): {proc.stderr[-2000:]}"
        )
        for path in promised_paths(line):
            assert (clone / path).exists(), f"{line!r} promises {path}, which it did not make"
        done.append(argv[1])


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        anchors.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return anchors


def broken_links(paths: list[Path], root: Path = REPO) -> list[str]:
    """``page: target (why)`` for every relative link of ``paths`` that names no file or no heading."""
    broken = []
    for doc in paths:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # links in code blocks are not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(root)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(root)}: {target} (no such heading)")
    return broken


def test_every_doc_link_resolves() -> None:
    assert broken_links([README, *sorted((REPO / "docs").glob("*.md"))]) == []


def test_readme_points_to_every_doc() -> None:
    text = README.read_text()
    unlisted = [doc.name for doc in sorted((REPO / "docs").glob("*.md")) if f"](docs/{doc.name})" not in text]
    assert unlisted == [], f"README.md links no page of {unlisted}"


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [ok](other.md#a-code-heading-with-punctuation) [gone](nowhere.md) "
        "[bad](#nope) [bad](other.md#title) [web](https://example.org/x.md)\n"
        "```sh\necho [not a link](nowhere-either.md)\n```\n"
    )
    assert broken_links([page], tmp_path) == [
        "page.md: nowhere.md (no such file)",
        "page.md: #nope (no such heading)",
        "page.md: other.md#title (no such heading)",
    ]


def _layout_block() -> str:
    text = README.read_text()
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_layout_names_every_folder() -> None:
    """Every top-level folder a clone holds, and every folder of the five packages, has its line."""
    named = {line.split()[0] for line in _layout_block().splitlines() if line and not line[0].isspace()}
    files = [name for name in tracked_files() if not name.startswith(".")]
    top = {name.split("/")[0] + "/" for name in files if "/" in name}
    sub = {
        "/".join(name.split("/")[:2]) + "/"
        for name in files
        if name.split("/")[0] in PACKAGES and name.count("/") >= 2
    }
    # a package with subfolders is described by them (host/ by host/devices/, ...), and host/api.py
    expected = {t for t in top if not any(s.startswith(t) for s in sub)} | sub | {"host/api.py"}
    assert expected - named == set(), f"the README's Layout does not describe {sorted(expected - named)}"
    assert named - expected == set(), (
        f"the README's Layout names what is not there: {sorted(named - expected)}"
    )
