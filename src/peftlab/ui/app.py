"""The dashboard's pages and endpoints (Starlette). Every page is read from the folders on each request;
progress is pushed with server-sent events. Only GET reads; the three POSTs (launch, stop, resume)
carry the page's token, so another web page cannot make the browser start a sweep. Text from the
folders (run names, errors, labels, predictions) is only ever data: templates escape it (JSON for a
script with `tojson`, read by ui.js from a non-executable block), and every response carries a
Content-Security-Policy that runs no inline script, so text that slips through still runs nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlencode

from anyio import to_thread
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from peftlab.errors import UserError
from peftlab.report.tables import (
    COSTS,
    epochs_rows,
    phases_of,
    recommendation_lines,
    summarize,
    table_rows,
    to_csv,
    to_markdown,
)
from peftlab.runs import layout
from peftlab.runs.measure import memory_label
from peftlab.runs.rundir import UnreadableFile, read_text
from peftlab.ui import folders as F
from peftlab.ui.compare import comparison
from peftlab.ui.jobs import Jobs, shipped_recipes

HERE = Path(__file__).parent
PLOT_LOCK = threading.Lock()  # pyplot is not thread-safe; plots are drawn one at a time


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# Scripts only from the dashboard's own files (ui.js): no inline script, no handler attribute, no eval;
# nothing loaded from elsewhere; no plugin, no framing by another site, forms only to the dashboard.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# a file of a run folder shown by /file/: no script, no styles, no requests of its own, whatever it holds
FILE_CSP = "default-src 'none'; sandbox"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


class SecurityHeaders:
    """Every response gets SECURITY_HEADERS; a handler's own Content-Security-Policy (/file/'s) is kept."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
                message["headers"] = headers.raw
            await send(message)

        await self.app(scope, receive, send_with_headers)


