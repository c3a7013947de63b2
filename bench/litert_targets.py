"""Issue 24's targets for the LiteRT training step, met or not, and what
the backbone shifts add to a profiled step (what limits them)."""

import statistics

# Issue 24's targets: LiteRT train step / inference at the same batch.
STEP_RATIO_TARGETS = {"MobileNetV2": 2.5, "MobileNetV3Small": 2.0}
# Train-signature peak RSS / an inference-only interpreter of the same file.
RSS_RATIO_TARGET = 1.3
# bench/tflite.py's float file of the same Rep-Net without backbone shifts.
NO_SHIFTS = "float, no shifts"


def target_rows(speeds, batch):
    """Issue 24's targets, met or not, from bench/tflite.py's speed rows of
    one run at `batch` (every ratio taken between figures measured in the
    same rounds). Beside the float rows' step and RSS ratios, the same
    ratios of the file without backbone shifts (`NO_SHIFTS`), where it was
    measured: the step when no gradient crosses the backbone."""
    by_config = {
        (r["backbone"], r["weights"], r["threads"], r["XNNPACK"]): r for r in speeds
    }

    def met_or_not(ok, text):
        return f"{'met' if ok else 'NOT met'} ({text})"

    rows = []
    for (backbone, weights, threads, xnnpack), row in by_config.items():
        if weights in ("float, kernel copies", NO_SHIFTS):
            continue
        train = row[f"train ms (batch {batch})"]
        step, rss = _ratios(row, batch)
        step_target = STEP_RATIO_TARGETS.get(backbone)
        no_shifts = by_config.get((backbone, NO_SHIFTS, threads, xnnpack))
        if weights != "float" or no_shifts is None:
            without_shifts = {}
        else:
            without_shifts = dict(zip(("step", "rss"), _ratios(no_shifts, batch)))
        # The step and RSS targets are XNNPACK's; without it, the ratios.
        verdict = met_or_not if xnnpack == "yes" else lambda ok, text: text
        float_rss = by_config[backbone, "float", threads, xnnpack]["peak RSS MiB"]
        copies = by_config.get((backbone, "float, kernel copies", threads, xnnpack))
        rows.append(
            {
                "backbone": backbone,
                "weights": weights,
                "threads": threads,
                "XNNPACK": xnnpack,
                "train / infer": verdict(
                    step_target is None or step <= step_target,
                    f"{step:.2f}x, target {step_target}x",
                ),
                "without shifts: train / infer": _times(without_shifts.get("step")),
                "train RSS / infer-only RSS": verdict(
                    rss <= RSS_RATIO_TARGET,
                    f"{rss:.2f}x, target {RSS_RATIO_TARGET}x",
                ),
                "without shifts: RSS ratio": _times(without_shifts.get("rss")),
                "int8 RSS < float RSS": "-" if weights == "float" else verdict(
                    row["peak RSS MiB"] < float_rss,
                    f"{row['peak RSS MiB']} against {float_rss} MiB",
                ),
                "shared weights no slower than kernel copies": "-"
                if xnnpack == "yes" or weights != "float" or copies is None
                else met_or_not(
                    train <= copies[f"train ms (batch {batch})"],
                    f"{train} against {copies[f'train ms (batch {batch})']} ms",
                ),
            }
        )
    return rows


def _ratios(row, batch):
    """A speed row's train step / infer at the same batch, and its train
    peak RSS / the inference-only interpreter's."""
    step = row[f"train ms (batch {batch})"] / row[f"infer ms (batch {batch})"]
    return step, row["peak RSS MiB"] / row["infer-only peak RSS MiB"]


def _times(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


# `shift_rows`' columns that "all other ops" sums.
_SUMMED = (
    "calls with shifts", "calls without", "ms with shifts", "ms without",
    "shifts add ms",
)


def shift_rows(name, kernels, result, without, top):
    """Per op kind: the `train` step's milliseconds with the backbone shifts
    (`result`) and without them (`without`), largest difference first (the
    `top` largest, then the others summed); then both signatures' summed
    ops."""

    def medians(profile):
        return {
            (r["op"], r["runs_in"]): (r["calls"], statistics.median(r["us"]) / 1000)
            for r in profile["ops"]["train"]
        }

    with_shifts, no_shifts = medians(result), medians(without)
    keys = sorted(
        set(with_shifts) | set(no_shifts),
        key=lambda k: no_shifts.get(k, (0, 0))[1] - with_shifts.get(k, (0, 0))[1],
    )
    rows = []
    for rank, key in enumerate(keys):
        calls, ms = with_shifts.get(key, (0, 0.0))
        calls_without, ms_without = no_shifts.get(key, (0, 0.0))
        row = {
            "backbone": name,
            "kernels": "XNNPACK" if kernels == "delegate" else "builtin only",
            "op (LiteRT or XNNPACK name)": key[0],
            "runs in": key[1],
            "calls with shifts": calls,
            "calls without": calls_without,
            "ms with shifts": ms,
            "ms without": ms_without,
            "shifts add ms": ms - ms_without,
        }
        if rank >= top:
            row.update({"op (LiteRT or XNNPACK name)": "all other ops", "runs in": "-"})
            if rows[-1]["runs in"] == "-":
                other = rows.pop()
                for field in _SUMMED:
                    row[field] += other[field]
        rows.append(row)
    steps = [result["steps"], without["steps"]]
    totals = (("train step (sum of ops)", "train"), ("infer (sum of ops)", "infer"))
    for label, signature in totals:
        ms, ms_without = (step[signature]["ops_ms"] for step in steps)
        rows.append({
            **rows[0], "op (LiteRT or XNNPACK name)": label, "runs in": "-",
            "calls with shifts": sum(r["calls"] for r in result["ops"][signature]),
            "calls without": sum(r["calls"] for r in without["ops"][signature]),
            "ms with shifts": ms, "ms without": ms_without,
            "shifts add ms": ms - ms_without,
        })
    for row in rows:
        for field in ("ms with shifts", "ms without", "shifts add ms"):
            row[field] = round(row[field], 2)
    return rows
