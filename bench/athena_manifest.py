"""Benchmark: Athena's result CSV -> input manifest (the aws backend's path), vs Parquet and pandas.

Run on demand, not in the test suite (needs the `bench` extra: pandas, psutil; and moto[server]):

    python bench/athena_manifest.py [--rows 200000 1000000] [--workdir DIR] [--repeat N] [--keep]

For each row count it generates an Athena-format result CSV (cached in the workdir): a header, every
value double-quoted with embedded `"` doubled, NULL as an unquoted empty field, '' as `""`; five
columns -- category varchar (1/6 NULL, 1/6 ''), row_id bigint, score double, source varchar (text
with quotes, commas, a newline, a tab and non-ASCII), verified boolean (1/3 NULL) -- and the same
rows as Parquet (what an UNLOAD to Parquet would hand over). Then, each in a fresh subprocess:

1. local: gtrun's own functions -- `open_result` (smart_open), `result_records`, `manifest_batches`
   (`manifest_line` per row) -- as `AthenaSource.stream_lines` calls them, reading the CSV from disk;
2. s3: the same, reading the CSV from moto's S3 (a moto server on 127.0.0.1, through a boto3 client):
   S3 transfer is the only difference to `local`;
3. parquet: pyarrow's `iter_batches` over the Parquet file + `manifest_line` per row: the client-side
   cost if Athena UNLOADed Parquet instead of writing its CSV;
4. pandas: `read_csv(quoting=QUOTE_ALL, keep_default_na=False, na_values=[""])` +
   `to_json(orient="records", lines=True)`, the usual baseline.

Seconds and CPU seconds (user + sys) are measured in the child after imports; peak RSS is the larger
of the child's `getrusage` high-water mark and a 50 ms psutil poll; MB = 2**20 bytes. Outputs are
checked: local, s3 and parquet must be byte-identical; pandas lines are compared as JSON objects with
gtrun's (it merges NULL and '' into null, and writes no boolean where a NULL is). Timings are only
comparable on an idle machine (the load average is printed); with `--repeat N` the fastest run counts.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _measure import run_child

REPO = Path(__file__).resolve().parents[1]
METHODS = ("local", "s3", "parquet", "pandas")
MB = 1 << 20
BUCKET = "gtrun-bench"
COLUMNS = [("category", "varchar"), ("row_id", "bigint"), ("score", "double"), ("source", "varchar"),
           ("verified", "boolean")]
FIELDS = [name for name, _ in COLUMNS]
CATEGORIES = ["books", "music", "games", "garden"]
NOUNS = ["teapot", "lawn mower", "paperback", "headphones", "board game", "drill", "lamp"]
ENDINGS = ['fine.', 'great, thanks!', 'the box said "fragile", nobody cared.', 'über-late, again.',
           'would buy again,\nmaybe.', 'ok\tok', 'five stars ★★★★★']
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


# -- data -------------------------------------------------------------------------------------------
def row(i: int) -> tuple[Any, ...]:
    """Row i: (category, row_id, score, source, verified); None is SQL NULL."""
    category = None if i % 6 == 0 else ("" if i % 6 == 1 else CATEGORIES[i % 4])
    text = f'Order {i}: the "{NOUNS[i % 7]}" arrived {i % 30} days late, and {ENDINGS[i % 7]}'
    return category, i, (i * 7919 % 1_000_000) / 1e6, text, None if i % 3 == 0 else i % 2 == 0


def _quoted(value: Any) -> str:
    if value is None:
        return ""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return '"' + text.replace('"', '""') + '"'


def data_paths(workdir: Path, rows: int) -> tuple[Path, Path]:
    """The cached Athena-format CSV and Parquet of `rows` rows; generated when missing."""
    csv_path, parquet_path = workdir / f"athena_{rows}.csv", workdir / f"athena_{rows}.parquet"
    if csv_path.exists() and parquet_path.exists():
        return csv_path, parquet_path
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    tmp = csv_path.with_name(f".{csv_path.name}.part")
    schema = pa.schema([("category", pa.string()), ("row_id", pa.int64()), ("score", pa.float64()),
                        ("source", pa.string()), ("verified", pa.bool_())])
    ptmp = parquet_path.with_name(f".{parquet_path.name}.part")
    with open(tmp, "w", encoding="utf-8", newline="") as out, pq.ParquetWriter(ptmp, schema) as pw:
        out.write(",".join(_quoted(n) for n in FIELDS) + "\n")
        for lo in range(0, rows, 65_536):
            batch = [row(i) for i in range(lo, min(rows, lo + 65_536))]
            out.write("".join(",".join(_quoted(v) for v in r) + "\n" for r in batch))
            pw.write_table(pa.Table.from_pylist([dict(zip(FIELDS, r, strict=True)) for r in batch], schema))
    tmp.replace(csv_path)
    ptmp.replace(parquet_path)
    print(f"generated {csv_path} ({csv_path.stat().st_size / MB:,.0f} MB) and {parquet_path.name} "
          f"({parquet_path.stat().st_size / MB:,.0f} MB) in {time.perf_counter() - start:.1f} s", flush=True)
    return csv_path, parquet_path


# -- moto ---------------------------------------------------------------------------------------------
def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **FAKE_ENV})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).close()  # noqa: S310 (127.0.0.1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def s3_client(url: str) -> Any:
    sys.path.insert(0, str(REPO))
    from runner.io.aws import client
    from runner.schema import BackendConfig, BackendKind, EndpointsConfig

    os.environ.update(FAKE_ENV)
    return client(BackendConfig(kind=BackendKind.aws, endpoints=EndpointsConfig(s3=url)), "s3")


def upload(url: str, path: Path) -> str:
    """Put the CSV in moto's S3 with gtrun's S3Store; its s3:// URI."""
    from runner.io.s3 import S3Store

    s3 = s3_client(url)
    s3.create_bucket(Bucket=BUCKET)
    uri = f"s3://{BUCKET}/athena/{path.name}"
    start = time.perf_counter()
    S3Store(s3).put_file(path, uri)
    print(f"uploaded {path.name} to moto at {url} in {time.perf_counter() - start:.1f} s", flush=True)
    return uri


