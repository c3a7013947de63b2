"""Rep-Net: memory-efficient transfer learning for Keras 3 and LiteRT.

The package is layered; each layer imports only from the ones before it
(`tests/test_layering.py` checks every import, function-level ones too, and
`docs/design.md` describes each):

1. `version`, `compat`: the supported versions and the private
   TensorFlow/Keras entry points.
2. `backward`: the lean gradient rules the models train with.
3. `core`: find the taps, build the model, its recipe.
4. `data`: datasets as `tf.data` pipelines.
5. `methods`: the compared transfer methods, by name.
6. `memory`: count and measure training memory.
7. `export`: to LiteRT, for training on the device.
8. `apps`, `command_flags`, `commands`, `cli`: the training,
   comparison and federated jobs, the command line.

`repnet_trainer`, a package beside this one, is the device side: it trains
an exported model without TensorFlow, and its contract with the exporter
(file format, the train/validation split, atomic files) is written there
once.
"""

from keras_repnet import backward
from keras_repnet import data
from keras_repnet import memory
from keras_repnet import methods
from keras_repnet.apps.comparison import compare
from keras_repnet.apps.training import train
from keras_repnet.core import backbones
from keras_repnet.core.builder import build
from keras_repnet.core.flops import multiply_adds
from keras_repnet.core.layers import ActivationConnector
from keras_repnet.core.layers import RepNetModule
from keras_repnet.core.layers import SideTop
from keras_repnet.core.losses import SparseCategoricalCrossentropy
from keras_repnet.core.masks import sparsity as mask_sparsity
from keras_repnet.core.models import RepNetModel
from keras_repnet.core.optimizers import MultiRateAdam
from keras_repnet.core.optimizers import MultiRateSGD
from keras_repnet.core.plan import connector_plan
from keras_repnet.core.plan import parameter_counts
from keras_repnet.core.recipe import Recipe
from keras_repnet.core.summary import describe
from keras_repnet.core.taps import Tap
from keras_repnet.core.taps import find_taps
from keras_repnet.core.taps import select_taps
from keras_repnet.export import export_tflite
from keras_repnet.methods import build_method
from keras_repnet.methods import recipe_for
from keras_repnet.version import __version__

# The lean backward's older name.
gradients = backward
