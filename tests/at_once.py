"""Calls started together in threads, as two runs of one partition would be: for the tests that
check such runs take turns instead of failing or issuing twice."""

from __future__ import annotations

import threading


def at_once(*calls, timeout: float = 120) -> list:
    """Run the calls in threads released together; their results, or the exception each raised."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, call):
        start.wait()
        try:
            results[i] = call()
        except Exception as error:  # noqa: BLE001 - returned, asserted by the caller
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results


def failures(results: list) -> list[Exception]:
    return [r for r in results if isinstance(r, Exception)]
