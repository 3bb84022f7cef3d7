"""The command line: ``movingtarget run | list | report``."""
