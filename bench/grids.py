"""What the accuracy protocol tries: each method's grid of learning rates,
the variants of the methods whose batch norms train, and the build options
of Rep-Net and `repnet-mask` that the option stages run.

`stages.py` turns them into runs; `report.py` tables them.
"""


# The options `repnet-mask` ran with before the warm-up.
MASK_BEFORE_WARMUP = {"mask_initial_score": 0.1, "mask_warmup": 0.0}
# The `mask` stage runs these beside the defaults on every far set: tag ->
# options (a lower start that drops more, and the options before the
# warm-up).
MASK_VARIANTS = {
    "start0.02": {"mask_initial_score": 0.02},
    "before": MASK_BEFORE_WARMUP,
}
# `mask-options` stage: tag -> options of repnet-mask.
MASK_OPTIONS = {
    "constant": {**MASK_BEFORE_WARMUP, "mask_by_magnitude": False},
    "score0.02": {
        "mask_initial_score": 0.02, "mask_by_magnitude": False, "mask_warmup": 0.0
    },
    "score0.5": {
        "mask_initial_score": 0.5, "mask_by_magnitude": False, "mask_warmup": 0.0
    },
    "channel": {
        **MASK_BEFORE_WARMUP, "backbone_mask": "channel", "mask_by_magnitude": False
    },
    "magnitude0.05": {"mask_initial_score": 0.05, "mask_warmup": 0.0},
    "magnitude0.07": {"mask_initial_score": 0.07, "mask_warmup": 0.0},
    "warmup0.2": {"mask_warmup": 0.2, "mask_initial_score": 0.1},
    "warmup0.2-magnitude0.05": {"mask_warmup": 0.2, "mask_initial_score": 0.05},
    "warmup0.2-magnitude0.02": {"mask_warmup": 0.2, "mask_initial_score": 0.02},
    "warmup0.2-magnitude0.01": {"mask_warmup": 0.2, "mask_initial_score": 0.01},
}
# `repnet-options` stage: tag -> `build()` options of repnet, each run at
# repnet's picked rates on every far set of the point (or at the rates of
# `REPNET_OPTION_RATES`): what makes Rep-Net work on a small backbone,
# chosen on validation.
_SIGN_INT8_COMBINATION = "modules6-side-bn0.9-shifts-sign-int8"
REPNET_OPTIONS = {
    # The defaults before `build` took `APPROXIMATE_SHIFT_DEFAULTS` on
    # MobileNetV3 (the base of every option there: `FORMER_DEFAULTS`).
    "former-defaults": {},
    # Backbone shifts with a backward that keeps masks only (hard-swish's
    # sign rule, squeeze-excite gates held), and with the exact backward.
    "shifts-masks": {"backbone_shifts": "masks"},
    "shifts-exact": {"backbone_shifts": True},
    # A wider side network (twice the taps' channels, past the 10% budget),
    # six modules, modules at their tap's full resolution.
    "wide": {"side_width": 2.0},
    "modules6": {"num_modules": 6},
    "full-resolution": {"side_downscale": 1},
    "modules6-full-resolution": {"num_modules": 6, "side_downscale": 1},
    # Shifts at lower rates than repnet's picked one.
    "shifts-masks-lr0.01": {"backbone_shifts": "masks"},
    "shifts-masks-lr0.003": {"backbone_shifts": "masks"},
    # Shifts at their own, lower rate (`Recipe.shift_learning_rate`), the
    # side network and head at repnet's picked rates.
    "shifts-masks-shift0.001": {
        "backbone_shifts": "masks", "shift_learning_rate": 1e-3
    },
    "shifts-masks-shift0.003": {
        "backbone_shifts": "masks", "shift_learning_rate": 3e-3
    },
    "shifts-exact-shift0.001": {
        "backbone_shifts": True, "shift_learning_rate": 1e-3
    },
    # Which of the two approximations of "masks" costs the accuracy: the
    # sign rule alone (gates exact), held gates alone (activations exact).
    "shifts-sign-shift0.001": {
        "backbone_shifts": "sign", "shift_learning_rate": 1e-3
    },
    "shifts-held-gates-shift0.001": {
        "backbone_shifts": "held-gates", "shift_learning_rate": 1e-3
    },
    # The side network's batch norms at momentum 0.9 (PyTorch's 0.1, as in
    # the reference code) instead of Keras' 0.99.
    "side-bn0.9": {"side_norm_momentum": 0.9},
    # The shifts (where "auto" trains them) at 1e-3 and 3e-3, below the
    # side's rate.
    "shift0.001": {"shift_learning_rate": 1e-3},
    "shift0.003": {"shift_learning_rate": 3e-3},
    # What helped on MobileNetV3Small's validation splits, together: six
    # modules, their norms at momentum 0.9, and the shifts at 1e-3 with the
    # exact backward or the sign rule (squeeze-excite gates exact).
    "modules6-side-bn0.9-shifts-exact-shift0.001": {
        "num_modules": 6, "side_norm_momentum": 0.9, "backbone_shifts": True,
        "shift_learning_rate": 1e-3,
    },
    "modules6-side-bn0.9-shifts-sign-shift0.001": {
        "num_modules": 6, "side_norm_momentum": 0.9, "backbone_shifts": "sign",
        "shift_learning_rate": 1e-3,
    },
    # The same with the squeeze-excite gates' gradients read from an int8
    # copy of the feature they scale (`backbone_shifts="sign-int8"`), its
    # shift rate a grid (`OPTION_GRIDS`) from 3e-4 to 3e-2, repnet's picked
    # side rate on MobileNetV3Small.
    **{
        f"{_SIGN_INT8_COMBINATION}-shift{rate}": {
            "num_modules": 6, "side_norm_momentum": 0.9,
            "backbone_shifts": "sign-int8", "shift_learning_rate": float(rate),
        }
        for rate in ("0.0003", "0.001", "0.003", "0.01", "0.03")
    },
    # The head at the rate ft-last and TinyTL picked on MobileNetV3Small.
    "head0.01": {},
    # Six modules with the shifts at their own rate: the two options that
    # each helped on MobileNetV3Small's validation splits, together.
    "modules6-shifts-masks-shift0.001": {
        "num_modules": 6, "backbone_shifts": "masks", "shift_learning_rate": 1e-3
    },
    # Today's defaults without the side top (`side_top_channels=0`, the
    # defaults before it: a head that reads the side network's narrow last
    # feature, 96 / 160 channels, linearly).
    "no-side-top": {"side_top_channels": 0},
}
# Options run over today's defaults at repnet's picked rates (the others
# run over `FORMER_DEFAULTS` at its rates where the point has an entry).
OVER_DEFAULTS = ("no-side-top",)
# Points that run some of the options only: MobileNetV2 checks whether
# what helped MobileNetV3Small helps it too (its shifts are exact whatever
# the mode: its backward keeps masks only); at 128 px, where TinyTL led
# the defaults before the side top, the options that cost next to no
# memory (side norms, six modules) and the side top's ablation.
POINT_OPTIONS = {
    ("MobileNetV2", 64): (
        "shift0.001", "side-bn0.9", "modules6",
        "modules6-side-bn0.9-shifts-sign-shift0.001",
        # The rate MobileNetV3Small's combination picked on two of three
        # sets, on MobileNetV2 (where sign-int8 shifts are exact).
        "shift0.003", "modules6-side-bn0.9-shifts-sign-int8-shift0.003",
    ),
    ("MobileNetV2", 128): (
        "side-bn0.9", "modules6",
        "modules6-side-bn0.9-shifts-sign-int8-shift0.003", "no-side-top",
    ),
    # The shifts' rate alone changes nothing over MobileNetV3Small's former
    # defaults, which train none.
    ("MobileNetV3Small", 128): tuple(
        tag for tag in REPNET_OPTIONS
        if tag not in ("shift0.001", "shift0.003")
    ),
    # The defaults before the side top, whose runs these were.
    ("MobileNetV3Small", 224): ("no-side-top",),
    ("MobileNetV2", 224): ("no-side-top",),
}
# Rep-Net's defaults that a point's options were chosen against, and the
# rates (side, head) they picked there, per set or on every far set: the
# options stage runs its options over them, at those rates, as they ran
# (`stages.option_options`); shifts an option turns on train at the
# side's rate unless it sets theirs. On MobileNetV3Small, the defaults
# before `build` took `keras_repnet.core.shift_rule.APPROXIMATE_SHIFT_DEFAULTS`
# there; on both backbones, before the side top (`side_top_channels="auto"`).
FORMER_DEFAULTS = {
    ("MobileNetV3Small", 128): (
        {
            "num_modules": 4, "side_norm_momentum": 0.99,
            "backbone_shifts": False, "side_top_channels": 0,
        },
        (3e-2, 3e-3),
    ),
    ("MobileNetV2", 128): (
        {"side_top_channels": 0},
        {
            "cifar10": (3e-3, 1e-3),
            "fashion_mnist": (1e-2, 1e-3),
            "sign_digits": (1e-2, 1e-3),
        },
    ),
}
# Points whose Rep-Net runs all ran before the side top: every Rep-Net run
# there builds with `side_top_channels=0`, as it ran, until the point is
# run again with today's defaults.
POINTS_WITHOUT_SIDE_TOP = (("MobileNetV2", 64), ("MobileNetV2-0.35", 64))
# Options that form a grid of one rate: the member picked on validation
# (seed 0, once every member has run) stands for the grid, per set.
OPTION_GRIDS = {
    _SIGN_INT8_COMBINATION: tuple(
        tag for tag in REPNET_OPTIONS
        if tag.startswith(f"{_SIGN_INT8_COMBINATION}-shift")
    ),
}
# Options (or option grids, by their pick) run with every seed of `SEEDS`
# at a point, as the methods' picked runs.
SEEDED_OPTIONS = {
    ("MobileNetV3Small", 128): (
        "former-defaults",
        "modules6-side-bn0.9-shifts-sign-shift0.001",
        "modules6-side-bn0.9-shifts-sign-int8-shift0.001",
        _SIGN_INT8_COMBINATION,
        "no-side-top",
    ),
    ("MobileNetV2", 128): ("modules6", "no-side-top"),
    ("MobileNetV3Small", 224): ("no-side-top",),
    ("MobileNetV2", 224): ("no-side-top",),
}
REPNET_OPTION_RATES = {
    "head0.01": (3e-2, 1e-2),
    "shifts-masks-lr0.01": (1e-2, 1e-3),
    "shifts-masks-lr0.003": (3e-3, 1e-3),
}
# Rates one step beyond each end of a grid, (below, above): where the grid's
# pick at a point is its lowest or highest rate, the core stage runs the
# next one out, so that every pick is bracketed (repnet's side rate picked
# 3e-3, its lowest, on CIFAR-10 and flowers with MobileNetV2, and 1e-1, its
# highest, on sign digits with MobileNetV3Small at 224 px).
EDGE_RATES = {
    "repnet": ((1e-3, 1e-3), (3e-1, 3e-2)),
    "ft-last": ((3e-4, 3e-4), (1e-1, 1e-1)),
}
# Variants of the methods whose batch norms train, each with its own grid
# of rates (side, head), beside the method's own (`LEARNING_RATES`); the
# picked run of all of them, on validation, is the method's row. Keras'
# applications build batch norms with momentum 0.999, too slow for a few
# hundred steps ("bn0.9"); the Keras guide's recipe keeps them in inference
# mode ("bn-inference", its grid widened to 3e-5 where MobileNetV3Small's
# CIFAR-10 picked 1e-4); SGD with momentum 0.9 ("sgd-bn0.9"). bn0.9's grid
# was widened to 1e-2 where sign digits picked 3e-3 (MobileNetV2 at 128 px,
# MobileNetV3Small).
VARIANTS = {
    "ft-full": {
        "bn0.9": (
            {"bn_momentum": 0.9},
            ((3e-4, 3e-3), (1e-3, 1e-3), (3e-3, 3e-3), (1e-2, 1e-2)),
        ),
        "bn-inference": (
            {"bn_inference": True},
            ((3e-5, 1e-3), (1e-4, 1e-3), (3e-4, 3e-3), (1e-3, 1e-3)),
        ),
        "sgd-bn0.9": (
            {"optimizer": "sgd", "bn_momentum": 0.9},
            ((3e-3, 3e-2), (1e-2, 1e-2), (3e-2, 3e-2)),
        ),
    },
    "bn-only": {
        "bn0.9": ({"bn_momentum": 0.9}, ((1e-3, 1e-2), (1e-2, 1e-3))),
    },
}
# Peak learning rates (side, head) tried per method; "side" is every
# trainable variable outside the head (ft-last has none). Each grid holds
# the method's recipe; the cheaper baselines also get Rep-Net's (side 1e-2,
# head 1e-3). The grids of repnet and ft-last were widened where the first
# runs picked an edge (ft-last's lowest, repnet's highest rate).
LEARNING_RATES = {
    "repnet": ((3e-3, 1e-3), (1e-2, 1e-3), (3e-2, 3e-3), (1e-1, 1e-2)),
    "ft-last": ((1e-3, 1e-3), (3e-3, 3e-3), (1e-2, 1e-2), (3e-2, 3e-2)),
    "ft-full": ((1e-4, 1e-3), (3e-4, 3e-3), (1e-3, 1e-3)),
    "bn-only": ((1e-3, 1e-2), (1e-2, 1e-3)),
    "tinytl": ((1e-3, 1e-2), (1e-2, 1e-3)),
    "mobiletl": ((1e-3, 1e-2), (1e-2, 1e-3)),
}
