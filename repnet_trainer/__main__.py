"""`python -m repnet_trainer --model=model.tflite --data=photos/`."""

import sys

from repnet_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
