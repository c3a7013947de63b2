"""Issue 23's targets for the accuracy protocol: Rep-Net against ft-last,
TinyTL, MobileTL and full fine-tuning, and its measured memory.

`report.py` puts `target_rows` in the report's targets table.
"""

import statistics

import grids
import protocol
import stages


def target_rows(rows, measured, results=()):
    """Issue 23's targets per (backbone, size, far set): Rep-Net's test
    accuracy (mean over seeds) against ft-last + 5 points, TinyTL,
    MobileTL and the best full fine-tuning (within 2 points), and its
    measured step peak (224 px, batch 8) against TinyTL's, 1.3x the
    inference floor and 0.25x full fine-tuning's; for Rep-Net's defaults
    and for each option of `grids.SEEDED_OPTIONS` where it ran."""
    table = {
        (r["backbone"], r["image_size"], r["set"], r["method"]): r["test"][0]
        for r in rows if r["test"]
    }
    seeds = {
        (r["backbone"], r["image_size"], r["set"]): r["test"][2]
        for r in rows if r["test"] and r["method"] == "repnet"
    }
    tagged_runs = {}  # (backbone, size, set) -> Rep-Net's tagged runs
    for r in results:
        if r["method"] == "repnet" and r.get("tag"):
            key = (r["backbone"], protocol.image_size_of(r), r["set"])
            tagged_runs.setdefault(key, []).append(r)
    options = {}  # (backbone, size, set) -> [(tag, mean test, build options)]
    for tag in sorted({t for tags in grids.SEEDED_OPTIONS.values() for t in tags}):
        for key, runs in tagged_runs.items():
            picked, name = tag, tag
            if tag in grids.OPTION_GRIDS:
                picked = stages.picked_option(runs, key[2], key[:2], tag)
                name = f"{picked}, picked on validation"
            rates = stages.option_stage_rates(results, key[2], key[:2], picked)
            if rates is None:
                continue
            tagged = [
                r for r in runs
                if r["tag"] == picked
                and tuple(r["learning_rates"]) == tuple(rates)
            ]
            if not tagged:
                continue
            options.setdefault(key, []).append((
                f"{name} ({_seeds(len(tagged))})",
                statistics.mean(r["test_accuracy"] for r in tagged),
                protocol.split_options(tagged[0].get("options"))[0],
            ))
    out = []
    for backbone, size, set_name in sorted({k[:3] for k in table}):
        if not protocol.SETS[set_name][2]:
            continue
        get = lambda m: table.get((backbone, size, set_name, m))  # noqa: E731
        if get("repnet") is None:
            continue
        count = seeds[(backbone, size, set_name)]
        configurations = [(f"defaults ({_seeds(count)})", get("repnet"), None)]
        configurations += options.get((backbone, size, set_name), [])
        for name, repnet, build_options in configurations:
            out.append(_target_row(
                set_name, backbone, size, name, repnet, get,
                lambda m, o=None: measured.get(  # noqa: E731
                    protocol.run_memory_key(backbone, size, m, o)
                ),
                build_options,
            ))
    return out


def _seeds(count):
    return f"{count} seed" + ("s" if count > 1 else "")


def _target_row(set_name, backbone, size, name, repnet, get, memory, options):
    """One row of `target_rows`: `get(method)` is a method's test accuracy,
    `memory(method, build_options)` a measured step peak."""

    def check(condition, margin):
        if condition is None:
            return "-"
        return ("met" if condition else "NOT met") + f" ({margin:+.3f})"

    def above(other, by=0.0):
        value = get(other)
        if value is None:
            return "-"
        return check(repnet >= value + by, repnet - value - by)

    peak, floor = memory("repnet", options), memory("inference")
    memory_ok = "-"
    if peak and floor:
        tinytl = memory("tinytl")
        within = peak <= 1.3 * floor or (tinytl and peak <= tinytl)
        memory_ok = ("met" if within else "NOT met") + (
            f" ({peak / floor:.2f}x floor)"
        )
    full = memory("ft-full")
    return [
        set_name, backbone, size, name, f"{repnet:.3f}",
        above("ft-last", 0.05), above("tinytl"), above("mobiletl"),
        above("ft-full", -0.02), memory_ok,
        "-" if not (peak and full) else
        ("met" if peak <= 0.25 * full else "NOT met") + f" ({peak / full:.2f}x)",
    ]
