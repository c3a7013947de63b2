"""The accuracy protocol's report: summaries, tables and plots.

`write(output_dir, sets)` reads every finished run and rewrites
`results.json`, `results.md` (the tables `bench/readme.py` copies into the
docs), `accuracy_vs_memory.png` and `accuracy_vs_resolution.png`.
"""

import collections
import json
import math
import statistics
from pathlib import Path

import grids
import protocol
import stages
import targets

# Methods in the order the tables list them.
TABLE_METHODS = (
    "repnet", "ft-last", "ft-full", "bn-only", "tinytl", "mobiletl",
    *protocol.ABLATIONS,
)


def mean_std(values):
    if not values:
        return None
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, len(values)


def _same(result, set_name, backbone, method, size):
    return (
        (result["set"], result["backbone"], result["method"], result["shots"])
        == (set_name, backbone, method, None)
        and protocol.image_size_of(result) == size
    )


def summarize(results, sets, measured):
    """One row per (set, backbone, image size, method): the runs at the
    rates picked on validation, every seed, and the measured step peak of
    the method's model there (`measured`: `memory.json`)."""
    chosen = protocol.protocol_runs(results)
    rows = []
    for backbone, size in protocol.PLAN:
        for set_name in sets:
            for method in TABLE_METHODS:
                best = protocol.best_run(chosen, set_name, backbone, method, size)
                candidates = [
                    r for r in chosen if _same(r, set_name, backbone, method, size)
                ]
                if best is None and not candidates:
                    continue
                groups = collections.defaultdict(list)
                for r in candidates:
                    groups[tuple(r["learning_rates"]), r.get("tag")].append(r)
                # Until the grid has finished: the rates most seeds ran.
                rates, tag = (
                    (tuple(best["learning_rates"]), best.get("tag")) if best
                    else max(groups, key=lambda key: len(groups[key]))
                )
                runs = groups[rates, tag]
                rows.append(
                    {
                        "set": set_name,
                        "backbone": backbone,
                        "image_size": size,
                        "method": method,
                        "variant": tag,
                        "learning_rates": list(rates),
                        "test": mean_std([r["test_accuracy"] for r in runs]),
                        "train": mean_std(
                            [r["final_train_accuracy"] for r in runs]
                        ),
                        "validation": mean_std(
                            [protocol.final_validation(r) for r in runs]
                        ),
                        "trainable_params": runs[0]["trainable_params"],
                        "memory_mb": measured.get(
                            protocol.run_memory_key(backbone, size, method)
                        ),
                    }
                )
    return rows


def variant_rows(results, sets):
    """Every variant of the methods whose batch norms train (`VARIANTS`,
    the method's own recipe as "recipe"), at its rates picked on
    validation, seed 0: what the others scored beside the picked one."""
    rows = []
    for backbone, size in protocol.PLAN:
        for set_name in sets:
            for method, variants in grids.VARIANTS.items():
                for tag in (None, *variants):
                    runs = [
                        r for r in protocol.protocol_runs(results)
                        if _same(r, set_name, backbone, method, size)
                        and r.get("tag") == tag and r["seed"] == 0
                    ]
                    if not runs:
                        continue
                    best = max(runs, key=protocol.final_validation)
                    rows.append([
                        set_name, backbone, size, method, tag or "recipe",
                        _rates(best["learning_rates"]),
                        f"{protocol.final_validation(best):.3f}",
                        f"{best['test_accuracy']:.3f}",
                        f"{len(runs)}",
                    ])
    return rows


def option_rows(results, measured):
    """Each `repnet-options` option (mean over its seeds) beside plain
    repnet's picked run at the same point and set (seed 0), with its
    measured step peak."""
    groups = {}
    for r in results:
        if r["method"] == "repnet" and r.get("tag") in grids.REPNET_OPTIONS:
            key = (
                r["backbone"], protocol.image_size_of(r), r["set"], r["tag"],
                tuple(r["learning_rates"]),
            )
            groups.setdefault(key, []).append(r)
    rows = []
    for (backbone, size, set_name, tag, rates), runs in sorted(groups.items()):
        # The rates the options stage runs the option at (the runs of
        # `no-side-top` at other rates were the former defaults' grid).
        staged = stages.option_stage_rates(
            results, set_name, (backbone, size), tag
        )
        if staged is not None and tuple(staged) != rates:
            continue
        plain = protocol.best_run(results, set_name, backbone, "repnet", size)
        build_options, _ = protocol.split_options(runs[0].get("options"))
        rows.append([
            set_name, backbone, size, tag, _rates(rates),
            cell(mean_std([protocol.final_validation(r) for r in runs])),
            cell(mean_std([r["test_accuracy"] for r in runs])),
            "-" if plain is None else f"{protocol.final_validation(plain):.3f}",
            "-" if plain is None else f"{plain['test_accuracy']:.3f}",
            measured.get(
                protocol.run_memory_key(backbone, size, "repnet", build_options),
                "-",
            ),
        ])
    return rows


