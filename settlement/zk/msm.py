"""Multi-scalar multiplication on BN254 G1/G2: Pippenger with signed windows and
batch-affine buckets, plus fixed-base tables for the trusted setup.

Pippenger: cut every scalar into c-bit *signed* digits in (-2^(c-1), 2^(c-1)] (halves the
buckets: -d*P goes into bucket d as the point -P, negation being free in affine form);
per window, put each point in the bucket of its digit; then
    sum_i s_i P_i = sum_w 2^(cw) sum_k k * B_(w,k).
Zero digits cost nothing, so scalars 0 and 1 (bits, flags: most of a real witness) and
small amounts touch one window or none.

All additions are *batch-affine*: `_reduce` takes a list of (key, point) entries sorted by
key and repeatedly adds disjoint pairs of same-key entries, one batched inversion per
round (see `curve.g1_add_pairs`), until each key holds one point. Bucket accumulation is
`_reduce` keyed by (window, digit). The weighted bucket sums sum_k k B_k are computed by
splitting k = hi * 2^h + lo, so that they are again two big `_reduce`s (buckets grouped by
hi and by lo) plus short chains over the ~2^(c/2) values of hi and lo (`_combine_buckets`).
Index bookkeeping (digits, sorting, pairing) is numpy; coordinates are gmpy2 integers in
plain lists, gathered with `operator.itemgetter` (numpy object arrays cost more per element).

Fixed base (setup): for one base G and many scalars, tables T[w][k] = k 2^(cw) G turn each
scalar multiplication into ~254/c table additions, reduced the same way keyed by scalar.

`run_parallel` forks one helper process (the brief allows two processes) so that prover
tasks can run side by side; the fork shares the proving key copy-on-write.

`pause_point()` runs between steps (each `_reduce` round, each proving stage): a hook set
with `set_pause_hook` may sleep there, which pauses the proof (settlement/prover_gate.py:
proofs give way to a busy API). A forked helper inherits the hook.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, TypeVar

import numpy as np
from gmpy2 import mpz

from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD
from settlement.zk.curve import (
    G1Point,
    G2Point,
    g1_add,
    g1_add_pairs,
    g1_double,
    g2_add,
    g2_add_pairs,
    g2_double,
)

__all__ = [
    "G1",
    "G2",
    "Channel",
    "Group",
    "PointArrays",
    "fixed_base_mul",
    "msm",
    "msm_g1",
    "msm_g2",
    "pause_point",
    "run_parallel",
    "set_pause_hook",
    "signed_digits",
]

_P = mpz(FIELD_MODULUS)
P = TypeVar("P")

_pause_hook: Callable[[], None] | None = None


def set_pause_hook(hook: Callable[[], None] | None) -> Callable[[], None] | None:
    """Call `hook` at every pause point from now on (None: none); returns the previous one."""
    global _pause_hook
    previous, _pause_hook = _pause_hook, hook
    return previous


def pause_point() -> None:
    if _pause_hook is not None:
        _pause_hook()


@dataclass(frozen=True, slots=True)
class Group(Generic[P]):
    """What the generic engine needs to know about G1 or G2."""

    name: str
    n_coords: int  # 2 for G1 (x, y), 4 for G2 (x0, x1, y0, y1)
    y_coords: tuple[int, ...]  # coordinates negated by point negation
    add_pairs: Callable[..., tuple[Any, ...]]
    add: Callable[[P, P], P]
    double: Callable[[P], P]
    cost: float  # relative cost of one batched addition, for work splitting

    def to_point(self, coords: Sequence[Any]) -> P:
        return tuple(int(c) for c in coords)  # type: ignore[return-value]


G1: Group[G1Point] = Group("G1", 2, (1,), g1_add_pairs, g1_add, g1_double, 1.0)
G2: Group[G2Point] = Group("G2", 4, (2, 3), g2_add_pairs, g2_add, g2_double, 2.7)


@dataclass(frozen=True, slots=True)
class PointArrays:
    """A list of non-infinity points as coordinate columns, plus where they came from."""

    coords: tuple[list[mpz], ...]  # one list per coordinate
    signed_y: tuple[list[mpz], ...]  # per y coordinate: [y_0..y_n-1, -y_0..-y_n-1]
    index: np.ndarray  # position of each point in the original sequence

    @staticmethod
    def build(group: Group[Any], points: Sequence[Any]) -> PointArrays:
        keep = [i for i, pt in enumerate(points) if pt is not None]
        coords = tuple([mpz(points[i][j]) for i in keep] for j in range(group.n_coords))
        signed = tuple(coords[j] + [(_P - c) % _P for c in coords[j]] for j in group.y_coords)
        return PointArrays(coords, signed, np.asarray(keep, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.index)

    def split(self, k: int) -> tuple[PointArrays, PointArrays]:
        """The first k points and the rest (to share one MSM between two processes)."""
        n = len(self.index)
        head = PointArrays(
            tuple(c[:k] for c in self.coords),
            tuple(s[:k] + s[n : n + k] for s in self.signed_y),
            self.index[:k],
        )
        tail = PointArrays(
            tuple(c[k:] for c in self.coords),
            tuple(s[k:n] + s[n + k :] for s in self.signed_y),
            self.index[k:],
        )
        return head, tail


# ---------------------------------------------------------------- scalar decomposition


def signed_digits(scalars: Sequence[int], c: int, n_windows: int) -> np.ndarray:
    """(len, n_windows) int64 digits d_w in (-2^(c-1), 2^(c-1)] with s = sum d_w 2^(cw).

    Needs n_windows * c >= bitlength(max scalar) + 1 so the last carry is absorbed.
    """
    n = len(scalars)
    limbs_n = max(4, (n_windows * c + 63) // 64 + 1)
    raw = b"".join(int(s).to_bytes(32, "little") for s in scalars)
    limbs = np.zeros((n, limbs_n), dtype=np.uint64)
    if n:
        limbs[:, :4] = np.frombuffer(raw, dtype="<u8").reshape(n, 4)
    mask = np.uint64((1 << c) - 1)
    half = 1 << (c - 1)
    out = np.empty((n, n_windows), dtype=np.int64)
    carry = np.zeros(n, dtype=np.int64)
    for w in range(n_windows):
        bit = w * c
        q, off = divmod(bit, 64)
        v = limbs[:, q] >> np.uint64(off)
        if off + c > 64:
            v = v | (limbs[:, q + 1] << np.uint64(64 - off))
        d = (v & mask).astype(np.int64) + carry
        carry = (d > half).astype(np.int64)
        out[:, w] = d - (carry << c)
    if carry.any():
        raise ValueError("scalars too large for the requested windows")
    return out


# ---------------------------------------------------------------- the batch-affine engine


def _take(values: Sequence[Any], idx: np.ndarray) -> list[Any]:
    """values[idx] for a list and an index array (itemgetter: a C loop, no numpy objects)."""
    n = len(idx)
    if n == 0:
        return []
    if n == 1:
        return [values[int(idx[0])]]
    return list(itemgetter(*idx.tolist())(values))


def _takes(columns: Sequence[Sequence[Any]], idx: np.ndarray) -> list[list[Any]]:
    """_take for several columns sharing one index (one tolist, one itemgetter)."""
    n = len(idx)
    if n == 0:
        return [[] for _ in columns]
    if n == 1:
        i = int(idx[0])
        return [[c[i]] for c in columns]
    getter = itemgetter(*idx.tolist())
    return [list(getter(c)) for c in columns]


def _reduce(
    group: Group[Any], keys: np.ndarray, coords: list[list[Any]]
) -> tuple[np.ndarray, list[list[Any]]]:
    """Sum the points of each key. `keys` must be sorted (equal keys adjacent); returns the
    keys (sorted) with their sums; keys whose sum is the point at infinity are dropped.

    Each round adds disjoint pairs of same-key entries with one batched inversion, so a
    key with m entries is done after ceil(log2 m) rounds; finished keys leave the set.
    """
    nc = group.n_coords
    done_keys: list[np.ndarray] = []
    done_coords: list[list[Any]] = [[] for _ in range(nc)]
    while len(keys):
        pause_point()
        n = len(keys)
        start = np.empty(n, dtype=bool)
        start[0] = True
        np.not_equal(keys[1:], keys[:-1], out=start[1:])
        run_starts = np.flatnonzero(start)
        run_id = np.cumsum(start) - 1
        run_len = np.diff(np.append(run_starts, n))[run_id]
        pos = np.arange(n) - run_starts[run_id]
        single = run_len == 1
        if single.any():
            idx = np.flatnonzero(single)
            done_keys.append(keys[idx])
            for j, col in enumerate(_takes(coords, idx)):
                done_coords[j] += col
        even = (pos & 1) == 0
        is_first = even & (pos + 1 < run_len)
        first = np.flatnonzero(is_first)
        if not len(first):
            break
        is_left = even & ~single & (pos + 1 == run_len)
        leftover = np.flatnonzero(is_left)
        args = _takes(coords, first) + _takes(coords, first + 1)
        *sums, infinite = group.add_pairs(*args)
        left = _takes(coords, leftover)
        combined = [sums[j] + left[j] for j in range(nc)]
        # The survivors, in position order (so keys stay sorted, no argsort): each slot
        # reads its pair sum (rank among firsts) or its leftover (after all the sums).
        slots = np.flatnonzero(is_first | is_left)
        src = np.where(
            is_first[slots],
            np.cumsum(is_first)[slots] - 1,
            len(first) + np.cumsum(is_left)[slots] - 1,
        )
        if infinite:
            keep = ~np.isin(src, np.asarray(infinite, dtype=np.int64))
            slots, src = slots[keep], src[keep]
        keys = keys[slots]
        coords = _takes(combined, src)
    if not done_keys:
        return np.zeros(0, dtype=np.int64), [[] for _ in range(nc)]
    all_keys = np.concatenate(done_keys)
    order = np.argsort(all_keys, kind="stable")
    return all_keys[order], _takes(done_coords, order)


def _gather(
    group: Group[Any], pts: PointArrays, idx: np.ndarray, negative: np.ndarray
) -> list[list[Any]]:
    """Coordinates of +-points[idx]; y columns come from [y..., -y...] lists."""
    out = []
    neg_idx = idx + negative.astype(np.int64) * len(pts.coords[0])
    for j in range(group.n_coords):
        if j in group.y_coords:
            out.append(_take(pts.signed_y[group.y_coords.index(j)], neg_idx))
        else:
            out.append(_take(pts.coords[j], idx))
    return out


def _window_bits(n_points: int, max_bits: int) -> int:
    """Window minimising bucket additions + bucket-combination additions (cost model:
    per window, points minus occupied buckets, plus ~2 per bucket to weight them)."""
    best, best_cost = 1, math.inf
    for c in range(2, 20):
        windows = -(-(max_bits + 1) // c)
        buckets = 1 << (c - 1)
        occupied = buckets * (1 - math.exp(-n_points / buckets))
        cost = windows * (n_points - occupied + 2 * buckets)
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def msm(
    group: Group[P],
    pts: PointArrays,
    scalars: Sequence[int],
    digits: np.ndarray | None = None,
    window: int | None = None,
) -> P:
    """sum scalars[pts.index[i]] * point_i. `scalars` is indexed like the original point
    list (so one witness serves every query); `digits` may be precomputed for them with
    `signed_digits(scalars, window, ...)`."""
    if len(pts) == 0:
        return None  # type: ignore[return-value]
    if digits is None:
        sub = [int(scalars[i]) % SCALAR_FIELD for i in pts.index]
        max_bits = max((s.bit_length() for s in sub), default=0)
        if max_bits == 0:
            return None  # type: ignore[return-value]
        c = window or _window_bits(len(sub), max_bits)
        digits = signed_digits(sub, c, -(-(max_bits + 1) // c))
    else:
        if window is None:
            raise ValueError("precomputed digits need their window size")
        c = window
        digits = digits[pts.index]
    half = 1 << (c - 1)
    n = digits.shape[0]
    flat = digits.T.reshape(-1)  # window-major: entry f is window f // n, point f % n
    nz = np.flatnonzero(flat)
    d = flat[nz]
    keys = (nz // n) * half + np.abs(d) - 1
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    nz = nz[order]
    coords = _gather(group, pts, nz % n, d[order] < 0)
    bkeys, bcoords = _reduce(group, keys, coords)
    return _combine_buckets(group, bkeys, bcoords, c)


def _weighted_sums(
    group: Group[Any], gkeys: Sequence[int], weights: Sequence[int], coords: list[list[Any]]
) -> dict[int, Any]:
    """For each group g: sum_j j * X_(g,j) (weights j >= 1, at most one point per (g, j)).

    sum_j j X_j = sum_k S_k with suffix sums S_k = sum_(j>=k) X_j: a chain per group, run
    for all groups in lockstep (one batched addition per weight), then one batch-affine
    reduction of all the S. Meant for small weights (the chain is as long as the largest).
    """
    nc = group.n_coords
    by_w: dict[int, list[tuple[int, int]]] = {}
    for i, (g, j) in enumerate(zip(gkeys, weights, strict=True)):
        by_w.setdefault(j, []).append((g, i))
    suffix: dict[int, tuple[Any, ...]] = {}
    out_keys: list[int] = []
    out: list[list[Any]] = [[] for _ in range(nc)]
    for j in range(max(weights, default=0), 0, -1):
        items = by_w.get(j)
        if items:
            add_g: list[int] = []
            add_i: list[int] = []
            for g, i in items:
                if g in suffix:
                    add_g.append(g)
                    add_i.append(i)
                else:
                    suffix[g] = tuple(coords[t][i] for t in range(nc))
            if add_g:
                args = [[suffix[g][t] for g in add_g] for t in range(nc)]
                args += [[coords[t][i] for i in add_i] for t in range(nc)]
                *sums, infinite = group.add_pairs(*args)
                bad = set(infinite)
                for u, g in enumerate(add_g):
                    if u in bad:
                        del suffix[g]
                    else:
                        suffix[g] = tuple(sums[t][u] for t in range(nc))
        for g, cur in suffix.items():
            out_keys.append(g)
            for t in range(nc):
                out[t].append(cur[t])
    if not out_keys:
        return {}
    keys = np.asarray(out_keys, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    rkeys, rsums = _reduce(group, keys[order], [_take(col, order) for col in out])
    return {int(g): group.to_point([col[i] for col in rsums]) for i, g in enumerate(rkeys)}


def _combine_buckets(group: Group[P], bkeys: np.ndarray, bcoords: list[list[Any]], c: int) -> P:
    """sum_w 2^(cw) sum_k k B_(w,k) over the bucket sums B.

    Writing k = hi * m + lo (m = 2^h): sum_k k B_k = m sum_hi hi U_hi + sum_lo lo V_lo with
    U_hi = sum_lo B_(hi,lo) and V_lo = sum_hi B_(hi,lo). U and V are plain group sums, so
    all buckets of all windows go through one large batch-affine reduction (each bucket
    twice); only the short weighted sums over hi and lo (~2^(c/2) terms) need chains.
    """
    if not len(bkeys):
        return None  # type: ignore[return-value]
    half = 1 << (c - 1)
    h = max(1, (c - 1) // 2)
    m = 1 << h
    win = bkeys // half
    k = bkeys % half + 1
    hi, lo = k >> h, k & (m - 1)
    n_hi = (half >> h) + 1
    n_windows = int(win.max()) + 1
    u_keys = win * n_hi + hi  # U groups first, then V groups after offset
    v_keys = n_windows * n_hi + win * m + lo
    sel_u = np.flatnonzero(hi > 0)
    sel_v = np.flatnonzero(lo > 0)
    keys = np.concatenate([u_keys[sel_u], v_keys[sel_v]])
    idx = np.concatenate([sel_u, sel_v])
    order = np.argsort(keys, kind="stable")
    gkeys, gsums = _reduce(group, keys[order], [_take(col, idx[order]) for col in bcoords])
    # Weighted sums: group per (window, U or V), weight hi or lo.
    is_u = gkeys < n_windows * n_hi
    wk = np.where(is_u, gkeys // n_hi, (gkeys - n_windows * n_hi) // m)
    weight = np.where(is_u, gkeys % n_hi, (gkeys - n_windows * n_hi) % m)
    group_id = (wk * 2 + (~is_u)).tolist()
    sums = _weighted_sums(group, group_id, weight.tolist(), gsums)
    acc: Any = None
    for w in range(n_windows - 1, -1, -1):
        for _ in range(c):
            acc = group.double(acc)
        part: Any = sums.get(2 * w)
        for _ in range(h):
            part = group.double(part)
        low: Any = sums.get(2 * w + 1)
        acc = group.add(acc, group.add(part, low))
    return acc


def msm_g1(points: Sequence[G1Point], scalars: Sequence[int]) -> G1Point:
    """sum s_i P_i in G1 (points may contain None)."""
    if len(points) != len(scalars):
        raise ValueError("points and scalars differ in length")
    return msm(G1, PointArrays.build(G1, points), scalars)


def msm_g2(points: Sequence[G2Point], scalars: Sequence[int]) -> G2Point:
    """sum s_i Q_i in G2 (points may contain None)."""
    if len(points) != len(scalars):
        raise ValueError("points and scalars differ in length")
    return msm(G2, PointArrays.build(G2, points), scalars)


# ---------------------------------------------------------------- fixed base (setup)


def fixed_base_mul(
    group: Group[P],
    base: P,
    scalars: Sequence[int],
    *,
    window: int = 10,
    chunk: int = 1 << 14,
    progress: Callable[[int, int], None] | None = None,
) -> list[P]:
    """[s * base for s in scalars] through a table of k 2^(cw) base, batch-affine."""
    n_windows = -(-(SCALAR_FIELD.bit_length() + 1) // window)
    half = 1 << (window - 1)
    # Column w of the table: B_w, 2 B_w, ..., half * B_w with B_w = 2^(cw) base; built one
    # multiple at a time for all windows together so the additions share inversions.
    bases: list[Any] = [base]
    for _ in range(n_windows - 1):
        b = bases[-1]
        for _ in range(window):
            b = group.double(b)
        bases.append(b)
    cols = [[mpz(c) for c in b] for b in bases]  # current multiple per window
    table: list[list[mpz]] = [[] for _ in range(group.n_coords)]  # per coord: k-major
    for _k in range(half):
        for j in range(group.n_coords):
            table[j] += [col[j] for col in cols]
        if _k + 1 < half:
            *sums, infinite = group.add_pairs(
                *[[col[j] for col in cols] for j in range(group.n_coords)],
                *[[mpz(b[j]) for b in bases] for j in range(group.n_coords)],
            )
            if infinite:  # k 2^(cw) base = -2^(cw) base is impossible for k < r
                raise ArithmeticError("fixed-base table hit infinity")
            cols = [[sums[j][w] for j in range(group.n_coords)] for w in range(n_windows)]
    # entry (k-1) * n_windows + w
    signed = tuple(table[j] + [(_P - c) % _P for c in table[j]] for j in group.y_coords)
    tab = PointArrays(tuple(table), signed, np.arange(len(table[0])))

    out: list[Any] = [None] * len(scalars)
    for lo in range(0, len(scalars), chunk):
        part = [int(s) % SCALAR_FIELD for s in scalars[lo : lo + chunk]]
        digits = signed_digits(part, window, n_windows)
        rows, wins = np.nonzero(digits)
        d = digits[rows, wins]
        entry = (np.abs(d) - 1) * n_windows + wins
        coords = _gather(group, tab, entry, d < 0)
        keys, sums = _reduce(group, rows.astype(np.int64), coords)  # rows already sorted
        for i, key in enumerate(keys.tolist()):
            out[lo + key] = group.to_point([col[i] for col in sums])
        if progress is not None:
            progress(min(lo + chunk, len(scalars)), len(scalars))
    return out


# ---------------------------------------------------------------- two processes


T = TypeVar("T")


class Channel:
    """One-way messages from `here` to `there` in `run_parallel` (late inputs)."""

    def __init__(self, conn: Any = None) -> None:
        self._conn = conn
        self._queue: list[Any] = []
        self._senders: list[threading.Thread] = []

    def send(self, obj: Any) -> None:
        if self._conn is None:
            self._queue.append(obj)
            return
        # A background thread: a large message would otherwise block this process until
        # the busy helper gets round to reading it.
        t = threading.Thread(target=self._conn.send, args=(obj,), daemon=True)
        t.start()
        self._senders.append(t)

    def recv(self) -> Any:
        if self._conn is None:
            return self._queue.pop(0)
        return self._conn.recv()

    def join(self) -> None:
        for t in self._senders:
            t.join()


def _die_with_parent(parent: int) -> None:
    """A helper whose parent is killed (kill -9 of a prover worker) must not keep burning a
    core: ask Linux for SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child(conn: Any, fn: Callable[[Channel], Any], parent: int) -> None:
    _die_with_parent(parent)
    try:
        conn.send(("ok", fn(Channel(conn))))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_parallel(
    here: Callable[[Channel], T], there: Callable[[Channel], Any], *, processes: int = 2
) -> tuple[T, Any]:
    """Run `there` in a forked helper while `here` runs in this process; returns both
    results. `here` may pass late inputs to `there` with `chan.send`, `there` reads them
    with `chan.recv` (nothing flows back but the result).

    With processes=1, or where fork is unavailable, `here` runs first, then `there`. The
    helper inherits the caller's memory (proving key, witness) copy-on-write, so only
    results and late inputs cross the pipe.
    """
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods() or os.name != "posix":
        chan = Channel()
        return here(chan), there(chan)
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_child, args=(child_conn, there, os.getpid()), daemon=True)
    try:
        proc.start()
    except AssertionError:
        # Daemonic processes (some worker pools) may not have children: run here instead.
        parent_conn.close()
        child_conn.close()
        chan = Channel()
        return here(chan), there(chan)
    child_conn.close()
    chan = Channel(parent_conn)
    try:
        mine = here(chan)
        status, value = parent_conn.recv()
        chan.join()
    finally:
        proc.join()
        parent_conn.close()
    if status != "ok":
        raise RuntimeError(f"helper process failed:\n{value}")
    return mine, value
