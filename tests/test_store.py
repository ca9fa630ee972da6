"""The local S3 stand-in: atomic writes, no escape from the root."""

import pytest

from runner.errors import StoreError
from runner.io.store import LocalStore, split_uri


def test_roundtrip_and_layout(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("s3://bucket/a/b.json", b"{}")
    assert (tmp_path / "bucket" / "a" / "b.json").read_bytes() == b"{}"
    assert store.get_bytes("s3://bucket/a/b.json") == b"{}"
    assert store.exists("s3://bucket/a/b.json") and not store.exists("s3://bucket/a/c.json")


def test_a_failed_write_leaves_nothing_at_the_final_key(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.open_write("s3://bucket/m.jsonl") as out:
            out.write(b'{"source":"half')
            raise RuntimeError("interrupted")
    assert not store.exists("s3://bucket/m.jsonl")
    assert list((tmp_path / "bucket").iterdir()) == []  # no temporary left behind either


def test_an_existing_object_survives_a_failed_overwrite(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("s3://bucket/m", b"complete")
    with pytest.raises(RuntimeError):
        with store.open_write("s3://bucket/m") as out:
            out.write(b"partial")
            raise RuntimeError
    assert store.get_bytes("s3://bucket/m") == b"complete"


@pytest.mark.parametrize("uri", ["s3://bucket/../etc/passwd", "s3://bucket/a/../../x", "s3://../x",
                                 "s3://bucket//x", "s3://bucket/a/./b", "s3://.gtrun/labeling.sqlite3"])
def test_paths_cannot_escape_the_root(tmp_path, uri):
    with pytest.raises(StoreError):
        LocalStore(tmp_path / "root").path(uri)  # the service's own files are under root/.gtrun


@pytest.mark.parametrize("uri", ["/etc/passwd", "file:///etc/passwd", "s3:///key", "http://b/k"])
def test_only_s3_uris(uri):
    with pytest.raises(StoreError, match="is not an s3://bucket/key URI"):
        split_uri(uri)


def test_an_object_that_cannot_be_read_is_named_and_errors_inside_stay_the_callers(tmp_path):
    store = LocalStore(tmp_path)
    (tmp_path / "b" / "k").mkdir(parents=True)  # a folder where the object would be
    with pytest.raises(StoreError, match=r"^s3://b/k: cannot read .*/b/k \(Is a directory\)$"):
        store.get_bytes("s3://b/k")
    store.put_bytes("s3://b/x", b"1")
    with pytest.raises(FileNotFoundError), store.open_read("s3://b/x"):  # raised by the reader: not the store's
        raise FileNotFoundError("elsewhere")


def test_missing_object_is_named(tmp_path):
    with pytest.raises(StoreError, match=r"s3://b/k: no such object"):
        LocalStore(tmp_path).get_bytes("s3://b/k")


def test_delete_removes_the_object_and_the_folders_it_leaves_empty(tmp_path):
    store = LocalStore(tmp_path / "root")
    store.put_bytes("s3://b/jobs/a/manifest.jsonl", b"1")
    store.put_bytes("s3://b/jobs/a/template.liquid", b"2")
    store.put_bytes("s3://b/jobs/b/manifest.jsonl", b"3")
    store.delete("s3://b/jobs/a/manifest.jsonl")
    assert list(store.list("s3://b/jobs/")) == ["s3://b/jobs/a/template.liquid", "s3://b/jobs/b/manifest.jsonl"]
    store.delete("s3://b/jobs/a/template.liquid")
    store.delete("s3://b/jobs/a/template.liquid")  # gone already: nothing to do
    assert sorted(p.name for p in (tmp_path / "root" / "b" / "jobs").iterdir()) == ["b"]
    store.delete("s3://b/jobs/b/manifest.jsonl")
    assert (tmp_path / "root").is_dir() and not (tmp_path / "root" / "b").exists()
    with pytest.raises(StoreError, match="must not contain empty, '.' or '..' segments"):
        store.delete("s3://b/x/../../../outside")
