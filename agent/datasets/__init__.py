"""Synthetic data: procedural shapes data sets and videos with exact ground truth."""
