#!/usr/bin/env python3
"""Splits GloVe-50d for tools/bench_updates.sh (stdlib only).

Writes into OUT: half1.fbin (rows 0..n/2, built with row-number ids), half2_B.fbin +
half2_B.u64bin (rows n/2..n under their row numbers, in 10 batches), del.u64bin (a random 20% of all rows,
seed 7), live80.fbin + live80.u64bin (the rows not deleted), reins.fbin + reins.u64bin (the
deleted rows again, under their ids), q2k.fbin (the first 2,000 queries), (row r of live80.fbin is user id live80.u64bin[r]).
Usage: bench_updates_split.py BASE.fbin QUERIES.fbin OUT
       bench_updates_split.py remap IN.ibin IDS.u64bin OUT.ibin
       bench_updates_split.py churn BASE.fbin OUT ROUNDS
The churn form writes churn_R.fbin + churn_R.u64bin for R in 0..ROUNDS: a random 10% of the
rows (seed 100 + R) under their row numbers, to upsert (delete and insert again).
"""
import random
import struct
import sys
from array import array


def read_fbin(path):
    with open(path, "rb") as f:
        n, d = struct.unpack("<II", f.read(8))
        data = array("f")
        data.frombytes(f.read(n * d * 4))
    return n, d, data


def write_fbin(path, rows, d, data):
    with open(path, "wb") as f:
        f.write(struct.pack("<II", len(rows), d))
        for r in rows:
            f.write(data[r * d:(r + 1) * d].tobytes())


def write_u64bin(path, ids):
    # .u64bin: u32 count, u32 1, then u64 ids (the layout m3 reads for --ids).
    with open(path, "wb") as f:
        f.write(struct.pack("<II", len(ids), 1))
        f.write(array("Q", ids).tobytes())


def remap(ibin, ids_path, out):
    """Replaces the row numbers in a results/ground-truth .ibin by the ids of a .u64bin."""
    with open(ids_path, "rb") as f:
        f.read(8)
        ids = array("Q")
        ids.frombytes(f.read())
    with open(ibin, "rb") as f:
        n, k = struct.unpack("<II", f.read(8))
        rows = array("I")
        rows.frombytes(f.read(n * k * 4))
        rest = f.read()
    mapped = array("I", (ids[r] if r != 0xFFFFFFFF else r for r in rows))
    with open(out, "wb") as f:
        f.write(struct.pack("<II", n, k))
        f.write(mapped.tobytes())
        f.write(rest)


def churn(base, out, rounds):
    n, d, data = read_fbin(base)
    for r in range(int(rounds)):
        rows = sorted(random.Random(100 + r).sample(range(n), n // 10))
        write_fbin(f"{out}/churn_{r}.fbin", rows, d, data)
        write_u64bin(f"{out}/churn_{r}.u64bin", rows)


def main():
    if sys.argv[1] == "remap":
        remap(*sys.argv[2:5])
        return
    if sys.argv[1] == "churn":
        churn(*sys.argv[2:5])
        return
    base, queries, out = sys.argv[1:4]
    n, d, data = read_fbin(base)
    half = n // 2
    write_fbin(f"{out}/half1.fbin", range(half), d, data)
    batches = 10
    step = (n - half + batches - 1) // batches
    for b in range(batches):
        rows = range(half + b * step, min(n, half + (b + 1) * step))
        write_fbin(f"{out}/half2_{b}.fbin", rows, d, data)
        write_u64bin(f"{out}/half2_{b}.u64bin", list(rows))
    rng = random.Random(7)
    deleted = sorted(rng.sample(range(n), n // 5))
    dset = set(deleted)
    live = [r for r in range(n) if r not in dset]
    write_u64bin(f"{out}/del.u64bin", deleted)
    write_fbin(f"{out}/live80.fbin", live, d, data)
    write_u64bin(f"{out}/live80.u64bin", live)
    write_fbin(f"{out}/reins.fbin", deleted, d, data)
    write_u64bin(f"{out}/reins.u64bin", deleted)
    qn, qd, qdata = read_fbin(queries)
    write_fbin(f"{out}/q2k.fbin", range(min(2000, qn)), qd, qdata)


if __name__ == "__main__":
    main()
