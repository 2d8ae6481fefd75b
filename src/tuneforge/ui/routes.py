"""The dashboard's pages and streams: runs list, one run (curves, eval table, data report), predictions.

Pages are rendered on the server (Jinja2, autoescaped: predictions hold arbitrary
model output); the browser only opens event streams and redraws curves.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from tuneforge.errors import SecurityError, TuneforgeError
from tuneforge.eval.result import EvalResult
from tuneforge.rundir import RunDir
from tuneforge.ui.auth import COOKIE, same_origin
from tuneforge.ui.compare import compare_run, metric_names
from tuneforge.ui.launch import Checked, Launcher, check_config
from tuneforge.ui.exports import Exporter
from tuneforge.ui.events import metrics_events, runs_events, sse
from tuneforge.ui.paths import confined, run_path
from tuneforge.ui.playground import Playground, PlaygroundRequest, answer_events, choices
from tuneforge.ui.predictions import FILTERS, UNPARSEABLE, PredictionsCache, confusion, filter_page, prompt_text
from tuneforge.ui.runs import is_run_folder, list_runs, read_json, read_run_file, summarize
from tuneforge.ui.training_data import TrainingCache, length_histogram
from tuneforge.ui.uploads import MAX_UPLOAD_BYTES, UploadTooLarge, store, upload_path, with_training_data

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals["prompt_text"] = prompt_text
# Browsers and proxies must not buffer an event stream, or the curves arrive in lumps.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter()


@dataclass
class UIContext:
    runs_dir: Path
    predictions: PredictionsCache
    playground: Playground
    launcher: Launcher
    training: TrainingCache
    exporter: Exporter
    upload_limit: int = MAX_UPLOAD_BYTES


class RunNotFound(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _ctx(request: Request) -> UIContext:
    return request.app.state.ui


def _run(request: Request, name: str) -> Path:
    """The run folder named in the URL, or :class:`RunNotFound` (400 for a name that leaves the runs folder)."""
    runs_dir = _ctx(request).runs_dir
    try:
        folder = run_path(runs_dir, name)
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    if not is_run_folder(folder):
        raise RunNotFound(404, f"no run named {name!r} in {runs_dir}")
    return folder


def _eval(runs_dir: Path, folder: Path) -> EvalResult | None:
    data = read_json(runs_dir, RunDir(folder).eval / "metrics.json")
    try:
        return EvalResult.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None  # an older or foreign metrics.json: the page shows the run without its table


@router.get("/health", include_in_schema=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    runs_dir = _ctx(request).runs_dir
    runs = list_runs(runs_dir)
    context = {"runs": runs, "runs_data": [r.to_dict() for r in runs], "runs_dir": runs_dir}
    return TEMPLATES.TemplateResponse(request, "runs.html", context)


@router.get("/api/runs")
def runs_json(request: Request) -> JSONResponse:
    return JSONResponse([r.to_dict() for r in list_runs(_ctx(request).runs_dir)])


@router.get("/api/runs/events")
def runs_stream(request: Request) -> StreamingResponse:
    events = runs_events(_ctx(request).runs_dir, request.is_disconnected)
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/runs/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str) -> HTMLResponse:
    return _run_page(request, name)


def _run_page(request: Request, name: str, refusal: str | None = None, status_code: int = 200) -> HTMLResponse:
    runs_dir, folder = _ctx(request).runs_dir, _run(request, name)
    run = RunDir(folder)
    status = read_json(runs_dir, folder / "status.json")
    predictions = run.eval / "predictions.jsonl"
    rows = _ctx(request).predictions.load(predictions) if _inside(runs_dir, predictions) else []
    matrices = {side: confusion(rows, side) for side in ("base", "tuned")}
    plots = [p for p in _EVAL_PLOTS if (run.eval / p).is_file() and _inside(runs_dir, run.eval / p)]
    return TEMPLATES.TemplateResponse(request, "run.html", {
        "matrices": {side: m for side, m in matrices.items() if m[1]}, "unparseable": UNPARSEABLE, "plots": plots,
        "run": summarize(runs_dir, folder), "eval": _eval(runs_dir, folder),
        "report": read_json(runs_dir, run.data_report),
        # The run's length, for progress and ETA, when the run wrote it (status.json's optional max_steps).
        "max_steps": status.get("max_steps") if isinstance(status, dict) else None,
        "exports": _ctx(request).exporter.jobs(name), "refusal": refusal,
    }, status_code=status_code)


@router.post("/runs/{name}/export", response_class=HTMLResponse)
async def export_run(request: Request, name: str) -> HTMLResponse:
    """Start ``tuneforge export`` of a finished run (``kind=hf|gguf-f16|gguf-q8_0``); a refusal is shown on the run page."""
    kind = (await _form(request)).get("kind", "")
    _run(request, name)
    try:
        await asyncio.to_thread(_ctx(request).exporter.start, name, kind)
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    except TuneforgeError as exc:
        return _run_page(request, name, refusal=str(exc), status_code=409)
    return RedirectResponse(f"/runs/{name}#export", status_code=303)


@router.get("/api/runs/{name}/exports")
def exports_json(request: Request, name: str) -> JSONResponse:
    _run(request, name)
    return JSONResponse([job.to_dict() for job in _ctx(request).exporter.jobs(name)])


@router.get("/runs/{name}/data", response_class=HTMLResponse)
def data_page(request: Request, name: str, page: int = Query(1, ge=1)) -> HTMLResponse:
    """The data report, the training split's token lengths and its examples as the model saw them."""
    runs_dir, folder = _ctx(request).runs_dir, _run(request, name)
    run = RunDir(folder)
    view = _ctx(request).training.get(runs_dir, folder)
    stored = read_json(runs_dir, run.train_lengths)
    if isinstance(stored, dict) and isinstance(stored.get("train"), list):
        pairs, origin = stored["train"], "recorded by training in data/lengths.json"
    elif view.rows:
        pairs = Counter(len(r["input_ids"]) for r in view.rows).items()
        origin = "from the examples rebuilt below (this run did not record data/lengths.json)"
    else:
        pairs, origin = [], view.problem or "the run recorded none"
    try:
        histogram = length_histogram(pairs)
    except (TypeError, ValueError):  # a foreign or damaged lengths.json
        histogram, origin = [], f"{run.train_lengths.name} is malformed"
    return TEMPLATES.TemplateResponse(request, "data.html", {
        "run": summarize(runs_dir, folder), "report": read_json(runs_dir, run.data_report),
        "histogram": histogram, "length_total": sum(b.count for b in histogram), "length_origin": origin,
        "view": view, "page": min(page, view.pages), "examples": view.page(min(page, view.pages)),
    })


