"""Where inputs come from: local files, folders and stdin lists (local.py), ground truth for eval
(ground_truth.py), an array job's shard of an input list (shards.py)."""