# -- the methods (run in the child) ----------------------------------------------------------------
def run_gtrun(uri: str, out: Path, s3: Any) -> int:
    """What AthenaSource.stream_lines does once the query has SUCCEEDED, with the same functions."""
    from runner.io.athena import Column, manifest_batches, open_result, result_records
    from runner.schema import SourceConfig

    source = SourceConfig(name="bench", database="bench", table="rows", columns={f: f for f in FIELDS})
    columns = [Column(name, kind) for name, kind in COLUMNS]
    objects = 0
    with open_result(uri, s3) as text, open(out, "wb") as sink:
        records = result_records(text)
        header = next(records)
        assert header == FIELDS, header
        for chunk, rows in manifest_batches(records, columns, FIELDS, source):
            sink.write(chunk)
            objects += rows
    return objects


def run_parquet(path: str, out: Path) -> int:
    import pyarrow.parquet as pq

    from runner.build.manifest import manifest_line

    objects = 0
    with open(out, "wb") as sink:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            lines = []
            for values in batch.to_pylist():
                objects += 1
                lines.append(manifest_line(values, row_number=objects))
            sink.write(("\n".join(lines) + "\n").encode("utf-8"))
    return objects


def run_pandas(path: str, out: Path) -> int:
    import pandas as pd

    df = pd.read_csv(path, quoting=csv.QUOTE_ALL, keep_default_na=False, na_values=[""])
    df.to_json(out, orient="records", lines=True, force_ascii=False)
    return len(df)


def child(method: str, data: str, out: str, moto_url: str) -> None:
    """Measure one method in this process; print one JSON line."""
    sys.path.insert(0, str(REPO))
    if method == "pandas":
        import pandas  # noqa: F401
    elif method == "parquet":
        import pyarrow.parquet  # noqa: F401

        import runner.build.manifest  # noqa: F401
    else:
        import runner.io.athena  # noqa: F401
    s3 = s3_client(moto_url) if method == "s3" else None  # boto3 loads its models before the clock
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if method in ("local", "s3"):
        objects = run_gtrun(data, Path(out), s3)
    elif method == "parquet":
        objects = run_parquet(data, Path(out))
    else:
        objects = run_pandas(data, Path(out))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"method": method, "seconds": seconds, "cpu": cpu, "objects": objects,
                      "peak_mb": peak_rss_mb(after)}), flush=True)


def peak_rss_mb(usage: resource.struct_rusage) -> float:
    """This process's peak RSS. Linux carries ru_maxrss over fork + exec (a child would report its
    parent's peak if that is higher), so VmHWM of the process's own memory map is read first."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return usage.ru_maxrss / 1024  # KiB on Linux


# -- the parent -------------------------------------------------------------------------------------
def measure(method: str, data: str, out: Path, moto_url: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, data, str(out), moto_url]
    result = run_child(cmd, out.parent, env={**os.environ, **FAKE_ENV})
    if "error" not in result:
        result["size_mb"] = out.stat().st_size / MB
    return result


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for chunk in iter(lambda: src.read(MB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compare_pandas(gtrun: Path, pandas_out: Path) -> dict[str, int]:
    """Lines whose JSON objects differ from gtrun's, and why (NULL vs '', booleans)."""
    differ = empty_as_null = 0
    with open(gtrun, encoding="utf-8") as a, open(pandas_out, encoding="utf-8") as b:
        for x, y in zip(a, b, strict=False):
            ox, oy = json.loads(x), json.loads(y)
            if ox != oy:
                differ += 1
                empty_as_null += ox.get("category") == "" and oy.get("category") is None
    return {"differ": differ, "empty_as_null": empty_as_null}


