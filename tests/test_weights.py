"""Getting weight files: Keras's cache, downloads checked by hash, mirrors, proxies, CA bundles, offline use."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resclassify import files, weights
from resclassify.config import ARCH_CHOICES
from resclassify.errors import WeightsError
from resclassify.weights import KNOWN_WEIGHTS, KnownWeights, cache_dir, resolve_weights

OFFICIAL_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
BODY = os.urandom(200_000)


def md5(data):
    return hashlib.md5(data).hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def official_body(monkeypatch):
    """Test bytes that stand for Keras's resnet50 file: the known md5 is made theirs."""
    monkeypatch.setitem(KNOWN_WEIGHTS, "resnet50", KnownWeights("resnet50", md5(BODY), 98))
    return BODY


@pytest.fixture
def mirror(weights_server, monkeypatch, official_body):
    weights_server.files["/" + OFFICIAL_NAME] = official_body
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    return weights_server


def leftovers(folder):
    """Anything a download left beside its target (temporary .part files)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".part")) if Path(folder).is_dir() else []


@pytest.mark.slow  # imports Keras
def test_every_arch_has_known_weights_and_a_builder():
    import keras

    from resclassify.archs import ARCHS

    assert tuple(KNOWN_WEIGHTS) == ARCH_CHOICES == tuple(ARCHS)
    assert all(callable(getattr(keras.applications, arch.builder)) for arch in ARCHS.values())
    assert KNOWN_WEIGHTS["resnet101"].md5 == ARCHS["resnet101"].md5 == "f1aeb4b969a6efcfb50fad2f0c20cfc5"
    assert KNOWN_WEIGHTS["resnet152v2"].file_name == "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5"
    assert KNOWN_WEIGHTS["resnet50"].url() == weights.KERAS_BASE_URL + OFFICIAL_NAME


def test_cache_is_keras_own_folder(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "keras-home" / "models"
    monkeypatch.delenv("KERAS_HOME")
    assert cache_dir() == Path.home() / ".keras" / "models"


def test_download_then_reuse_without_the_network(mirror, monkeypatch):
    path = resolve_weights("imagenet")
    assert path == cache_dir() / OFFICIAL_NAME
    assert path.read_bytes() == BODY
    assert mirror.requests == ["/" + OFFICIAL_NAME]
    assert leftovers(cache_dir()) == []
    # The file is as readable as any other the user makes (not the temporary file's 0600).
    assert path.stat().st_mode & 0o044
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", "http://127.0.0.1:9/")
    assert resolve_weights("imagenet") == path
    assert resolve_weights("imagenet", offline=True) == path
    assert len(mirror.requests) == 1


def test_a_file_keras_downloaded_is_used_as_is(official_body):
    cache_dir().mkdir(parents=True)
    (cache_dir() / OFFICIAL_NAME).write_bytes(official_body)
    assert resolve_weights("imagenet") == cache_dir() / OFFICIAL_NAME


def test_mirror_with_a_sub_path(weights_server, monkeypatch, official_body):
    weights_server.files["/keras/resnet/" + OFFICIAL_NAME] = official_body
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/keras/resnet"))
    assert resolve_weights("imagenet").read_bytes() == BODY
    assert weights_server.requests == ["/keras/resnet/" + OFFICIAL_NAME]


def test_damaged_cached_file_is_fetched_again_once(mirror):
    cache_dir().mkdir(parents=True)
    (cache_dir() / OFFICIAL_NAME).write_bytes(b"half a file")
    notices = []
    path = resolve_weights("imagenet", notice=notices.append)
    assert path.read_bytes() == BODY
    assert len(mirror.requests) == 1
    assert len(notices) == 1 and f"expected {md5(BODY)}" in notices[0] and "downloading it again" in notices[0]


def test_fresh_download_with_wrong_checksum_is_an_error_naming_both_hashes(mirror):
    mirror.files["/" + OFFICIAL_NAME] = b"not the weights"
    with pytest.raises(WeightsError) as caught:
        resolve_weights("imagenet")
    message = str(caught.value)
    assert f"md5 is {md5(b'not the weights')}, expected {md5(BODY)}" in message
    assert "\n" not in message
    assert not (cache_dir() / OFFICIAL_NAME).exists()
    assert leftovers(cache_dir()) == []
    assert len(mirror.requests) == 1


def test_connection_cut_halfway_leaves_nothing(mirror):
    mirror.cut["/" + OFFICIAL_NAME] = len(BODY) // 2
    with pytest.raises(WeightsError, match=r"connection closed after 100,000 of 200,000 bytes"):
        resolve_weights("imagenet")
    assert not (cache_dir() / OFFICIAL_NAME).exists()
    assert leftovers(cache_dir()) == []


def test_404_is_one_line_naming_the_way_out(weights_server, monkeypatch):
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    with pytest.raises(WeightsError) as caught:
        resolve_weights("imagenet")
    message = str(caught.value)
    assert message.startswith(f"cannot download {weights_server.url('/' + OFFICIAL_NAME)}: HTTP 404 Not Found")
    assert f"put {OFFICIAL_NAME} (md5 {KNOWN_WEIGHTS['resnet50'].md5}) in {cache_dir()}" in message
    assert "\n" not in message
    assert leftovers(cache_dir()) == []


def test_refused_connection_is_one_line():
    # conftest points the mirror at a closed port on 127.0.0.1
    with pytest.raises(WeightsError) as caught:
        resolve_weights("imagenet")
    assert str(caught.value).startswith(f"cannot download http://127.0.0.1:9/{OFFICIAL_NAME}: connection refused;")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("how", ["argument", "variable"])
def test_offline_without_the_file_names_file_url_md5_and_folder(mirror, monkeypatch, how):
    if how == "variable":
        monkeypatch.setenv("RESCLASSIFY_OFFLINE", "1")
    with pytest.raises(WeightsError) as caught:
        resolve_weights("imagenet", offline=how == "argument")
    message = str(caught.value)
    # The error names what turned downloads off: the option, or the variable and its value.
    what = "--offline" if how == "argument" else "RESCLASSIFY_OFFLINE=1"
    assert OFFICIAL_NAME in message and f"downloads are off ({what})" in message
    assert mirror.url("/" + OFFICIAL_NAME) in message
    assert md5(BODY) in message and str(cache_dir()) in message
    assert mirror.requests == []


def test_offline_names_keras_url_without_a_mirror(monkeypatch):
    monkeypatch.delenv("RESCLASSIFY_WEIGHTS_MIRROR")
    with pytest.raises(WeightsError, match="storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_"):
        resolve_weights("imagenet", offline=True)


def test_url_with_sha256_fragment(weights_server):
    weights_server.files["/models/tuned.h5"] = BODY
    path = resolve_weights(weights_server.url("/models/tuned.h5") + f"#sha256={sha256(BODY)}")
    assert path == cache_dir() / "tuned.h5" and path.read_bytes() == BODY
    # Cached like the official file: the second time needs no server.
    weights_server.files.clear()
    assert resolve_weights(weights_server.url("/models/tuned.h5") + f"#sha256={sha256(BODY)}") == path
    assert len(weights_server.requests) == 1


def test_url_with_md5_fragment_in_capitals(weights_server):
    weights_server.files["/tuned.h5"] = BODY
    assert resolve_weights(weights_server.url("/tuned.h5") + f"#md5={md5(BODY).upper()}").read_bytes() == BODY


def test_url_with_wrong_fragment(weights_server):
    weights_server.files["/tuned.h5"] = BODY
    wrong = "0" * 64
    with pytest.raises(WeightsError) as caught:
        resolve_weights(weights_server.url("/tuned.h5") + f"#sha256={wrong}")
    assert f"sha256 is {sha256(BODY)}, expected {wrong}" in str(caught.value)
    assert not (cache_dir() / "tuned.h5").exists()
    assert leftovers(cache_dir()) == []


def test_url_fragment_must_be_a_known_hash(weights_server):
    with pytest.raises(WeightsError, match="#sha256=<hex> or #md5=<hex>"):
        resolve_weights(weights_server.url("/tuned.h5") + "#sha1=abc")
    assert weights_server.requests == []


def test_url_of_an_official_file_is_held_to_its_md5(weights_server, official_body):
    weights_server.files["/" + OFFICIAL_NAME] = b"something else"
    with pytest.raises(WeightsError, match=f"expected {md5(BODY)}"):
        resolve_weights(weights_server.url("/" + OFFICIAL_NAME))


def test_url_offline_and_not_cached(weights_server):
    with pytest.raises(WeightsError, match=r"tuned.h5 is not in the cache and downloads are off"):
        resolve_weights(weights_server.url("/tuned.h5"), offline=True)
    assert weights_server.requests == []


def test_local_path(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"x")
    assert resolve_weights(str(path)) == path
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(str(tmp_path / "missing.h5"))
    with pytest.raises(WeightsError, match="is not a file"):
        resolve_weights(str(tmp_path))


def test_unwritable_cache_folder_suggests_keras_home(mirror, tmp_path, monkeypatch):
    # Tests run as root, which chmod cannot stop: a regular file in the path makes mkdir fail.
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(blocker / "sub"))
    with pytest.raises(weights.CacheNotWritable) as caught:
        resolve_weights("imagenet")
    message = str(caught.value)
    assert message == (f"cannot write to the weights cache {blocker / 'sub' / 'models'}: Not a directory; "
                       "set KERAS_HOME to a writable folder (weights go in $KERAS_HOME/models)")
    assert mirror.requests == []


def test_proxy_variable_is_honoured(weights_server, monkeypatch, official_body):
    # The mirror is a closed port; only a proxy that urllib actually uses can serve the file.
    weights_server.files["/" + OFFICIAL_NAME] = official_body
    monkeypatch.setenv("HTTP_PROXY", weights_server.url("/"))
    assert resolve_weights("imagenet").read_bytes() == BODY
    assert weights_server.requests == [f"http://127.0.0.1:9/{OFFICIAL_NAME}"]


def test_no_proxy_is_honoured(weights_server, monkeypatch, official_body):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    weights_server.files["/" + OFFICIAL_NAME] = official_body
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    assert resolve_weights("imagenet").read_bytes() == BODY


@pytest.fixture(scope="module")
def self_signed_certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_server(self_signed_certificate):
    from weights_server import WeightsServer, tls_server_context

    server = WeightsServer(tls_server_context(*self_signed_certificate))
    server.files["/tuned.h5"] = BODY
    yield server
    server.close()


@pytest.mark.parametrize("variable", weights.CA_FILE_VARIABLES)
def test_ca_bundle_variables(https_server, self_signed_certificate, monkeypatch, variable):
    for name in weights.CA_FILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(self_signed_certificate[0]))
    assert resolve_weights(https_server.url("/tuned.h5")).read_bytes() == BODY


def test_unknown_certificate_is_one_line_naming_the_variables(https_server, monkeypatch):
    for name in weights.CA_FILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(WeightsError) as caught:
        resolve_weights(https_server.url("/tuned.h5"))
    message = str(caught.value)
    assert "certificate verify failed" in message and "SSL_CERT_FILE or REQUESTS_CA_BUNDLE" in message
    assert "\n" not in message
    assert leftovers(cache_dir()) == []


def test_missing_ca_bundle_is_an_error(https_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(WeightsError, match=r"cannot read the CA bundle SSL_CERT_FILE=.*nowhere.pem"):
        resolve_weights(https_server.url("/tuned.h5"))


def test_interrupted_download_leaves_nothing(mirror, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_weights("imagenet")
    assert not (cache_dir() / OFFICIAL_NAME).exists()
    assert leftovers(cache_dir()) == []


def test_download_progress_goes_to_a_callback_and_nothing_is_drawn(mirror, capfd):
    calls = []
    resolve_weights("imagenet", progress=lambda *args: calls.append(args))
    assert calls[0] == (OFFICIAL_NAME, 0, len(BODY))
    assert calls[-1] == (OFFICIAL_NAME, len(BODY), len(BODY))
    done = [bytes_done for _, bytes_done, _ in calls]
    assert len(calls) > 2 and done == sorted(done)
    assert capfd.readouterr() == ("", "")
    with pytest.raises(TypeError, match="progress must be a callable"):
        resolve_weights("imagenet", progress=True)


def part_file(name, age_s, body=b"half"):
    """A .part file as a download leaves it, last written age_s seconds ago."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    path = cache_dir() / f".{name}.{os.urandom(4).hex()}.part"
    path.write_bytes(body)
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime - age_s))
    return path


