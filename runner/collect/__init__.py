"""From labeling output to model-ready data: parse output manifests, transform, report."""
