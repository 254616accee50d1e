"""Many Python threads searching one index at once give the answers one thread gives (the
GIL is released during the search, so the threads really overlap)."""

import threading

import numpy as np

import m3


def test_threads_agree_with_one_thread(built):
    path, _, queries, _, _ = built("float32", "ip")
    index = m3.Index(path)
    want_ids, want_d = index.search(queries, 10, threads=1)
    want_exact = index.search(queries, 10, exact=True, threads=1)
    errors, results = [], {}

    def work(t):
        try:
            for rep in range(3):
                if (t + rep) % 3 == 0:
                    got = index.search(queries, 10, threads=2)  # batches on the pool
                elif (t + rep) % 3 == 1:
                    rows = [index.search(q, 10) for q in queries]  # one query per call
                    got = (np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows]))
                else:
                    got = index.search(queries, 10, exact=True, threads=1)
                results[(t, rep)] = got
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 24
    for (t, rep), (ids, d) in results.items():
        if (t + rep) % 3 == 2:
            np.testing.assert_array_equal(ids, want_exact[0])
            np.testing.assert_array_equal(d, want_exact[1])
        else:
            np.testing.assert_array_equal(ids, want_ids)
            np.testing.assert_array_equal(d, want_d)


def test_search_releases_the_gil(built):
    """A Python thread keeps running while another thread searches."""
    path, _, queries, _, _ = built("float32", "l2")
    index = m3.Index(path)
    big = np.repeat(queries, 40, axis=0)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        before = len(ticks)
        index.search(big, 10, exact=True, threads=1)
        during = len(ticks) - before
    finally:
        stop.set()
        t.join()
    assert during > 100, during
