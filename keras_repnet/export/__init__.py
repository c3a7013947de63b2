"""Export to LiteRT for on-device training.

`export_tflite(model, path)` (in `converter.py`) traces the train, infer
and weight signatures (`signatures.py`) and converts them with builtin ops
only; `model.py` rewrites the Keras model for the export (folded batch
norms, a builtin dropout); `quantize.py` stores the frozen weights in int8
(weight-only); `zeros.py` makes zero initial values (the optimizer's slots)
with `FILL` ops instead of storing them; `operators.py` reads which
operators a `.tflite` file uses.
"""

from keras_repnet.export.converter import CHECKPOINT_SIGNATURES
from keras_repnet.export.converter import FORMAT
from keras_repnet.export.converter import INPUT_DESCRIPTION
from keras_repnet.export.signatures import ITERATIONS_NAME
from keras_repnet.export.converter import SIGNATURES
from keras_repnet.export.converter import export_tflite
from keras_repnet.export.converter import sidecar_path
from keras_repnet.export.signatures import weight_name

__all__ = [
    "CHECKPOINT_SIGNATURES",
    "FORMAT",
    "INPUT_DESCRIPTION",
    "ITERATIONS_NAME",
    "SIGNATURES",
    "export_tflite",
    "sidecar_path",
    "weight_name",
]