def bench(rows: int, args: argparse.Namespace, moto_url: str) -> dict[str, dict[str, Any]]:
    csv_path, parquet_path = data_paths(args.workdir, rows)
    uri = upload(moto_url, csv_path)
    with open(csv_path, "rb") as src:  # page cache: every method starts from memory
        while src.read(16 * MB):
            pass
    inputs = {"local": str(csv_path), "s3": uri, "parquet": str(parquet_path), "pandas": str(csv_path)}
    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        out = args.workdir / f"manifest_{method}_{rows}.jsonl"
        runs = []
        for i in range(args.repeat):
            print(f"  {rows:,} rows: {method} run {i + 1}/{args.repeat} ...", end=" ", flush=True)
            r = measure(method, inputs[method], out, moto_url)
            print("FAILED: " + r["error"] if "error" in r else f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB",
                  flush=True)
            runs.append(r)
        ok = [r for r in runs if "error" not in r]
        best = dict(min(ok, key=lambda r: r["seconds"])) if ok else dict(runs[0])
        if ok:
            best["peak_mb"] = max(r["peak_mb"] for r in ok)
            best["sha256"] = sha256(out)
        results[method] = best
    gtrun_out = args.workdir / f"manifest_local_{rows}.jsonl"
    if "error" not in results["pandas"] and "error" not in results["local"]:
        results["pandas"].update(compare_pandas(gtrun_out, args.workdir / f"manifest_pandas_{rows}.jsonl"))
    if not args.keep:
        for method in METHODS:
            (args.workdir / f"manifest_{method}_{rows}.jsonl").unlink(missing_ok=True)
    return results


def report(all_results: dict[int, dict[str, dict[str, Any]]]) -> bool:
    print()
    print("Athena result CSV -> input manifest (5 columns; text with quotes, commas, newlines, tabs, "
          "unicode)")
    print("local/s3 = gtrun's open_result + result_records + manifest_batches (manifest_line per row); "
          "parquet = pyarrow + manifest_line (UNLOAD's client side); pandas = read_csv + to_json")
    print("rows/s = rows / seconds; rows/cpu-s = rows / CPU seconds (what counts on a shared machine)")
    head = (f"{'rows':>10} {'method':<8} {'objects':>10} {'seconds':>8} {'cpu s':>7} {'wall s':>7} "
            f"{'rows/s':>9} {'rows/cpu-s':>10} {'peak MB':>8} {'out MB':>7}  check")
    print(head)
    print("-" * len(head))
    ok_all = True
    for rows, results in all_results.items():
        reference = results["local"].get("sha256")
        for method, r in results.items():
            if "error" in r:
                print(f"{rows:>10,} {method:<8} {'FAILED':>10} {'':>8} {'':>7} {r['wall']:>7.1f}  "
                      f"{r['error']}")
                ok_all = False
                continue
            if method == "pandas":
                check = (f"{r.get('differ', 0):,} lines differ from gtrun's "
                         f"({r.get('empty_as_null', 0):,} of them '' -> null)")
            else:
                same = r["sha256"] == reference and r["objects"] == rows
                ok_all &= same
                check = "reference" if method == "local" else ("same bytes as local" if same else "DIFFERENT")
            print(f"{rows:>10,} {method:<8} {r['objects']:>10,} {r['seconds']:>8.2f} {r['cpu']:>7.2f} "
                  f"{r['wall']:>7.1f} {rows / r['seconds']:>9,.0f} {rows / max(r['cpu'], 1e-9):>10,.0f} "
                  f"{r['peak_mb']:>8.0f} {r['size_mb']:>7.0f}"
                  f"  {check}")
    sizes = list(all_results)
    if len(sizes) > 1:
        lo, hi = (all_results[n]["local"].get("peak_mb", 0) for n in (sizes[0], sizes[-1]))
        print(f"gtrun (local) peak RSS {sizes[0]:,} -> {sizes[-1]:,} rows: {lo:.0f} -> {hi:.0f} MB "
              f"({'flat' if hi <= lo * 1.25 else 'NOT flat'})")
    return ok_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gtrun-bench"))
    parser.add_argument("--repeat", type=int, default=1, metavar="N")
    parser.add_argument("--keep", action="store_true", help="keep the manifests")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "DATA", "OUT", "MOTO_URL"), help="internal")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    import pandas
    import pyarrow

    print(f"python {sys.version.split()[0]}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    proc, url = start_moto()
    try:
        all_results = {rows: bench(rows, args, url) for rows in args.rows}
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(args.workdir / ".tmp", ignore_errors=True)
    ok = report(all_results)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings are only comparable on an idle "
          "machine)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
