"""The FastAPI application: the page at ``/`` and the JSON API under ``/api`` (OpenAPI at ``/docs``,
``/openapi.json``), over one :class:`~styleforge.ui.engine.Engine`.

Errors are JSON ``{"error": "<one readable line>", "param": "<the field it is about>"}``: 400 for bad values
(a seed out of range, a file that is not a network, a photo without a face), 404 for an unknown id, 403 for a
network upload on a server started without ``--allow-uploads``, 413 for a body over the size limits, 422 for a
request of the wrong shape. A failing request never takes the server down.

A network without a W space (a baseline of :mod:`styleforge.baselines`, e.g. the bundled ``cdcgan-mnist``) opens
too: ``/api/info`` says ``"w_space": false`` (and its classes), ``/api/generate``, ``/api/render`` of a seed,
``/api/interpolate`` between two seeds (slerp in Z) and ``/api/download`` work; what needs a W space (edits, SeFa,
GANSpace, style mixing, W latents, projection) answers 400 with one line naming the network and why.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from ..errors import StyleforgeError
from .engine import Engine, Forbidden, LimitError, NotFound, check_seeds, size_text

STATIC = Path(__file__).resolve().parent / "static"

# library argument -> the API field that carries it (errors name the field the client sent)
API_NAMES = {"truncation_psi": "trunc", "class_idx": "class", "noise_mode": "noise_mode", "seeds": "seeds",
             "seed": "seed", "layers": "layers", "direction": "direction", "steps": "steps", "space": "space",
             "strengths": "strengths", "num_steps": "steps"}


# ---------------------------------------------------------------------------------------------------------------------
# Request bodies

class Mix(BaseModel):
    row: int = Field(description="seed whose latents are kept")
    col: int = Field(description="seed whose latents replace the chosen layers")
    layers: str = Field("0-3", description="latent layers taken from col, e.g. 0-3, all")
    trunc: float = 1.0


class Latent(BaseModel):
    """Exactly one of seed, latent, w or mix."""

    model_config = ConfigDict(populate_by_name=True)
    seed: Optional[int] = Field(None, description="z drawn as official generate.py draws it (0..2^32-1)")
    trunc: Optional[float] = Field(1.0, description="truncation psi for seed")
    class_idx: Optional[int] = Field(None, alias="class", description="class of a conditional network")
    latent: Optional[str] = Field(None, description="id of a stored latent (a projected photo)")
    w: Optional[List[Any]] = Field(None, description="inline latent: [w_dim] or [num_ws, w_dim]")
    mix: Optional[Mix] = Field(None, description="style mixing of two seeds")

    def spec(self) -> Dict[str, Any]:
        d = {"seed": self.seed, "trunc": self.trunc, "class": self.class_idx, "latent": self.latent, "w": self.w,
             "mix": self.mix.model_dump() if self.mix is not None else None}
        return {k: v for k, v in d.items() if v is not None}


class Edit(BaseModel):
    direction: Union[str, Dict[str, Any]] = Field(
        description="sefa:<layers>:<k>, ganspace:<layers>:<k>, a loaded file's id, or {vector: [...]}")
    strength: float = 1.0
    layers: Optional[str] = Field(None, description="latent layers to edit (default: the direction's own)")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    network: Optional[str] = Field(None, description="bundled name, path on the server or uploaded key")
    seed: Optional[int] = None
    seeds: Optional[Union[List[int], str]] = Field(None, description="list, or '0-7,12'")
    trunc: float = 1.0
    class_idx: Optional[int] = Field(None, alias="class")
    noise_mode: Literal["const", "random", "none"] = "const"
    format: Literal["png", "json"] = Field("png", description="png: the image (a grid for several seeds); "
                                                              "json: base64 PNGs")
    cols: Optional[int] = Field(None, ge=1, description="grid columns (png, several seeds)")


class RenderRequest(BaseModel):
    network: Optional[str] = None
    latent: Latent
    edits: List[Edit] = []
    noise_mode: Literal["const", "random", "none"] = "const"


class EditRequest(BaseModel):
    network: Optional[str] = None
    latent: Latent
    direction: Union[str, Dict[str, Any]]
    strength: Optional[float] = 1.0
    strengths: Optional[List[float]] = Field(None, description="several strengths: a strip (png) or a list (json)")
    layers: Optional[str] = None
    noise_mode: Literal["const", "random", "none"] = "const"
    format: Literal["png", "json"] = "png"


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    network: Optional[str] = None
    start: Latent = Field(alias="from")
    end: Latent = Field(alias="to")
    steps: int = 8
    space: Optional[Literal["z", "w", "w+"]] = Field(None, description="default: z between two seeds, else w/w+")
    noise_mode: Literal["const", "random", "none"] = "const"
    format: Literal["gif", "mp4", "frames"] = "gif"
    fps: float = Field(10, gt=0, le=60)


class Item(BaseModel):
    latent: Latent
    edits: List[Edit] = []
    name: Optional[str] = None


class DownloadRequest(BaseModel):
    network: Optional[str] = None
    items: List[Item]
    noise_mode: Literal["const", "random", "none"] = "const"


# ---------------------------------------------------------------------------------------------------------------------
# Errors and limits

def _error(status: int, message: str, param: Optional[str] = None) -> JSONResponse:
    body = {"error": message}
    if param:
        body["param"] = param
    return JSONResponse(body, status_code=status)


def _status(e: StyleforgeError) -> int:
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, Forbidden):
        return 403
    if isinstance(e, LimitError):
        return 413 if e.too_large else 400
    return 400


class BodyLimit:
    """ASGI middleware: refuses a body over the limit from its Content-Length (413) before it is read, and lets
    ``curl -d '{...}'`` (sent as form data) through as JSON on the JSON routes."""

    def __init__(self, app, engine: Engine):
        self.app, self.engine = app, engine

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            limits = self.engine.limits
            limit = limits.max_network_bytes if scope["path"] == "/api/networks" else limits.max_upload_bytes
            size = headers.get(b"content-length")
            if size is not None and size.isdigit() and int(size) > limit + (1 << 16):
                resp = _error(413, f"the request is {size_text(int(size))}, at most {size_text(limit)}")
                await resp(scope, receive, send)
                return
            if headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded"):
                scope = dict(scope, headers=[(k, b"application/json" if k == b"content-type" else v)
                                             for k, v in scope["headers"]])
        await self.app(scope, receive, send)


async def _read_upload(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{upload.filename or 'the upload'} is over {size_text(limit)}", param=what,
                         too_large=True)
    return data


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png")


# ---------------------------------------------------------------------------------------------------------------------
# The app

def create_app(engine: Engine) -> FastAPI:
    """The page and the API over ``engine``."""
    app = FastAPI(title="styleforge", version="1", description="Explore a StyleGAN2 network: generate, edit, "
                  "mix, interpolate, project photos (a baseline without a W space: generate and "
                  "interpolate in Z). Errors are JSON {error, param} with a 4xx status.")
    app.state.engine = engine
    app.add_middleware(BodyLimit, engine=engine)

    @app.exception_handler(StyleforgeError)
    async def _styleforge_error(request: Request, e: StyleforgeError):
        return _error(_status(e), " ".join(e.render(API_NAMES).split()), API_NAMES.get(e.param or "", e.param))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        errors = e.errors()
        if errors and errors[0].get("type") == "json_invalid":
            at = next((x for x in errors[0].get("loc", ()) if isinstance(x, int)), None)
            return _error(422, "the body is not valid JSON" + (f" (at character {at})" if at is not None else ""))
        parts = []
        for err in errors[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "form"))
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        first = errors[0].get("loc", ()) if errors else ()
        param = next((str(x) for x in first if isinstance(x, str) and x not in ("body", "query", "form")), None)
        return _error(422, "; ".join(parts) or "invalid request", param)

    @app.exception_handler(MemoryError)
    async def _oom(request: Request, e: MemoryError):
        return _error(503, "out of memory; ask for fewer or smaller images")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        if isinstance(e, RuntimeError) and "out of memory" in str(e):
            return _error(503, "out of memory; ask for fewer or smaller images")
        return _error(500, f"internal error ({type(e).__name__}: {str(e)[:200]}); the server is still running")

    # -- the page ------------------------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # -- information -----------------------------------------------------------------------------------------------
    @app.get("/api/info", summary="The network (loaded on first use), the device, limits, loaded directions")
    def info(network: Optional[str] = Query(None, description="bundled name, path on the server or uploaded key")):
        return engine.info(network)

    # -- images --------------------------------------------------------------------------------------------------
    @app.post("/api/generate", summary="Images of seeds, as official generate.py makes them",
              responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    def generate(req: GenerateRequest):
        if req.seed is not None and req.seeds is not None:
            raise StyleforgeError("give seed or seeds, not both", param="seeds")
        if req.seed is None and req.seeds is None:
            raise StyleforgeError("give seed (e.g. 3) or seeds (e.g. [0, 1, 2] or '0-7')", param="seeds")
        seeds = check_seeds([req.seed] if req.seed is not None else req.seeds, engine.limits)
        pngs = engine.generate(req.network, seeds, req.trunc, req.class_idx, req.noise_mode)
        if req.format == "json":
            return {"network": engine.network(req.network).key, "trunc": req.trunc, "noise_mode": req.noise_mode,
                    "images": [{"seed": s, "png": _b64(p)} for s, p in zip(seeds, pngs)]}
        return _png(pngs[0] if len(pngs) == 1 else engine.grid(pngs, req.cols))

    @app.post("/api/render", summary="One image of a latent with edits (what the page's sliders ask for)",
              responses={200: {"content": {"image/png": {}}}})
    def render(req: RenderRequest):
        return _png(engine.render(req.network, req.latent.spec(), [e.model_dump() for e in req.edits],
                                  req.noise_mode))

    @app.post("/api/edit", summary="A latent moved along a direction (one strength, or a strip of several)",
              responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    def edit(req: EditRequest):
        strengths = req.strengths if req.strengths is not None else [req.strength if req.strength is not None
                                                                      else 1.0]
        if not strengths or len(strengths) > engine.limits.max_seeds:
            raise LimitError(f"give 1 to {engine.limits.max_seeds} strengths", param="strengths")
        latent = req.latent.spec()
        pngs = [engine.render(req.network, latent, [{"direction": req.direction, "strength": s,
                                                     "layers": req.layers}], req.noise_mode) for s in strengths]
        if req.format == "json":
            net, ws = engine.latents_of(req.network, [{"latent": latent, "edits": [
                {"direction": req.direction, "strength": s, "layers": req.layers}]} for s in strengths])
            return {"network": net.key, "strengths": strengths,
                    "images": [{"strength": s, "png": _b64(p)} for s, p in zip(strengths, pngs)],
                    "w": ws.tolist()}
        return _png(pngs[0] if len(pngs) == 1 else engine.grid(pngs, cols=len(pngs)))

    @app.post("/api/interpolate", summary="Frames between two latents (seeds: slerp in Z; latents: lerp in W)",
              responses={200: {"content": {"image/gif": {}, "video/mp4": {}, "application/json": {}}}})
    def interpolate(req: InterpolateRequest):
        frames, ws, space = engine.interpolate(req.network, req.start.spec(), req.end.spec(), req.steps, req.space,
                                               req.noise_mode)
        if req.format == "frames":
            from .engine import png_bytes

            key = "w" if engine.network(req.network).w_space else "z"  # a baseline's frames are z [T, z_dim]
            return {"space": space, "frames": [_b64(png_bytes(f)) for f in frames], key: ws.tolist()}
        from ..video import ffmpeg_available, write_gif, write_mp4

        if req.format == "mp4" and ffmpeg_available() is None:
            raise StyleforgeError("mp4 needs imageio-ffmpeg on the server (pip install 'styleforge[video]'); ask "
                                  "for gif or frames", param="format")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"frames.{req.format}"
            (write_gif if req.format == "gif" else write_mp4)(list(frames), path, fps=req.fps)
            data = path.read_bytes()
        return Response(data, media_type="image/gif" if req.format == "gif" else "video/mp4",
                        headers={"X-Space": space})

    @app.post("/api/download", summary="A zip of the items' PNGs and their latents (latents.npz: w [N, num_ws, "
              "w_dim]; z [N, z_dim] for a network without a W space)",
              responses={200: {"content": {"application/zip": {}}}})
    def download(req: DownloadRequest):
        if not 1 <= len(req.items) <= engine.limits.max_seeds:
            raise LimitError(f"give 1 to {engine.limits.max_seeds} items", param="items")
        items = [{"latent": it.latent.spec(), "edits": [e.model_dump() for e in it.edits]} for it in req.items]
        net, ws = engine.latents_of(req.network, items)
        buf = io.BytesIO()
        names = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for k, (it, raw) in enumerate(zip(items, req.items)):
                name = "".join(ch for ch in (raw.name or f"image{k:02d}") if ch.isalnum() or ch in "-_")[:40]
                name = name or f"image{k:02d}"
                names.append(name)
                z.writestr(f"{name}.png", engine.render(req.network, it["latent"], it["edits"], req.noise_mode))
            npz = io.BytesIO()
            np.savez(npz, **{"w" if net.w_space else "z": ws}, names=np.array(names))
            z.writestr("latents.npz", npz.getvalue())
            z.writestr("items.json", json.dumps({"network": net.key, "noise_mode": req.noise_mode,
                                                 "items": [dict(it, name=n) for it, n in zip(items, names)]},
                                                indent=1))
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="images.zip"'})

    # -- uploads -------------------------------------------------------------------------------------------------
    @app.post("/api/directions", summary="Load a direction file (.npy / .npz; read without unpickling)")
    async def add_directions(file: UploadFile = File(...)):
        data = await _read_upload(file, engine.limits.max_upload_bytes, "direction")
        return {"directions": engine.add_direction_upload(data, file.filename or "direction.npy")}

    @app.post("/api/networks", summary="Upload a checkpoint (only with --allow-uploads; read by the safe reader)")
    async def add_network(file: UploadFile = File(...)):
        if not engine.allow_uploads:
            raise Forbidden("uploading networks is off on this server; start it with --allow-uploads, or give a "
                            "path on the server", param="network")
        data = await _read_upload(file, engine.limits.max_network_bytes, "network")
        net = engine.add_network_upload(data, file.filename or "")
        return engine.info(net.key)

    @app.post("/api/project", status_code=202,
              summary="Upload a photo: align it (dlib), then project it in the background; poll /api/jobs/{id}")
    async def start_project(photo: UploadFile = File(...), network: Optional[str] = Form(None),
                            align: bool = Form(True), steps: int = Form(200), seed: int = Form(303),
                            space: Literal["w", "w+"] = Form("w")):
        data = await _read_upload(photo, engine.limits.max_upload_bytes, "photo")
        net = engine.network(network)
        import anyio.to_thread

        target = await anyio.to_thread.run_sync(lambda: engine.prepare_photo(net, data, photo.filename or "photo",
                                                                              align))
        return engine.start_projection(net.key, target, steps, seed, space).status()

    @app.get("/api/jobs/{job_id}", summary="A projection job's progress")
    def job_status(job_id: str):
        return engine.job(job_id).status()

    @app.post("/api/jobs/{job_id}/cancel", summary="Cancel a projection job")
    def job_cancel(job_id: str):
        return engine.cancel(job_id).status()

    @app.delete("/api/jobs/{job_id}", summary="Cancel a projection job")
    def job_delete(job_id: str):
        return engine.cancel(job_id).status()

    @app.get("/api/jobs/{job_id}/{which}.png", summary="The job's target (aligned photo) or result image",
             responses={200: {"content": {"image/png": {}}}})
    def job_image(job_id: str, which: Literal["target", "result"]):
        job = engine.job(job_id)
        data = job.target_png if which == "target" else job.result_png
        if not data:
            raise NotFound(f"job {job_id} has no {which} image yet", param="job")
        return _png(data)

    return app
