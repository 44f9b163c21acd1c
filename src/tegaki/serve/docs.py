"""/docs without a network: Swagger UI's files are served from a Python package (swagger-ui-bundle-v2,
which installs `swagger_ui_bundle`), not from a CDN, so the API documentation works offline.

    add_docs(app)        # app = FastAPI(docs_url=None, redoc_url=None, ...)

  GET /docs                 Swagger UI's page, reading /openapi.json
  GET /docs-assets/...      swagger-ui-bundle.js, swagger-ui.css, favicon-32x32.png from the package
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def add_docs(app: FastAPI, path: str = "/docs") -> None:
    """Swagger UI at `path`, every file it loads from this server."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(path, include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title}: API documentation",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # no badge fetched from the validator's site
