"""Benchmark: the local labeling service under concurrent workers, and a check that no answer is lost.

Run on demand, not in the test suite:

    python bench/serve.py [--objects 2000] [--workers 20] [--per-object 1] [--max-seconds 300]
                          [--seed 0] [--keep] [--py-spy DIR]

For each NumberOfHumanWorkersPerDataObject (1 and 3, or only `--per-object`):

1. start `python -m runner serve --host 127.0.0.1 --port 0` in a subprocess (its own GIL) over a
   fresh temporary storage root, and wait for `/health`;
2. write N synthetic text objects, a 4-label config and the bundled text-classification template
   with `put_job` (tests/service_helpers.py) and create the job with boto3 `create_labeling_job`;
3. run `--workers` threads, each an httpx client with its own cookie jar (one worker id each), that
   loop: GET /jobs/<job>/ (timed: render latency), parse `window.gtrunTask`, POST
   {"token", "answer": {"crowd-classifier": {"label": <random label>}}} to its submitUrl (timed:
   submit latency), until the page has no task or `--max-seconds` pass;
4. poll DescribeLabelingJob (fixed 0.2 s delay) until Completed, then check against what the
   workers were told was accepted (HTTP 2xx): LabelCounters.TotalLabeled == N; the output manifest
   has N lines, line i is object i with the expected label (the one label sent when per-object is
   1; the majority of the answers, a three-way tie going to the earliest label in the label list,
   when it is 3); each object has one worker-response file holding exactly the answers sent for it.

"answers lost" counts answers the service acknowledged that are missing from the worker-response
files. "errors" counts non-2xx responses and transport errors. "wall s" runs from the first worker
request to the last; submissions/s = acknowledged answers / wall s. Latencies are client-side, in
ms, nearest-rank percentiles. The load generator and the service share the machine: on 2 cores the
threads' own CPU shows up in both latencies.

`--py-spy DIR` runs the service under `py-spy record --gil --format raw` (pip install py-spy),
writes one collapsed-stack file per row into DIR (flamegraph.pl, speedscope and inferno read it)
and prints the service's hottest functions: the share of samples whose stack passes through each.
`--gil` samples the thread holding the GIL: where the one core a Python process can use goes.
`--py-spy-wait` samples every thread instead (`--idle`), waiting ones too: where requests wait.
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `runner` and `tests.service_helpers`, imported where used

LABELS = ["Positive", "Negative", "Neutral", "Mixed"]
TASK = re.compile(r"window\.gtrunTask = (\{.*?\});</script>")
WORDS = ["the", "service", "was", "fast", "slow", "fine", "broken", "great", "awful", "okay", "late",
         "early", "cheap", "kind", "rude"]
POLL_S = 0.2
COMPLETE_TIMEOUT_S = 120


@dataclass
class Tally:
    """What the workers saw; appended to from every worker thread under `lock`."""

    render_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))  # object id -> labels acked
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] += 1


# -- the service in a subprocess ----------------------------------------------------------------

class Server:
    """`python -m runner serve` on 127.0.0.1, a free port, over `root`; optionally under py-spy."""

    def __init__(self, root: Path, log: Path, py_spy_out: Path | None = None, py_spy_wait: bool = False) -> None:
        cmd = [sys.executable, "-m", "runner", "serve", "--host", "127.0.0.1", "--port", "0", "--root", str(root)]
        if py_spy_out is not None:
            # --nonblocking: sample without pausing the service (pausing ~40 threads slowed it 4x).
            # --gil: only the thread holding the GIL, i.e. where the one core the service can use
            # goes; --idle (py_spy_wait): every thread, also those waiting on a lock or SQLite.
            mode = ["--idle"] if py_spy_wait else ["--gil"]
            cmd = ["py-spy", "record", "--nonblocking", "--rate", "100", *mode, "--format", "raw",
                   "-o", str(py_spy_out), "--", *cmd]
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        # A session of its own: stop() signals the server (and py-spy) and nothing else.
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        state = root / ".gtrun" / "service.json"
        deadline = time.monotonic() + 30
        self.url = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}; see {log}")
            try:
                self.url = json.loads(state.read_text())["url"]
                if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"the service did not start within 30 s; see {log}")
        self.pid = self._python_pid()

    def _python_pid(self) -> int:
        """The pid of the Python service process (py-spy's child when profiling)."""
        if self.proc.args[0] != "py-spy":
            return self.proc.pid
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True,
                                 check=False).stdout
            return int(out.split()[0])
        except (OSError, ValueError, IndexError):
            return self.proc.pid

    def cpu_s(self) -> float | None:
        """User + system CPU seconds the service process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # the group started above: the server (+ py-spy)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def problems(self) -> Counter[str]:
        """Server-side trouble in its log so far: tracebacks, failed ticks, SQLite lock timeouts."""
        text = self.log_path.read_text(errors="replace")
        found: Counter[str] = Counter()
        for needle in ("database is locked", "Traceback", "tick failed", "Exception in ASGI application"):
            if text.count(needle):
                found[needle] = text.count(needle)
        return found


# -- the simulated workers ----------------------------------------------------------------------

def worker(url: str, job: str, seed: int, deadline: float, tally: Tally) -> None:
    """One worker: its own cookie jar (so its own worker id), task after task until none is left."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
        while time.monotonic() < deadline:
            try:
                t0 = time.perf_counter()
                page = http.get(f"/jobs/{job}/")
                took = time.perf_counter() - t0
            except httpx.HTTPError as exc:
                tally.error(f"GET {type(exc).__name__}")
                time.sleep(0.05)
                continue
            if not page.is_success:
                tally.error(f"GET {page.status_code}")
                time.sleep(0.05)
                continue
            found = TASK.search(page.text)
            if found is None:
                return  # "No more tasks for you"
            task = json.loads(found.group(1))
            with tally.lock:
                tally.render_s.append(took)
            label = rng.choice(LABELS)
            try:
                t0 = time.perf_counter()
                resp = http.post(task["submitUrl"], json={"token": task["token"],
                                                          "answer": {"crowd-classifier": {"label": label}}})
                took_submit = time.perf_counter() - t0
            except httpx.HTTPError as exc:
                tally.error(f"POST {type(exc).__name__}")
                continue
            with tally.lock:
                tally.submit_s.append(took_submit)
                if resp.is_success:
                    tally.sent[int(task["objectId"])].append(label)
                else:
                    tally.errors[f"POST {resp.status_code} {resp.text[:80]}"] += 1


