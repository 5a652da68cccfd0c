"""Launching grids of training runs with submitit: locally, in-process (debug) or on a SLURM cluster."""
