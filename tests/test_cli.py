"""Every verb, end to end through the real command on the local backend."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonlines
import yaml

from tests.conftest import ROOT, Gtrun, _env, read_json

ARTIFACTS = {"query.sql", "manifest.jsonl", "template.liquid", "label-categories.json", "request.json",
             "job.json", "lineage.json", "status.json"}


def test_help_lists_the_verbs(gtrun):
    r = gtrun("--help")
    assert r.code == 0
    for verb in ("run", "plan", "reproduce", "diff", "serve", "status", "collect", "continue"):
        assert f"\n  {verb} " in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 80  # an 80-column terminal shows it unwrapped
    for verb in ("reproduce", "diff"):
        assert gtrun(verb, "--help").code == 0
    r = gtrun("run", "--help", storage=False)
    assert r.code == 0 and "source: receipts, tweets" in r.stdout


def test_unknown_verb(gtrun):
    r = gtrun("launch")
    assert r.code == 2 and "unknown verb 'launch'" in r.stderr


def test_run_records_everything_and_registers_the_job(gtrun):
    r = gtrun("run")
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    assert ARTIFACTS <= {p.name for p in run.iterdir()}
    assert {p.name for p in (run / ".hydra").iterdir()} == {"config.yaml", "overrides.yaml", "hydra.yaml"}
    lines = list(jsonlines.open(run / "manifest.jsonl"))
    assert lines and all(set(x) == {"source", "entity", "tweet_id"} for x in lines)
    assert all(isinstance(x["tweet_id"], int) for x in lines)
    request = read_json(run / "request.json")
    name = request["LabelingJobName"]
    assert name.startswith("tweets-")
    assert request["LabelAttributeName"] == "sentiment"
    assert request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 1
    assert request["HumanTaskConfig"]["PreHumanTaskLambdaArn"].endswith(":function:PRE-TextMultiClass")
    labels = read_json(run / "label-categories.json")
    assert [x["label"] for x in labels["labels"]] == ["Positive", "Negative", "Neutral", "Irrelevant"]
    job = read_json(run / "job.json")
    assert job["LabelingJobStatus"] in ("Initializing", "InProgress")
    assert job["LabelCounters"]["Unlabeled"] == len(lines)
    assert gtrun.jobs() == [name]
    # storage holds the same manifest the run directory does
    manifest_uri = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    stored = gtrun.storage / manifest_uri.removeprefix("s3://")
    assert stored.read_bytes() == (run / "manifest.jsonl").read_bytes()
    lineage = read_json(run / "lineage.json")
    import hashlib
    for artifact in ("query.sql", "manifest.jsonl", "template.liquid", "label-categories.json", "request.json"):
        assert lineage["artifacts"][artifact] == hashlib.sha256((run / artifact).read_bytes()).hexdigest()
    assert lineage["objects"] == len(lines)
    assert len(lineage["source_files"]) == 1 and lineage["gtrun_version"]
    assert "?" in (run / "query.sql").read_text() and "0.8" not in (run / "query.sql").read_text().splitlines()[0]


def test_paths_and_commands_stay_on_one_line_on_a_narrow_terminal(gtrun):
    r = gtrun("run", columns=60)
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    assert f"follow it with: gtrun status {run} --wait" in r.stdout.splitlines()
    r = gtrun("collect", str(run), columns=60)  # its job has not ended: the error and its hint stay a line each
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  hint: ")
    assert lines[1].endswith(f"(gtrun stop {run}), then collect"), r.stderr


def test_jobs_lists_the_local_jobs_with_their_runs_and_makes_no_storage(gtrun):
    r = gtrun("jobs", f"backend.root={gtrun.storage}")
    assert r.code == 0 and f"no labeling jobs in {gtrun.storage}: gtrun run keeps its jobs there" in r.stdout, r.output
    assert not gtrun.storage.exists()  # nothing made where no run has been
    assert gtrun("run", "source.limit=1").code == 0
    (run,) = gtrun.runs()
    r = gtrun("jobs", f"backend.root={gtrun.storage}", columns=300)
    name = read_json(run / "request.json")["LabelingJobName"]
    row = next(line for line in r.stdout.splitlines() if name in line)
    assert r.code == 0 and "InProgress" in row and "0/1" in row and run.name in row, r.output


def test_workteams_lists_the_local_team_and_makes_no_storage(gtrun):
    before = gtrun("workteams", f"backend.root={gtrun.storage}", columns=300)
    assert before.code == 0, before.output
    assert not gtrun.storage.exists()  # nothing made where no run has been
    r = gtrun("workteams", columns=300)  # backend.root's default, outputs/storage here
    assert r.code == 0 and r.stdout == before.stdout, r.output
    assert not (gtrun.cwd / "outputs").exists()
    assert gtrun("run", "source.limit=1").code == 0
    (run,) = gtrun.runs()
    team = read_json(run / "request.json")["HumanTaskConfig"]["WorkteamArn"]
    row = next(line for line in before.stdout.splitlines() if "gtrun-local" in line)
    assert team in row and "127.0.0.1" in row, before.stdout
    after = gtrun("workteams", f"backend.root={gtrun.storage}", columns=300)  # the service's own answer
    assert after.code == 0 and after.stdout == before.stdout, after.output


def test_threshold_param_changes_the_selection(gtrun):
    low = gtrun("plan", "source.params.threshold=0.5")
    high = gtrun("plan", "source.params.threshold=0.9")
    assert low.code == high.code == 0
    count = lambda r: int(r.stdout.split(" objects x ")[0].split()[-1].replace(",", ""))  # noqa: E731
    assert 0 < count(low) < count(high)


def test_plan_submits_and_writes_nothing(gtrun):
    r = gtrun("plan", "source=tweets", "source.params.threshold=0.6")
    assert r.code == 0, r.output
    assert "SELECT" in r.stdout and "CreateLabelingJob request" in r.stdout and "nothing submitted" in r.stdout
    assert "params: threshold=0.6, entity=NULL\n" in r.stdout  # each parameter once, SQL's NULL for None
    assert gtrun.jobs() == [] and gtrun.stored_objects() == [] and gtrun.runs() == []
    assert not (gtrun.cwd / "outputs").exists()
    # a sweep planned: each member's plan, no sweep folder, no empty summary table
    r = gtrun("plan", "-m", "source.params.entity=Xbox,NBA2K")
    assert r.code == 0, r.output
    assert r.stdout.count("nothing submitted") == 2 and "sweep summary" not in r.output
    assert not (gtrun.cwd / "outputs").exists() and gtrun.jobs() == []
    # an override before --cfg: Hydra takes its overrides in one run, gtrun's own after them
    r = gtrun("plan", "source.limit=5", "--cfg", "job", "source.params.threshold=0.5")
    assert r.code == 0, r.output
    assert "limit: 5" in r.stdout and "threshold: 0.5" in r.stdout


def test_receipts_preset_with_an_override(gtrun):
    r = gtrun("run", "job=receipts_ner", "workteam.workers_per_object=3")
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    request = read_json(run / "request.json")
    assert request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 3
    assert "PreHumanTaskLambdaArn" not in request["HumanTaskConfig"]  # custom: the line is task.input
    lines = list(jsonlines.open(run / "manifest.jsonl"))
    assert len(lines) >= 20
    for line in lines:
        assert line["source-ref"].startswith("s3://gtrun/samples/receipts/images/receipt-")
        assert (gtrun.storage / line["source-ref"].removeprefix("s3://")).is_file()  # images uploaded
        assert line["tokens"] and {"text", "box"} <= set(line["tokens"][0])
    assert yaml.safe_load((run / ".hydra/overrides.yaml").read_text()) == [
        "job=receipts_ner", "workteam.workers_per_object=3", f"backend.root={gtrun.storage}"]


def test_sweep_over_entities(gtrun):
    r = gtrun("run", "-m", "source.params.entity=Borderlands,Xbox,NBA2K")
    assert r.code == 0, r.output
    runs = gtrun.runs()
    assert len(runs) == 3
    entities = [{line["entity"] for line in jsonlines.open(run / "manifest.jsonl")} for run in runs]
    assert sorted(map(tuple, entities)) == [("Borderlands",), ("NBA2K",), ("Xbox",)]
    (summary,) = (gtrun.cwd / "outputs").rglob("summary.json")
    members = read_json(summary)["members"]
    assert [m["dataset"] for m in members] == ["tweets-borderlands", "tweets-xbox", "tweets-nba2k"]
    assert all(m["status"] in ("Initializing", "InProgress") and m["objects"] > 0 for m in members)
    assert "sweep summary" in r.stderr
    # each row says what the sweep varied for it; the overrides every member shares are left out
    swept = [line.split("│")[1].strip() for line in r.stderr.splitlines() if "│ tweets-" in line]
    assert swept == ["source.params.entity=Borderlands", "source.params.entity=Xbox", "source.params.entity=NBA2K"]
    assert len(set(gtrun.jobs())) == 3


def test_sweep_member_failure_does_not_hide_the_others(gtrun):
    r = gtrun("run", "-m", "source.params.entity=Xbox,NoSuchEntity")
    assert r.code == 2
    (summary,) = (gtrun.cwd / "outputs").rglob("summary.json")
    members = read_json(summary)["members"]
    assert [m["status"] for m in members][1] == "failed" and members[0]["status"] != "failed"
    assert "no rows" in members[1]["error"]
    assert len(gtrun.jobs()) == 1
    st = gtrun("status", str(summary.parent))  # a sweep: each member's job, and the member left out
    assert st.code == 0, st.output
    assert f"{members[0]['job_name']}: " in st.stdout and "left out: 1_tweets-nosuchentity (failed: " in st.stdout
    st = gtrun("stop", str(summary.parent))  # stop takes a sweep too
    assert st.code == 0 and f"{members[0]['job_name']}: Stopp" in st.stdout, st.output
    st = gtrun("stop", str(summary.parent))  # a job that has ended: nothing to stop, not an error
    assert st.code == 0 and f"{members[0]['job_name']}: already Stopp" in st.stdout, st.output
    st = gtrun("reproduce", str(summary.parent))  # one run at a time
    assert st.code == 2 and "not a recorded gtrun run (.hydra/config.yaml is missing); it is a sweep: give one of " \
        "its members" in st.stderr, st.output
    # piped without COLUMNS, the table is as wide as it needs: job names and paths stay whole, to copy
    wide = gtrun("run", "-m", "source.params.entity=Xbox,NBA2K", "source.limit=2", columns=None)
    assert wide.code == 0, wide.output
    names = [m["job_name"] for m in read_json(sorted((gtrun.cwd / "outputs").rglob("summary.json"))[-1])["members"]]
    assert all(any(name in line for line in wide.stderr.splitlines()) for name in names), wide.stderr
    # at 80 columns, piped, the summary's cells fold instead of being cut to a few letters
    narrow = gtrun("run", "-m", "source.params.entity=Xbox,NBA2K", "source.limit=2", columns=80)
    assert narrow.code == 0, narrow.output
    header = next(line for line in narrow.stderr.splitlines() if "swept" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "swept", "dataset", "objects", "cost (USD)", "job name", "status"]  # no column squeezed to a few letters


def test_sweep_over_jobs_in_parallel_with_joblib(gtrun):
    r = gtrun("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "job=tweets_sentiment,receipts_ner")
    assert r.code == 0, r.output
    names = sorted(read_json(run / "request.json")["LabelAttributeName"] for run in gtrun.runs())
    assert names == ["receipt-entities", "sentiment"]


def test_reproduce_gives_identical_artifacts(gtrun):
    assert gtrun("run", "source.params.entity=Xbox").code == 0
    (first,) = gtrun.runs()
    r = gtrun("reproduce", str(first))
    assert r.code == 0, r.output
    assert "reproduced exactly" in r.stdout
    second = next(p for p in gtrun.runs() if p != first)
    a, b = read_json(first / "lineage.json"), read_json(second / "lineage.json")
    assert a["artifacts"]["manifest.jsonl"] == b["artifacts"]["manifest.jsonl"]
    assert a["request_normalized_sha256"] == b["request_normalized_sha256"]
    assert a["job_name"] != b["job_name"]
    assert yaml.safe_load((second / ".hydra/config.yaml").read_text())["source"]["params"]["entity"] == "Xbox"
    # a key given to reproduce would be recorded, not used (the recorded config is laid over it): refused
    r = gtrun("reproduce", str(first), "source.params.entity=NBA2K")
    assert r.code == 2 and "source.params.entity=NBA2K: reproduce runs the recorded config as it was" in r.stderr
    assert len(gtrun.runs(every=True)) == 2
    for verb in ("reproduce", "continue"):  # the run is required, the overrides are not
        r = gtrun(verb)
        assert r.code == 2 and r.stderr.splitlines()[-1] == f"gtrun {verb}: error: the following argument is required: run"


def test_reproduce_fails_loudly_when_the_data_changed(gtrun, tmp_path):
    data = tmp_path / "preds.csv"
    data.write_text("tweet_id,entity,tweet_text,score\n1,Xbox,good game,0.5\n2,Xbox,bad game,0.6\n")
    assert gtrun("run", f"source.files=[{data}]").code == 0
    (first,) = gtrun.runs()
    data.write_text("tweet_id,entity,tweet_text,score\n1,Xbox,good game,0.5\n2,Xbox,changed,0.6\n")
    r = gtrun("reproduce", str(first))
    assert r.code == 2
    assert "manifest.jsonl" in r.stderr and "differ" in r.stderr
    assert f"{data} changed" in r.stderr and "nothing was submitted" in r.stderr
    assert f"source file {data}" in r.stdout
    assert len(gtrun.jobs()) == 1  # checked before CreateLabelingJob
    (refused,) = [p for p in gtrun.runs(every=True) if p != first]  # recorded as what it was
    assert read_json(refused / "status.json")["verb"] == "reproduce"
    assert read_json(refused / "status.json")["status"] == "failed"
    # the refused run's manifest, template and labels are not left in storage for no job
    jobs = gtrun.storage / "gtrun" / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == [read_json(first / "request.json")["LabelingJobName"]]
    # the refused run's request (built and compared before it was refused) is compared by diff too
    assert (refused / "request.json").is_file()
    d = gtrun("diff", str(first), str(refused))
    assert d.code == 1 and "the data files are not recorded" in d.stdout, d.output
    rows = {line.split("│")[1].strip(): line for line in d.stdout.splitlines() if line.count("│") >= 4}
    assert "same" in rows["request.json (minus its name)"] and "DIFFERS" in rows["manifest.jsonl"], d.stdout


def test_reproduce_a_run_with_its_own_config_folder_and_fixed_name(gtrun, tmp_path):
    conf = tmp_path / "my-conf"
    (conf / "source").mkdir(parents=True)
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"id": i, "body": f"review {i}"}) + "\n" for i in range(4)))
    (conf / "source" / "mine.yaml").write_text(yaml.safe_dump({
        "name": "reviews", "database": "shop", "table": "reviews", "columns": {"source": "body", "id": "id"},
        "order_by": ["id"], "files": [str(data)]}))
    r = gtrun("run", "--config-dir", str(conf), "source=mine", "job.labeling_job_name=my-reviews")
    assert r.code == 0, r.output
    (first,) = gtrun.runs()
    r = gtrun("reproduce", str(first))  # the recorded config folder, and a name of its own
    assert r.code == 0, r.output
    assert "reproduced exactly" in r.stdout
    (second,) = [p for p in gtrun.runs() if p != first]
    assert read_json(second / "request.json")["LabelingJobName"] != "my-reviews"
    assert sorted(gtrun.jobs()) == sorted(["my-reviews", read_json(second / "request.json")["LabelingJobName"]])
    shutil.rmtree(conf)
    r = gtrun("reproduce", str(first))
    assert r.code == 2 and f"its config folder {conf} (--config-dir) is gone" in r.stderr


def test_a_runs_config_folder_inside_its_project_moves_with_it(tmp_path):
    project = tmp_path / "project"
    (project / "my-conf" / "source").mkdir(parents=True)
    (project / "reviews.jsonl").write_text("".join(json.dumps({"id": i, "body": f"review {i}"}) + "\n" for i in range(4)))
    (project / "my-conf" / "source" / "mine.yaml").write_text(yaml.safe_dump({
        "name": "reviews", "database": "shop", "table": "reviews", "columns": {"source": "body", "id": "id"},
        "order_by": ["id"], "files": ["reviews.jsonl"]}))
    r = Gtrun(project)("run", "--config-dir", "my-conf", "source=mine", "backend.root=storage", storage=False)
    assert r.code == 0, r.output
    project = project.rename(tmp_path / "moved")
    moved = Gtrun(project)
    (first,) = moved.runs()
    r = moved("reproduce", str(first))  # the config folder where it is now, not where it was
    assert r.code == 0 and "reproduced exactly" in r.stdout, r.output
    assert not (tmp_path / "project").exists()


def test_a_runs_data_and_assets_inside_its_project_move_with_it(tmp_path):
    """Files inside the project are recorded by their path then: after a move they are the same files
    where they are now, so reproduce goes ahead and diff finds the runs identical."""
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    for name in ("receipt-001.png", "receipt-002.png"):
        (project / "images" / name).write_bytes(f"image {name}".encode())
    shutil.copy(ROOT / "data" / "receipts" / "receipts.jsonl", project / "receipts.jsonl")
    args = ["job=receipts_ner", "source.limit=2", "source.files=[receipts.jsonl]", "source.assets.files=images/*.png",
            "backend.root=storage"]
    assert Gtrun(project)("run", *args, storage=False).code == 0
    moved = Gtrun(project.rename(tmp_path / "moved"))
    (first,) = moved.runs()
    r = moved("reproduce", str(first))
    assert r.code == 0 and "reproduced exactly" in r.stdout and "DIFFERS" not in r.stdout, r.output
    (second,) = [p for p in moved.runs() if p != first]
    d = moved("diff", str(first), str(second))
    assert d.code == 0 and "DIFFERS" not in d.stdout, d.output
    assert f"asset {moved.cwd / 'images' / 'receipt-001.png'}" in d.stdout


def test_reproduce_names_a_key_read_from_the_environment(gtrun):
    """A recorded `${oc.env:...}` is resolved anew: the recorded text is the same, its value is not."""
    value = "${oc.decode:${oc.env:THRESHOLD,0.8}}"
    assert gtrun("run", f"source.params.threshold='{value}'", env={"THRESHOLD": "0.5"}).code == 0
    (first,) = gtrun.runs()
    r = gtrun("reproduce", str(first))
    assert r.code == 2 and "no config key changed" not in r.stderr, r.output
    assert f"source.params.threshold = {value} reads the environment, which may have changed" in r.stderr, r.stderr
    assert len(gtrun.jobs()) == 1
    assert gtrun("reproduce", str(first), env={"THRESHOLD": "0.5"}).code == 0
    d = gtrun("diff", str(first), str(gtrun.runs()[-1]))
    assert d.code == 0 and "source.params.threshold: read from the environment, compared as it resolves now" in d.stdout


def test_diff_names_keys_and_artifacts(gtrun):
    assert gtrun("run", "source.params.entity=Xbox").code == 0
    assert gtrun("run", "source.params.entity=NBA2K", "workteam.workers_per_object=2").code == 0
    a, b = gtrun.runs()
    r = gtrun("diff", str(a), str(b))
    assert r.code == 1, r.output  # as diff(1): 1 when they differ
    assert "source.params.entity" in r.stdout and "workteam.workers_per_object" in r.stdout
    assert "source.name" in r.stdout
    assert "template.liquid" in r.stdout
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    assert "DIFFERS" in rows["manifest.jsonl"] and "same" in rows["template.liquid"]
    # a key one run lacks reads "(absent)", not like a null
    c = gtrun("run", "job=receipts_ner", "source.limit=2")
    assert c.code == 0, c.output
    r = gtrun("diff", str(a), str(gtrun.runs()[-1]))
    assert r.code == 1, r.output
    entity = next(line for line in r.stdout.splitlines() if "source.params.entity" in line)
    assert [cell.strip() for cell in entity.split("│")[1:4]] == ["source.params.entity", "'Xbox'", "(absent)"]
    same = gtrun("diff", str(a), str(a))
    assert same.code == 0 and "config: identical" in same.stdout, same.output
    # a run that stopped before it submitted: the artifacts it wrote are compared, the rest is not recorded
    assert gtrun("run", "source.params.entity=Xbox", "pricing.max_usd=0.01").code == 2
    (failed,) = set(gtrun.runs(every=True)) - set(gtrun.runs())
    r = gtrun("diff", str(a), str(failed))
    assert f"{failed} did not finish (no lineage.json)" in r.stdout and r.code == 1, r.output
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    assert "same" in rows["query.sql"] and "DIFFERS" in rows["manifest.jsonl"]  # it wrote none
    r = gtrun("diff", str(failed), str(failed))
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    assert "same" in rows["query.sql"] and "not recorded" in rows["manifest.jsonl"] and r.code == 0, r.output


def test_a_run_refused_before_it_made_a_job_says_why_to_status_stop_and_collect(gtrun):
    """The run's recorded error (status.json), not only that there is no job."""
    assert gtrun("run", "source.limit=2", "pricing.max_usd=0.0001").code == 2
    (failed,) = gtrun.runs(every=True)
    for verb in ("status", "stop", "collect"):
        r = gtrun(verb, str(failed))
        assert r.code == 2 and r.stderr.startswith(
            f"error: {failed}: the run created no labeling job; it failed: pricing.max_usd: the job would cost "
            "$0.16 (2 objects), more than the $0.0001 budget\n"), r.output


