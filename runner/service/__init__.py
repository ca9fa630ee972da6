"""The local labeling service: Ground Truth's labeling jobs on one machine."""
