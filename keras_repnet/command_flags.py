"""The flags of `keras-repnet`'s commands (absl), each defined once.

Settings left `None` come from the method's recipe; `commands.COMMANDS`
says which command reads which flag.
"""

from absl import flags

from keras_repnet.core.shift_rule import SHIFT_MODES
from keras_repnet.core.recipe import REPNET

DATA = flags.DEFINE_string(
    "data",
    None,
    "Training data: an image folder (one sub-folder per class), a folder of "
    "MNIST-format idx files, an .npz file with x and y, or tfds:NAME.",
)
TEST_DATA = flags.DEFINE_string(
    "test_data",
    None,
    "A separate test set (same forms as --data), evaluated once at the end. "
    "Defaults to the data's own test split (a test/ folder beside train/, "
    "idx t10k files, npz x_test), if any.",
)
BACKBONE = flags.DEFINE_string(
    "backbone", "MobileNetV2", "A keras.applications model name."
)
WEIGHTS = flags.DEFINE_string(
    "weights",
    "imagenet",
    'Backbone weights: "imagenet" (download), "none" (random) or a file path.',
)
METHOD = flags.DEFINE_string(
    "method",
    "repnet",
    "The transfer method (keras_repnet.methods.METHODS); its recipe gives the "
    "defaults of the training settings.",
)
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    None,
    "Where results are written. Defaults to runs/train (train) or "
    "runs/compare (compare). Running again with the same folder resumes an "
    "interrupted run.",
)
IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    None,
    f"Side of the square input images, in pixels. Defaults to the recipe's "
    f"({REPNET.image_size}).",
    lower_bound=1,
)
EPOCHS = flags.DEFINE_integer(
    "epochs", None, f"Training epochs. Defaults to the recipe's ({REPNET.epochs}).",
    lower_bound=1,
)
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    None,
    f"Examples per step. Defaults to the recipe's ({REPNET.batch_size}) in "
    "train and compare, 8 (the device's batch) in memory and export.",
    lower_bound=1,
)
SIDE_LR = flags.DEFINE_float(
    "side_lr",
    None,
    "Peak learning rate of everything outside the head (cosine decay). "
    f"Defaults to the recipe's ({REPNET.side_learning_rate:g} for repnet); in "
    "export, the model's.",
)
HEAD_LR = flags.DEFINE_float(
    "head_lr",
    None,
    "Peak learning rate of the classifier head (cosine decay). Defaults to "
    f"the recipe's ({REPNET.head_learning_rate:g} for repnet); in export, the "
    "model's.",
)
LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing",
    None,
    f"Label smoothing. Defaults to the recipe's ({REPNET.label_smoothing:g}); "
    "in export, the model's.",
    lower_bound=0.0,
    upper_bound=1.0,
)
VALIDATION_SPLIT = flags.DEFINE_float(
    "validation_split",
    None,
    "Share of the data held out for validation. Defaults to the recipe's "
    f"({REPNET.validation_split:g}).",
)
SEED = flags.DEFINE_integer(
    "seed",
    None,
    f"Seed of the split and the training. Defaults to the recipe's ({REPNET.seed}).",
)
MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", None, "Use at most this many examples (quick runs)."
)
STRICT_IMAGES = flags.DEFINE_bool(
    "strict_images",
    False,
    "Stop at the first file of an image folder that cannot be decoded, "
    "instead of skipping it (each skipped file is reported).",
)
OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Train again even if --output_dir holds this run, finished. Without it "
    "a finished run is left as it is (more --epochs continue it) and an "
    "interrupted one resumes.",
)
# Read by the console script (keras_repnet_launcher) before TensorFlow starts.
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's logs, which keras-repnet holds back unless "
    "TF_CPP_MIN_LOG_LEVEL is set.",
)
# `memory`
MEASURE = flags.DEFINE_bool(
    "measure",
    False,
    "Also run training steps in a fresh process and report the measured peak.",
)
# `export`
MODEL = flags.DEFINE_string("model", None, "A trained model, `model.keras`.")
OUT = flags.DEFINE_string("out", None, "Where the `.tflite` file is written.")
QUANTIZE_BACKBONE = flags.DEFINE_bool(
    "quantize_backbone", False, "Store the frozen backbone's weights in int8."
)
# `federate`
CLIENTS = flags.DEFINE_integer("clients", 10, "Clients (SuperNodes).", lower_bound=1)
ROUNDS = flags.DEFINE_integer("rounds", 20, "Federated rounds.", lower_bound=1)
LOCAL_EPOCHS = flags.DEFINE_integer(
    "local_epochs", 1, "Passes over its examples a client makes a round.",
    lower_bound=1,
)
PARTITION = flags.DEFINE_string(
    "partition", "dirichlet:0.5",
    'How the clients share the data: "iid" or "dirichlet:ALPHA" (non-IID '
    "labels, lower ALPHA less even).",
)
STRATEGY = flags.DEFINE_enum(
    "strategy", "fedavg", ["fedavg", "fedadam"], "Flower's aggregation."
)
BATCH_NORM = flags.DEFINE_enum(
    "batch_norm", "global", ["global", "local"],
    "Average the side network's batch-norm statistics (global), or keep them "
    "on each client (local, FedBN).",
)
WIRE_DTYPE = flags.DEFINE_enum(
    "wire_dtype", "float32", ["float32", "float16"],
    "The dtype the arrays travel in: float16 sends half the bytes.",
)
# Rep-Net's model options, for train and memory (`keras_repnet.build`).
NUM_MODULES = flags.DEFINE_integer(
    "num_modules",
    None,
    "Side modules (Rep-Net methods). Defaults to the backbone's: one per "
    "level (at least 4), 6 on MobileNetV3 (keras_repnet.build's rule).",
    lower_bound=1,
)
BACKBONE_SHIFTS = flags.DEFINE_enum(
    "backbone_shifts",
    None,
    ["on", "off", *SHIFT_MODES],
    "Train a shift after each frozen batch norm (Rep-Net methods): auto, on "
    "(exact backward), off, or an approximate backward that keeps less "
    "(masks, sign, held-gates, sign-int8; see keras_repnet.build). Defaults "
    "to auto: exact where the backward keeps masks only, sign-int8 on "
    "MobileNetV3.",
)
SIDE_NORM_MOMENTUM = flags.DEFINE_float(
    "side_norm_momentum",
    None,
    "Momentum of the side modules' batch norms (Rep-Net methods). Defaults to "
    "Keras' 0.99, 0.9 on MobileNetV3 (keras_repnet.build's rule).",
)
SIDE_TOP_CHANNELS = flags.DEFINE_integer(
    "side_top_channels",
    None,
    "Channels of a 1x1 conv, batch norm and ReLU on the side network's last "
    "feature before the head (Rep-Net methods; keras_repnet.build), 0 for "
    "none. Defaults to auto: the backbone's output channels where the side "
    "network's last feature is narrower.",
    lower_bound=0,
)
SHIFT_LR = flags.DEFINE_float(
    "shift_lr",
    None,
    "Peak learning rate of the backbone shifts (cosine decay). Defaults to the "
    "side's (--side_lr), 3e-3 on MobileNetV3 (keras_repnet.build's rule).",
)

# `compare`
METHODS = flags.DEFINE_list(
    "methods", None, "Transfer methods to compare (default: all of them)."
)

# Recipe fields set by flags, for train and compare.
RECIPE_FLAGS = {
    "image_size": IMAGE_SIZE,
    "epochs": EPOCHS,
    "batch_size": BATCH_SIZE,
    "label_smoothing": LABEL_SMOOTHING,
    "validation_split": VALIDATION_SPLIT,
    "seed": SEED,
    "shift_learning_rate": SHIFT_LR,
}
# Model options set by flags, for train and memory: build argument -> flag
# (--backbone_shifts' on and off are build's True and False).
MODEL_FLAGS = {
    "num_modules": NUM_MODULES,
    "backbone_shifts": BACKBONE_SHIFTS,
    "side_norm_momentum": SIDE_NORM_MOMENTUM,
    "side_top_channels": SIDE_TOP_CHANNELS,
}