# -- checks -------------------------------------------------------------------------------------

def expected_label(sent: list[str]) -> str:
    """The consolidated label: the majority; a tie goes to the earliest label in LABELS.

    >>> expected_label(["Mixed", "Neutral", "Mixed"]), expected_label(["Mixed", "Neutral", "Negative"])
    ('Mixed', 'Negative')
    """
    counts = Counter(sent)
    top = max(counts.values())
    return next(x for x in LABELS if counts.get(x) == top)


def verify(root: Path, request: dict[str, Any], n: int, per_object: int, tally: Tally,
           job: dict[str, Any]) -> tuple[int, list[str]]:
    """(answers lost, problems) of a finished job, against what the workers were acknowledged."""
    from runner.io.store import LocalStore

    problems: list[str] = []
    counters = job["LabelCounters"]
    if job["LabelingJobStatus"] != "Completed":
        problems.append(f"status {job['LabelingJobStatus']} (counters {counters})")
    if counters["TotalLabeled"] != n:
        problems.append(f"LabelCounters.TotalLabeled {counters['TotalLabeled']} != {n}")
    short = [i for i in range(n) if len(tally.sent.get(i, [])) != per_object]
    if short:
        problems.append(f"{len(short)} objects got != {per_object} acknowledged answers, e.g. {short[:5]}")

    store = LocalStore(root)
    out_prefix = request["OutputConfig"]["S3OutputPath"].rstrip("/") + "/" + request["LabelingJobName"]
    manifest = store.path(f"{out_prefix}/manifests/output/output.manifest")
    lines = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
    if len(lines) != n:
        problems.append(f"output manifest has {len(lines)} lines, not {n}")
    wrong = []
    for i, text in enumerate(lines):
        line = json.loads(text)
        sent = tally.sent.get(line.get("id", -1))
        meta = line.get("label-metadata", {})
        if line.get("id") != i or not sent or meta.get("class-name") != expected_label(sent) \
                or line.get("label") != LABELS.index(meta.get("class-name", LABELS[0])):
            wrong.append(i)
    if wrong:
        problems.append(f"{len(wrong)} output lines with a wrong id or label, e.g. {wrong[:5]}")

    responses = store.path(f"{out_prefix}/annotations/worker-response/iteration-1")
    lost = extra = 0
    missing, doubled, bad_workers = [], [], []
    for i in range(n):
        files = sorted((responses / str(i)).glob("*.json")) if (responses / str(i)).is_dir() else []
        if not files:
            missing.append(i)
        if len(files) > 1:
            doubled.append(i)
        answers = json.loads(files[-1].read_text())["answers"] if files else []
        got = Counter(a["answerContent"]["crowd-classifier"]["label"] for a in answers)
        acked = Counter(tally.sent.get(i, []))
        lost += sum((acked - got).values())
        extra += sum((got - acked).values())
        if len({a["workerId"] for a in answers}) != len(answers) or len(answers) != per_object:
            bad_workers.append(i)
    if missing:
        problems.append(f"{len(missing)} objects without a worker-response file, e.g. {missing[:5]}")
    if doubled:
        problems.append(f"{len(doubled)} objects with more than one worker-response file, e.g. {doubled[:5]}")
    if bad_workers:
        problems.append(f"{len(bad_workers)} worker-response files without {per_object} answers from "
                        f"distinct workers, e.g. {bad_workers[:5]}")
    if extra:
        problems.append(f"{extra} answers in worker-response files that no worker was acknowledged for")
    return lost, problems


