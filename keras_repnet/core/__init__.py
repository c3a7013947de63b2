"""The model: find the taps, build the Rep-Net, count its parameters.

`graph.py` walks functional graphs; `backbones.py` resolves a backbone;
`taps.py` finds where connectors go; `layers.py` holds the side module and
the connector; `heads.py` the input, replay and classifier head every
builder shares; `builder.py` is `build()`; `models.py` the `RepNetModel` it
returns; `plan.py` its connector plan and parameter counts;
`optimizers.py` the per-layer learning rates.
"""
