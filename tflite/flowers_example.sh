#!/bin/sh
# The flower example of tflite/README.md: exports a MobileNetV2 Rep-Net
# (ImageNet backbone, fresh side network and head) at 96x96 px, then trains it
# with LiteRT alone for 60 steps. Run from the repository root; run again to
# continue from the checkpoint, delete $OUT to start over.
set -e
ASSETS=${ASSETS:-../shared/assets}
OUT=${OUT:-runs/tflite-flowers}
PYTHON=${PYTHON:-python}
DATA="$ASSETS/datasets/flowers5_128px"
mkdir -p "$OUT"
"$PYTHON" - "$ASSETS" "$DATA" "$OUT" <<'PY'
import os
import sys

import keras_repnet
from keras_repnet.export import export_tflite

assets, data, out = sys.argv[1:]
weights = os.path.join(
    assets,
    "weights",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
)
model = keras_repnet.build(
    "MobileNetV2", 5, input_shape=(96, 96, 3), weights=weights
)
export_tflite(
    model,
    os.path.join(out, "model.tflite"),
    batch_size=8,
    class_names=sorted(os.listdir(data)),
)
PY
"$PYTHON" -m repnet_trainer --model="$OUT/model.tflite" --data="$DATA" \
    --epochs=1 --max-steps=60 --log-every=10
