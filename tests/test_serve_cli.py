"""`gtrun serve`, `gtrun run` handing the job to it, `gtrun status`: the commands a person uses."""

from __future__ import annotations

import json
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from runner.service import DEFAULT_PORT
from runner.service.registry import served_root
from tests.conftest import _env
from tests.service_helpers import Worker


def start_serve(gtrun, root, port: int = 0) -> tuple[str, subprocess.Popen]:
    """`gtrun serve --port port --root root` in the background: its URL (from its first line) and process."""
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--port", str(port), "--root", str(root)],
                            cwd=gtrun.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**_env(), "COLUMNS": "200"})
    if not select.select([proc.stdout], [], [], 60)[0]:  # a service that hangs before it says where: fail, not hang
        proc.kill()
        raise RuntimeError(f"gtrun serve said nothing in 60 s: {proc.communicate()[0]}")
    line = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if found is None or "error:" in line:
        proc.kill()
        raise RuntimeError(f"gtrun serve did not start: {line}{proc.communicate()[0]}")
    return found.group(1), proc


def stop_serve(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def served(gtrun):
    url, proc = start_serve(gtrun, gtrun.storage)
    yield url, proc
    stop_serve(proc)


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


def test_serve_refuses_a_busy_port_and_says_what_is_there(gtrun, served):
    url, _ = served
    port = url.rsplit(":", 1)[1]
    other = gtrun.cwd / "other-storage"
    r = gtrun("serve", "--port", port, "--root", str(other))
    assert r.code == 2 and r.stdout == "", r.output
    assert r.stderr.splitlines() == [
        f"error: --port: cannot listen on 127.0.0.1:{port}: Address already in use (the gtrun labeling service "
        f"of another storage folder, {gtrun.storage}, is there)",
        "  hint: serve on another port: --port N, or --port 0 for any free one"]
    assert not other.exists()  # refused before anything is made
    # a port another program holds
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        busy = sock.getsockname()[1]
        r = gtrun("serve", "--port", str(busy), "--root", str(other))
    assert r.code == 2 and "Traceback" not in r.stderr, r.output
    assert f"error: --port: cannot listen on 127.0.0.1:{busy}: Address already in use (another program" in r.stderr
    assert "hint: serve on another port: --port N, or --port 0 for any free one" in r.stderr


def test_a_second_serve_of_the_same_storage_is_refused_and_the_first_keeps_it(gtrun, served):
    """One service per storage folder: a second one (another port, or the same) is refused with the
    first one's URL, and the first stays registered, so run and status keep finding it."""
    url, _ = served
    registered = (gtrun.storage / ".gtrun" / "service.json").read_text()
    port = url.rsplit(":", 1)[1]
    for again in ("0", port):
        r = gtrun("serve", "--port", again, "--root", str(gtrun.storage))
        assert r.code == 2 and r.stdout == "", r.output
        assert r.stderr.splitlines() == [
            f"error: --root: {gtrun.storage} is served already by the gtrun labeling service at {url}/",
            "  hint: gtrun run and gtrun status use that one; to serve the folder from here instead, "
            "stop it first (Ctrl+C where it runs)"]
        assert (gtrun.storage / ".gtrun" / "service.json").read_text() == registered
    r = gtrun("run", "source.limit=1")
    assert r.code == 0, r.output
    assert f"workers label it at {url}/jobs/" in r.stdout
    (run,) = gtrun.runs()
    name = json.loads((run / "request.json").read_text())["LabelingJobName"]
    worker = Worker(url)
    assert worker.answer(name, worker.task(name), {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    s = gtrun("status", str(run), "--wait", "--interval", "0.2")
    assert s.code == 0 and f"{name}: Completed - labeled 1 of 1" in s.stdout, s.output
    assert "no labeling service is running" not in s.output


def test_a_stale_registration_does_not_block_and_a_service_removes_only_its_own(gtrun):
    registration = gtrun.storage / ".gtrun" / "service.json"
    first, proc = start_serve(gtrun, gtrun.storage)
    proc.kill()  # killed: no chance to remove its registration
    proc.wait(timeout=10)
    assert json.loads(registration.read_text())["url"] == first
    second, proc = start_serve(gtrun, gtrun.storage)  # the stale one does not count
    try:
        assert second != first and json.loads(registration.read_text())["url"] == second
        # a service that stops answering (stopped, hung) is taken over; when it goes on and then
        # stops, the registration it removes would be the new service's: it is left alone. Stopped
        # once it has started (it answers): not inside its start's job-store transaction, which
        # would hold the next service's writes
        deadline = time.monotonic() + 60
        while served_root(second) != gtrun.storage.resolve():
            assert time.monotonic() < deadline, "the second service never answered"
        proc.send_signal(signal.SIGSTOP)
        third, later = start_serve(gtrun, gtrun.storage)
        try:
            assert json.loads(registration.read_text())["url"] == third
            proc.send_signal(signal.SIGCONT)
            stop_serve(proc)
            assert json.loads(registration.read_text())["url"] == third
            r = gtrun("run", "source.limit=1")
            assert r.code == 0 and f"workers label it at {third}/jobs/" in r.stdout, r.output
        finally:
            stop_serve(later)
        assert not registration.exists()  # its own: removed when it stops
    finally:
        proc.send_signal(signal.SIGCONT)
        stop_serve(proc)


def test_a_run_names_only_a_service_of_its_own_storage(gtrun):
    """Another storage's service (on the default port, or registered in a copied service.json)
    has not the run's job: its URL is not given as the job's; the run says to start one."""
    other = gtrun.cwd / "other" / "storage"
    try:
        url, proc = start_serve(gtrun, other, port=DEFAULT_PORT)
    except RuntimeError:  # what it tests is the default port's: it must be free here
        pytest.fail(f"port {DEFAULT_PORT} is taken: stop what listens there (a gtrun serve, say) and run this again")
    try:
        (gtrun.storage / ".gtrun").mkdir(parents=True)
        shutil.copy(other / ".gtrun" / "service.json", gtrun.storage / ".gtrun" / "service.json")
        r = gtrun("run", "source.limit=1")
        assert r.code == 0, r.output
        assert "workers label it at" not in r.stdout and f"{url}/jobs/" not in r.stdout
        (run,) = gtrun.runs()
        name = json.loads((run / "request.json").read_text())["LabelingJobName"]
        assert (f"to label it, start the labeling service with gtrun serve --root {gtrun.storage} --port 0; "
                f"it prints the job's page for workers (/jobs/{name}/)") in r.stdout
        assert (f"({url}/ is the labeling service of another storage folder, {other}: it does not have "
                "this run's job)") in r.stdout
        assert Worker(url).http.get(f"/jobs/{name}/").status_code == 404  # as it says
        # status --wait says the same while it waits (for a job no service serves: stopped after two lines)
        wait = subprocess.Popen([sys.executable, "-m", "runner", "status", str(run), "--wait"], cwd=gtrun.cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**_env(), "COLUMNS": "200"})
        try:
            said = [wait.stdout.readline() for _ in range(2)]
        finally:
            wait.terminate()
            wait.wait(timeout=10)
        assert said == [f"no labeling service is running for this storage; start one with gtrun serve --root "
                        f"{gtrun.storage} --port 0 so workers can label\n",
                        f"({url}/ is the labeling service of another storage folder, {other}: it does not have "
                        "this run's job)\n"]
    finally:
        stop_serve(proc)


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


@pytest.mark.parametrize("verb", ["status", "stop", "collect", "continue", "reproduce", "diff"])
def test_a_run_directory_that_does_not_exist(gtrun, tmp_path, verb):
    """Every verb that takes a run directory says there is no such folder, not that a file of it is missing."""
    missing = tmp_path / "nosuchrun"
    r = gtrun(verb, *[str(missing)] * (2 if verb == "diff" else 1))
    assert r.code == 2 and r.stderr == f"error: {missing}: no such folder\n", r.output


@pytest.mark.parametrize(("sig", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_ctrl_c_stops_a_command_with_one_line(gtrun, served, sig, code, said):
    """Ctrl+C (or SIGTERM) while `status --wait` follows a job: exit 130 (143), one line, no traceback."""
    import signal
    import time

    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "status", str(run), "--wait", "--interval", "0.2"],
                            cwd=gtrun.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    first = ""
    while "InProgress" not in first and proc.poll() is None:  # started and polling: the job waits for workers
        first += proc.stderr.readline()
    time.sleep(1)  # a few polls more, which say nothing new
    assert proc.poll() is None, first
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=20)
    err = first + err
    assert proc.returncode == code, (out, err)
    assert err.strip().endswith(said) and "Traceback" not in err
    # piped, the wait says what it sees in plain lines, once per change, with no bar drawn
    name = json.loads((run / "request.json").read_text())["LabelingJobName"]
    seen = re.findall(rf"^\d\d:\d\d:\d\d {name} (\w+): 0 of 2 done$", err, re.M)
    assert seen and len(seen) == len(set(seen)) and seen[-1] == "InProgress", err
    assert "━" not in err and "╸" not in err


def test_a_runs_moved_storage_is_named_and_not_made_again(gtrun, tmp_path):
    """status, stop, collect and continue read the run's storage (backend.root): moved away, it is
    one error naming it, and nothing is created in its place."""
    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    gtrun.storage.rename(tmp_path / "moved")
    before = sorted(p for p in gtrun.cwd.rglob("*") if not p.is_relative_to(tmp_path / "moved"))
    for args in (["status", str(run)], ["status", str(run), "--wait"], ["stop", str(run)],
                 ["collect", str(run)], ["continue", str(run)]):
        r = gtrun(*args, timeout=60)
        assert r.code == 2 and r.stdout == "", (args, r.output)
        assert r.stderr.splitlines() == [
            f"error: backend.root: {gtrun.storage} does not exist; the run's labeling job and its output are kept there",
            "  hint: was the folder moved or removed? put it back there (nothing was created in its place)"], args
    assert sorted(p for p in gtrun.cwd.rglob("*") if not p.is_relative_to(tmp_path / "moved")) == before
    # an empty folder in its place (made by hand, or by an earlier gtrun): it has no labeling jobs
    gtrun.storage.mkdir()
    r = gtrun("status", str(run))
    assert r.code == 2 and r.stderr.startswith(
        f"error: backend.root: {gtrun.storage} holds no labeling jobs (.gtrun/labeling.sqlite3 is missing)"), r.output
    assert list(gtrun.storage.iterdir()) == []
    gtrun.storage.rmdir()
    (tmp_path / "moved").rename(gtrun.storage)  # put back, it works again
    r = gtrun("status", str(run))
    assert r.code == 0 and "InProgress - labeled 0 of 2" in r.stdout, r.output
