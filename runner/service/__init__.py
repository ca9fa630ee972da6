"""The local labeling service: Ground Truth's labeling jobs on one machine."""

DEFAULT_PORT = 8008  # the service's port unless told otherwise