def test_user_config_dir_with_a_bare_group_file(gtrun, tmp_path):
    conf = tmp_path / "my-conf"
    (conf / "source").mkdir(parents=True)
    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "body": f"review {i}", "stars": i % 5}) for i in range(10)) + "\n")
    (conf / "source" / "my_table.yaml").write_text(yaml.safe_dump({
        "name": "reviews", "database": "shop", "table": "reviews", "columns": {"source": "body", "id": "id"},
        "where": "stars >= :min_stars", "params": {"min_stars": 3}, "order_by": ["id"], "files": [str(data)]}))
    r = gtrun("run", "--config-dir", str(conf), "source=my_table")
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    assert [x["id"] for x in jsonlines.open(run / "manifest.jsonl")] == [3, 4, 8, 9]
    # the user's file is checked against the same schema as the bundled ones
    (conf / "source" / "typo.yaml").write_text(yaml.safe_dump({"name": "x", "colums": {"source": "body"}}))
    r = gtrun("run", "--config-dir", str(conf), "source=typo")
    assert r.code != 0 and "colums" in r.output


def test_cfg_job_prints_the_composed_config(gtrun):
    r = gtrun("run", "--cfg", "job", "workteam.workers_per_object=4")
    assert r.code == 0
    assert yaml.safe_load(r.stdout)["workteam"]["workers_per_object"] == 4
    assert gtrun.jobs() == []