# -- one row ------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), in ms; NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return 1000 * ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run(n: int, workers: int, per_object: int, max_seconds: float, seed: int, keep: bool,
        py_spy: Path | None, py_spy_wait: bool = False) -> dict[str, Any]:
    from tests.service_helpers import put_job, sagemaker

    root = Path(tempfile.mkdtemp(prefix=f"gtrun-bench-serve-{per_object}-"))
    name = f"bench-{n}-x{per_object}"
    profile = py_spy / f"serve-{n}-x{per_object}.folded" if py_spy else None
    server = Server(root, root / "service.log", profile, py_spy_wait)
    try:
        rng = random.Random(seed)
        lines = [{"id": i, "source": " ".join(rng.choices(WORDS, k=12))} for i in range(n)]
        request = put_job(root, name, lines, labels=LABELS, workers=per_object, time_limit=3600)
        client = sagemaker(server.url)
        client.create_labeling_job(**request)

        tally = Tally()
        cpu0, mine0 = server.cpu_s(), os.times()
        start = time.monotonic()
        deadline = start + max_seconds
        threads = [threading.Thread(target=worker, args=(server.url, name, seed * 1000 + w, deadline, tally),
                                    name=f"worker-{w}") for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        cpu1, mine1 = server.cpu_s(), os.times()

        wait_until = time.monotonic() + COMPLETE_TIMEOUT_S
        while True:
            job = client.describe_labeling_job(LabelingJobName=name)
            finished = job["LabelingJobStatus"] in ("Completed", "Failed", "Stopped")
            if finished or wall >= max_seconds or time.monotonic() > wait_until:  # cut short: it never ends
                break
            time.sleep(POLL_S)
        lost, problems = verify(root, request, n, per_object, tally, job)
        server_problems = server.problems()  # before stop(): Ctrl+C makes `gtrun serve` print a traceback
    finally:
        server.stop()
    acked = sum(len(v) for v in tally.sent.values())
    row = {"objects": n, "per_object": per_object, "workers": workers, "wall": wall,
           "rate": acked / wall if wall else math.nan, "acked": acked,
           "render": [percentile(tally.render_s, q) for q in (50, 95, 99)],
           "submit": [percentile(tally.submit_s, q) for q in (50, 95, 99)],
           "errors": sum(tally.errors.values()), "error_kinds": dict(tally.errors), "lost": lost,
           "problems": problems, "server_problems": dict(server_problems),
           "server_cpu": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
           "client_cpu": (mine1.user + mine1.system) - (mine0.user + mine0.system),
           "timed_out": wall >= max_seconds, "root": root, "profile": profile}
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("objects", "per-obj", "workers", "wall s", "subm/s", "render p50", "p95", "p99",
            "submit p50", "p95", "p99", "errors", "lost", "check")
    body = []
    for r in rows:
        ok = "OK" if not (r["problems"] or r["server_problems"] or r["lost"] or r["timed_out"]) else "FAIL"
        body.append((str(r["objects"]), str(r["per_object"]), str(r["workers"]), f"{r['wall']:.1f}",
                     f"{r['rate']:.1f}", *(f"{x:.1f}" for x in r["render"]), *(f"{x:.1f}" for x in r["submit"]),
                     str(r["errors"]), str(r["lost"]), ok))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    out.append("(latencies in ms, client-side; submissions/s = acknowledged answers / wall s)")
    for r in rows:
        notes = []
        if r["server_cpu"] is not None:
            notes.append(f"service CPU {r['server_cpu']:.1f} s ({100 * r['server_cpu'] / r['wall']:.0f}% of one core, "
                         f"{1000 * r['server_cpu'] / max(r['acked'], 1):.1f} ms per answer)")
        notes.append(f"load generator CPU {r['client_cpu']:.1f} s")
        notes.append(f"{r['acked']} answers acknowledged")
        if r["timed_out"]:
            notes.append("stopped by --max-seconds")
        if r["error_kinds"]:
            notes.append("errors: " + ", ".join(f"{k} x{v}" for k, v in r["error_kinds"].items()))
        if r["server_problems"]:
            notes.append("service log: " + ", ".join(f"{k!r} x{v}" for k, v in r["server_problems"].items()))
        notes += r["problems"]
        if r["profile"]:
            notes.append(f"profile: {r['profile']}")
        out.append(f"per-object {r['per_object']}: " + "; ".join(notes))
        if r["profile"] and r["profile"].is_file():
            out.append(hot_spots(r["profile"]))
    return "\n".join(out)


def hot_spots(folded: Path, top: int = 12) -> str:
    """Where the service spends its CPU, from py-spy's collapsed stacks: gtrun's functions by the
    share of samples whose stack passes through them (inclusive), and gtrun's lines that are the
    last gtrun frame of a sample (that line and the library or SQLite call under it).
    """
    total = 0
    inclusive: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for raw in folded.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        seen: set[str] = set()
        last = ""
        for frame in stack.split(";"):  # "function (runner/service/jobs.py:221)"
            name, _, where = frame.partition(" (")
            where = where.rstrip(")")
            if "runner/" not in where or "runner/__main__" in where or "runner/cli.py" in where:
                continue
            where = "runner/" + where.split("runner/", 1)[1]
            key = f"{name} ({where.rsplit(':', 1)[0]})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
            last = f"{where} {name}"
        if last:
            lines[last] += n
    if not total:
        return "  (no samples)"
    out = [f"  service samples: {total}; by gtrun function, inclusive:"]
    out += [f"    {100 * c / total:5.1f}%  {k}" for k, c in inclusive.most_common(top)]
    out.append("  by the last gtrun line on the stack:")
    out += [f"    {100 * c / total:5.1f}%  {k}" for k, c in lines.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000, help="data objects in the job (default 2000)")
    parser.add_argument("--workers", type=int, default=20, help="concurrent simulated workers (default 20)")
    parser.add_argument("--per-object", type=int, choices=range(1, 10), metavar="1..9",
                        help="NumberOfHumanWorkersPerDataObject (default: a row for 1 and a row for 3)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop the workers after this (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the texts and the answers (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary storage roots and service logs")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="profile the service with py-spy into DIR")
    parser.add_argument("--py-spy-wait", action="store_true",
                        help="with --py-spy: sample every thread, waiting ones too (default: the GIL holder only)")
    ns = parser.parse_args()
    if ns.per_object and ns.per_object > ns.workers:
        parser.error(f"--per-object {ns.per_object} needs at least as many --workers")
    if ns.py_spy:
        if not shutil.which("py-spy"):
            parser.error("--py-spy: py-spy is not installed (pip install py-spy)")
        ns.py_spy.mkdir(parents=True, exist_ok=True)
    rows = []
    for per_object in [ns.per_object] if ns.per_object else [1, 3]:
        print(f"running: {ns.objects} objects, {ns.workers} workers, {per_object} per object ...",
              file=sys.stderr, flush=True)
        rows.append(run(ns.objects, ns.workers, per_object, ns.max_seconds, ns.seed, ns.keep, ns.py_spy,
                        ns.py_spy_wait))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(table(rows))
    if ns.keep:
        for r in rows:
            print(f"kept: {r['root']}")
    return 0 if all(r["lost"] == 0 and not r["problems"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