# The evaluation's plots, by name: a fixed list, so no file name from the URL is ever opened.
_EVAL_PLOTS = ("metrics.png", "loss_curve.png")


@router.get("/runs/{name}/eval/{plot}")
def eval_plot(request: Request, name: str, plot: str) -> FileResponse:
    folder = _run(request, name)
    path = RunDir(folder).eval / plot
    if plot not in _EVAL_PLOTS or not path.is_file() or not _inside(_ctx(request).runs_dir, path):
        raise RunNotFound(404, f"no plot {plot!r} in run {name!r}")
    return FileResponse(path, media_type="image/png")


@router.get("/api/runs/{name}/metrics")
def metrics_stream(request: Request, name: str) -> StreamingResponse:
    folder = _run(request, name)
    last = request.headers.get("last-event-id", "0")
    offset = int(last) if last.isdigit() else 0  # a browser reconnecting resumes after what it has
    events = metrics_events(_ctx(request).runs_dir, folder, offset, request.is_disconnected)
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/runs/{name}/predictions", response_class=HTMLResponse)
def predictions_page(
    request: Request, name: str, kind: str = Query("all"), label: str = Query(""), q: str = Query(""),
    page: int = Query(1, ge=1),
) -> HTMLResponse:
    ctx, folder = _ctx(request), _run(request, name)
    if kind not in FILTERS:
        raise RunNotFound(400, f"filter kind={kind!r}: expected one of {', '.join(FILTERS)}")
    result = _eval(ctx.runs_dir, folder)
    metric = result.changed.metric if result is not None and result.changed is not None else None
    path = RunDir(folder).eval / "predictions.jsonl"
    rows = ctx.predictions.load(path) if path.exists() and _inside(ctx.runs_dir, path) else []
    found = filter_page(rows, kind=kind, metric=metric, label=label or None, query=q or None, page=page)
    return TEMPLATES.TemplateResponse(request, "predictions.html", {
        "run": summarize(ctx.runs_dir, folder), "found": found, "kind": kind, "label": label, "q": q,
        "filters": FILTERS, "metric": metric, "has_file": path.exists(),
    })


