"""Copies the result tables into the documentation.

Every table between `<!-- results:NAME -->` and `<!-- /results:NAME -->`
in README.md, tflite/README.md and every docs/*.md page is replaced by
`bench/results/NAME.md` (or, for a comparison or protocol folder,
`results/NAME/results.md`), so the pages show what the scripts last
measured. A `# ` heading of an inserted file becomes `#### `, so that a
table never adds a title to the page it lands in. `headline`, the
README's table, is computed from `results/accuracy/results.json`
(`headline_table`):

    python bench/readme.py
"""

import json
import re
from pathlib import Path

from absl import app

import report

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "bench" / "results", ROOT / "results")
ACCURACY = ROOT / "results" / "accuracy" / "results.json"
_BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w./-]+) -->\n).*?(<!-- /results:(?P=name) -->)",
    re.S,
)
_TITLE = re.compile(r"^# ", re.M)

# The README's headline: the model card's backbone at the size people train
# at, these sets and methods, and the frozen backbone's inference peak as
# the memory floor.
HEADLINE_BACKBONE = "MobileNetV3Small"
HEADLINE_IMAGE_SIZE = 128
HEADLINE_SETS = ("cifar10", "sign_digits", "fashion_mnist", "flowers")
HEADLINE_METHODS = ("repnet", "ft-last", "tinytl", "mobiletl", "ft-full")
HEADLINE_FLOOR = "inference"


def pages():
    """The files this script fills, relative to the repository root."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    return ["README.md", "tflite/README.md", *docs]


def headline_table(results):
    """The README's table from the accuracy protocol's `results.json`:
    test accuracy of each headline method on each set, and its measured
    training memory. A missing row or value is `-`."""
    rows = {
        (r["set"], r["method"]): r
        for r in results["summary"]
        if r["backbone"] == HEADLINE_BACKBONE
        and r["image_size"] == HEADLINE_IMAGE_SIZE
    }
    memory = results.get("memory_mb", {})
    header = ["method", *HEADLINE_SETS, "training memory MB"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method in HEADLINE_METHODS:
        tests = [report.cell((rows.get((s, method)) or {}).get("test")) for s in HEADLINE_SETS]
        mb = next(
            (r["memory_mb"] for r in rows.values()
             if r["method"] == method and r.get("memory_mb") is not None),
            "-",
        )
        lines.append("| " + " | ".join([method, *tests, str(mb)]) + " |")
    floor = memory.get(f"{HEADLINE_BACKBONE}/{HEADLINE_FLOOR}", "-")
    blanks = [""] * len(HEADLINE_SETS)
    lines.append(
        "| " + " | ".join(["inference only (floor)", *blanks, str(floor)]) + " |"
    )
    return "\n".join(lines) + "\n"


# Tables computed rather than copied: name -> () -> markdown.
GENERATED = {"headline": lambda: headline_table(json.loads(ACCURACY.read_text()))}


def table(name):
    """The markdown that goes between the markers of `name`."""
    if name in GENERATED:
        return GENERATED[name]()
    for folder in SOURCES:
        for path in (folder / f"{name}.md", folder / name / "results.md"):
            if path.exists():
                return _TITLE.sub("#### ", path.read_text().strip() + "\n")
    raise FileNotFoundError(
        f"No results for `{name}` in {[str(s) for s in SOURCES]}: run its "
        "benchmark first."
    )


def render(text):
    """`text` with every results block refilled."""
    return _BLOCK.sub(lambda m: m.group(1) + table(m.group("name")) + m.group(3), text)


def main(argv):
    del argv
    for name in pages():
        page = ROOT / name
        text = page.read_text()
        page.write_text(render(text))
        print(f"{name}: {len(_BLOCK.findall(text))} tables refreshed.")


if __name__ == "__main__":
    app.run(main)
