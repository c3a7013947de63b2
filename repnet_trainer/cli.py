"""The command line: `python -m repnet_trainer --model=M.tflite --data=D`."""

import argparse
import os
import sys

from repnet_trainer import files
from repnet_trainer.checkpoint import saved_position
from repnet_trainer.data import load_examples
from repnet_trainer.loop import fit
from repnet_trainer.model import RepNetTrainer

PROG = "repnet_trainer"


def build_parser():
    """The `argparse.ArgumentParser` of the command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Trains an exported Rep-Net .tflite with LiteRT alone "
        "(numpy, ai-edge-litert and Pillow; no TensorFlow).",
    )
    parser.add_argument(
        "--model", required=True, help="The exported .tflite file."
    )
    parser.add_argument(
        "--data",
        required=True,
        help="An image folder (one sub-folder per class) or an .npz with x, y.",
    )
    parser.add_argument(
        "--metadata",
        help="The sidecar JSON. Defaults to the model path with .json.",
    )
    parser.add_argument(
        "--checkpoint",
        help="Checkpoint .npz, resumed from when it exists. Defaults to "
        "MODEL.checkpoint.npz beside the model.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="Total epochs. Defaults to the model's recipe (the sidecar's).",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="Peak learning rate of the cosine decay. Defaults to the model's "
        "recipe (the sidecar's `side_learning_rate`).",
    )
    parser.add_argument(
        "--validation-split",
        type=float,
        help="Share of the examples held out, by the split Keras training "
        "uses. Defaults to the model's recipe.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="Seed of the split and of every epoch's order. Defaults to the "
        "model's recipe.",
    )
    parser.add_argument(
        "--num-threads", type=int, default=2, help="Interpreter threads."
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help="Stop after this many steps of this run, with a checkpoint.",
    )
    parser.add_argument(
        "--save-every", type=int, help="Also checkpoint every this many steps."
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="Steps between progress lines (0: epoch lines only).",
    )
    parser.add_argument(
        "--strict-images",
        action="store_true",
        help="Stop at the first file of an image folder that cannot be read "
        "as an image, instead of skipping it.",
    )
    return parser


def _given(value, default):
    return default if value is None else value


def main(argv=None):
    """Runs the command line on `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit code: `0`, `2` for bad input (one `repnet_trainer: error:`
        line) or `130` after Ctrl-C (one line on what was saved).
    """
    args = build_parser().parse_args(argv)
    checkpoint = args.checkpoint or (
        os.path.splitext(args.model)[0] + ".checkpoint.npz"
    )
    try:
        files.check_writable(checkpoint, "--checkpoint")
        trainer = RepNetTrainer(args.model, args.metadata, args.num_threads)
        images, labels, kept = load_examples(
            args.data, trainer, strict=args.strict_images
        )
        print(
            f"{len(labels)} examples, {trainer.num_classes} classes, "
            f"{trainer.image_size[0]}x{trainer.image_size[1]} px, batches of "
            f"{trainer.batch_size}, {args.num_threads} threads."
        )
        recipe = trainer.recipe
        fit(
            trainer,
            images,
            labels,
            checkpoint_path=checkpoint,
            epochs=_given(args.epochs, recipe["epochs"]),
            learning_rate=args.learning_rate,
            validation_split=_given(
                args.validation_split, recipe["validation_split"]
            ),
            seed=_given(args.seed, recipe["seed"]),
            kept=kept,
            max_steps=args.max_steps,
            save_every=args.save_every,
            log_every=args.log_every,
        )
    except (ValueError, OSError, ImportError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        position = saved_position(checkpoint)
        if position is None:
            line = (
                "Interrupted before the first checkpoint: nothing was saved. "
                "Run the same command to start again."
            )
        else:
            line = (
                f"Interrupted. {checkpoint} holds the weights after "
                f"{position[0]} epochs and {position[1]} steps (its last "
                "save): run the same command to resume from there."
            )
        print(line, file=sys.stderr)
        return 130
    return 0
