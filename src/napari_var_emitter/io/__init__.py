"""Data in and out: camera frames (TIFF stacks, lazily), localization tables (ThunderSTORM CSV,
Picasso HDF5) and atomic writes. Imports neither torch nor napari."""
