"""The `keras-repnet` console script: TensorFlow's start-up noise held back.

Importing TensorFlow (which `import keras_repnet` does) prints oneDNN and
CPU-feature notices and, on a machine without a GPU, CUDA errors such as
"failed call to cuInit", straight to the process's stderr from C++. This
module lives outside the package so that it runs before TensorFlow is
imported: it holds stderr back while TensorFlow starts and finds its
devices, then runs `keras_repnet.cli` with TensorFlow's C++ logs switched
off (`TF_CPP_MIN_LOG_LEVEL=3`; failures still raise in Python). What was held back is
printed if starting fails; nothing is held back with `--verbose` or when
`TF_CPP_MIN_LOG_LEVEL` is set (the user then chose TensorFlow's logging).
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def _stderr_held_back():
    """Sends the process's stderr (file descriptor 2, which C++ writes to)
    to a temporary file; prints the file if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def main():
    verbose = "--verbose" in sys.argv[1:] or "TF_CPP_MIN_LOG_LEVEL" in os.environ
    if not verbose:
        # TensorFlow's own C++ logs (the converter's, a failed image
        # decode's) for the whole run; errors reach Python as exceptions.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    quiet = contextlib.nullcontext() if verbose else _stderr_held_back()
    with quiet:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe logs here.
        from keras_repnet import cli
    cli.run()


if __name__ == "__main__":
    main()
