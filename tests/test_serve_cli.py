"""`gtrun serve`, `gtrun run` handing the job to it, `gtrun status`: the commands a person uses."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import _env
from tests.service_helpers import Worker


@pytest.fixture
def served(gtrun):
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--port", "0", "--root", str(gtrun.storage)],
                            cwd=gtrun.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**_env(), "COLUMNS": "200"})
    line = proc.stdout.readline()
    url = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=10)


def test_run_hands_the_job_to_the_running_service_and_status_follows_it(gtrun, served):
    url, _ = served
    r = gtrun("run", "source.params.entity=Xbox", "source.limit=2")
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    name = json.loads((run / "request.json").read_text())["LabelingJobName"]
    assert f"workers label it at {url}/jobs/{name}/" in r.stdout
    worker = Worker(url)
    page = worker.task(name)["html"]  # the job's own question and instructions (conf/job/tweets_sentiment.yaml)
    assert 'header="What is the sentiment of this tweet?"' in page
    assert "Choose the sentiment the tweet expresses about <b>its entity</b>" in page
    for _ in range(2):
        task = worker.task(name)
        assert worker.answer(name, task, {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    s = gtrun("status", str(run), "--wait", "--interval", "0.2")
    assert s.code == 0, s.output
    assert f"{name}: Completed - labeled 2 of 2" in s.stdout
    assert f"s3://gtrun/jobs/{name}/output/{name}/manifests/output/output.manifest" in s.stdout


def test_status_without_a_service_and_restart_keeps_the_job(gtrun):
    r = gtrun("run", "source.limit=3")
    assert r.code == 0, r.output
    assert "start the labeling service with gtrun serve --root" in r.stdout
    (run,) = gtrun.runs()
    s = gtrun("status", str(run))
    assert s.code == 0 and "InProgress - labeled 0 of 3" in s.stdout


def first_lines(gtrun, root, n: int) -> list[str]:
    """The first `n` lines `gtrun serve --root root` prints, then it is stopped."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--port", "0", "--root", str(root)],
                            cwd=gtrun.cwd, stdout=subprocess.PIPE, text=True, env={**_env(), "COLUMNS": "200"})
    try:
        return [proc.stdout.readline() for _ in range(n)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_lists_open_jobs(gtrun):
    assert gtrun("run", "source.limit=1").code == 0
    lines = first_lines(gtrun, gtrun.storage, 3)
    assert "gtrun labeling service at http://127.0.0.1:" in lines[0] and "a new folder" not in lines[0]
    assert re.search(r"tweets-\d{8}-\d{6}-\w{4}: http://127\.0\.0\.1:\d+/jobs/tweets-", lines[1])
    # a root with no jobs (a new folder, say, as a mistyped --root makes): said at once
    empty = gtrun.cwd / "nothing-here"
    lines = first_lines(gtrun, empty, 2)
    assert f"(storage: {empty}, a new folder)" in lines[0]
    assert f"no jobs in {empty} yet: a run keeps its jobs in its backend.root" in lines[1]


def test_serve_refuses_a_busy_port(gtrun, served):
    url, _ = served
    port = url.rsplit(":", 1)[1]
    r = gtrun("serve", "--port", port, "--root", str(gtrun.storage))
    assert r.code == 2 and f"--port: cannot listen on 127.0.0.1:{port}" in r.stderr


def test_status_of_something_that_is_not_a_run(gtrun, tmp_path):
    (tmp_path / "empty").mkdir()
    r = gtrun("status", str(tmp_path / "empty"))
    assert r.code == 2 and "neither a run directory (.hydra/config.yaml) nor a sweep's (multirun.yaml)" in r.stderr
    # a folder of runs (a date's, say) is no sweep: it is named, with a run it holds
    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    for verb in ("status", "stop", "collect"):
        r = gtrun(verb, str(run.parent))
        assert r.code == 2 and f"{run.parent}: neither a run directory" in r.stderr, r.output
        assert f"it holds 1 run, e.g. {run}" in r.stderr
    r = gtrun("status", str(run / ".hydra" / "config.yaml"))  # a file of the run: the run is named
    assert r.code == 2 and f"config.yaml: a file, not a run directory; the run is {run}" in r.stderr, r.output


@pytest.mark.parametrize(("sig", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_ctrl_c_stops_a_command_with_one_line(gtrun, served, sig, code, said):
    """Ctrl+C (or SIGTERM) while `status --wait` follows a job: exit 130 (143), one line, no traceback."""
    import signal
    import time

    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "status", str(run), "--wait", "--interval", "0.2"],
                            cwd=gtrun.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    time.sleep(3)  # started and polling: the job waits for workers
    assert proc.poll() is None
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, (out, err)
    assert err.strip().endswith(said) and "Traceback" not in err
    # piped, the wait says what it sees in plain lines, once per change, with no bar drawn
    name = json.loads((run / "request.json").read_text())["LabelingJobName"]
    seen = re.findall(rf"^\d\d:\d\d:\d\d {name} (\w+): 0 of 2 done$", err, re.M)
    assert seen and len(seen) == len(set(seen)) and seen[-1] == "InProgress", err
    assert "━" not in err and "╸" not in err
