"""The browser playground (`/`, `/playground`) and offline API docs (`/docs`).

Everything the pages load comes from this server: the playground's files from the package's
`web/` folder, Swagger UI's from the `swagger-ui-bundle-v2` package, so both work with no
internet. The pages themselves are open (they hold no data); what they call (`/v1/*`, and the
model list below) asks for the API key like any client.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from voxserve.api.auth import require_api_key
from voxserve.diarize.wiring import is_diarization_model
from voxserve.errors import NotFound, Unavailable
from voxserve.stt.profiles import profile_for

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(str(files("voxserve") / "web"))
# The playground's files by name: nothing else under web/ (or above it) can be asked for.
_WEB_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
              ".svg": "image/svg+xml"}
# Swagger UI's files the docs page uses (the bundle carries source maps and demos too).
_SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
_NO_CACHE = {"cache-control": "no-cache"}  # revalidate: a new voxserve ships new pages


@router.get("/")
@router.get("/playground")
async def playground() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)


@router.get("/playground/")
async def playground_slash() -> RedirectResponse:
    return RedirectResponse("/playground")


@router.get("/playground/static/{name}")
async def playground_file(name: str) -> FileResponse:
    path = WEB_DIR / name
    media_type = _WEB_TYPES.get(path.suffix)
    if media_type is None or "/" in name or not path.is_file():
        raise NotFound(f"Invalid URL (GET /playground/static/{name})")
    return FileResponse(path, media_type=media_type, headers=_NO_CACHE)


@router.get("/playground/models", dependencies=[Depends(require_api_key)])
async def playground_models(request: Request) -> dict:
    """What each model id can do, so the pages offer only the options it takes; `/v1/models`
    keeps OpenAI's shape, which has no kind or features."""
    data = []
    for model in request.app.state.catalog.public_models():
        entry: dict = {"id": model.id, "kind": model.spec.kind}
        if model.spec.kind == "stt":
            profile = profile_for(model.profile)
            entry.update(
                diarize=is_diarization_model(model.spec),
                stream=profile.honours_stream,
                translations=profile.translations,
                timestamps=profile.timestamp_granularities,
                prompt=profile.prompt,
                formats=list(profile.formats),
            )
        data.append(entry)
    return {"object": "list", "data": data}


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    schema_url = request.app.openapi_url or "/openapi.json"
    return HTMLResponse(_DOCS_PAGE.replace("{schema_url}", schema_url), headers=_NO_CACHE)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    if name not in _SWAGGER_FILES:
        raise NotFound(f"Invalid URL (GET /docs/assets/{name})")
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        raise Unavailable(
            "The API docs need the swagger-ui-bundle-v2 package (pip install "
            "swagger-ui-bundle-v2)."
        ) from None
    return FileResponse(Path(str(swagger_ui_path)) / name)


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voxserve API</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "{schema_url}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  // The playground's key (same tab): "Try it out" works on a server with API keys too.
  requestInterceptor: (req) => {
    const key = sessionStorage.getItem("voxserve.apiKey");
    if (key && !req.headers.Authorization) req.headers.Authorization = "Bearer " + key;
    return req;
  },
});
</script>
</body>
</html>
"""