def test_a_run_whose_recorded_config_no_longer_fits_gets_one_error_naming_the_key(gtrun):
    """A run recorded by an earlier gtrun (whose config had another shape) is refused by every verb
    that reads its config, with the file and the key, never a traceback."""
    assert gtrun("run").code == 0
    (run,) = gtrun.runs()
    config = run / ".hydra" / "config.yaml"
    recorded = yaml.safe_load(config.read_text())
    for key, value, shown in (("transforms.steps", [], "transforms.steps = []"),
                              ("template.task_type", "video_tracking", "template.task_type = 'video_tracking'")):
        group, name = key.split(".")
        config.write_text(yaml.safe_dump({**recorded, group: {**recorded[group], name: value}}))
        for verb in ("status", "collect", "continue", "reproduce"):
            r = gtrun(verb, str(run))
            assert r.code == 2, (verb, r.output)
            assert "Traceback" not in r.output, (verb, r.output)
            assert f"{config}: {shown}: " in " ".join(r.stderr.split()), (verb, r.stderr)
    assert len(gtrun.runs()) == 1  # reproduce and continue recorded no new run


def test_config_hash_of_a_run_without_a_fixed_name_is_what_earlier_runs_recorded():
    """Runs recorded before job.labeling_job_name was left out of the hash keep theirs: reproduce
    compares the request's gtrun:config tag."""
    import hashlib

    from runner.pipeline import config_hash

    resolved = {"source": {"name": "tweets"}, "job": {"name": "tweets_sentiment", "labeling_job_name": None}}
    assert config_hash(resolved) == hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
    assert config_hash({**resolved, "job": {**resolved["job"], "labeling_job_name": "fixed"}}) == config_hash(resolved)


