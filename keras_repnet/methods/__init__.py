"""Transfer-learning methods compared with Rep-Net, built by name.

Every method is built on the same frozen backbone by one entry point,
`build_method(name, backbone, num_classes)`, and returns an ordinary Keras
model that outputs class logits, trains with `fit` and saves to `.keras`.
A method's new classifier is always the layer `repnet_head` (see
`keras_repnet.core.heads.HEAD_NAME`), so its recipe's optimizer
gives it its own learning rate; every other trainable variable is "side".
Each method trains with its own `Recipe` (`recipe_for(name)`), which the
model keeps as `model.recipe`.

| name | what trains | reference |
|---|---|---|
| `repnet` | Rep-Net modules (up connectors), backbone shifts + head | Rep-Net, the paper |
| `repnet-none/down/up/all` | the same, connector ablations | Rep-Net Table 1 |
| `repnet-mask` | Rep-Net + a binary mask per backbone kernel | Rep-Net Table 4 |
| `ft-full` | every weight, batch norms in training mode | "FT-Full" |
| `ft-last` | the head on pooled frozen features | "FT-Last" |
| `bn-only` | batch-norm scales and shifts + head | Frankle et al. 2020 |
| `tinytl` | lite residual modules + shifts + head | TinyTL (Cai 2020) |
| `adv-rep` | an additive input perturbation only | Elsayed et al. 2018 |
| `adv-rep-last` | the perturbation + head | Kloberdanz et al. 2021 |
| `mobiletl` | shifts in the top blocks, sign backward + head | MobileTL (2023) |

Blocks are found structurally with `keras_repnet.find_taps(mode="all")`:
a "block" is the main-path segment between two consecutive block
boundaries. Differences from the original methods are listed in each
builder's docstring.

Layout: `registry.py` (one `Method` record per method: description,
builder, options, recipe; `build_method`, `recipe_for`),
`baseline_layers.py` (the layers the baselines add), one module a method
family (`fine_tuning.py`, `tinytl.py`, `mobiletl.py`, `reprogramming.py`;
the Rep-Net methods are `keras_repnet.build`), `base.py` (their shared
model constructor).
"""

from keras_repnet.core.layers import ChannelBias
from keras_repnet.methods.baseline_layers import InputPerturbation
from keras_repnet.methods.baseline_layers import LabelMapping
from keras_repnet.methods.baseline_layers import SignBackward
from keras_repnet.methods.registry import METHODS
from keras_repnet.methods.registry import Method
from keras_repnet.methods.registry import build_method
from keras_repnet.methods.registry import get_method
from keras_repnet.methods.registry import recipe_for

__all__ = [
    "METHODS",
    "ChannelBias",
    "InputPerturbation",
    "LabelMapping",
    "Method",
    "SignBackward",
    "build_method",
    "get_method",
    "recipe_for",
]
