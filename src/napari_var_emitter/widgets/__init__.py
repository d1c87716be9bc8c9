"""napari dock widgets (the only part of the package, with ``_sample_data``/``_reader``/``_writer``,
that imports napari or Qt)."""
