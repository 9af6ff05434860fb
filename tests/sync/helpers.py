"""Shared test helpers: a real hub app in-process, bundles that break in one precise way."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edgerec_sdk.bundle import sign_manifest
from edgerec_sdk.hub import HubApp
from edgerec_sdk.hub.publish import make_tar
from edgerec_sdk.testing import make_tiny_bundle

ADMIN, EDGE, KEY = "admin-token", "edge-token", b"signing-key"


def new_hub(root: Path) -> HubApp:
    return HubApp(root, admin_tokens=[ADMIN], edge_tokens=[EDGE])


def admin(app: HubApp) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://hub",
                        headers={"Authorization": f"Bearer {ADMIN}"})


def publish(app: HubApp, bundle: Path, *, channel: str | None = "stable") -> None:
    url = "/v1/bundles" + (f"?channel={channel}" if channel else "")
    with admin(app) as c:
        r = c.post(url, content=make_tar(bundle))
        if r.status_code not in (200, 201):
            raise AssertionError(r.text)


def bundle(tmp: Path, version: str, *, seed: int = 0, key: bytes | None = KEY) -> Path:
    return make_tiny_bundle(tmp / version, model_version=version, seed=seed, signing_key=key)


def rewrite(bundle_dir: Path, mutate: Callable[[dict[str, Any]], None], *, key: bytes | None = KEY) -> Path:
    """Change the manifest (and re-sign it) without touching the files."""
    doc = json.loads((bundle_dir / "manifest.json").read_bytes())
    mutate(doc)
    (bundle_dir / "manifest.json").write_bytes(json.dumps(doc, indent=2, sort_keys=True).encode())
    if key is not None:
        sign_manifest(bundle_dir, key)
    return bundle_dir


def replace_file(bundle_dir: Path, name: str, data: bytes, *, key: bytes | None = KEY) -> Path:
    """Replace one file and declare its new size and sha256 honestly (a well-formed but bad bundle)."""
    import hashlib

    (bundle_dir / name).write_bytes(data)

    def mutate(doc: dict[str, Any]) -> None:
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    return rewrite(bundle_dir, mutate, key=key)
