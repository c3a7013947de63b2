"""The `keras-repnet` command line.

    keras-repnet train --data=PATH [--backbone=MobileNetV3Small] [--weights=PATH]
    keras-repnet memory --backbone=MobileNetV2 --image_size=224 --measure
    keras-repnet export --model=runs/train/model.keras --out=model.tflite
    keras-repnet compare --data=PATH --methods=repnet,ft-last --epochs=3
    keras-repnet federate --data=PATH --clients=10 --rounds=20 --partition=dirichlet:0.5

`keras-repnet COMMAND --help` lists a command's flags with their defaults.
Flags may be spelled with dashes too (`--image-size`). Settings left out
come from the method's recipe (`keras_repnet.methods.recipe_for`).
"""

import sys
import warnings

from absl import app
from absl import flags

from keras_repnet.commands import COMMANDS

_USAGE = (
    f"usage: keras-repnet {{{','.join(COMMANDS)}}} [flags] "
    "(keras-repnet COMMAND --help lists a command's flags)"
)


def command_help(command: str) -> str:
    """The usage of one command: what it does and its flags with defaults."""
    _, summary, names = COMMANDS[command]
    lines = [f"usage: keras-repnet {command} [flags]", "", summary, "", "flags:"]
    for name in names:
        flag = flags.FLAGS[name]
        default = "" if flag.default is None else f" (default: {flag.default})"
        lines.append(f"  --{name}: {flag.help}{default}")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"Expected one command out of {tuple(COMMANDS)}. Received: "
            f"{argv[1:]}. Example: keras-repnet train --data=photos/ "
            "(keras-repnet COMMAND --help lists its flags)"
        )
    try:
        COMMANDS[argv[1]][0]()
    except (ValueError, FileNotFoundError, ImportError) as error:
        # Bad input: the message says what was received and what to do.
        raise app.UsageError(str(error)) from error


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line, without the source line Python adds."""
    print(f"Warning: {message}", file=file or sys.stderr)


def _underscored(arg):
    """`--image-size=8` -> `--image_size=8`: dashes are accepted in names."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def run():
    # absl prints the __main__ module's docstring above an error: one line.
    sys.modules["__main__"].__doc__ = _USAGE
    if "--verbose" not in sys.argv:
        # The converter's and TensorFlow's Python INFO and WARNING lines.
        from absl import logging

        logging.set_verbosity(logging.ERROR)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        warnings.showwarning = _show_warning
    argv = [sys.argv[0]] + [_underscored(arg) for arg in sys.argv[1:]]
    commands = [arg for arg in argv[1:] if arg in COMMANDS]
    if {"--help", "-h", "--helpshort"} & set(argv[1:]):
        print(command_help(commands[0]) if commands else __doc__.strip())
        sys.exit(0)
    sys.argv = argv
    app.run(main)


if __name__ == "__main__":
    run()
