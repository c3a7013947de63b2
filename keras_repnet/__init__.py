"""Rep-Net: memory-efficient transfer learning for Keras 3 and LiteRT."""

from keras_repnet import data
from keras_repnet import gradients
from keras_repnet import memory
from keras_repnet import methods
from keras_repnet.builder import build
from keras_repnet.comparison import compare
from keras_repnet.export import export_tflite
from keras_repnet.layers import ActivationConnector
from keras_repnet.layers import RepNetModule
from keras_repnet.methods import build_method
from keras_repnet.models import RepNetModel
from keras_repnet.optimizers import MultiRateAdam
from keras_repnet.plan import connector_plan
from keras_repnet.plan import describe
from keras_repnet.plan import parameter_counts
from keras_repnet.taps import Tap
from keras_repnet.taps import find_taps
from keras_repnet.version import __version__