def test_a_template_swapped_under_a_preset_is_warned_about(gtrun):
    """job=tweets_sentiment sets sentiment labels for text_classification; with another template they
    would label receipts' boxes: plan says so, unless the labels are set too."""
    r = gtrun("plan", "template=named_entity", "source.limit=1")
    assert r.code == 0, r.output
    assert ("warning: template=named_entity with job=tweets_sentiment: the preset's template.labels, title and "
            "instructions, written for text_classification, are kept") in r.stderr
    r = gtrun("plan", "template=named_entity", "template.labels=[person,place]", "source.limit=1")
    assert r.code == 0 and "warning:" not in r.stderr, r.output
    assert "warning:" not in gtrun("plan", "job=receipts_ner", "source.limit=1").stderr


HELD = """
import os, signal, sys, time
from rich.console import Console
from runner.pipeline import deferred_signals
signal.signal(signal.SIGTERM, getattr(signal, sys.argv[1]))
with deferred_signals(Console(stderr=True)):
    for _ in range(int(sys.argv[2])):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    print("inside", flush=True)
print("after", flush=True)
"""


def test_signals_held_while_a_job_is_submitted_act_as_the_process_had_them_act():
    """SIGTERM with its default action: held once, then it ends the process; a second one ends it at
    once (not held again and again). An ignored SIGTERM stays ignored."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, _env

    def held(action: str, times: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", HELD, action, str(times)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env=_env())

    once = held("SIG_DFL", 1)
    assert once.returncode == -signal.SIGTERM and once.stdout == "inside\n", once.stderr
    assert "submitting the job: gtrun stops once it is recorded" in once.stderr
    twice = held("SIG_DFL", 2)
    assert twice.returncode == -signal.SIGTERM and twice.stdout == "", twice.stderr
    assert "RecursionError" not in twice.stderr
    ignored = held("SIG_IGN", 2)
    assert ignored.returncode == 0 and ignored.stdout == "inside\nafter\n" and ignored.stderr == "", ignored.stderr


def _started(gtrun, *args):
    """`gtrun <args>` in its own process group (a terminal's Ctrl+C goes to the group), storage under cwd."""
    return subprocess.Popen([sys.executable, "-m", "runner", *args, f"backend.root={gtrun.storage}"],
                            cwd=gtrun.cwd, env={**_env(), "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(found, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not found():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
        time.sleep(0.02)


def test_ctrl_c_in_a_sweep_says_which_jobs_were_made_and_records_the_sweep(gtrun):
    """Ctrl+C after the second member's job is made: the sweep says how many of its jobs exist and how
    to stop them all, summary.json records the members made and those not launched, `stop` takes the
    sweep, and `collect` warns and names the members not launched in the card."""
    entities = ["Borderlands", "Xbox", "NBA2K", "Nvidia", "Amazon"]
    proc = _started(gtrun, "run", "-m", f"source.params.entity={','.join(entities)}")
    try:
        _wait_for(lambda: any((gtrun.cwd / "outputs").glob("sweeps/*/*/1_*/job.json")), proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    (sweep_dir,) = (gtrun.cwd / "outputs").glob("sweeps/*/*")
    made = sorted(p.parent for p in sweep_dir.glob("*/job.json"))
    assert 2 <= len(made) < len(entities), stderr
    assert (f"interrupted (Ctrl+C): {len(made)} of 5 jobs of this sweep were created and run until they end, "
            f"or gtrun stop {sweep_dir.relative_to(gtrun.cwd)}") in stderr
    assert "it runs until it ends or gtrun stop" not in stderr  # not one member's advice
    summary = read_json(sweep_dir / "summary.json")
    assert summary["interrupted"] == "interrupted (Ctrl+C)" and summary["planned"] == 5
    not_launched = [m["swept"] for m in summary["not_launched"]]
    assert not_launched and [f"source.params.entity={e}" for e in entities[-len(not_launched):]] == \
        [x for (x,) in not_launched]
    assert len(summary["members"]) + len(not_launched) == 5
    assert "not launched: " + ", ".join(x for (x,) in not_launched) in stderr
    cut = [m["run_dir"] for m in summary["members"] if not (Path(m["run_dir"]) / "job.json").is_file()]
    assert all(Path(run).name in stderr for run in cut), stderr  # the member under way, stopped before it submitted
    stopped = gtrun("stop", str(sweep_dir))
    assert stopped.code == 0, stopped.output
    assert sorted(read_json(run / "job.json")["LabelingJobName"] for run in made) == \
        sorted(line.split(":")[0] for line in stopped.stdout.splitlines() if line.endswith(": Stopped"))
    r = gtrun("collect", str(sweep_dir))
    assert r.code == 0, r.output
    n = len(not_launched)
    assert (f"warning: the sweep {sweep_dir} was interrupted (Ctrl+C): {n} of its members "
            f"{'was' if n == 1 else 'were'} not launched") in r.stdout
    first = summary["not_launched"][0]
    item = f"#{first['num']} {first['swept'][0]} (not launched: the sweep was interrupted (Ctrl+C))"
    assert f"left out: {item}" in r.stdout
    assert item in (sweep_dir / "dataset" / "README.md").read_text(encoding="utf-8")
    assert item in read_json(sweep_dir / "dataset" / "report.json")["sweep"]["left_out"]


def test_collect_of_a_sweep_stopped_without_its_summary_names_the_members_not_launched(gtrun):
    """A sweep killed before it could write summary.json (or an older gtrun's, interrupted): collect
    compares its members with those multirun.yaml asks for."""
    r = gtrun("run", "-m", "source.params.entity=Borderlands,Xbox,NBA2K", "source.limit=2")
    assert r.code == 0, r.output
    (summary,) = (gtrun.cwd / "outputs").rglob("summary.json")
    sweep_dir = summary.parent
    summary.unlink()
    shutil.rmtree(next(sweep_dir.glob("2_*")))
    # a member stopped once its job was recorded, before its status was (the joblib launcher's, say)
    (next(sweep_dir.glob("1_*")) / "status.json").unlink()
    from runner.sweep import read_statuses

    assert [r["status"] for r in read_statuses(sweep_dir)][1] == "submitted"  # not "failed: no status recorded"
    assert gtrun("stop", str(sweep_dir)).code == 0
    r = gtrun("collect", str(sweep_dir))
    assert r.code == 0, r.output
    assert "was stopped before it ended (no summary.json), or is still running: 1 of its members was not " \
        "launched" in r.stdout
    assert "left out: #2 source.params.entity=NBA2K (not launched: " in r.stdout
    done = gtrun("collect", str(sweep_dir))  # (its dataset folder is no member)
    assert done.code == 0 and "left out: #2" in done.stdout, done.output


def test_a_second_ctrl_c_while_a_large_job_is_created_stops_at_once_and_names_the_job(gtrun):
    """The labeling service gtrun starts for the call loads a large manifest's objects for seconds;
    a second Ctrl+C then does not wait for it: the service rolls the job back and gtrun stops,
    saying no job was made (the job store says so), and removes the job's inputs from storage."""
    csv = gtrun.cwd / "big.csv"
    with csv.open("w", encoding="utf-8") as f:
        f.write("tweet_id,entity,tweet_text,sentiment,score,date\n")
        f.writelines(f"{i},Xbox,tweet {i} about the new console and its games,Negative,0.5,2026-10-28\n"
                     for i in range(400_000))
    run = gtrun.cwd / "run"
    proc = _started(gtrun, "run", f"source.files=[{csv}]", "pricing.max_usd=100000", f"hydra.run.dir={run}")
    wal = gtrun.storage / ".gtrun" / "labeling.sqlite3-wal"
    try:  # the service is loading the job's objects: its write-ahead log grows
        _wait_for(lambda: (run / "request.json").is_file() and wal.is_file() and wal.stat().st_size > 4 << 20, proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert "submitting the job: gtrun stops once it is recorded" in proc.stderr.readline()
        os.killpg(proc.pid, signal.SIGINT)
        second = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - second
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert took < 3, took  # it waited for the whole load before (several seconds)
    assert not (run / "job.json").exists()
    assert gtrun.jobs() == []  # rolled back, not left half made
    name = read_json(run / "request.json")["LabelingJobName"]
    # the job store says no job was made: the run says so, and its inputs are not left in storage
    assert "may have been created" not in stderr, stderr
    assert read_json(run / "status.json")["error"] == "interrupted (Ctrl+C); no job was created"
    assert not (gtrun.storage / "gtrun" / "jobs" / name).exists()
    r = gtrun("status", str(run))
    assert r.code == 2 and f"{run}: the run created no labeling job; it was interrupted before it submitted" in r.stderr
    assert "Traceback" not in stderr


def test_reproduce_of_a_run_that_did_not_finish_is_refused_before_a_new_run(gtrun):
    """No lineage to compare with: refused at once, not after a new run queried and wrote its manifest."""
    assert gtrun("run", "source.limit=2", "pricing.max_usd=0.0001").code == 2
    (failed,) = gtrun.runs(every=True)
    r = gtrun("reproduce", str(failed))
    assert r.code == 2 and "the run did not finish (lineage.json is missing)" in r.stderr, r.output
    assert gtrun.runs(every=True) == [failed] and gtrun.jobs() == []
