"""Training: options, the feature cache, the recipe (heads, threshold, checks) and the lung-field head."""
