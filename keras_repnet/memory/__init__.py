"""Training memory: counted from a model's graph, or measured.

- `profile(model, batch_size)` counts parameters, gradients, optimizer state
  and the activations kept for the backward pass, under the TinyTL / Rep-Net
  accounting (`ideal`) and as TensorFlow keeps them (`ours`), without
  training (see `keras_repnet.memory.profiler`).
- `measure(method, backbone, image_size=..., batch_size=...)` runs training
  steps in a fresh process and reads the peak resident memory of one step
  (see `keras_repnet.memory.measurement`); `method="inference"` gives the frozen
  backbone's forward pass, the floor of any training step.

Example:

```python
model = keras_repnet.build("MobileNetV2", num_classes=10, weights=None)
print(keras_repnet.memory.profile(model, batch_size=8))
keras_repnet.memory.measure(
    "repnet", "MobileNetV2", image_size=224, batch_size=8
).peak_mb
```
"""

from keras_repnet.memory.measurement import INFERENCE
from keras_repnet.memory.measurement import Measurement
from keras_repnet.memory.measurement import measure
from keras_repnet.memory.profiler import ActivationMemory
from keras_repnet.memory.profiler import MemoryProfile
from keras_repnet.memory.profiler import profile

__all__ = [
    "INFERENCE",
    "ActivationMemory",
    "Measurement",
    "MemoryProfile",
    "measure",
    "profile",
]
