"""The applications on top of the library: training runs (`training.py`),
the method comparison (`comparison.py`, its reports in `reports.py`),
plots (`plotting.py`) and atomic file writes (`files.py`). The command line
(`keras_repnet.cli`) drives them."""
