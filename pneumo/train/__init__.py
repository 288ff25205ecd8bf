"""Training: options, the feature cache, the recipe (heads, threshold, checks), the lung-field head, metrics and
the bundle's card and plots."""
