"""Copies benchmark tables into README.md and tflite/README.md.

Every table in those files between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` is replaced by `bench/results/NAME.md` (or, for a
comparison run, `results/NAME/results.md`), so the README shows what the
scripts last measured:

    python bench/readme.py
"""

import re
from pathlib import Path

from absl import app

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "bench" / "results", ROOT / "results")
_BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w./-]+) -->\n).*?(<!-- /results:(?P=name) -->)",
    re.S,
)


def _table(name):
    for folder in SOURCES:
        for path in (folder / f"{name}.md", folder / name / "results.md"):
            if path.exists():
                return path.read_text().strip() + "\n"
    raise FileNotFoundError(
        f"No results for `{name}` in {[str(s) for s in SOURCES]}: run its "
        "benchmark first."
    )


READMES = ("README.md", "tflite/README.md")


def main(argv):
    del argv
    for name in READMES:
        readme = ROOT / name
        text = readme.read_text()
        updated = _BLOCK.sub(
            lambda m: m.group(1) + _table(m.group("name")) + m.group(3), text
        )
        readme.write_text(updated)
        print(f"{name}: {len(_BLOCK.findall(text))} tables refreshed.")


if __name__ == "__main__":
    app.run(main)
