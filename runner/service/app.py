"""The local labeling service over HTTP: SageMaker's API at `POST /`, the worker UI, signed storage reads."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.errors import GtrunError
from runner.io.store import Store
from runner.service import api
from runner.service.jobs import LabelingJobs, utc, worker_id
from runner.service.store import ResourceNotFound, ServiceError, Task, TaskGone

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "gtrun_worker"
AMZ_JSON = "application/x-amz-json-1.1"
TICK_S = 1.0
# How often a "No more tasks for you" page that names tasks other workers hold looks again (whole
# seconds: a meta refresh's delay). A held task can come back at any moment (released, or its page
# closed), and the page then shows it; the tests set 1.
HELD_POLL_S = 15
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # the names of a service that listens on loopback only
# The largest request body the service takes: a worker's answer, an API call, a preview. Ground Truth
# states no limit for an answer; 4 MiB holds a box answer of some 50,000 boxes (about 80 bytes each),
# a RenderUiTemplate call at SageMaker's own limits (128,000 characters of template and of input),
# and a preview of a 100 KB data object, while a runaway page cannot fill the store and the output.
MAX_BODY_BYTES = 4 * 1024 * 1024


# What a worker who gets no task is told, by the job's status: (heading, reason)
DONE = {"InProgress": ("No more tasks for you", "Every data object of this job is labeled, taken by other "
                       "workers, or already answered by you."),
        "Stopping": ("This job was stopped", "Its requester stopped it; what was labeled is kept."),
        "Stopped": ("This job was stopped", "Its requester stopped it; what was labeled is kept."),
        "Completed": ("This job is complete", "Every data object of this job is labeled or has expired."),
        "Failed": ("This job failed", "Its requester can see why with gtrun status.")}


def page(title: str, body: str, task: dict[str, Any] | None = None, bar: str = "", head: str = "") -> str:
    """A worker page: gtrun's bar, the task's metadata for the elements' submit, then the body."""
    meta = head
    if task is not None:
        # JSON in a script block: escape "<" so no value can close the script.
        meta = "<script>window.gtrunTask = " + json.dumps(task).replace("<", "\\u003c") + ";</script>\n"
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title>\n<link rel=\"icon\" href=\"data:,\">"
            f"<link rel=\"stylesheet\" href=\"/static/worker.css\">\n{meta}"
            f"<script src=\"/static/crowd-html-elements.js\"></script></head>\n"
            f"<body>\n<header class=\"gtrun-bar\">{bar}</header>\n<main>\n{body}\n</main>\n</body></html>\n")


def held_note(count: int, first: float, now: float) -> str:
    """What a worker with no task is told of the tasks other workers hold: when they come back.

    A lone user who opened the job in a second browser holds a task there until it expires.

    >>> held_note(2, 1_700_000_130.0, 1_700_000_000.0).split(". ")[0]
    '2 tasks are being worked on by other workers; the first comes back at 22:16 UTC (in 3 min) unless answered'
    """
    back = utc(math.ceil(first / 60) * 60)  # the minute by which it is back, not before it
    minutes = max(1, math.ceil((first - now) / 60))
    held = ("1 task is being worked on by another worker; it comes back" if count == 1 else
            f"{count} tasks are being worked on by other workers; the first comes back")
    return (f"{held} at {back:%H:%M} UTC (in {minutes} min) unless answered. If that was you in another "
            "browser, open this job there and choose Release task.")


def progress_bar(progress: dict[str, int]) -> str:
    """The bar's progress: the job's labeled objects, and how many this worker answered."""
    return (f"<progress class=\"gtrun-bar-progress\" value=\"{progress['labeled']}\" "
            f"max=\"{max(progress['total'], 1)}\"></progress><span class=\"gtrun-progress gtrun-bar-count\">"
            f"{html.escape(progress_text(progress))}</span>")


def progress_text(progress: dict[str, int]) -> str:
    """The bar's progress line.

    >>> progress_text({"labeled": 1, "total": 3, "mine": 0})
    '1 of 3 labeled · you answered 0'
    """
    return f"{progress['labeled']} of {progress['total']} labeled · you answered {progress['mine']}"