def _inside(runs_dir: Path, path: Path) -> bool:
    """Whether ``path`` resolves inside the runs folder (a symlinked predictions file may point elsewhere)."""
    try:
        confined(runs_dir, path)
    except SecurityError:
        return False
    return True


def error_page(request: Request, exc: RunNotFound) -> HTMLResponse:
    context: dict[str, Any] = {"status": exc.status, "message": exc.message}
    return TEMPLATES.TemplateResponse(request, "error.html", context, status_code=exc.status)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "login.html", {})


@router.post("/login")
async def login(request: Request) -> RedirectResponse:
    """Keep the key typed into the form in an HttpOnly cookie; every later request is checked with it."""
    key = (await _form(request)).get("key", "").strip()
    response = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", secure=secure)
    return response


@router.get("/playground", response_class=HTMLResponse)
def playground_page(request: Request) -> HTMLResponse:
    found = choices(_ctx(request).runs_dir)
    return TEMPLATES.TemplateResponse(request, "playground.html", {"choices": found})


@router.post("/api/playground")
async def playground_answer(body: PlaygroundRequest, request: Request) -> StreamingResponse:
    """One side's answer, streamed; the page posts two of these at once (prompt text stays out of every log)."""
    _check_origin(request)  # a JSON post from another site needs CORS, which is off; checked anyway
    playground = _ctx(request).playground
    try:
        engine, name = await asyncio.to_thread(playground.engine_for, body.run, body.side)
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    except TuneforgeError as exc:  # no weights, or they do not load: said in the answer's place
        message = sse({"message": str(exc)}, event="error")
        return StreamingResponse(iter([message]), media_type="text/event-stream", headers=_SSE_HEADERS)
    events = answer_events(engine, name, body)
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


_MAX_FORM_BYTES = 1 << 20  # a config is a few KiB; refuse a runaway upload before parsing it


def _check_origin(request: Request) -> None:
    if not same_origin(request.headers, request.url.scheme):
        raise RunNotFound(403, f"refused a form posted from another site ({request.headers.get('origin')})")


async def _form(request: Request) -> dict[str, str]:
    _check_origin(request)
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise RunNotFound(413, f"the form is {len(body)} bytes; at most {_MAX_FORM_BYTES} are accepted")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


@router.get("/launch", response_class=HTMLResponse)
def launch_page(request: Request, source: str = Query("", alias="from")) -> HTMLResponse:
    """The launch form, optionally holding the config of an earlier run (``?from=RUN``)."""
    text = ""
    if source:
        folder = _run(request, source)
        try:
            text = read_run_file(_ctx(request).runs_dir, RunDir(folder).config).decode("utf-8")
        except (OSError, ValueError, SecurityError):
            text = ""
    return _launch_form(request, text, None)


