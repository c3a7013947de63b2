"""What a gradient function keeps from the forward pass for the backward pass.

Every lean rule declares it (`@keeps(...)`), beside the rule's code;
`TENSORFLOW_KEEPS` says it for TensorFlow's own functions. The analytic
profiler (`keras_repnet.memory.profile`) reads these declarations, and
nothing else, to count what a training step keeps (its "ours").
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Keeps:
    """What one op's gradient keeps, by the names of the tensors it reads.

    A name is `"input"` or `"output"` (the op's), or the name of an operand
    or an intermediate tensor of the same size (e.g. hard-swish's `"gate"`).

    Attributes:
        tensors: tuple of str. Tensors kept as they are (fp32).
        masks: tuple of str. Tensors of which a mask is kept instead, as
            bits (`keras_repnet.backward.bits`: eight elements a byte).
        mask_temporaries: int. Tensors of a byte an element alive only
            while the masks are made and packed (e.g. `0 < y` and `y < 6`
            before their `and`, and the mask as uint8).
        recomputed: tuple of str. Tensors made again in the backward pass,
            alive only from the op's backward on.
        no_gradient: tuple of str. Operands whose producing ops get no
            gradient (their own gradient functions do not run).
        fuses_padding: bool. A zero padding before the op gets no gradient
            of its own: the op's input gradient is the unpadded tensor's.
    """

    tensors: tuple = ()
    masks: tuple = ()
    mask_temporaries: int = 0
    recomputed: tuple = ()
    no_gradient: tuple = ()
    fuses_padding: bool = False


def keeps(declaration: Keeps):
    """Decorator of a gradient rule: sets `rule.keeps = declaration`."""

    def declare(rule):
        rule.keeps = declaration
        return rule

    return declare


# What TensorFlow's own gradient functions keep (and, for Keras functions
# made of several ops, e.g. `tf.nn.silu`, the function's custom gradient).
TENSORFLOW_KEEPS = {
    "Relu": Keeps(tensors=("output",)),  # ReluGrad(grad, output)
    "Relu6": Keeps(tensors=("output",)),  # Relu6Grad(grad, output)
    "LeakyRelu": Keeps(tensors=("input",)),
    "Sigmoid": Keeps(tensors=("output",)),
    "Tanh": Keeps(tensors=("output",)),
    "Softmax": Keeps(tensors=("output",)),
    "Elu": Keeps(tensors=("output",)),
    "Selu": Keeps(tensors=("input", "output")),
    "Silu": Keeps(tensors=("input",)),
    "Gelu": Keeps(tensors=("input", "erf")),
    "Mul": Keeps(tensors=("x", "gate")),  # Both operands.
    "DepthwiseConv2dNative": Keeps(),  # The input gradient reads the kernel.
    "Pad": Keeps(),
    "MaxPool": Keeps(tensors=("input", "output")),
    "ResizeBilinear": Keeps(tensors=("input",)),
    "Dropout": Keeps(tensors=("mask",)),  # The scaled keep mask, fp32.
}
