"""The accuracy protocol: Rep-Net against the baselines, on test splits.

    python bench/accuracy.py [--stages=core,baselines,...] [--sets=cifar10,...]
        [--backbones=MobileNetV3Small,...] [--image_sizes=128,...]
        [--methods=tinytl,...] [--variants=bn0.9,...]
        [--output_dir=results/accuracy] [--report_only]

Runs the protocol of `protocol.py` (its `PLAN`: which stages run at which
backbone and image size) in its stage order, most informative first, each
run through `runs.py`, and after every run that trains rewrites the report
of `report.py` (`results.md`, `results.json`, `accuracy_vs_memory.png`,
`accuracy_vs_resolution.png`) and lists the stage's runs again, so a rate
beyond a grid's edge and the picks later runs use follow the runs just
finished. Finished runs are skipped and an interrupted one resumes from its
last epoch, so the protocol can be stopped and started again; with every
run finished it only rewrites the report. The flags filter the plan.

Stages: `core` (the grids of repnet and ft-last, and one rate beyond
where a grid picked its edge), `baselines` (tinytl, mobiletl, bn-only),
`ft-full` (full fine-tuning's variants; with Keras' own batch norms too
at MobileNetV2 64 px), `seeds` (seeds 1 and 2 of repnet, ft-last,
ft-full and tinytl at their picked rates), `long` (3x the epochs),
`fewshot` (10 and 50 images per class), `batch8` (batch 8, as on a
phone), `ablations` (Rep-Net's connector modes), `mask` and
`mask-options` (`repnet-mask`), `memory` (measured step peaks at 224 px,
batch 8).
"""

from absl import app
from absl import flags
import grids
import protocol
import report
import runs
import stages

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "results/accuracy", "Where runs and the report go."
)
_STAGES = flags.DEFINE_list(
    "stages", list(protocol.STAGES), "Stages to run, in this order."
)
_SETS = flags.DEFINE_list(
    "sets", None, "Datasets to run (default: all of `protocol.SETS`)."
)
_BACKBONES = flags.DEFINE_list(
    "backbones", None, "Backbones to run (default: all of the plan's)."
)
_IMAGE_SIZES = flags.DEFINE_list(
    "image_sizes", None, "Image sizes to run (default: all of the plan's)."
)
_METHODS = flags.DEFINE_list(
    "methods", None, "Methods to run (default: every method of a stage)."
)
_VARIANTS = flags.DEFINE_list(
    "variants",
    None,
    "Tagged runs to run in the `ft-full` stage (variants of its methods, "
    "tags of `grids.VARIANTS`, e.g. bn0.9; without it also the methods' "
    "own grids) and in the `repnet-options` stage (tags of "
    "`grids.REPNET_OPTIONS`); default: all.",
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only rewrite the report from finished runs."
)


def _check(names, known, what):
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise app.UsageError(f"Unknown {what} {unknown}. Known: {list(known)}.")


def main(argv):
    del argv
    sets = _SETS.value or list(protocol.SETS)
    _check(sets, protocol.SETS, "sets")
    _check(_STAGES.value, protocol.STAGES, "stages")
    _check(_BACKBONES.value or (), protocol.BACKBONES, "backbones")
    _check(_METHODS.value or (), protocol.METHODS, "methods")
    sizes = [int(size) for size in _IMAGE_SIZES.value or ()]
    variants = _VARIANTS.value
    _check(
        variants or (),
        sorted(
            {tag for grid in grids.VARIANTS.values() for tag in grid}
            | set(grids.REPNET_OPTIONS)
        ),
        "variants",
    )
    output_dir = _OUTPUT_DIR.value
    results = report.write(output_dir, list(protocol.SETS))
    if _REPORT_ONLY.value:
        return
    points = stages.points(_BACKBONES.value, sizes)
    for stage in _STAGES.value:
        if stage == "memory":
            runs.measure_memory(output_dir, sorted({b for b, _ in points}))
            results = report.write(output_dir, list(protocol.SETS))
            continue
        for point in points:
            results = runs.run_stage(
                stage, point, sets, output_dir, results, variants, _METHODS.value
            )


if __name__ == "__main__":
    app.run(main)
