"""Rep-Net: memory-efficient transfer learning for Keras 3 and LiteRT.

The pipeline, one subpackage a step (see the README's "How the code is laid
out"): `core` (find the taps, build the model), `backward` (the lean
backward pass it trains with), `memory` (count and measure its training
memory), `export` (to LiteRT), and beside them `methods` (the compared
transfer methods), `data` and `apps` (training, comparison).
"""

from keras_repnet import backward
from keras_repnet import data
from keras_repnet import memory
from keras_repnet import methods
from keras_repnet.apps.comparison import compare
from keras_repnet.core import backbones
from keras_repnet.core.builder import build
from keras_repnet.core.flops import multiply_adds
from keras_repnet.core.layers import ActivationConnector
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.masks import sparsity as mask_sparsity
from keras_repnet.core.models import RepNetModel
from keras_repnet.core.optimizers import MultiRateAdam
from keras_repnet.core.optimizers import MultiRateSGD
from keras_repnet.core.plan import connector_plan
from keras_repnet.core.plan import describe
from keras_repnet.core.plan import parameter_counts
from keras_repnet.core.taps import Tap
from keras_repnet.core.taps import find_taps
from keras_repnet.core.taps import select_taps
from keras_repnet.export import export_tflite
from keras_repnet.methods import build_method
from keras_repnet.version import __version__

# The lean backward's older name.
gradients = backward
