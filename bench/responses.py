"""Benchmark: a job's worker-response files: read from S3 on parse.READERS threads, and held flat in memory.

Run on demand, not in the test suite (needs moto[server]):

    python bench/responses.py [--files 2000 10000] [--readers 1 4 16] [--repeat N]
                              [--objects 10000 100000] [--workdir DIR]

`gtrun collect` of a run on the aws backend reads every object's worker-response file
(`<output>/<job>/annotations/worker-response/iteration-1/<object>/<time>.json`, one GET each) before
it joins the answers to the output manifest. This puts that many files (a real Ground Truth file,
with 1 to 5 answers each) into moto's S3 (a server on 127.0.0.1), then times
`parse.read_worker_responses` through gtrun's S3Store with each `--readers` count (1: the files one
after another, as collect read them before; the default is parse.READERS) and checks every count
reads the same answers. Seconds and CPU seconds of this process; the fastest of --repeat runs.

On this loopback the GETs wait on moto's own CPU (a Python server on the same 2 cores) and on
botocore's, not on a network: the figures bound what threads give from below. S3 answers a GET in
tens of milliseconds, which the threads overlap.

Memory (`--objects N [N ...]`, local files, each way in a fresh subprocess): collect holds a job's
answers in a file it stages (`stage_worker_responses`, then every pass looks each object up in
`StagedAnswers` as the manifest comes) where it used to hold them all in a dict
(`read_worker_responses`). Each child reads N objects' files (3 answers each) and looks every
object up in order; its peak RSS (getrusage) is printed beside the dict's. Target: flat in objects.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _measure import run_child
from athena_manifest import s3_client, start_moto

REPO = Path(__file__).resolve().parents[1]
BUCKET = "gtrun-bench-responses"
RECORD = REPO / "tests/data/real-outputs/ic_worker_response_153.json"


def put_files(s3: object, job: str, files: int) -> None:
    record = json.loads(RECORD.read_text())

    def put(i: int) -> None:
        body = json.dumps({**record, "answers": record["answers"][: 1 + i % 5]}).encode()
        s3.put_object(Bucket=BUCKET, Key=f"out/{job}/annotations/worker-response/iteration-1/{i}/"  # type: ignore[attr-defined]
                                         "2026-01-01_00:00:00.json", Body=body)

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(files)))
    print(f"put {files:,} worker-response files into moto in {time.perf_counter() - start:.1f} s", flush=True)


def local_job(workdir: Path, objects: int) -> Path:
    """A job folder of `objects` worker-response files, 3 answers each (cached in the workdir)."""
    job = workdir / f"job-{objects}"
    if job.is_dir():
        return job
    record = json.loads(RECORD.read_text())
    tmp = workdir / f".job-{objects}.part"
    base = tmp / "annotations" / "worker-response" / "iteration-1"
    for i in range(objects):
        (base / str(i)).mkdir(parents=True)
        answers = [{**a, "answerContent": {"crowd-image-classifier": {"label": f"label {(i + k) % 7}"}},
                    "timeSpentInSeconds": 10.0 + k} for k, a in enumerate(record["answers"][:3])]
        (base / str(i) / "2026-01-01_00:00:00.json").write_text(json.dumps({"answers": answers}))
    tmp.replace(job)
    return job


def child(way: str, job: str, objects: int) -> None:
    """Read the job's answers one way and look every object up in order; print a JSON line."""
    import resource

    sys.path.insert(0, str(REPO))
    from runner.collect import parse

    start = time.perf_counter()
    found = 0
    if way == "dict":
        answers = parse.read_worker_responses(job)
        found = sum(len(answers.get(str(i)) or ()) for i in range(objects))
    else:
        staged = Path(job).parent / f".{Path(job).name}.answers"
        parse.stage_worker_responses(parse.worker_response_files(job), staged)
        with parse.StagedAnswers(staged) as answers:
            found = sum(len(answers.get(str(i)) or ()) for i in range(objects))
        staged.unlink()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "answers": found, "peak_mb": peak}), flush=True)


def memory(args: argparse.Namespace) -> None:
    rows = []
    for objects in args.objects:
        job = local_job(args.workdir, objects)
        for way in ("dict", "staged"):
            r = run_child([sys.executable, str(Path(__file__).resolve()), "--child", way, str(job), str(objects)],
                          args.workdir)
            if "error" in r:
                raise SystemExit(f"{way} {objects:,}: {r['error']}")
            rows.append((objects, way, r["seconds"], r["answers"], r["peak_mb"]))
    print(f"\n{'objects':>8} {'way':<7} {'seconds':>8} {'answers':>8} {'peak MB':>8}")
    for objects, way, seconds, answers, peak in rows:
        print(f"{objects:>8,} {way:<7} {seconds:>8.2f} {answers:>8,} {peak:>8.0f}")
    staged = [peak for _, way, _, _, peak in rows if way == "staged"]
    if len(staged) > 1:
        print(f"staged peak RSS {args.objects[0]:,} -> {args.objects[-1]:,} objects: {staged[0]:.0f} -> "
              f"{staged[-1]:.0f} MB ({staged[-1] / staged[0]:.2f}x; target: flat, <= 1.25x)")


def main() -> None:
    sys.path.insert(0, str(REPO))
    from runner.collect import parse
    from runner.io.s3 import S3Store

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="*", default=[2000, 10000])
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 4, parse.READERS])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--objects", type=int, nargs="*", default=[10000, 100000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gtrun-bench-responses"))
    parser.add_argument("--child", nargs=3, metavar=("WAY", "JOB", "OBJECTS"), help="internal")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.objects:
        memory(args)
    if not args.files:
        return
    proc, url = start_moto()
    try:
        s3 = s3_client(url)
        s3.create_bucket(Bucket=BUCKET)
        store = S3Store(s3)
        rows = []
        for files in args.files:
            job = f"job-{files}"
            put_files(s3, job, files)
            first = None
            for readers in args.readers:
                best = None
                for _ in range(args.repeat):
                    start, cpu = time.perf_counter(), time.process_time()
                    got = parse.read_worker_responses(f"s3://{BUCKET}/out", job, list_fn=store.list,
                                                      open_fn=store.open_read, readers=readers)
                    run = (time.perf_counter() - start, time.process_time() - cpu)
                    best = run if best is None or run[0] < best[0] else best
                first = first or got
                if got != first or len(got) != files:
                    raise SystemExit(f"readers={readers} read other answers ({len(got)} objects)")
                rows.append((files, readers, *best))
    finally:
        proc.terminate()
    print(f"\n{'files':>7} {'readers':>7} {'seconds':>8} {'cpu s':>6} {'files/s':>8} {'x readers=1':>11}")
    base = {files: seconds for files, readers, seconds, _ in rows if readers == 1}
    for files, readers, seconds, cpu in rows:
        vs = f"{base[files] / seconds:10.2f}x" if files in base else f"{'n/a':>11}"
        print(f"{files:>7,} {readers:>7} {seconds:>8.2f} {cpu:>6.1f} {files / seconds:>8,.0f} {vs}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings are only comparable on an idle machine)")


if __name__ == "__main__":
    main()