def looks_like_text(path: Path) -> bool:
    """UTF-8 without NUL bytes in its first 8 KiB: shown as text (a log, a config, a report of any suffix);
    anything else is offered as a download rather than shown as garbage."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a character cut by the 8 KiB boundary
    return True


def create_app(
    root: Path,
    allow: list[Path] = (),
    hosts: list[str] = ("127.0.0.1", "localhost", "[::1]"),
    allow_hub: bool = False,
    allow_remote_code: bool = False,
) -> Starlette:
    root = Path(root).resolve()
    jobs = Jobs(root, list(allow), allow_hub=allow_hub, allow_remote_code=allow_remote_code)
    token = secrets.token_urlsafe(24)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["fmt"] = fmt
    templates.env.globals.update(token=token, root=str(root), workdir=str(jobs.workdir), memory_label=memory_label)

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def problem(request: Request, message: str, status: int = 400) -> Response:
        return page(request, "error.html", status=status, message=message)

    def guarded(handler):
        """Refused paths answer 404 (nothing outside RUNS_DIR is read); a UserError is a 400 page with it."""

        async def wrapped(request: Request):
            try:
                return await handler(request)
            except F.Refused:
                return problem(request, "not found in the runs folder", 404)
            except (UserError, UnreadableFile) as e:
                return problem(request, str(e))

        return wrapped

    async def checked_form(request: Request):
        form = await request.form()
        if not secrets.compare_digest(str(form.get("token", "")), token):
            raise UserError("this form is stale or came from another page: reload the dashboard and try again")
        return form

    @guarded
    async def index(request: Request):
        sweeps, runs = await to_thread.run_sync(F.all_runs, root)
        return page(request, "index.html", sweeps=sweeps, runs=runs)

    @guarded
    async def run_page(request: Request):
        rel = request.path_params["rel"]
        folder, run = await to_thread.run_sync(F.run_at, root, rel)
        path = F.inside(root, rel)
        config = read_text(path / layout.CONFIG, fix="") or ""
        result = run.result or {}
        keys = list(dict.fromkeys(k for h in run.history for k in h if k not in ("epoch", "step")))
        return page(
            request,
            "run.html",
            rel=rel,
            folder=folder,
            run=run,
            result=result,
            config=config,
            history=run.history,
            keys=keys,
            files=F.listing(path),
            predictions=F.prediction_files(path),
        )

    @guarded
    async def predictions(request: Request):
        rel = request.path_params["rel"]
        path = F.inside(root, rel)
        names = F.prediction_files(path)
        name = request.query_params.get("file") or (names[0] if names else "")
        if name not in names:
            raise F.Refused(name)
        errors = request.query_params.get("errors") == "1"
        _, run = F.run_at(root, rel)
        data = await to_thread.run_sync(F.read_predictions, path, name, errors, (run.result or {}).get("labels"))
        return page(request, "predictions.html", rel=rel, names=names, data=data, errors=errors)

    def ids_of(request: Request) -> list[str]:
        return request.query_params.getlist("run")

    @guarded
    async def compare(request: Request):
        ids = ids_of(request)
        s, runs = await to_thread.run_sync(comparison, root, ids)
        tables = [(title, *table_rows(s, phase)) for title, phase in phases_of(s)] if s["groups"] else []
        metric = request.query_params.get("metric") or s.get("metric")
        cost = request.query_params.get("cost") or "peak_memory_mb"
        if s["groups"] and (metric not in s["columns"] or cost not in dict(COSTS)):
            raise UserError(
                f"metric '{metric}' or cost '{cost}' is not one of this comparison's "
                f"({', '.join(s['columns'])}; {', '.join(dict(COSTS))})"
            )
        query = urlencode([("run", i) for i in ids])
        return page(
            request,
            "compare.html",
            s=s,
            tables=tables,
            ids=ids,
            query=query,
            metric=metric,
            cost=cost,
            costs=COSTS,
            epochs=epochs_rows(s) if s.get("report_epochs") and s["groups"] else None,
        )

    @guarded
    async def compare_export(request: Request):
        if request.path_params["fmt"] not in ("csv", "md"):
            raise F.Refused(request.path_params["fmt"])
        s, _ = await to_thread.run_sync(comparison, root, ids_of(request))
        if request.path_params["fmt"] == "csv":
            return Response(
                to_csv(s),
                media_type="text/csv",
                headers={"Content-Disposition": 'attachment; filename="comparison.csv"'},
            )
        return PlainTextResponse(to_markdown(s), media_type="text/markdown")

    def draw(make) -> bytes:
        with PLOT_LOCK, tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plot.png"
            make(out)
            return out.read_bytes()

    @guarded
    async def plot(request: Request):
        from peftlab.report.plots import (
            plot_metric_per_epoch,
            plot_pareto,
            plot_sweep_losses,
        )

        kind = request.path_params["kind"]
        s, runs = await to_thread.run_sync(comparison, root, ids_of(request))
        done = [r for r in runs if r.status in ("completed", "running", "interrupted")]
        metric = request.query_params.get("metric") or s.get("metric") or "loss"
        if kind == "loss":
            make = lambda p: plot_sweep_losses(done, p)  # noqa: E731
        elif kind == "metric":
            make = lambda p: plot_metric_per_epoch(done, metric, p)  # noqa: E731
        elif kind == "pareto" and s["groups"]:
            cost = request.query_params.get("cost") or "peak_memory_mb"
            if metric not in s["columns"] or cost not in dict(COSTS):
                raise F.Refused(cost)
            make = lambda p: plot_pareto(s, [(cost, dict(COSTS)[cost])], p, metric)  # noqa: E731
        else:
            raise F.Refused(kind)
        return Response(await to_thread.run_sync(draw, make), media_type="image/png")

    @guarded
    async def file(request: Request):
        """A run folder's file as plain text (an image as the image), never as HTML or script: an .html or
        .svg a run wrote, or a file that only looks like one, is shown as its text; a binary file (weights)
        is a download."""
        path = F.inside(root, request.path_params["rel"])
        if not path.is_file():
            raise F.Refused(request.path_params["rel"])
        headers = {"Content-Security-Policy": FILE_CSP}
        if path.suffix.lower() in IMAGES:
            return FileResponse(path, media_type=IMAGES[path.suffix.lower()], headers=headers)
        if await to_thread.run_sync(looks_like_text, path):
            return FileResponse(path, media_type="text/plain; charset=utf-8", headers=headers)
        return FileResponse(path, media_type="application/octet-stream", filename=path.name, headers=headers)

    def progress_of(rel: str) -> dict:
        """The folder's progress; a sweep this dashboard just started may not have written sweep.json yet."""
        try:
            return F.progress(root, rel)
        except F.Refused:
            if jobs.job_for(rel) is None:
                raise
            return F.starting()

    def recommendation_of(rel: str) -> list[str]:
        """The report's opening lines (its recommendation), from the completed runs of the sweep's folders as
        `peftlab report` computes them; none before a run completes or where a folder cannot be summarised."""
        lines = []
        try:
            folders = F.sweep_folders(root, rel)
        except F.Refused:  # a sweep this dashboard just started: no sweep.json yet, so nothing to recommend
            return []
        for f in folders:
            try:
                s = summarize(f.path)
            except (UserError, UnreadableFile, OSError):
                continue
            lines += [line for block in recommendation_lines(s) for line in block.split("\n")]
        return [line.removeprefix("- ") for line in lines]

    @guarded
    async def sweep_page(request: Request):
        rel = request.path_params["rel"]
        p = await to_thread.run_sync(progress_of, rel)
        job = jobs.job_for(rel)
        return page(
            request,
            "sweep.html",
            rel=rel,
            p=p,
            recommendation=await to_thread.run_sync(recommendation_of, rel),
            job=job,
            job_log=jobs.log_tail(job) if job else [],
            initial={"rel": rel, "progress": p},
        )

    async def events(request: Request):
        rel = request.path_params["rel"]
        try:
            progress_of(rel)
        except F.Refused:
            return PlainTextResponse("not found", 404)

        async def stream():
            last, quiet = None, 0
            while not await request.is_disconnected():
                p = await to_thread.run_sync(progress_of, rel)
                job = jobs.job_for(rel)
                p["job_running"] = bool(job and job.running)
                p["job_log"] = jobs.log_tail(job) if job else []
                p["job_exit"] = job.returncode if job and not job.running else None
                body = json.dumps({k: v for k, v in p.items() if k != "time"})
                if body != last:
                    last, quiet = body, 0
                    yield f"data: {body}\n\n"
                else:
                    quiet += 1
                    if quiet % 15 == 0:
                        yield ": still here\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @guarded
    async def stop(request: Request):
        await checked_form(request)
        rel = request.path_params["rel"]
        parts = [f.path for f in F.sweep_folders(root, rel)]
        jobs.stop(rel, parts)
        return RedirectResponse(f"/sweep/{rel}", 303)

    @guarded
    async def resume(request: Request):
        await checked_form(request)
        rel = request.path_params["rel"]
        job = await to_thread.run_sync(jobs.resume, rel, F.sweep_source(root, rel))
        return RedirectResponse(f"/sweep/{job.folder}", 303)

    async def launch_form(request: Request):
        return page(request, "launch.html", recipes=list(shipped_recipes()), error=None, text="", chosen="")

    async def launch(request: Request):
        text, chosen = "", ""
        try:
            form = await checked_form(request)
            text, chosen = str(form.get("yaml", "")), str(form.get("recipe", ""))
            if form.get("source") == "recipe":
                job = await to_thread.run_sync(jobs.launch_recipe, chosen)
            else:
                job = await to_thread.run_sync(jobs.launch_text, text)
        except (UserError, UnreadableFile) as e:
            return page(
                request,
                "launch.html",
                status=400,
                recipes=list(shipped_recipes()),
                error=str(e),
                text=text,
                chosen=chosen,
            )
        return RedirectResponse(f"/sweep/{job.folder}", 303)

    async def recipe_text(request: Request):
        name = request.path_params["name"]
        recipes = shipped_recipes()
        if name not in recipes:
            return PlainTextResponse("not found", 404)
        return PlainTextResponse(recipes[name].read_text(encoding="utf-8"))

    routes = [
        Route("/", index),
        Route("/run/{rel:path}", run_page),
        Route("/predictions/{rel:path}", predictions),
        Route("/compare", compare),
        Route("/compare.{fmt:str}", compare_export),
        Route("/plot/{kind:str}.png", plot),
        Route("/file/{rel:path}", file),
        Route("/sweep/{rel:path}", sweep_page),
        Route("/events/{rel:path}", events),
        Route("/stop/{rel:path}", stop, methods=["POST"]),
        Route("/resume/{rel:path}", resume, methods=["POST"]),
        Route("/launch", launch_form),
        Route("/launch", launch, methods=["POST"]),
        Route("/recipe/{name:path}", recipe_text),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    # SecurityHeaders outermost: TrustedHostMiddleware's 400 for a foreign Host header gets the headers too
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.jobs = jobs
    return app
