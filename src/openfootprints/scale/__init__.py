"""Continental scale: an area of interest cut into quadkey cells, each detected on its own and written atomically."""
