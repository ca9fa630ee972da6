"""gtrun: declarative SageMaker Ground Truth labeling jobs."""

__version__ = "0.1.0"
