"""File size (and write time) of the same record files as JSON Lines, CSV and Parquet.

Run after the README's install with the parquet extra:  python benchmarks/record_sizes.py [--records 10000]

No network, no model: the records are synthesized as a run makes them (ImageNet's classes, a top-5 of
random softmax probabilities, one run identity, a failed image in every 500) and written by the tool's own
writers (record_formats.open_file_writer on a file opened by records.open_record_file), for predict's
records and for eval's (--predictions-out, with a true class and hit@1/hit@5).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from resclassify.labels import imagenet_classes
from resclassify.record_formats import open_file_writer
from resclassify.records import open_record_file

RUN = {"precision": "float32", "weights": "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
       "weights_fingerprint": "0123456789abcdef", "classes": 1000,
       "preprocessing": {"size": 224, "crop_fraction": 0.875, "interpolation": "bilinear", "mode": "caffe"},
       "top_k": 5}


def synthesize(count, evaluation, seed=0):
    classes = imagenet_classes()
    rng = np.random.default_rng(seed)
    for n in range(count):
        true = int(rng.integers(1000))
        path = f"/data/imagenet/val/{classes.wnids[true]}/ILSVRC2012_val_{n + 1:08d}.JPEG"
        record = {"path": path}
        if evaluation:
            record["true"] = {"index": true, "wnid": classes.wnids[true], "label": classes.labels[true]}
        if n % 500 == 499:
            yield {**record, "error": "cannot identify image file"}
            continue
        logits = rng.normal(size=1000).astype(np.float32) * 3
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top = np.argsort(-probabilities)[:5]
        record.update({"model": "resnet50", "backend": "tensorflow", "predictions": [
            {"rank": rank, "index": int(i), "wnid": classes.wnids[i], "label": classes.labels[i],
             "probability": float(probabilities[i])} for rank, i in enumerate(top, start=1)]})
        if evaluation:
            record.update({"hit@1": int(top[0]) == true, "hit@5": true in top.tolist()})
        record["run"] = RUN
        yield record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10000)
    args = parser.parse_args()
    print(f"{args.records} records each; sizes in bytes (and KiB per 1,000 records)")
    with tempfile.TemporaryDirectory() as folder:
        for kind, evaluation in (("predict-records", False), ("eval-records", True)):
            for extension in (".jsonl", ".csv", ".parquet"):
                path = os.path.join(folder, kind + extension)
                started = time.perf_counter()
                with open_record_file(path, "new") as stream:
                    writer = open_file_writer(kind, path, stream, ks=(1, 5))
                    for record in synthesize(args.records, evaluation):
                        writer.write(record)
                    writer.close()
                seconds = time.perf_counter() - started
                size = os.path.getsize(path)
                print(f"{kind:16} {extension:9} {size:>11,} bytes  {size / 1024 / args.records * 1000:8.1f} KiB/1k"
                      f"  written in {seconds:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
