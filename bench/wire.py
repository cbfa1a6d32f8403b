"""Benchmark: encoding and decoding the hot messages, by hand and by their construct structs.

The messages sent on every repository and checkpoint write (the CCR's TXN, ORDER and APPLIED,
the CRC's WRITE and ACK) are read and written by :mod:`haos.cluster.dss.messaging.binary`;
their construct structs declare the same bytes. This prints, per message body, the time of
one encode and one decode with each, as medians and p99 over ``--runs`` runs of ``--calls``
calls. By hand means from the message object to bytes and back to a checked message object;
by construct, only the struct's ``build`` from plain data and ``parse`` into a container (the
rest of what the previous release did besides is not counted: the comparison favours it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from haos.cluster.dss.ccr import wire as ccr
from haos.cluster.dss.ccr.model import Change, Compare, Entry, Put, RequestId
from haos.cluster.dss.checkpoint import wire as crc
from haos.cluster.dss.messaging.binary import Reader
from haos.cluster.dss.messaging.codec import build, parse

Case = tuple[Callable[[], object], ...]


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ccr_case(msg: ccr.Txn | ccr.Order | ccr.Applied, raw: dict[str, Any]) -> Case:
    """(encode by hand, decode by hand, build by construct, parse by construct)."""
    kind, body = ccr.encode_hot(msg)
    struct: Any = ccr._BODIES[kind]
    return (
        lambda: ccr.encode_hot(msg),
        lambda: ccr.decode_hot(kind, Reader(body, "bench")),
        lambda: struct.build(raw),
        lambda: struct.parse(body),
    )


def ccr_cases() -> dict[str, Case]:
    request = RequestId(3, 2**40 + 7, 1234)
    key, value = "/bench/n3/00017", b"x" * 64
    req = vars(request)
    txn = ccr.Txn(request, (Compare(key, 0),), (Put(key, value),))
    txn_raw = {
        "request": req,
        "compares": [{"key": key, "mod_revision": 0}],
        "ops": [{"kind": 1, "key": key, "value": value}],
    }
    order = ccr.Order((Entry(4711, 3, request, (Change(key, value),)),))
    change = {"key": key, "present": True, "value": value}
    entry = {"revision": 4711, "epoch": 3, "request": req, "changes": [change]}
    return {
        "CCR TXN": ccr_case(txn, txn_raw),
        "CCR ORDER": ccr_case(order, {"entries": [entry]}),
        "CCR APPLIED": ccr_case(ccr.Applied(3, 4711), {"epoch": 3, "revision": 4711}),
    }


def crc_cases() -> dict[str, Case]:
    write = crc.WriteMsg(987654, "crim", "state", b"y" * 256, True)
    ack = crc.AckMsg(1, 987654, "crim")
    wkind, wbody = crc.encode(write)
    akind, abody = crc.encode(ack)
    wraw = {"write_id": 987654, "flags": 1, "name": "crim", "section": "state", "data": b"y" * 256}
    araw = {"writer": 1, "write_id": 987654, "name": "crim"}

    return {
        "CRC WRITE": (
            lambda: crc.encode(write),
            lambda: crc.decode(wkind, wbody),
            lambda: build(crc._WRITE, wraw),
            lambda: parse(crc._WRITE, wbody, "CRC write"),
        ),
        "CRC ACK": (
            lambda: crc.encode(ack),
            lambda: crc.decode(akind, abody),
            lambda: build(crc._ACK, araw),
            lambda: parse(crc._ACK, abody, "CRC ack"),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per figure (20)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per run (2000)")
    args = parser.parse_args()
    if args.runs < 1 or args.calls < 1:
        parser.error("--runs and --calls must be at least 1")
    print(f"µs per call, median / p99 of {args.runs} runs of {args.calls} calls")
    heads = ("encode by hand", "build", "decode by hand", "parse")
    print(f"{'message':<12} " + " ".join(f"{h:>16}" for h in heads))
    for name, fns in {**ccr_cases(), **crc_cases()}.items():
        figures = []
        for fn in (fns[0], fns[2], fns[1], fns[3]):
            runs = [per_call_us(fn, args.calls) for _ in range(args.runs)]
            figures.append(f"{statistics.median(runs):6.1f} / {p99(runs):6.1f}")
        print(f"{name:<12} " + " ".join(f"{f:>16}" for f in figures), flush=True)


if __name__ == "__main__":
    main()
