"""The device side of keras-repnet: trains an exported `.tflite`, no TensorFlow.

`keras_repnet.export_tflite` (or `keras-repnet export`) writes a Rep-Net model
whose LiteRT signatures train, classify, and read and write every weight.
This package trains it with numpy and `ai-edge-litert` alone (plus Pillow for
image folders), where TensorFlow cannot be installed, and shows in Python what
`tflite/android/` does in Kotlin:

```sh
python -m repnet_trainer --model=model.tflite --data=photos/ --epochs=5
```

or from Python:

```python
trainer = repnet_trainer.RepNetTrainer("model.tflite")
images, labels, kept = repnet_trainer.load_examples("photos/", trainer)
repnet_trainer.fit(
    trainer, images, labels, kept=kept, checkpoint_path="model.checkpoint.npz"
)
```

Modules: `formats` (the contract with the exporter), `split` (the one
train/validation split, shared with the Keras side), `files` (atomic writes),
`model`, `data`, `checkpoint`, `loop` and `cli`. Importing the package loads
neither TensorFlow nor Keras, nor LiteRT or Pillow until they are needed.
"""

from repnet_trainer.checkpoint import CheckpointError
from repnet_trainer.checkpoint import load_checkpoint
from repnet_trainer.checkpoint import resume_state
from repnet_trainer.checkpoint import save_checkpoint
from repnet_trainer.cli import main
from repnet_trainer.data import check_examples
from repnet_trainer.data import load_examples
from repnet_trainer.data import load_image_folder
from repnet_trainer.data import load_npz
from repnet_trainer.formats import CHECKPOINT_FORMAT
from repnet_trainer.formats import META_KEY
from repnet_trainer.formats import MODEL_FORMAT
from repnet_trainer.formats import SIGNATURES
from repnet_trainer.formats import read_sidecar
from repnet_trainer.formats import sidecar_path
from repnet_trainer.loop import cosine_learning_rate
from repnet_trainer.loop import epoch_order
from repnet_trainer.loop import fit
from repnet_trainer.model import RepNetTrainer
from repnet_trainer.split import IMAGE_EXTENSIONS
from repnet_trainer.split import list_image_files
from repnet_trainer.split import split_indices
