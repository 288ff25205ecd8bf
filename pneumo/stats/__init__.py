"""Statistics shared by training, calibration and evaluation: metrics and threshold rules, the site rule."""