def release_form(name: str, task: Task) -> str:
    """The bar's Release task control: a plain form, so it works without JavaScript and beside any
    template's own submit button (crowd-form puts a second one next to its Submit button)."""
    return ("<span class=\"gtrun-bar-spacer\"></span><form class=\"gtrun-release\" id=\"gtrun-release\" "
            f"method=\"post\" action=\"/jobs/{html.escape(name)}/release\">"
            f"<input type=\"hidden\" name=\"token\" value=\"{html.escape(task.token)}\">"
            f"<input type=\"hidden\" name=\"object\" value=\"{task.object_id}\">"
            "<button type=\"submit\" class=\"gtrun-bar-button\" title=\"Give this task back now, so that another "
            "worker can take it; you get the next task\">Release task</button></form>")


def host_name(header: str) -> str:
    """A Host header's name, without its port.

    >>> host_name("[::1]:8008"), host_name("LocalHost:8008"), host_name("127.0.0.1")
    ('::1', 'localhost', '127.0.0.1')
    """
    name = header.strip().lower()
    if name.startswith("["):
        return name[1:].partition("]")[0]
    return name.rpartition(":")[0] if ":" in name else name


class LoopbackOnly:
    """Refuse a request that does not name the loopback (DNS rebinding: a web page whose name its
    attacker points at 127.0.0.1 reaches a loopback service as its own origin, under its own name)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and host_name(Headers(scope=scope).get("host", "")) not in LOOPBACK:
            refused = PlainTextResponse("This service listens on loopback and answers requests for 127.0.0.1, "
                                        "localhost or [::1] only; to serve it under another name, start it "
                                        "with gtrun serve --host.", status_code=400)
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """A request body passed MAX_BODY_BYTES while it was read."""


def too_large(limit: int) -> Response:
    """The 413 for a body over `limit`, in the shape both the API's clients (`__type`) and the worker
    page (`message`) read."""
    message = (f"The request body is too large: the labeling service takes at most {limit / 2**20:g} MiB "
               "(an answer, an API call or a preview); nothing of it was recorded.")
    # Connection: close: the server closes the connection after it, so that the client stops sending
    # the rest, which would otherwise be read (and thrown away) to keep the connection for another request
    return JSONResponse({"__type": "RequestEntityTooLarge", "message": message}, status_code=413,
                        headers={"Connection": "close"})


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, unread: by its Content-Length when it has
    one, else (chunked) as soon as the bytes read pass the limit, so that no handler holds more."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await too_large(self.limit)(scope, receive, send)
            return
        read = 0
        started = False

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if started:  # a handler that answered before it read its body: nothing left to say
                raise
            await too_large(self.limit)(scope, receive, sending)


def create_app(root: Path | str, storage: Store | None = None, loopback: bool = False) -> Starlette:
    """The service's app; `loopback`: it listens on loopback, and answers loopback names only."""
    jobs = LabelingJobs(root, storage)
    previews: dict[str, str] = {}

    async def sagemaker(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        body = await request.body()
        scope = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", request.headers.get("authorization", ""))
        region = scope.group(1) if scope else "us-east-1"
        status, payload = await run_in_threadpool(api.handle, jobs, target, body, region)
        return Response(json.dumps(payload), status_code=status, media_type=AMZ_JSON,
                        headers={"x-amzn-RequestId": str(uuid.uuid4())})

    def who(request: Request) -> tuple[str, bool]:
        cookie = request.cookies.get(COOKIE, "")
        fresh = not (cookie.isalnum() and len(cookie) == 32)
        return (secrets.token_hex(16) if fresh else cookie), fresh

    async def index(request: Request) -> Response:
        rows = []
        for d in await run_in_threadpool(jobs.describe_all):
            c = d["LabelCounters"]
            total = c["TotalLabeled"] + c["Unlabeled"] + c["FailedNonRetryableError"]
            name = html.escape(d["LabelingJobName"])
            link = f'<a href="/jobs/{name}/">{name}</a>' if d["LabelingJobStatus"] == "InProgress" else name
            rows.append(f"<tr><td>{link}</td><td>{html.escape(d['LabelingJobStatus'])}</td>"
                        f"<td>{c['TotalLabeled']} / {total}</td></tr>")
        listing = ("<table class=\"gtrun-jobs\"><thead><tr><th>job</th><th>status</th><th>labeled</th></tr></thead>"
                   "<tbody>" + "".join(rows) + "</tbody></table>") if rows else "<p>No jobs yet: gtrun run submits one.</p>"
        body = f"<section class=\"gtrun-page\"><h1>Labeling jobs</h1>{listing}</section>"
        return HTMLResponse(page("gtrun labeling jobs", body, bar="gtrun labeling service"))

    async def progress_of(request: Request, name: str) -> dict[str, Any]:
        """The requesting worker's progress in the job, with the bar's text for a page to show."""
        cookie, _ = who(request)
        spec = await run_in_threadpool(jobs.spec, name)
        progress = await run_in_threadpool(jobs.worker_progress, name, worker_id(spec.region, cookie))
        return {**progress, "text": progress_text(progress)}

    async def work(request: Request) -> Response:
        name = request.path_params["name"]
        cookie, fresh = who(request)
        try:
            spec = await run_in_threadpool(jobs.spec, name)
        except ServiceError:
            return HTMLResponse(page("No such job", "<h1>No such job</h1>"), status_code=404)
        worker = worker_id(spec.region, cookie)
        task = await run_in_threadpool(jobs.next_task, name, worker)
        progress = await run_in_threadpool(jobs.worker_progress, name, worker)
        bar = f"<strong class=\"gtrun-bar-title\">{html.escape(name)}</strong>{progress_bar(progress)}"
        if task is None:
            status = (await run_in_threadpool(jobs.describe, name))["LabelingJobStatus"]
            heading, why = DONE.get(status, DONE["InProgress"])
            held = head = ""
            if status == "InProgress":
                now = time.time()
                count, first = await run_in_threadpool(jobs.held_elsewhere, name, worker, now)
                if count and first is not None:
                    # A held task may come back any time (released, its page closed): look again
                    # now and then, which shows it once it is free. No JavaScript needed; a page
                    # of an ended job has no refresh, so the looking stops there.
                    again, poll = f"/jobs/{html.escape(name)}/", int(HELD_POLL_S)
                    head = f"<meta http-equiv=\"refresh\" content=\"{poll}; url={again}\">\n"
                    held = (f"<p class=\"gtrun-held\">{html.escape(held_note(count, first, now))}</p>"
                            f"<p class=\"gtrun-check\"><a class=\"crowd-btn\" href=\"{again}\">Check again</a>"
                            f"<span class=\"gtrun-check-note\">This page looks again every {poll} s.</span></p>")
            body = (f"<section class=\"gtrun-page gtrun-done\"><h1>{heading}</h1><p>{why}</p>{held}"
                    "<p><a href=\"/\">All labeling jobs</a></p></section>")
            response: Response = HTMLResponse(page(name, body, bar=bar, head=head))
        else:
            try:
                body = await run_in_threadpool(jobs.render, spec, task)
            except GtrunError as exc:
                return HTMLResponse(page(name, f"<crowd-alert type=\"error\">{html.escape(str(exc))}</crowd-alert>",
                                         bar=bar), status_code=500)
            meta = {"job": name, "objectId": str(task.object_id), "token": task.token,
                    "submitUrl": f"/jobs/{name}/answers", "releaseUrl": f"/jobs/{name}/release",
                    "view": task.view, "expires": task.expires, "progress": progress}
            if request.query_params.get("released") == str(task.object_id):
                bar += ("<span class=\"gtrun-bar-meta gtrun-released\">No other task is free for you now: "
                        "this is the one you released.</span>")
            bar += release_form(name, task)
            response = HTMLResponse(page(spec.request["HumanTaskConfig"]["TaskTitle"], body, meta, bar))
        response.headers["Cache-Control"] = "no-store"
        if fresh:
            response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", max_age=365 * 86400)
        return response

    async def answer(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            data = await request.json()
            token, content = data["token"], data["answer"]
        except RecursionError:  # JSON nested deeper than Python's reader goes
            return JSONResponse({"message": "the answer is nested too deep to read"}, status_code=400)
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"message": "send {\"token\": ..., \"answer\": {...}}"}, status_code=400)
        try:
            await run_in_threadpool(jobs.submit, str(token), content, None, name)
        except ServiceError as exc:
            failed: dict[str, Any] = {"__type": exc.code, "message": str(exc)}
            if isinstance(exc, (TaskGone, ResourceNotFound)):
                # No longer this worker's task to answer (taken by another, expired, answered in
                # another tab, its job ended): the page says so and goes on (`next`), with the
                # bar brought up to date; any other failure keeps the page and its answer.
                failed["next"] = f"/jobs/{name}/"
                with contextlib.suppress(ServiceError):
                    failed["progress"] = await progress_of(request, name)
            return JSONResponse(failed, status_code=exc.status)
        return JSONResponse({"next": f"/jobs/{name}/"})

    async def release(request: Request) -> Response:
        """Give the worker's task back to the queue. The Release task form (a browser page: Accept
        text/html) is sent on to the next task; JSON and a left page's sendBeacon get JSON."""
        name = request.path_params["name"]
        for_page = "text/html" in request.headers.get("accept", "")
        try:
            body = await request.body()
            if request.headers.get("content-type", "").startswith("application/json"):
                data = json.loads(body)
            else:  # a form, or the beacon's URLSearchParams
                data = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            token = str(data["token"])
            view = str(data["view"]) if "view" in data else None
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            return JSONResponse({"message": "send token=... (and view=...) as a form, or {\"token\": ...}"},
                                status_code=400)
        cookie, _ = who(request)
        try:
            spec = await run_in_threadpool(jobs.spec, name)
            status = await run_in_threadpool(jobs.release_task, name, token, worker_id(spec.region, cookie), view)
        except ServiceError as exc:
            if for_page:
                body_html = (f"<section class=\"gtrun-page\"><h1>The task was not released</h1>"
                             f"<p>{html.escape(str(exc))}</p><p><a href=\"/jobs/{html.escape(name)}/\">"
                             "Back to the job</a></p></section>")
                return HTMLResponse(page(name, body_html), status_code=exc.status)
            return JSONResponse({"__type": exc.code, "message": str(exc)}, status_code=exc.status)
        following = f"/jobs/{name}/"
        if for_page:
            done = str(data.get("object", ""))
            mark = f"?released={done}" if done.isdigit() and status in ("released", "already released") else ""
            return RedirectResponse(following + mark, status_code=303)
        return JSONResponse({"status": status, "released": status == "released", "next": following})

    async def stored_object(request: Request) -> Response:
        q = request.query_params
        path = request.path_params["path"]
        try:
            data = await run_in_threadpool(jobs.read_object, path, q.get("expires", ""), q.get("sig", ""))
        except ServiceError:
            return Response("not found", status_code=404)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=300",
                                                        "X-Content-Type-Options": "nosniff"})

    async def preview_create(request: Request) -> Response:
        """A preview page of a template rendered with a task input (gtrun preview), at the URL answered."""
        try:
            data = await request.json()
            if not isinstance(data.get("template"), str):
                raise TypeError
            params = {"UiTemplate": {"Content": data["template"]}, "Task": {"Input": json.dumps(data["input"])}}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return JSONResponse({"message": "send {\"template\": \"...\", \"input\": {...}}"}, status_code=400)
        out = await run_in_threadpool(jobs.render_ui_template, params)
        if out["Errors"]:
            return JSONResponse({"message": out["Errors"][0]["Message"]}, status_code=400)
        key = secrets.token_hex(8)
        previews[key] = page(data.get("title", "preview"), out["RenderedContent"], bar="preview")
        return JSONResponse({"url": f"/previews/{key}"})

    async def preview(request: Request) -> Response:
        body = previews.get(request.path_params["key"])
        return HTMLResponse(body) if body else Response("not found", status_code=404)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "root": str(jobs.root)})

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await run_in_threadpool(jobs.tick)
            except Exception:  # noqa: BLE001 - a bad job must not stop the others from moving
                import logging

                logging.getLogger(__name__).exception("tick failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(jobs.recover)  # resume every job at once after a restart
        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()

    routes = [
        Route("/", sagemaker, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/health", health),
        Route("/jobs/{name}/", work),
        Route("/jobs/{name}/answers", answer, methods=["POST"]),
        Route("/jobs/{name}/release", release, methods=["POST"]),
        Route("/storage/{path:path}", stored_object),
        Route("/preview", preview_create, methods=["POST"]),
        Route("/previews/{key}", preview),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(LoopbackOnly)] if loopback else []
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[*middleware, Middleware(BodyLimit)])
    app.state.jobs = jobs
    return app
