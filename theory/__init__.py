"""The write-up's side of the pipeline: macros.py turns a run's results into LaTeX macros."""
