"""The run's plumbing (the command line, processes, files) and the hand-in bundler."""
