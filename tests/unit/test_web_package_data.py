"""The explorer's templates and static files install with the package (non-editable installs
too): every file under settlement/web/templates and static matches a package-data glob."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "settlement" / "web"


def test_every_web_asset_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["settlement.web"]
    assets = [
        p.relative_to(WEB).as_posix()
        for folder in ("templates", "static")
        for p in (WEB / folder).rglob("*")
        if p.is_file()
    ]
    assert {"templates/base.html", "static/claim.js", "static/explorer.css"} <= set(assets)
    missing = [a for a in assets if not any(fnmatch.fnmatchcase(a, g) for g in globs)]
    assert not missing, f"add these to [tool.setuptools.package-data] settlement.web: {missing}"
    # A page may only load what the package serves: no CDN, no other host.
    for page in (WEB / "templates").glob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, page
