"""How gradients pass through a frozen backbone: one set of rewrites, two uses.

(Imported as `keras_repnet.gradients` too.)

TensorFlow builds a backward pass by looking up, for every op on the path,
the gradient function of its type in
`tensorflow.python.framework.ops._gradient_registry` (`tf.GradientTape`, in
`backprop._gradient_function`, and graph-mode `tf.gradients` both look up
when the backward pass is constructed). `override()` swaps some of those
functions while a `with` block runs:

- Lean rules, for a memory-lean Keras training step (with `RepNetModel`'s
  side-module recomputation; what they save, measured, is in
  `docs/design.md`):
  - `Relu`, `Relu6` (also inside hard-swish): `tf.where(mask, grad, 0)` on a
    mask of the output instead of `ReluGrad(grad, output)`, which keeps
    the float output of every frozen ReLU alive. The mask is kept as bits,
    eight elements a byte (`bits.py`), and unpacked to a bool tensor only
    once the gradient exists. Never a float mask: a cast does not depend
    on `grad`, so it runs in the forward pass and the float copy is kept
    after all. The mask is computed before the output's forward consumers
    run (control edges, `ops.forward`): as a side branch the executor may
    postpone it to the backward pass, keeping the float alive (with one
    inter-op thread it always does).
  - `DepthwiseConv2dNative` after a zero `Pad` and `Pad`: the input gradient
    of the unpadded tensor in one op, not the padded gradient and its slice
    (two large tensors at MobileNetV2's step peak).
  - `Mul` in hard-swish, `x * relu6(x + 3) / 6`: the gradient from `x`
    alone, with the gate recomputed in the backward pass, instead of keeping
    the float gate and its ReLU6 mask.
- Builtin rules (`builtins_only=True`) for on-device training: gradients of
  `Conv2D`, `DepthwiseConv2dNative`, `AvgPool` and `ResizeBilinear` written
  with TFLite builtin ops, so that a traced training step converts with
  `TFLITE_BUILTINS` only (phones have no Flex delegate). Cases a rule does
  not cover fall back to TensorFlow's function.

`recompute()` is the third piece: a layer whose backward pass runs its
forward again (the Rep-Net side modules; their rules still apply inside).

Every rule gives TensorFlow's gradient (`tests/test_gradients.py`: lean
rules bit-exact, builtin rules within 1e-5). `counts()` says how often each
rule ran, so that a caller can prove an override took effect. Every lean
rule declares what it keeps for the backward pass (`Keeps`, `keeps_of()`):
`keras_repnet.memory.profile` counts a lean step from those declarations.

Layout: `lean.py` and `builtin.py` hold the rules, `keeps.py` the
declarations' vocabulary and TensorFlow's own, `overrides.py` the swapping,
the counts and `recompute()`, `bits.py` masks kept as bits, `ops.py`
helpers that read TensorFlow ops.

Example:

```python
with keras_repnet.backward.override():
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
```
"""

from keras_repnet.backward.builtin import conv2d_filter_grad
from keras_repnet.backward.builtin import depthwise_filter_grad
from keras_repnet.backward.builtin import depthwise_input_grad
from keras_repnet.backward.keeps import Keeps
from keras_repnet.backward.keeps import TENSORFLOW_KEEPS
from keras_repnet.backward.overrides import BUILTIN_RULES
from keras_repnet.backward.overrides import LEAN_RULES
from keras_repnet.backward.overrides import builtins_only
from keras_repnet.backward.overrides import counts
from keras_repnet.backward.overrides import is_active
from keras_repnet.backward.overrides import keeps_of
from keras_repnet.backward.overrides import override
from keras_repnet.backward.overrides import recompute
from keras_repnet.backward.overrides import reset_counts

__all__ = [
    "BUILTIN_RULES",
    "LEAN_RULES",
    "TENSORFLOW_KEEPS",
    "Keeps",
    "builtins_only",
    "conv2d_filter_grad",
    "counts",
    "depthwise_filter_grad",
    "depthwise_input_grad",
    "is_active",
    "keeps_of",
    "override",
    "recompute",
    "reset_counts",
]