def test_stale_part_files_are_removed_when_the_cache_is_next_used_for_that_file(official_body, tmp_path):
    import fcntl

    stale = part_file(OFFICIAL_NAME, age_s=files.STALE_AGE_S + 60)
    recent = part_file(OFFICIAL_NAME, age_s=5)  # maybe a download that has only just begun
    other = part_file("resnet101_weights_tf_dim_ordering_tf_kernels.h5", age_s=files.STALE_AGE_S + 60)
    locked = part_file(OFFICIAL_NAME, age_s=files.STALE_AGE_S + 60)
    (cache_dir() / OFFICIAL_NAME).write_bytes(official_body)
    # A writer holds a lock on its .part file for as long as it lives (flock is per open file, so
    # this one holds even against a check from this same process), however long it stalls.
    with open(locked, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        assert resolve_weights("imagenet", offline=True) == cache_dir() / OFFICIAL_NAME
    assert not stale.exists()
    assert recent.exists() and locked.exists()
    assert other.exists()  # another file's: left for when that file is used
    assert (cache_dir() / OFFICIAL_NAME).read_bytes() == official_body


def test_a_download_killed_with_kill_9_is_cleaned_up_by_the_next_use(weights_server, official_body, monkeypatch):
    import signal
    import sys
    import time

    weights_server.files["/" + OFFICIAL_NAME] = official_body
    weights_server.stall["/" + OFFICIAL_NAME] = 70_000
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    child = subprocess.Popen([sys.executable, "-c", "import resclassify.weights as w; w.resolve_weights('imagenet')"])
    try:
        deadline = time.monotonic() + 30
        while not [p for p in cache_dir().glob(".*.part") if p.stat().st_size >= 65_536]:
            assert child.poll() is None and time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        [part] = cache_dir().glob(".*.part")
        # However old its file looks, a download whose process lives is left alone...
        later = time.time() + files.STALE_AGE_S + 60
        files.remove_stale_temporaries(cache_dir() / OFFICIAL_NAME, now=later)
        assert part.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # ...and once it is killed outright, nothing of it is left after the next use of the file.
    assert part.exists()
    files.remove_stale_temporaries(cache_dir() / OFFICIAL_NAME, now=later)
    assert not part.exists()
