"""Training: options, the feature cache, the head loop, optional block5 fine-tuning, the checks, metrics and
the bundle's card and plots."""
