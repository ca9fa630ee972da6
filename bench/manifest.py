"""Benchmark: query rows -> input manifest on the local backend, gtrun vs DuckDB COPY vs pandas.

Run on demand, not in the test suite:

    python bench/manifest.py [--rows 1000000 10000000] [--workdir DIR] [--keep]
                             [--skip-pandas-above N] [--repeat N]

For each row count it generates a CSV with DuckDB (cached in the workdir), then turns it into an
input manifest three ways, on the same data and the same query (WHERE score < 0.8 ORDER BY
score, row_id), each in a fresh subprocess (`--child METHOD CSV OUT`):

1. gtrun: the calls `Pipeline.run` makes on the local backend -- `select_query`,
   `DuckDBSource.open` with the default `DuckDBConfig()` (its memory_limit), `json_lines_query`,
   `src.stream_lines` (= `LocalBackend.lines`) and `stream_manifest` into `LocalStore.open_write`
   -- minus the second sink (the run-directory copy) and the progress bar; with what `gtrun run`
   has loaded by then (the command line, botocore's model of the request) loaded first.
2. copy: DuckDB's own `COPY (SELECT ...) TO 'out.json' (FORMAT JSON)`, new connection, defaults
   (no memory limit beyond DuckDB's 80% of RAM).
3. pandas: `read_csv` + filter + `sort_values` + `to_json(orient="records", lines=True)`.

Seconds (and CPU seconds, user + sys) are measured inside the child, after imports; "wall" adds
interpreter start and imports. Peak RSS is the larger of the child's own `getrusage` high-water
mark and the parent's psutil poll of the child every 50 ms; MB = 2**20 bytes. A run that fails
(e.g. DuckDB's "Out of Memory Error") is shown as FAILED and the benchmark goes on. With
`--repeat N` each method runs N times, each in a fresh process: the fastest run and the highest
peak are reported. The machine must be otherwise idle: on 2 cores a concurrent test run doubles
the seconds (the load average is printed at the start and the end; CPU seconds vary less).

Targets: gtrun >= 0.7x the rows/s of the default COPY, >= 1.5x pandas, peak RSS < 300 MB and
flat from 1M to 10M rows.

Baseline measured earlier on this 2-core machine, 10M rows: DuckDB COPY 24.6 s at 2.2 GB peak;
the same COPY under a 150 MB memory limit 31.6 s at 248 MB; pandas 46 s at 9.2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from _measure import remove, run_child, verdict, warm

REPO = Path(__file__).resolve().parents[1]
METHODS = ("gtrun", "copy", "pandas")
THRESHOLD = 0.8
FIELDS = {"source", "row_id", "category", "score"}
MB = 1 << 20

CATEGORIES = ["books", "music", "movies", "games", "garden", "kitchen", "toys", "sports",
              "beauty", "tools"]
ADJECTIVES = ["blue", "cheap", "heavy", "tiny", "loud", "vintage", "shiny", "fragile"]
NOUNS = ["teapot", "lawn mower", "paperback", "headphones", "board game", "drill", "lamp"]
ENDINGS = ["fine.", "great, thanks!", "broken, again.",
           "exactly as described, which is rare these days.",
           'the box said "fragile", nobody cared.',
           "would buy again, maybe, if the price drops, but probably not this year."]


# -- data -----------------------------------------------------------------------------------------
def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def _pick(items: list[str], salt: str) -> str:
    return f"{_sql_list(items)}[1 + (hash(i, '{salt}') % {len(items)})::INTEGER]"


def csv_path(workdir: Path, rows: int) -> Path:
    """The cached CSV of `rows` generated rows; generated with DuckDB when missing."""
    path = workdir / f"rows_{rows}.csv"
    if path.exists():
        return path
    import duckdb

    tmp = path.with_name(f".{path.name}.part")
    text = (f"'Order ' || i || ': the ' || {_pick(ADJECTIVES, 'a')} || ' \"' || {_pick(NOUNS, 'n')} "
            f"|| '\" arrived ' || (hash(i, 'd') % 30) || ' days late, and ' || {_pick(ENDINGS, 'e')}")
    sql = (f"COPY (SELECT i AS row_id, {_pick(CATEGORIES, 'c')} AS category, "
           f"(hash(i) % 1000000) / 1e6 AS score, {text} AS text FROM range({rows}) AS t(i)) "
           f"TO '{tmp}' (HEADER)")
    start = time.perf_counter()
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(sql)
    finally:
        con.close()
    tmp.replace(path)
    print(f"generated {path} ({path.stat().st_size / MB:,.0f} MB) in {time.perf_counter() - start:.1f} s",
          flush=True)
    return path


# -- the three methods (run in the child) -----------------------------------------------------------
def run_gtrun(csv: Path, out: Path) -> tuple[int, Path]:
    """`out` is the LocalStore root; the manifest lands at out/bench/manifest.jsonl."""
    sys.path.insert(0, str(REPO))
    from runner.build.manifest import json_lines_query
    from runner.build.sql import select_query
    from runner.io.query import DuckDBSource
    from runner.io.store import LocalStore
    from runner.pipeline import stream_manifest
    from runner.schema import DuckDBConfig, SourceConfig

    source = SourceConfig(name="bench", database="bench", table="rows",
                          columns={"source": "text", "row_id": "row_id", "category": "category",
                                   "score": "score"},
                          where="score < :threshold", params={"threshold": THRESHOLD},
                          order_by=["score", "row_id"], files=[str(csv)])
    store = LocalStore(out)
    # The order of Pipeline.open_source (LocalBackend.open_source) and Pipeline.run.
    query = select_query(source, "duckdb")
    src = DuckDBSource.open(source, DuckDBConfig())
    try:
        with store.open_write("s3://bench/manifest.jsonl") as sink:
            # LocalBackend.lines(src, query, fields), then stream_manifest(chunks, sinks).
            lines = src.stream_lines(json_lines_query(query, list(query.fields or ())))
            written = stream_manifest(lines, [sink])
    finally:
        src.close()
    return written.objects, store.path("s3://bench/manifest.jsonl")


def run_copy(csv: Path, out: Path) -> tuple[int, Path]:
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute(
            f"COPY (SELECT text AS source, row_id, category, score FROM read_csv('{csv}') "
            f"WHERE score < {THRESHOLD} ORDER BY score, row_id) TO '{out}' (FORMAT JSON)").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else -1, out


def run_pandas(csv: Path, out: Path) -> tuple[int, Path]:
    import pandas as pd

    df = pd.read_csv(csv)
    df = df[df["score"] < THRESHOLD].sort_values(["score", "row_id"])
    df = df.rename(columns={"text": "source"})[["source", "row_id", "category", "score"]]
    df.to_json(out, orient="records", lines=True)
    return len(df), out


RUNNERS = {"gtrun": run_gtrun, "copy": run_copy, "pandas": run_pandas}


def child(method: str, csv: str, out: str) -> None:
    """Measure one method in this process; print one JSON line."""
    # Imports happen before the clock starts (they are in "wall"). gtrun's are what `gtrun run` has
    # loaded when its manifest starts streaming: the command line, the job's pipeline, and botocore's
    # model of the request it checked first.
    import duckdb  # noqa: F401
    if method == "pandas":
        import pandas  # noqa: F401
    if method == "gtrun":
        sys.path.insert(0, str(REPO))
        import runner.cli  # noqa: F401
        import runner.pipeline  # noqa: F401  (the command line loads it for run and plan)
        from runner.check import input_shape

        input_shape()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    objects, path = RUNNERS[method](Path(csv), Path(out))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"method": method, "seconds": seconds, "cpu": cpu, "objects": objects,
                      "peak_mb": after.ru_maxrss / 1024, "output": str(path)}), flush=True)  # KiB


# -- the parent -----------------------------------------------------------------------------------
def measure(method: str, csv: Path, out: Path, workdir: Path) -> dict[str, Any]:
    """Run one method in a fresh subprocess, polling its RSS every 50 ms."""
    return run_child([sys.executable, str(Path(__file__).resolve()), "--child", method, str(csv), str(out)],
                     workdir)


def check_output(path: Path, *, parse: bool) -> dict[str, Any]:
    """Line count, size, first/last row_id; with `parse`, every line must be a JSON object of FIELDS."""
    lines, size, first, last, bad = 0, path.stat().st_size, None, b"", 0
    with open(path, "rb") as src:
        if parse:
            for line in src:
                lines += 1
                obj = json.loads(line)
                if not isinstance(obj, dict) or set(obj) != FIELDS:
                    bad += 1
                first = first if first is not None else line
                last = line
        else:
            tail = b""
            while chunk := src.read(16 * MB):
                lines += chunk.count(b"\n")
                if first is None:
                    first = chunk.split(b"\n", 1)[0]
                tail = (tail + chunk)[-(1 << 20):]
            last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    ids = [json.loads(x)["row_id"] if x else None for x in (first, last)]
    return {"lines": lines, "size_mb": size / MB, "first_id": ids[0], "last_id": ids[1], "bad": bad}


def bench(rows: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """`--repeat` rounds of every method, each run in a fresh process: the fastest run, the highest peak.

    Rounds interleave the methods (gtrun, copy, pandas, gtrun, ...) so a burst of load elsewhere on
    the machine does not fall on one method only.
    """
    workdir: Path = args.workdir
    csv = csv_path(workdir, rows)
    methods = list(METHODS)
    if args.skip_pandas_above is not None and rows > args.skip_pandas_above:
        print(f"  {rows:,} rows: pandas skipped (--skip-pandas-above {args.skip_pandas_above:,})")
        methods.remove("pandas")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for i in range(args.repeat):
        for method in methods:
            out = workdir / (f"store_{rows}" if method == "gtrun" else f"out_{method}_{rows}.json")
            print(f"  {rows:,} rows: {method} run {i + 1}/{args.repeat} ...", end=" ", flush=True)
            warm(csv)  # before each run: pandas' memory can push the CSV out of the page cache
            r = measure(method, csv, out, workdir)
            if "error" in r:
                print(f"FAILED after {r['wall']:.1f} s at {r['peak_mb']:,.0f} MB: {r['error']}", flush=True)
            else:
                print(f"{r['seconds']:.1f} s, {r['peak_mb']:,.0f} MB; checking output ...", end=" ", flush=True)
                parse = method == "gtrun" and not any("error" not in x for x in runs[method])
                r.update(check_output(Path(r["output"]), parse=parse))  # parse gtrun's lines once
                print("done", flush=True)
            if not args.keep or "error" in r:
                remove(out)
            runs[method].append(r)
    results: dict[str, dict[str, Any]] = {}
    for method, done in runs.items():
        ok = [r for r in done if "error" not in r]
        best = dict(min(ok, key=lambda r: r["seconds"])) if ok else dict(done[0])
        best.update(peak_mb=max(r["peak_mb"] for r in done), runs=len(done), failed=len(done) - len(ok),
                    errors=sorted({r["error"] for r in done if "error" in r}))
        if ok:
            best.update(rusage_mb=max(r["rusage_mb"] for r in ok), polled_mb=max(r["polled_mb"] for r in ok),
                        bad=sum(r["bad"] for r in ok))
        results[method] = best
    return results


def report(all_results: dict[int, dict[str, dict[str, Any]]], repeat: int) -> bool:
    """Print the table and the targets; False if an output check failed."""
    print()
    print("rows -> input manifest, local backend (CSV, WHERE score < 0.8 ORDER BY score, row_id)")
    print("gtrun = Pipeline.run's calls (select_query, DuckDBSource.open with DuckDBConfig(), "
          "json_lines_query, stream_manifest into LocalStore.open_write), minus the run-dir copy")
    print("seconds/cpu s: in the child after imports (cpu = user + sys); wall: the whole subprocess; "
          "rows/s: input rows per second" + (f"; best of {repeat} runs, peak = highest" if repeat > 1 else ""))
    head = (f"{'rows in':>11} {'method':<7} {'objects out':>11} {'seconds':>8} {'cpu s':>7} {'wall s':>7} "
            f"{'rows/s':>10} {'peak MB':>8} {'rusage/psutil MB':>17} {'output MB':>10}")
    print(head)
    print("-" * len(head))
    ok_all = True
    for rows, results in all_results.items():
        for method, r in results.items():
            failed = f"  ({r['failed']}/{r['runs']} runs failed)" if r["failed"] else ""
            if "error" in r:
                print(f"{rows:>11,} {method:<7} {'FAILED':>11} {'':>8} {'':>7} {r['wall']:>7.1f} {'':>10} "
                      f"{r['peak_mb']:>8,.0f}{failed}")
                continue
            print(f"{rows:>11,} {method:<7} {r['lines']:>11,} {r['seconds']:>8.2f} {r['cpu']:>7.1f} "
                  f"{r['wall']:>7.1f} {rows / r['seconds']:>10,.0f} {r['peak_mb']:>8,.0f} "
                  f"{r['rusage_mb']:>8,.0f}/{r['polled_mb']:<8,.0f} {r['size_mb']:>10,.0f}{failed}")
        for method, r in results.items():
            for error in r["errors"]:
                print(f"{'':>11} {method} error: {error}")
        done = {m: r for m, r in results.items() if "error" not in r}
        counts = {m: r["lines"] for m, r in done.items()}
        ends = {m: (r["first_id"], r["last_id"]) for m, r in done.items()}
        g = done.get("gtrun")
        same = len(set(counts.values())) <= 1 and len(set(ends.values())) <= 1
        parsed = g is not None and g["bad"] == 0 and g["objects"] == g["lines"]
        ok_all &= same and parsed
        print(f"{'':>11} check ({', '.join(done) or 'nothing ran'}): line counts "
              f"{'equal' if len(set(counts.values())) <= 1 else counts}, first/last row_id "
              f"{'equal' if len(set(ends.values())) <= 1 else ends}, gtrun lines "
              f"{'all JSON with keys ' + ','.join(sorted(FIELDS)) if parsed else 'NOT CHECKED/BAD'}"
              f" -> {'OK' if same and parsed else 'FAIL'}")
    print()
    print("targets")
    sizes = list(all_results)
    for rows in sizes:
        results = all_results[rows]
        rate = {m: rows / r["seconds"] for m, r in results.items() if "error" not in r}
        g = results["gtrun"]
        vs_copy = rate["gtrun"] / rate["copy"] if "gtrun" in rate and "copy" in rate else None
        vs_pandas = rate["gtrun"] / rate["pandas"] if "gtrun" in rate and "pandas" in rate else None
        fails = f"; {g['failed']}/{g['runs']} gtrun runs failed" if g["failed"] else ""
        for label, ratio, target in (("gtrun/copy rows/s  ", vs_copy, 0.7), ("gtrun/pandas rows/s", vs_pandas, 1.5)):
            shown = "  n/a " if ratio is None else f"{ratio:5.2f}x"
            print(f"  {rows:>11,} rows: {label} {shown}  (>= {target}x)   "
                  f"{verdict(None if ratio is None else ratio >= target)}")
        print(f"  {rows:>11,} rows: gtrun peak RSS      {g['peak_mb']:5.0f} MB (< 300 MB) "
              f"{verdict(g['peak_mb'] < 300 and not g['failed'])}{fails}")
    if len(sizes) > 1:
        g_lo, g_hi = all_results[sizes[0]]["gtrun"], all_results[sizes[-1]]["gtrun"]
        lo, hi = g_lo["peak_mb"], g_hi["peak_mb"]
        ran = "error" not in g_lo and "error" not in g_hi
        print(f"  gtrun peak RSS {sizes[0]:,} -> {sizes[-1]:,} rows: {lo:.0f} -> {hi:.0f} MB "
              f"({hi / lo:.2f}x; flat = <= 1.25x) {verdict(hi <= lo * 1.25 if ran else None)}")
    print()
    print("baseline (earlier, 10M rows, this machine): COPY 24.6 s at 2.2 GB; COPY with "
          "memory_limit=150MB 31.6 s at 248 MB; pandas 46 s at 9.2 GB")
    return ok_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gtrun-bench"),
                        help="generated CSVs are cached here; outputs and DuckDB spills go here")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--skip-pandas-above", type=int, default=None, metavar="N",
                        help="do not run pandas for more than N rows (it needs ~1 GB per 1M rows)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each method N times (fresh process each), report the fastest")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CSV", "OUT"),
                        help="internal: measure one method in this process")
    args = parser.parse_args()
    if args.child:
        method, csv, out = args.child
        if method not in METHODS:
            parser.error(f"--child: unknown method {method!r}, use one of {', '.join(METHODS)}")
        child(method, csv, out)
        return
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    import duckdb
    import pandas

    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, pandas {pandas.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, workdir {args.workdir}", flush=True)
    all_results = {rows: bench(rows, args) for rows in args.rows}
    ok = report(all_results, args.repeat)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings are only comparable on an idle machine)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
