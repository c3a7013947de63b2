"""Smoke test of an installed keras-repnet wheel (run from outside the
source tree, so that only the installed package can be imported).

    python .ci/wheel_smoke.py
"""

import os
import sys
import tempfile

import numpy as np


def main():
    import keras

    import keras_repnet

    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.dirname(os.path.abspath(keras_repnet.__file__)).startswith(source):
        sys.exit(f"keras_repnet was imported from the source tree {source}.")
    model = keras_repnet.build(
        "MobileNetV3Small", 3, input_shape=(32, 32, 3), weights=None
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with tempfile.TemporaryDirectory() as folder:
        path = keras_repnet.export_tflite(
            model, os.path.join(folder, "m.tflite"), batch_size=4
        )
        from ai_edge_litert.interpreter import Interpreter

        train = Interpreter(model_path=path).get_signature_runner("train")
        loss = train(
            x=np.float32((x + 1) * 127.5),
            y=y.astype("int32"),
            learning_rate=np.float32(1e-2),
        )["loss"]
        assert np.isfinite(loss)
    print(f"keras-repnet {keras_repnet.__version__} wheel: build, fit, export OK")


if __name__ == "__main__":
    main()
