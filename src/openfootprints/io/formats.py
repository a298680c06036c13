"""The vector formats a buildings table can be written in, by file extension (the one list of them)."""

FORMATS = {".parquet": "parquet", ".geoparquet": "parquet", ".geojson": "GeoJSON", ".json": "GeoJSON",
           ".fgb": "FlatGeobuf", ".gpkg": "GPKG", ".csv": "csv"}
