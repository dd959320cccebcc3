#!/usr/bin/env python3
"""Writes crates/disagg-bench/tests/data/sample-trace.jsonl: a small trace in the public Mooncake
format (timestamp ms, input_length, output_length, hash_ids of 512-token blocks), generated for
this project — 48 requests of 6 groups that share 2–4 leading blocks (a system prompt, a
document), each with 1–3 blocks of its own, arriving about every 250 ms. Deterministic."""
import json, random, sys

rng = random.Random(2026)
next_id = 0
def fresh(n):
    global next_id
    ids = list(range(next_id, next_id + n))
    next_id += n
    return ids

groups = [fresh(rng.randint(2, 4)) for _ in range(6)]
t = 0.0
lines = []
for i in range(48):
    g = groups[rng.randrange(len(groups))]
    own = fresh(rng.randint(1, 3))
    ids = g + own
    input_length = (len(ids) - 1) * 512 + rng.randint(64, 512)
    lines.append({"timestamp": int(t), "input_length": input_length,
                  "output_length": rng.randint(16, 96), "hash_ids": ids})
    t += rng.expovariate(1 / 250.0)
out = sys.argv[1] if len(sys.argv) > 1 else "crates/disagg-bench/tests/data/sample-trace.jsonl"
with open(out, "w") as f:
    for l in lines:
        f.write(json.dumps(l) + "\n")
