"""The documentation holds together: its links resolve, the README stays a
front door, and `bench/readme.py` has already filled every results table.

No network: only files of this repository are read.
"""

import importlib.util
import sys
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "tflite/README.md"] + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")
)
README_MAX_LINES = 320

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the target up to a space or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`]*`")


def _readme_module():
    # bench/ scripts import their neighbours (`report`, `protocol`) by name.
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "bench_readme", ROOT / "bench" / "readme.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose_lines(text):
    """The lines of `text` outside fenced code blocks, with their numbers."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, line


def code_blocks(text):
    """The contents of the fenced code blocks of `text`."""
    blocks, current = [], None
    for line in text.splitlines():
        if _FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def slug(heading):
    """GitHub's anchor of a heading: lowercase; characters other than
    letters, digits, spaces, hyphens and underscores dropped; spaces to
    hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a markdown file; a repeated slug gets `-1`,
    `-2`, ... as on GitHub."""
    seen = {}
    result = set()
    for _, line in prose_lines(path.read_text()):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(page):
    """`(line number, target)` of every relative link of `page`."""
    for number, line in prose_lines((ROOT / page).read_text()):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                continue
            yield number, target


def test_slug_follows_github():
    assert slug("Why \"up\" connectors by default") == "why-up-connectors-by-default"
    assert (
        slug("Rep-Net + a learned binary mask (`repnet-mask`)")
        == "rep-net--a-learned-binary-mask-repnet-mask"
    )
    assert slug("The A/B step-time run") == "the-ab-step-time-run"
    assert slug("snake_case and 3 digits") == "snake_case-and-3-digits"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    source = ROOT / page
    broken = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        if not resolved.exists():
            broken.append(f"{page}:{number}: {target} (no file {path})")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(
                f"{page}:{number}: {target} (no heading #{anchor} in "
                f"{resolved.relative_to(ROOT)})"
            )
    assert not broken, "Broken links:\n" + "\n".join(broken)


def test_links_are_found():
    # The link parser sees the README's links (a guard against a regex
    # that matches nothing, which would make the test above vacuous).
    targets = [target for _, target in links("README.md")]
    assert "docs/results.md" in targets
    assert any("#" in target for target in targets)


@pytest.mark.parametrize("page", PAGES)
def test_one_title_per_page(page):
    # Inserted result files must not bring their own `# ` titles.
    titles = [
        line for _, line in prose_lines((ROOT / page).read_text())
        if re.match(r"^# ", line)
    ]
    assert len(titles) == 1, titles


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    commands = [
        line.split("#")[0].strip()
        for block in code_blocks(text)
        for line in block.splitlines()
    ]
    assert "make train" in commands
    assert "make test" in commands


@pytest.mark.parametrize("page", PAGES)
def test_results_tables_are_current(page):
    # `python bench/readme.py` would leave the page as it is: every table
    # between results markers is what its result file holds now.
    readme = _readme_module()
    text = (ROOT / page).read_text()
    assert readme.render(text) == text, (
        f"{page} is out of date with its result files: run "
        "`python bench/readme.py`."
    )


def test_readme_py_fills_every_page():
    readme = _readme_module()
    assert set(readme.pages()) == set(PAGES)


def _results_md_cells(backbone, image_size):
    """`{(set, method): test cell}` of `backbone` at `image_size` px in the
    accuracy protocol's results.md (the first table)."""
    lines = (ROOT / "results" / "accuracy" / "results.md").read_text().splitlines()
    header = None
    cells = {}
    for line in lines:
        if not line.startswith("|"):
            if header:
                break
            continue
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = row
            continue
        if set(line) <= set("|-"):
            continue
        record = dict(zip(header, row))
        if record["backbone"] == backbone and record["px"] == str(image_size):
            # "ft-full (bn0.9)": the method's row, run as its best variant.
            method = record["method"].split(" (")[0]
            cells[record["set"], method] = record["test"]
    return cells


def test_headline_agrees_with_the_protocol_report():
    # The headline is computed from results.json; its cells must read as
    # the protocol's own results.md writes them (same rounding).
    readme = _readme_module()
    table = readme.table("headline").splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    reported = _results_md_cells(readme.HEADLINE_BACKBONE, readme.HEADLINE_IMAGE_SIZE)
    assert reported, "the headline's backbone and size are not in results.md"
    for line in table[2:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        if row["method"] not in readme.HEADLINE_METHODS:
            continue
        for set_name in readme.HEADLINE_SETS:
            assert row[set_name] == reported.get((set_name, row["method"]), "-")


def test_headline_prints_a_dash_for_missing_rows():
    readme = _readme_module()
    table = readme.headline_table({"summary": [], "memory_mb": {}})
    rows = table.splitlines()[2:]
    assert len(rows) == len(readme.HEADLINE_METHODS) + 1
    for line in rows[:-1]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:] == ["-"] * (len(readme.HEADLINE_SETS) + 1)


def test_inserted_titles_are_demoted(tmp_path, monkeypatch):
    readme = _readme_module()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "results.md").write_text("# A title\n\n| a |\n|---|\n| 1 |\n")
    monkeypatch.setattr(readme, "SOURCES", (tmp_path,))
    text = "x\n<!-- results:demo -->\nold\n<!-- /results:demo -->\n"
    rendered = readme.render(text)
    assert "#### A title\n" in rendered
    assert "\n# A title" not in rendered
    assert readme.render(rendered) == rendered


def test_resolution_plot_draws_a_point_per_size_of_each_backbone(monkeypatch):
    # A backbone measured at one size so far still gets its markers; the
    # methods and backbones asked for are the only ones drawn.
    _readme_module()
    import plots

    drawn = {}
    monkeypatch.setattr(
        plots.plotting, "save", lambda figure, path: drawn.update(figure=figure)
    )

    def row(backbone, method, size, accuracy):
        return {"set": "cifar10", "backbone": backbone, "method": method,
                "image_size": size, "test": (accuracy, 0.0, 1)}

    rows = [
        row("MobileNetV2", "repnet", 64, 0.7),
        row("MobileNetV2", "repnet", 128, 0.8),
        row("MobileNetV3Small", "repnet", 128, 0.75),
        row("MobileNetV2-0.35", "repnet", 64, 0.6),
        row("MobileNetV2", "repnet-down", 64, 0.5),
    ]
    plots.lines_against_size(
        rows, "unused.png", methods=["repnet"],
        backbones=["MobileNetV2", "MobileNetV3Small"],
    )
    (axis,) = drawn["figure"].axes
    lines = {line.get_label(): line.get_xydata().tolist() for line in axis.lines}
    assert lines == {
        "repnet (MobileNetV2)": [[64, 0.7], [128, 0.8]],
        "repnet (MobileNetV3Small)": [[128, 0.75]],
    }
