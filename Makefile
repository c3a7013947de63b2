# The two entry points of the README: `make train` (main job) and `make test`.
# Each creates .venv and installs what it needs on first use. CI also runs
# `make test-oldest` (the oldest supported TensorFlow and Keras, in their own
# venv made by the same rule) and `make notebook` (the example, executed).

PYTHON ?= python3
VENV ?= .venv
VENV_OLDEST ?= .venv-oldest
ASSETS ?= ../shared/assets
WEIGHTS ?= $(ASSETS)/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
DATA ?= $(ASSETS)/datasets/flowers5_128px

.PHONY: train test test-oldest notebook

# One rule for every venv; PINS picks the TensorFlow and Keras of the oldest one.
%/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $*
	$*/bin/pip install --quiet --upgrade pip
	$*/bin/pip install --quiet $(PINS) -e ".[test]"
	touch $@

$(VENV_OLDEST)/installed: PINS = "tensorflow==2.19.*" "keras==3.10.*"

train: $(VENV)/installed
	$(VENV)/bin/keras-repnet train --backbone=MobileNetV2 --weights=$(WEIGHTS) \
		--data=$(DATA) --image_size=96 --epochs=4 --batch_size=32 \
		--output_dir=runs/flowers

test: $(VENV)/installed
	$(VENV)/bin/pytest -n 2 -q

# The whole suite: nearly every test reaches a private entry point of
# keras_repnet.compat (the graph walker, the gradient registry, the export).
test-oldest: $(VENV_OLDEST)/installed
	$(VENV_OLDEST)/bin/pytest -n 2 -q

# The Colab notebook, executed end to end on the offline assets with tiny settings.
notebook: $(VENV)/installed
	mkdir -p runs/notebook
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/papermill examples/repnet_colab.ipynb runs/notebook/repnet_colab.ipynb \
		--cwd . --log-output \
		-p DATASET $(ASSETS)/datasets/sign_language_digits -p WEIGHTS $(WEIGHTS) \
		-p IMAGE_SIZE 32 -p EPOCHS 1 -p BATCH_SIZE 16 -p METHODS repnet,ft-last \
		-p OUTPUT_DIR runs/notebook
