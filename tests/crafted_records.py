"""eval --predictions-out records written by hand, so that a test can put any label, index or path in them."""

import json

PREPROCESSING = {"name": "center-crop", "size": 64, "crop_fraction": 0.875, "interpolation": "bicubic", "mode": "tf",
                 "exact_decode": False, "tta": "none"}


def eval_record(path, true, ranked, labels, top_k=2):
    """The record eval writes for one image: true class index, its ranked class indices, labels by index."""
    run = {"precision": "float32", "weights": "crafted.keras", "weights_fingerprint": None, "classes": len(labels),
           "preprocessing": PREPROCESSING, "top_k": top_k}
    predictions = [{"rank": rank, "index": index, "wnid": None, "label": labels[index],
                    "probability": round(0.9 / rank, 6)} for rank, index in enumerate(ranked[:top_k], start=1)]
    hits = {f"hit@{k}": true in ranked[:k] for k in (1, top_k, 5)}
    return {"path": path, "model": "crafted.keras", "backend": "tensorflow",
            "true": {"index": true, "wnid": None, "label": labels[true]}, "predictions": predictions, **hits,
            "run": run}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path
