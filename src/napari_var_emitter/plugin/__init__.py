"""The napari plugin: dock widgets, reader, writer, sample data and layer converters. The only part
of the package that imports napari or Qt."""
