# The two entry points of the README: `make train` (main job) and `make test`.
# Each creates .venv and installs what it needs on first use.

PYTHON ?= python3
VENV ?= .venv
ASSETS ?= ../shared/assets
WEIGHTS ?= $(ASSETS)/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
DATA ?= $(ASSETS)/datasets/flowers5_128px

.PHONY: train test

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

train: $(VENV)/installed
	$(VENV)/bin/keras-repnet train --backbone=MobileNetV2 --weights=$(WEIGHTS) \
		--data=$(DATA) --image_size=96 --epochs=4 --batch_size=32 \
		--output_dir=runs/flowers

test: $(VENV)/installed
	$(VENV)/bin/pytest -n 2 -q