def few_shot_rows(results):
    return [
        {
            "set": r["set"],
            "method": r["method"],
            "shots": r["shots"],
            "epochs": r["epochs"] or protocol.EPOCHS,
            # Early runs did not record their steps.
            "steps": r.get("steps") or (r["epochs"] or protocol.EPOCHS)
            * math.ceil(r["num_train"] / protocol.BATCH_SIZE),
            "test": r["test_accuracy"],
            "train": r["final_train_accuracy"],
        }
        for r in results
        if r["shots"]
    ]


def mask_rows(results):
    """Each `repnet-mask` run beside repnet's run at the same rates, seed,
    epochs, batch size and image size."""
    same = ("set", "backbone", "seed", "shots", "learning_rates", "epochs",
            "batch_size")
    rows = []
    for r in results:
        if r["method"] != protocol.MASK_METHOD:
            continue
        plain = next(
            (
                p
                for p in results
                if p["method"] == "repnet"
                and not p.get("options")
                and all(p.get(key) == r.get(key) for key in same)
                and protocol.image_size_of(p) == protocol.image_size_of(r)
            ),
            None,
        )
        rows.append(
            {
                "set": r["set"],
                "learning_rates": r["learning_rates"],
                "options": ", ".join(
                    f"{k}={v}" for k, v in (r.get("options") or {}).items()
                ) or "defaults",
                "epochs": r.get("epochs") or protocol.EPOCHS,
                "test": r["test_accuracy"],
                "repnet_test": plain and plain["test_accuracy"],
                **r["mask"],
            }
        )
    return rows


# === Markdown ===


def cell(stat):
    """`(mean, std, count)` as a table cell."""
    if stat is None:
        return "-"
    mean, std, count = stat
    if count == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} +- {std:.3f} ({count})"


def _rates(rates):
    return f"{rates[0]:g}, {rates[1]:g}"


def _table(header, lines):
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(c) for c in cells) + " |" for cells in lines),
    ]


def _summary_table(rows):
    return _table(
        ["set", "backbone", "px", "method", "test", "final train",
         "lr (side, head)", "trainable params", "memory MB"],
        [
            [
                r["set"], r["backbone"], r["image_size"],
                r["method"] + (f" ({r['variant']})" if r.get("variant") else ""),
                cell(r["test"]), cell(r["train"]), _rates(r["learning_rates"]),
                f"{r['trainable_params']:,}",
                "-" if r["memory_mb"] is None else r["memory_mb"],
            ]
            for r in rows
        ],
    )


def _runs_table(runs, extra):
    return _table(
        ["set", "backbone", "px", "method", *extra, "lr (side, head)", "test",
         "final train"],
        [
            [
                r["set"], r["backbone"], protocol.image_size_of(r),
                r["method"], *(r[c] for c in extra),
                _rates(r["learning_rates"]), f"{r['test_accuracy']:.3f}",
                f"{r['final_train_accuracy']:.3f}",
            ]
            for r in sorted(runs, key=lambda r: (
                r["set"], r["backbone"], protocol.image_size_of(r),
                r["method"], r["learning_rates"],
            ))
        ],
    )


def _section(title, header, lines):
    """A titled table, or nothing without rows."""
    return ["", title, "", *_table(header, lines)] if lines else []


