"""predict over images in a bucket (moto's S3 server) and behind https:// (a plain HTTP server), on 127.0.0.1:
the same records as from local disk; a missing, denied, throttled or cut object becomes its error record or
is retried; a missing bucket, refused credentials or a missing extra is one line before any work."""

import json
import shutil
import sys
import time

import pytest

from conftest import assert_records_match, save_image
from object_store import FaultProxy, use_s3_server
from resclassify.sources import remote

TENSORFLOW_CPU = ("--backend", "tensorflow", "--device", "cpu")


def records_of(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def with_paths(records, paths):
    return [dict(record, path=path) for record, path in zip(records, paths)]


@pytest.fixture
def photos(tmp_path):
    """Three photos in a local folder: the reference run reads them from disk."""
    folder = tmp_path / "photos"
    for seed in range(3):
        save_image(folder / f"p{seed}.jpg", seed=seed, quality=90)
    return folder


@pytest.fixture
def bucket_of_photos(s3, photos):
    bucket = s3.new_bucket()
    s3.upload_folder(photos, bucket, "photos/")
    return bucket


@pytest.fixture
def proxy(s3_server, monkeypatch):
    """A fault-injecting proxy in front of the S3 server, this test's AWS_ENDPOINT_URL; quick retries."""
    server = FaultProxy(s3_server)
    use_s3_server(monkeypatch, server)
    monkeypatch.setattr(remote, "RETRY_BACKOFF_SECONDS", 0.01)
    yield server
    server.close()


@pytest.fixture
def local_records(cli_run, photos, weights_file):
    result = cli_run("predict", photos, "--weights", weights_file, *TENSORFLOW_CPU, "--json")
    assert result.exit_code == 0, result.stderr
    return records_of(result)


def predict(cli_run, weights_file, *inputs, input=None, decoding="threads", extra=()):
    return cli_run("predict", *inputs, "--weights", weights_file, *TENSORFLOW_CPU, "--json",
                   "--decoding", decoding, *extra, input=input)


@pytest.mark.parametrize("decoding", ["threads", "processes"])
def test_predict_over_a_bucket_prefix_equals_local_disk(cli_run, weights_file, bucket_of_photos, local_records,
                                                        decoding):
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/", decoding=decoding)
    assert result.exit_code == 0, result.stderr
    urls = [f"s3://{bucket_of_photos}/photos/p{i}.jpg" for i in range(3)]
    remote_records = records_of(result)
    assert [r["path"] for r in remote_records] == urls
    assert_records_match(remote_records, with_paths(local_records, urls))


@pytest.mark.parametrize("decoding", ["threads", "processes"])
def test_predict_over_s3_urls_on_stdin_equals_local_disk(cli_run, weights_file, bucket_of_photos, local_records,
                                                         decoding):
    urls = [f"s3://{bucket_of_photos}/photos/p{i}.jpg" for i in (2, 0, 1)]
    result = predict(cli_run, weights_file, "-", input="".join(url + "\n" for url in urls), decoding=decoding)
    assert result.exit_code == 0, result.stderr
    assert_records_match(records_of(result), with_paths([local_records[i] for i in (2, 0, 1)], urls))


def test_predict_over_https_urls_equals_local_disk(cli_run, weights_file, http_server, photos, local_records):
    shutil.copytree(photos, http_server.folder / "photos")
    urls = [http_server.url(f"photos/p{i}.jpg") for i in range(3)]
    result = predict(cli_run, weights_file, *urls)
    assert result.exit_code == 0, result.stderr
    assert_records_match(records_of(result), with_paths(local_records, urls))


def test_an_https_url_that_is_not_there_is_its_error_record(cli_run, weights_file, http_server, photos):
    shutil.copytree(photos, http_server.folder / "photos")
    missing = http_server.url("photos/gone.jpg")
    result = predict(cli_run, weights_file, http_server.url("photos/p0.jpg"), missing)
    assert result.exit_code == 3
    records = records_of(result)
    assert records[1]["path"] == missing
    assert records[1]["error"] == "no such bucket or object"
    assert "predictions" in records[0]


def test_an_object_deleted_between_listing_and_fetching_is_its_error_record(
        cli_run, weights_file, s3, bucket_of_photos, local_records, monkeypatch):
    listed = remote.list_images

    def list_then_delete(url):
        urls = listed(url)
        s3.client.delete_object(Bucket=bucket_of_photos, Key="photos/p1.jpg")
        return urls

    monkeypatch.setattr(remote, "list_images", list_then_delete)
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/")
    assert result.exit_code == 3
    records = records_of(result)
    assert [r["path"] for r in records] == [f"s3://{bucket_of_photos}/photos/p{i}.jpg" for i in range(3)]
    assert records[1]["error"] == "no such bucket or object (The specified key does not exist.)"
    assert_records_match([records[0], records[2]], with_paths([local_records[0], local_records[2]],
                                                              [records[0]["path"], records[2]["path"]]))
    assert f"{records[1]['path']}: no such bucket or object" in result.stderr


def test_a_denied_object_is_its_error_record_and_not_retried(cli_run, weights_file, bucket_of_photos, proxy):
    proxy.add_rule("photos/p2.jpg", status=403)
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/")
    assert result.exit_code == 3
    records = records_of(result)
    assert records[2]["error"] == "access denied (Access Denied)"
    assert all("predictions" in r for r in records[:2])
    assert proxy.count("photos/p2.jpg") == 1


def test_throttling_and_server_errors_are_retried_until_the_object_comes(
        cli_run, weights_file, bucket_of_photos, local_records, proxy):
    proxy.add_rule("photos/p0.jpg", status=503, times=2)  # SlowDown, twice
    proxy.add_rule("photos/p1.jpg", status=500, times=1)
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/")
    assert result.exit_code == 0, result.stderr
    urls = [f"s3://{bucket_of_photos}/photos/p{i}.jpg" for i in range(3)]
    assert_records_match(records_of(result), with_paths(local_records, urls))
    assert (proxy.count("photos/p0.jpg"), proxy.count("photos/p1.jpg"), proxy.count("photos/p2.jpg")) == (3, 2, 1)


def test_retries_exhausted_make_an_error_record_after_a_fixed_number_of_attempts(
        cli_run, weights_file, bucket_of_photos, proxy):
    proxy.add_rule("photos/p1.jpg", status=503)
    started = time.monotonic()
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/", extra=("--max-failures", "1"))
    assert result.exit_code == 0  # within --max-failures 1
    records = records_of(result)
    assert records[1]["error"] == f"HTTP 503: Please reduce your request rate., after {remote.READ_ATTEMPTS} attempts"
    assert proxy.count("photos/p1.jpg") == remote.READ_ATTEMPTS
    assert time.monotonic() - started < 60


def test_a_response_cut_short_is_retried_then_its_error_record(cli_run, weights_file, bucket_of_photos, proxy):
    proxy.add_rule("photos/p0.jpg", cut_to=1000)
    result = predict(cli_run, weights_file, f"s3://{bucket_of_photos}/photos/")
    assert result.exit_code == 3
    records = records_of(result)
    assert records[0]["error"].startswith("cut short: ")
    assert records[0]["error"].endswith(f"after {remote.READ_ATTEMPTS} attempts")
    assert all("predictions" in r for r in records[1:])


@pytest.mark.parametrize("how", ["prefix", "stdin"])
def test_a_bucket_that_does_not_exist_is_one_line_before_any_work(cli_run, s3, tmp_path, how):
    output = tmp_path / "preds.jsonl"
    url = "s3://no-such-bucket-here/photos/"
    arguments, stdin = ([url], None) if how == "prefix" else (["-"], f"{url}p0.jpg\n{url}p1.jpg\n")
    result = cli_run("predict", *arguments, "--weights", tmp_path / "never-loaded.h5", "--output", output,
                     input=stdin)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("resclassify: error: s3://no-such-bucket-here")
    assert "no such bucket or object" in result.stderr
    assert not output.exists()


def test_credentials_the_store_refuses_are_one_line_before_any_work(cli_run, bucket_of_photos, proxy, tmp_path):
    proxy.add_rule("", status=403)  # every request, as a store answers a key it does not know
    urls = "".join(f"s3://{bucket_of_photos}/photos/p{i}.jpg\n" for i in range(3))
    result = cli_run("predict", "-", "--weights", tmp_path / "never-loaded.h5", input=urls)
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: s3://{bucket_of_photos}: access denied (Forbidden)\n"
    assert proxy.count(bucket_of_photos, "HEAD") == 1  # one bucket, asked once
    assert proxy.count(bucket_of_photos, "GET") == 0


def test_credentials_refused_when_listing_a_prefix_are_one_line_before_any_work(
        cli_run, bucket_of_photos, proxy, tmp_path):
    proxy.add_rule("", status=403)
    prefix = f"s3://{bucket_of_photos}/photos/"
    result = cli_run("predict", prefix, "--weights", tmp_path / "never-loaded.h5")
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {prefix}: access denied (Access Denied)\n"


@pytest.mark.parametrize("scheme, package, extra", [("s3", "s3fs", "s3"), ("https", "aiohttp", "http")])
def test_a_missing_extra_is_one_line_naming_the_pip_install(cli_run, monkeypatch, tmp_path, scheme, package, extra):
    import fsspec  # noqa: F401 (its registry module, which fsspec.registry names a mapping of)

    fsspec_registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(sys.modules, package, None)  # import fails, as when it is not installed
    for protocol in (scheme, "http"):
        monkeypatch.delitem(fsspec_registry._registry, protocol, raising=False)
    url = f"{scheme}://bucket/photos/p0.jpg"
    result = cli_run("predict", url, "--weights", tmp_path / "never-loaded.h5")
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {url}: reading {scheme}:// URLs needs {package}: "
                             f"pip install 'resclassify[{extra}]'\n")


def test_a_store_that_stops_answering_times_out(bucket_of_photos, proxy, monkeypatch):
    monkeypatch.setattr(remote, "READ_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(remote, "READ_ATTEMPTS", 2)
    url = f"s3://{bucket_of_photos}/photos/p0.jpg"
    proxy.delay = 10.0  # a store that holds every answer back longer than anyone should wait
    started = time.monotonic()
    with pytest.raises(remote.InputError) as raised:
        remote.read_bytes(remote.RemoteImage(url, url))
    assert time.monotonic() - started < 5  # two attempts of 0.3 s each, and a loaded machine's slack
    assert "after 2 attempts" in raised.value.reason
    assert "ReadTimeoutError" in raised.value.reason
