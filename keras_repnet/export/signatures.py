"""The functions `export_tflite` traces: train, infer and the weights.

`Trainer` holds the Keras pieces of the export (the rewritten model, the
optimizer, the loss, the preprocessing) and traces each signature from them.
"""

import re

import keras
import tensorflow as tf

from keras_repnet.export import model as export_model

ITERATIONS_NAME = "optimizer_iterations"


def weight_name(path: str) -> str:
    """A signature-safe name: `repnet_module_0/conv/kernel` ->
    `repnet_module_0_conv_kernel`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", path)


class Trainer:
    """The Keras pieces of the export and the functions traced from them.

    Nothing here is stored on the `tf.Module` except raw `tf.Variable`s and
    the traced functions: Keras variables would be saved without their
    values.
    """

    def __init__(self, model, optimizer, preprocess, loss):
        self.model = model
        # Folded batch norms and builtin dropout; shares the trainable layers.
        self.forward, self.folded_variables = export_model.exportable(model)
        self.optimizer = optimizer
        self.preprocess = preprocess
        self.loss = loss
        # What trains on device: the traced model's trainable variables
        # (not the mask scores: `forward` holds the masks baked), in
        # `model`'s order.
        on_device = {id(v) for v in self.forward.trainable_variables}
        self.trainable = [
            v for v in model.trainable_variables if id(v) in on_device
        ]
        # Slots exist before tracing, so they are saved as variables.
        optimizer.build(self.trainable)
        self.state = self._weights()
        self.weight_names = list(self.state)

    def _weights(self):
        """Names and variables of everything `train` changes."""
        pairs = [(v.path, v) for v in self.trainable]
        for layer in self.forward.layers:
            if layer.trainable and type(layer) is not keras.layers.Dropout:
                pairs += [(v.path, v) for v in layer.non_trainable_variables]
        for v in self.optimizer.variables:
            if v is self.optimizer.iterations:
                pairs.append((ITERATIONS_NAME, v))
            elif v is not self.optimizer.learning_rate:  # Set by `train`.
                pairs.append(("optimizer_" + v.name, v))
        weights = {weight_name(name): v for name, v in pairs}
        if len(weights) != len(pairs):
            raise ValueError(
                "Variable names collide once every character out of "
                f"[A-Za-z0-9_] is replaced by `_`: {[n for n, _ in pairs]}. "
                "Give the layers distinct names."
            )
        return weights

    def module(self, batch_size, image_shape, flex_checkpoints):
        """A `tf.Module` and its traced signatures, by key."""
        module = tf.Module()
        # Raw variables: read-only ones become constants, the others are
        # initialised with their current values.
        module.model_variables = [
            v.value for v in self.model.variables + self.folded_variables
        ]
        module.optimizer_variables = [v.value for v in self.optimizer.variables]
        images = tf.TensorSpec([batch_size, *image_shape], tf.float32, name="x")
        labels = tf.TensorSpec([batch_size], tf.int32, name="y")
        rate = tf.TensorSpec([], tf.float32, name="learning_rate")
        any_images = tf.TensorSpec([None, *image_shape], tf.float32, name="x")
        state = [
            tf.TensorSpec(v.shape, v.dtype, name=name)
            for name, v in self.state.items()
        ]
        functions = {
            "train": tf.function(
                self.train, input_signature=[images, labels, rate]
            ),
            "infer": tf.function(self.infer, input_signature=[any_images]),
            # Android's runSignature refuses an empty input map: an ignored
            # scalar input makes `get_weights` callable there.
            "get_weights": tf.function(
                self.get_weights,
                input_signature=[tf.TensorSpec([], tf.int32, name="unused")],
            ),
            "set_weights": tf.function(self.set_weights, input_signature=state),
        }
        if flex_checkpoints:
            path = tf.TensorSpec([], tf.string, name="checkpoint_path")
            functions["save"] = tf.function(self.save, input_signature=[path])
            functions["restore"] = tf.function(self.restore, input_signature=[path])
        return module, {
            key: function.get_concrete_function()
            for key, function in functions.items()
        }

    def _pixels(self, x):
        return x if self.preprocess is None else self.preprocess(x)

    def train(self, x, y, learning_rate):
        self.optimizer.learning_rate = learning_rate
        with tf.GradientTape() as tape:
            logits = self.forward(self._pixels(x), training=True)
            loss = self.loss(y, logits)
            if self.forward.losses:
                loss += tf.add_n(self.forward.losses)
        grads = tape.gradient(loss, self.trainable)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        return {"loss": loss}

    def infer(self, x):
        logits = self.forward(self._pixels(x), training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    def get_weights(self, unused):
        del unused
        return {name: tf.identity(v) for name, v in self.state.items()}

    def set_weights(self, *values):
        for v, value in zip(self.state.values(), values):
            v.assign(value)
        return {"iterations": tf.identity(self.optimizer.iterations)}

    def save(self, checkpoint_path):
        names = list(self.state)
        tf.raw_ops.Save(
            filename=checkpoint_path,
            tensor_names=names,
            data=[tf.identity(v) for v in self.state.values()],
        )
        return {"checkpoint_path": checkpoint_path}

    def restore(self, checkpoint_path):
        restored = {}
        for name, v in self.state.items():
            value = tf.raw_ops.Restore(
                file_pattern=checkpoint_path, tensor_name=name, dt=v.dtype
            )
            # Restore gives an unknown rank, which assign() refuses.
            v.assign(tf.reshape(value, v.shape))
            restored[name] = tf.identity(v)
        return restored