def markdown(results, rows, measured):
    """The report's tables, one section each."""
    lines = [
        f"Test accuracy after {protocol.EPOCHS} epochs, batch "
        f"{protocol.BATCH_SIZE}, at most {protocol.TRAIN_EXAMPLES} training "
        "images per set; mean +- std (number of seeds). Learning rates (side, "
        "head) picked on validation. Memory: measured step peak at 224 px, "
        "batch 8 (MB).",
        "",
        *_summary_table(rows),
    ]
    lines += _section(
        "Issue 23's targets on the far-domain sets (test accuracy, mean over "
        "the seeds run; margins in accuracy): Rep-Net >= ft-last + 0.05, >= "
        "TinyTL, >= MobileTL, within 0.02 of the best full fine-tuning; its "
        "measured step peak (224 px, batch 8) within 1.3x the inference "
        "floor (or no higher than TinyTL's), and <= 0.25x full "
        "fine-tuning's:",
        ["set", "backbone", "px", "rep-net", "test", ">= ft-last + 0.05",
         ">= tinytl", ">= mobiletl", ">= ft-full - 0.02", "memory vs floor",
         "memory vs ft-full"],
        targets.target_rows(rows, measured, results),
    )
    lines += _section(
        "The variants of the methods that train batch norms (seed 0, each at "
        "its best rates of the grid, picked on validation; the table above "
        "keeps the best variant):",
        ["set", "backbone", "px", "method", "variant", "lr (side, head)",
         "validation", "test", "runs"],
        variant_rows(results, sorted({r["set"] for r in rows})),
    )
    lines += _section(
        "Rep-Net's options on a small backbone (the `repnet-options` stage, "
        "seed 0, or mean +- std (seeds) where more seeds ran), beside "
        "repnet's picked run (seed 0); memory: the option's measured "
        "step peak at 224 px, batch 8 (MB; repnet's is in the first table):",
        ["set", "backbone", "px", "option", "lr (side, head)", "validation",
         "test", "repnet validation", "repnet test", "memory MB"],
        option_rows(results, measured),
    )
    longer = [
        r for r in results
        if r.get("epochs") and not r["shots"]
        and r["method"] != protocol.MASK_METHOD
    ]
    if longer:
        lines += [
            "",
            f"{protocol.LONG_EPOCHS_FACTOR}x the epochs, seed 0 (the `long` "
            "stage at the picked rates):",
            "",
            *_runs_table(longer, ("epochs",)),
        ]
    small_batch = [r for r in results if r.get("batch_size")]
    if small_batch:
        lines += [
            "",
            f"Batch {protocol.SMALL_BATCH} (as on a phone), seed 0, same "
            "epochs (4x the steps):",
            "",
            *_runs_table(small_batch, ()),
        ]
    masked = mask_rows(results)

    def mask_memory(method):
        return measured.get(
            protocol.run_memory_key("MobileNetV2", protocol.BASE_IMAGE_SIZE, method),
            "-",
        )

    if masked:
        lines += [
            "",
            "Rep-Net + a learned binary mask per backbone kernel "
            f"(`{protocol.MASK_METHOD}`, the `mask` stages), MobileNetV2, "
            "seed 0, against `repnet` at the same rates and seed. "
            f"Multiply-adds per image at {protocol.MASK_COST_SIZE} px with the "
            "learned masks. Training memory (measured step peak, 224 px batch "
            f"8): {protocol.MASK_METHOD} "
            f"{mask_memory(protocol.MASK_METHOD)} MB, "
            f"repnet {mask_memory('repnet')} MB.",
            "",
            *_table(
                ["set", "lr (side, head)", "options", "epochs", "test",
                 "repnet test", "sparsity", "M multiply-adds (dense -> masked)"],
                [
                    [
                        r["set"], _rates(r["learning_rates"]), r["options"],
                        r["epochs"], f"{r['test']:.3f}",
                        "-" if r["repnet_test"] is None
                        else f"{r['repnet_test']:.3f}",
                        f"{r['sparsity']:.1%}",
                        f"{r['multiply_adds'] / 1e6:.1f} -> "
                        f"{r['masked_multiply_adds'] / 1e6:.1f}",
                    ]
                    for r in sorted(
                        masked, key=lambda r: (r["set"], r["epochs"], r["options"])
                    )
                ],
            ),
        ]
    few_shot = few_shot_rows(results)
    if few_shot:
        lines += [
            "",
            "Few-shot (labelled images per class), MobileNetV2, seed 0, at the "
            "protocol's epochs and at the optimizer steps of a run on the "
            "whole set:",
            "",
            *_table(
                ["set", "shots", "method", "epochs", "steps", "test",
                 "final train"],
                [
                    [r["set"], r["shots"], r["method"], r["epochs"], r["steps"],
                     f"{r['test']:.3f}", f"{r['train']:.3f}"]
                    for r in sorted(
                        few_shot,
                        key=lambda r: (r["set"], r["shots"], r["steps"], r["method"]),
                    )
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def write(output_dir, sets):
    """Rewrites the report from the finished runs; returns them."""
    output_dir = Path(output_dir)
    results = [
        json.loads(p.read_text())
        for p in sorted((output_dir / "runs").glob("*/result.json"))
    ]
    memory_path = output_dir / "memory.json"
    measured = json.loads(memory_path.read_text()) if memory_path.exists() else {}
    rows = summarize(results, sets, measured)
    from runs import write_json

    write_json(
        {
            "summary": rows,
            "few_shot": few_shot_rows(results),
            "mask": mask_rows(results),
            "memory_mb": measured,
            "runs": results,
        },
        output_dir / "results.json",
    )
    (output_dir / "results.md").write_text(markdown(results, rows, measured))
    import plots

    if rows and measured:
        plots.accuracy_against_memory(rows, output_dir / "accuracy_vs_memory.png")
    if len({r["image_size"] for r in rows}) > 1:
        sizes_of = collections.Counter(backbone for backbone, _ in protocol.PLAN)
        plots.lines_against_size(
            rows, output_dir / "accuracy_vs_resolution.png",
            methods=[
                m for stage in protocol.GRID_STAGES.values() for m in stage
                if m not in protocol.COSTLY_BASELINES
            ],
            backbones=[b for b, count in sizes_of.items() if count > 1],
        )
    return results
