"""The Flower app of keras-repnet: federated Rep-Net, one phone a client.

`client_app` (each phone trains the exported `.tflite` with LiteRT),
`server_app` (FedAvg or FedAdam, central evaluation, checkpoints),
`strategy` (replies checked, bytes counted, rounds resumed), `task` (what
travels), `deploy` (a SuperLink and one SuperNode per client on this
machine). Nothing here imports TensorFlow.
"""
