"""openfootprints: building footprints from high-resolution imagery.

The Python API (:mod:`openfootprints.api`) is importable from here: ``detect``, ``detect_file``, ``load_detector``
(and its ``Detector``), ``detect_at_scale``, ``evaluate``, ``train``, ``finetune``, ``suggest``, ``load_model``,
``stac_item``, ``config`` and ``view_map`` (the web map, from Python: a ``MapView``; ``openfootprints.view`` is
the viewer's package); it is loaded on first use, so the command line starts without it.
"""

__version__ = "0.1.0"

__all__ = ["Detector", "MapView", "config", "detect", "detect_at_scale", "detect_file", "evaluate", "finetune",
           "load_detector", "load_model", "stac_item", "suggest", "train", "view_map", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from openfootprints import api

        return getattr(api, name)
    raise AttributeError(f"module 'openfootprints' has no attribute {name!r}")
