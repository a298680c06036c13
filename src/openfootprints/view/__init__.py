"""The web map viewer: a buildings table on its imagery, coloured by confidence, with the truth outlines.

``openfootprints view RESULT [--imagery SCENE] [--truth FILE]`` serves it locally. Another application
(the HTTP service) mounts it with ``app.mount("/viewer", create_app(prepare_viewer(cfg, result, …)))``, or
serves :data:`STATIC_DIR` (the page and its bundle) itself with a ``config.json`` beside it.
"""

from openfootprints.view.server import STATIC_DIR, Viewer, create_app, prepare_viewer, running, serve

__all__ = ["STATIC_DIR", "Viewer", "create_app", "prepare_viewer", "running", "serve"]