@router.post("/launch", response_class=HTMLResponse)
async def launch_submit(request: Request) -> HTMLResponse:
    """Validate the config (``action=validate``) or validate and start it (``action=launch``)."""
    form = await _form(request)
    text, ctx = form.get("config", ""), _ctx(request)
    if form.get("action") == "launch":
        checked = await asyncio.to_thread(ctx.launcher.launch, text)
        if checked.ok:
            return RedirectResponse(f"/runs/{checked.name}", status_code=303)
    else:
        checked = await asyncio.to_thread(check_config, text, ctx.runs_dir)
    return _launch_form(request, text, checked)


def _launch_form(request: Request, text: str, checked: Checked | None, note: str | None = None,
                 status_code: int | None = None) -> HTMLResponse:
    lines = text.splitlines()
    context = {"text": text, "checked": checked, "lines": list(enumerate(lines, 1)), "runs_dir": _ctx(request).runs_dir,
               "note": note, "upload_limit": _ctx(request).upload_limit}
    status = status_code or (200 if checked is None or checked.ok else 422)
    return TEMPLATES.TemplateResponse(request, "launch.html", context, status_code=status)


@router.post("/launch/upload")
async def upload_data(request: Request, filename: str = Query(..., max_length=255)) -> JSONResponse:
    """Store the request body (the file itself, not a form) under ``RUNS/_uploads/`` and check it as training data."""
    _check_origin(request)
    ctx = _ctx(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ctx.upload_limit:  # refused before a byte is stored
        return JSONResponse({"ok": False, "problem": f"{filename!r} is {declared} bytes; the upload limit is "
                             f"{ctx.upload_limit} bytes"}, status_code=413)
    try:
        uploaded = await store(ctx.runs_dir, filename, request.stream(), ctx.upload_limit)
    except UploadTooLarge as exc:
        return JSONResponse({"ok": False, "problem": str(exc)}, status_code=413)
    except TuneforgeError as exc:
        return JSONResponse({"ok": False, "problem": str(exc)}, status_code=400)
    body = {"ok": uploaded.ok, "name": uploaded.shown_name, "stored": uploaded.stored, "rows": uploaded.rows,
            "format": uploaded.format, "path": str(uploaded.path) if uploaded.path else None, "problem": uploaded.problem}
    return JSONResponse(body, status_code=200 if uploaded.ok else 422)


@router.post("/launch/use-upload", response_class=HTMLResponse)
async def use_upload(request: Request) -> HTMLResponse:
    """The launch form again, its config's ``data.train`` now the upload named in the form."""
    form = await _form(request)
    text = form.get("config", "")
    try:
        path = upload_path(_ctx(request).runs_dir, form.get("upload", ""))
        if not path.is_file():
            raise TuneforgeError(f"no upload {form.get('upload')!r} (uploads that fail their check are not kept)")
        new_text = with_training_data(text, path.resolve())
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    except TuneforgeError as exc:
        return _launch_form(request, text, None, note=f"error: {exc}", status_code=422)
    return _launch_form(request, new_text, None, note=f"data.train is now the upload {path.name} (comments in the YAML are not kept)")


@router.post("/runs/{name}/stop")
def stop_run(request: Request, name: str) -> RedirectResponse:
    _check_origin(request)
    _run(request, name)
    try:
        _ctx(request).launcher.stop(name)
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    except TuneforgeError as exc:
        raise RunNotFound(409, str(exc)) from exc
    return RedirectResponse(f"/runs/{name}", status_code=303)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: list[str] = Query(default=[])) -> HTMLResponse:
    """Several runs side by side: ``/compare?run=a&run=b``."""
    runs_dir = _ctx(request).runs_dir
    try:
        compared = [compare_run(runs_dir, name) for name in dict.fromkeys(run) if _run(request, name)]
    except SecurityError as exc:
        raise RunNotFound(400, str(exc)) from exc
    context = {
        "compared": compared, "metric_names": metric_names(compared), "all_runs": list_runs(runs_dir),
        "selected": set(run),
        # A list, not a dict: tojson sorts keys, and the colours must follow the table's order.
        "curves": [[c.summary.name, c.curves] for c in compared],
    }
    return TEMPLATES.TemplateResponse(request, "compare.html", context)
