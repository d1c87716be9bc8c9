"""What comes after localization: metrics against a ground truth, super-resolution rendering."""
