"""The HTTP service: ``openfootprints serve --model model.ofp`` runs :func:`create_app` with uvicorn.

``POST /detect`` (a GeoTIFF in, its buildings out as GeoJSON or GeoParquet), ``GET /health``, ``GET /model``,
and the OpenAPI document at ``/openapi.json`` (browsable at ``/docs``). Limits are the ``serve`` section of
the config. ``create_app(..., viewer=app)`` mounts a web map viewer (:mod:`openfootprints.view`) at ``/viewer``.
"""

from openfootprints.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
