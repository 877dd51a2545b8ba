"""Evaluation of reconstructions: L1, AKD, MKR and AED (FOMM/TPSMM protocol) with offline detectors.

`utils.detectors` holds the detectors (shared with the face crop), `evaluation.metrics` the metrics,
`evaluation.cli` the command line (`python -m evaluation`), `evaluation.compare`
the table across runs.
"""
