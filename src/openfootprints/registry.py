"""The model registry: which bundle is in use, which came before, and why (MLflow's model registry).

``openfootprints models register MODEL.ofp --name NAME`` stores a copy of the bundle (the registry's own, so a later
overwrite of MODEL.ofp cannot change a registered version) and records its metrics, data fingerprint, parent and
SHA-256 as tags of a new version. Aliases name the versions in use: ``promote NAME VERSION`` points ``champion`` (or
``--alias challenger``) at a version, ``rollback NAME`` points it back at the version it named before. Detection
takes ``--model models:/NAME@champion`` (or ``models:/NAME/3``): the registry resolves it to the stored bundle, whose
SHA-256 is checked, and detection runs on that file — the bundle stays the one file detection needs.

The registry is a local SQLite database by default (``~/.openfootprints/registry.db``, bundles beside it in
``models/``), or any MLflow tracking URI: ``models --registry URI``, or ``$OPENFOOTPRINTS_REGISTRY`` (which
``detect --model models:/…`` reads too).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from openfootprints.errors import InputError
from openfootprints.model import base
from openfootprints.model.bundle import Bundle, file_sha256

log = logging.getLogger(__name__)

PREFIX = "models:/"
DEFAULT_HOME = Path.home() / ".openfootprints"
HISTORY_TAG = "openfootprints.alias_history"  # on the registered model: {alias: [versions it named, oldest first]}


def model_or_base(path: str | None) -> str:
    """The bundle a command runs: ``path``, a registered model (``models:/NAME@ALIAS``, resolved to its stored
    bundle), or the shipped base model when None."""
    if path is not None and path.startswith(PREFIX):
        return resolve(path)
    if path is not None:
        return path
    if not base.BASE_MODEL.exists():
        raise InputError(f"{base.BASE_MODEL}: this installation has no base model; pass --model (a bundle from "
                         "`openfootprints train`)")
    return str(base.BASE_MODEL)


def registry_uri(uri: str | None = None) -> str:
    """``uri``, else ``$OPENFOOTPRINTS_REGISTRY``, else the local SQLite registry."""
    uri = uri or os.environ.get("OPENFOOTPRINTS_REGISTRY")
    if uri:
        return uri
    DEFAULT_HOME.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_HOME / 'registry.db'}"


def store_folder(uri: str) -> Path:
    """Where registered bundles are copied: beside a SQLite registry, else in ``~/.openfootprints/models``."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "models"
    return DEFAULT_HOME / "models"


def _client(uri: str | None):
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the database's set-up, once
    from mlflow import MlflowClient

    uri = registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def version_tags(bundle: Bundle, sha256: str) -> dict[str, str]:
    """What a version records of its bundle (MLflow tags are strings)."""
    training = bundle.training
    tags = {"sha256": sha256, "data_fingerprint": bundle.data_fingerprint, "resolution_m": f"{bundle.resolution_m:g}",
            "architecture": f"{bundle.architecture.arch} {bundle.architecture.encoder}", "target": bundle.target,
            "bands": json.dumps(bundle.bands), "metrics": json.dumps(training.get("metrics", {}))}
    if "parent" in training:
        tags["parent_fingerprint"] = str(training["parent"].get("fingerprint", ""))
    return tags


def register(model: str, name: str, uri: str | None = None, description: str = "") -> dict:
    """Register the bundle at ``model`` as a new version of ``name`` (created if new); returns the version."""
    from openfootprints.model.bundle import load_bundle

    bundle = load_bundle(model)
    client, uri = _client(uri)
    sha = file_sha256(model)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=description or None)
    staged = store_folder(uri) / name / f"{sha[:16]}.ofp"  # by content: registering a file twice stores it once
    staged.parent.mkdir(parents=True, exist_ok=True)
    if not staged.exists():
        shutil.copyfile(model, staged)
    version = client.create_model_version(name, source=str(staged), tags=version_tags(bundle, sha),
                                          description=description or None)
    log.info("registered %s as %s version %s", model, name, version.version)
    return describe(version)


def describe(version) -> dict:
    return {"name": version.name, "version": int(version.version), "aliases": sorted(version.aliases or []),
            "source": version.source, "created": version.creation_timestamp,
            "metrics": json.loads(version.tags.get("metrics", "{}")), "sha256": version.tags.get("sha256", ""),
            "data_fingerprint": version.tags.get("data_fingerprint", ""), "description": version.description or ""}


def list_versions(name: str | None = None, uri: str | None = None) -> list[dict]:
    """Every version (of ``name``, or of every registered model), newest first within a model."""
    client, _ = _client(uri)
    models = [m.name for m in client.search_registered_models()] if name is None else [name]
    rows = []
    for model in sorted(models):
        versions = client.search_model_versions(f"name = '{model}'")
        if name is not None and not versions:
            raise InputError(f"{PREFIX}{name}: no such registered model")
        # search results leave out aliases: each version is read on its own
        rows += sorted((describe(client.get_model_version(model, v.version)) for v in versions),
                       key=lambda r: -r["version"])
    return rows


def promote(name: str, version: int, alias: str = "champion", uri: str | None = None) -> dict:
    """Point ``alias`` of ``name`` at ``version``; the version it named before is remembered for :func:`rollback`."""
    client, _ = _client(uri)
    target = _version(client, name, version)
    history = _history(client, name)
    current = _alias_version(client, name, alias)
    if current is not None and current != int(target.version):
        history.setdefault(alias, []).append(current)
    client.set_registered_model_alias(name, alias, str(target.version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return describe(client.get_model_version(name, str(target.version)))


def rollback(name: str, alias: str = "champion", uri: str | None = None) -> dict:
    """Point ``alias`` back at the version it named before the last :func:`promote`."""
    client, _ = _client(uri)
    history = _history(client, name)
    if not history.get(alias):
        raise InputError(f"{PREFIX}{name}@{alias}: nothing to roll back to (no earlier version held this alias)")
    previous = history[alias].pop()
    client.set_registered_model_alias(name, alias, str(previous))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return describe(client.get_model_version(name, str(previous)))


def resolve(reference: str, uri: str | None = None) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` → the registered bundle's path (content checked)."""
    body = reference.removeprefix(PREFIX)
    client, _ = _client(uri)
    if "@" in body:
        name, alias = body.split("@", 1)
        if _alias_version(client, name, alias) is None:
            raise InputError(f"{reference}: no such model alias in the registry {registry_uri(uri)}")
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in body and body.rsplit("/", 1)[1].isdigit():
        name, number = body.rsplit("/", 1)
        version = _version(client, name, int(number))
    else:
        raise InputError(f"{reference}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    path = version.source
    if not os.path.exists(path):
        raise InputError(f"{reference}: its bundle {path} is missing from the registry's store")
    if version.tags.get("sha256") and file_sha256(path) != version.tags["sha256"]:
        raise InputError(f"{reference}: its bundle {path} was changed after it was registered (SHA-256 differs)")
    return path


def _version(client, name: str, version: int):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise InputError(f"{PREFIX}{name}/{version}: no such model version") from None


def _alias_version(client, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise InputError(f"{PREFIX}{name}: no such registered model") from None
    return int(model.aliases[alias]) if alias in (model.aliases or {}) else None


def _history(client, name: str) -> dict[str, list[int]]:
    return json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "{}"))
