"""eval over the same JPEGs from local disk, from an S3 server (moto, on 127.0.0.1) and from that server
behind a proxy adding a delay to every request (as a far region does), side by side in one run.

Run after the README's install (its test extra brings s3fs and moto):  python benchmarks/object_storage.py
The model loads once, in this process, with the default runtime (the same for all three sources);
the weights are random (speed does not depend on the values). Each source is run --repeats times,
interleaved (local, S3, S3 + delay, local, ...) so that other work on the machine falls on all of
them alike, and the fastest run of each is kept. The S3 server and the proxy run in a child process. A run is timed from the prefix's listing to its
last record: what `resclassify eval s3://bucket/val/` waits for once the model is loaded. The images lie in
class folders (WordNet ids), as an ImageNet validation set does.
Targets (issue 19): S3 at >= 0.9 of local disk on loopback, >= 0.8 with 50 ms added per request.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cpu_limit import cpu_description  # noqa: E402
from throughput import IMAGENET_SIZE, log, make_inputs, random_weights_unless  # noqa: E402


# The validation set's class folders: the first four ImageNet classes.
CLASS_FOLDERS = ("n01440764", "n01443537", "n01484850", "n01491361")


def use_endpoint(environment):
    """Point this process's S3 client at an endpoint, forgetting filesystems made for another."""
    import fsspec

    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    os.environ.update(environment)
    fsspec.filesystem("s3").clear_instance_cache()


def timed_eval(folder, model, batch_size):
    """(images/s, this process's CPU ms per image, records) of eval over a folder or a prefix, listing included."""
    import resclassify

    records = []
    start, start_cpu = time.perf_counter(), time.process_time()
    resclassify.evaluate(folder, model, batch_size=batch_size, decoding="threads", on_record=records.append)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    failed = [r for r in records if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} inputs failed, the first: {failed[0]['path']}: {failed[0]['error']}")
    return len(records) / elapsed, 1000 * cpu / len(records), records


def serve(delay):
    """The child: moto's S3 server and the delaying proxy in front of it, in a process of their own (moto
    in this one would take its CPU time and the GIL from the run it serves, as a real store does not)."""
    from object_store import FaultProxy, S3Server

    server = S3Server()
    proxy = FaultProxy(server, delay=delay)
    print(json.dumps({"s3": server.endpoint, "proxy": proxy.endpoint}), flush=True)
    sys.stdin.read()  # until the parent closes it
    proxy.close()
    server.close()


@contextlib.contextmanager
def servers(delay):
    """(S3 endpoint, delayed proxy endpoint), served by a child process while in the block."""
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(delay)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(child.stdout.readline())
        yield endpoints["s3"], endpoints["proxy"]
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="ImageNet-size JPEGs (500x375)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the proxy adds to each request")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs per source, interleaved; the fastest is kept")
    parser.add_argument("--backend", default=None, help="the runtime (default: resclassify's default)")
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve)

    workdir = Path(tempfile.mkdtemp(prefix="resclassify-object-storage-"))
    os.environ.setdefault("KERAS_HOME", str(workdir / "keras-home"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    import boto3

    import resclassify
    from object_store import S3_ENVIRONMENT

    weights = random_weights_unless(args.weights, workdir)
    log(f"making {args.images} ImageNet-size JPEGs ...")
    folder = workdir / "photos"
    make_inputs(folder, args.images, IMAGENET_SIZE, seed=1)
    for number, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        wnid = CLASS_FOLDERS[number % len(CLASS_FOLDERS)]
        (folder / wnid).mkdir(exist_ok=True)
        path.rename(folder / wnid / path.name)
    log("loading the model ...")
    model = resclassify.load_model(str(weights), backend=args.backend)

    with servers(args.delay) as (s3_endpoint, proxy_endpoint):
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="bench")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = "photos/" + path.relative_to(folder).as_posix()
            client.put_object(Bucket="bench", Key=key, Body=path.read_bytes())
        prefix = "s3://bench/photos/"
        sources = {"local disk": (None, str(folder)),
                   "S3 server (loopback)": (dict(S3_ENVIRONMENT, AWS_ENDPOINT_URL=s3_endpoint), prefix),
                   f"S3 server + {args.delay * 1000:.0f} ms per request":
                       (dict(S3_ENVIRONMENT, AWS_ENDPOINT_URL=proxy_endpoint), prefix)}
        log("warming up ...")
        timed_eval(str(folder), model, args.batch_size)
        best, cpu, predictions = {}, {}, {}
        for repeat in range(args.repeats):
            for name, (environment, url) in sources.items():
                if environment is not None:
                    use_endpoint(environment)
                log(f"{name}, run {repeat + 1} of {args.repeats} ...")
                rate, cpu_ms, records = timed_eval(url, model, args.batch_size)
                log(f"  {rate:.1f} images/s")
                if rate > best.get(name, 0):
                    best[name], cpu[name] = rate, cpu_ms
                predictions[name] = [[p["index"] for p in r["predictions"]] for r in records]

    local = best["local disk"]
    same = all(p == predictions["local disk"] for p in predictions.values())
    model_name, flags = cpu_description()
    print("resclassify object storage benchmark: eval over the same JPEGs from three places")
    print(f"  CPU: {model_name} ({flags}); cores: {os.cpu_count()}; load average at the end: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"  images: {args.images} JPEGs of {IMAGENET_SIZE[0]}x{IMAGENET_SIZE[1]}; batch size: {args.batch_size}; "
          f"runtime: {model.backend}; decoding: threads; fastest of {args.repeats} runs, interleaved")
    print("  S3: moto's server on 127.0.0.1, in a process of its own (the proxy too)")
    print()
    width = max(len(name) for name in best)
    for name, rate in best.items():
        print(f"{name.ljust(width)}  {rate:6.1f} images/s  {rate / local:5.2f} x local disk  "
              f"{cpu[name]:6.1f} CPU ms/image in this process")
    print(f"same top-5 classes from all three: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
