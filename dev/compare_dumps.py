"""Read and compare reference dumps written by dev/reference.py.

Dump file format (little-endian), the contract between dev/reference.py and test_gla.c:

    header   256 x int32: [0] magic 20261126, [1] version 1, [2] number of records, rest 0
    records  one after another, each:
               name     96 bytes ASCII, NUL-padded (at least one NUL, so at most 95 characters)
               dtype    int32: 1 = float32, 2 = int32
               ndim     int32: 0..4
               shape    4 x int32 (unused dims 0)
               data     prod(shape[:ndim]) elements (1 element for ndim 0) of 4 bytes, row-major

Usage:
    /usr/bin/python3 dev/compare_dumps.py A.bin B.bin
    /usr/bin/python3 dev/compare_dumps.py DIR_A DIR_B      (compares the *.bin files by name)

Two dumps match when they hold the same record names in the same order with the same dtypes and
shapes, every int32 record is equal, and every float32 record has a relative RMS error
||a - b|| / ||a|| <= tol (default 1e-5; two all-zero records match; NaN/inf never match).
Exit status 0 on a match, 1 on any mismatch, missing or unreadable file.

Other dev scripts can `from compare_dumps import read_dump`.
"""

import argparse
import os
import struct
import sys
from collections import OrderedDict

import numpy as np

DUMP_MAGIC = 20261126
DUMP_VERSION = 1
HEADER_INTS = 256
NAME_BYTES = 96
DTYPE_FLOAT32 = 1
DTYPE_INT32 = 2
NUMPY_DTYPES = {DTYPE_FLOAT32: np.dtype("<f4"), DTYPE_INT32: np.dtype("<i4")}


class DumpError(Exception):
    pass


def read_dump(path):
    """Read a dump file. Returns an OrderedDict name -> numpy array (float32 or int32),
    in file order; 0-d records come back as 0-d arrays (use .item() for the scalar)."""
    with open(path, "rb") as f:
        blob = f.read()
    size = len(blob)
    if size < HEADER_INTS * 4:
        raise DumpError(f"{path}: file is {size} bytes, expected at least the {HEADER_INTS * 4}-byte "
                        f"header; hint: truncated or not a reference dump")
    header = np.frombuffer(blob, dtype="<i4", count=HEADER_INTS)
    if header[0] != DUMP_MAGIC:
        raise DumpError(f"{path}: bad magic {header[0]}, expected {DUMP_MAGIC}; "
                        f"hint: not a reference dump (regenerate with dev/reference.py)")
    if header[1] != DUMP_VERSION:
        raise DumpError(f"{path}: version {header[1]}, expected {DUMP_VERSION}; "
                        f"hint: regenerate with the current dev/reference.py")
    n_records = int(header[2])
    records = OrderedDict()
    offset = HEADER_INTS * 4
    record_header = NAME_BYTES + 4 * 6
    for i in range(n_records):
        if offset + record_header > size:
            raise DumpError(f"{path}: record {i} header at byte {offset} runs past the end of the "
                            f"file ({size} bytes); hint: file truncated")
        raw_name = blob[offset:offset + NAME_BYTES]
        if b"\0" not in raw_name:
            raise DumpError(f"{path}: record {i} name is not NUL-terminated")
        name = raw_name.split(b"\0", 1)[0].decode("ascii")
        dtype, ndim, *shape = struct.unpack_from("<6i", blob, offset + NAME_BYTES)
        offset += record_header
        if dtype not in NUMPY_DTYPES:
            raise DumpError(f"{path}: record '{name}' has dtype {dtype}, expected 1 (float32) or "
                            f"2 (int32)")
        if not 0 <= ndim <= 4 or any(s < 0 for s in shape) or any(s != 0 for s in shape[ndim:]):
            raise DumpError(f"{path}: record '{name}' has a bad shape: ndim {ndim}, shape {shape}")
        dims = tuple(shape[:ndim])
        count = int(np.prod(dims)) if ndim > 0 else 1
        if offset + 4 * count > size:
            raise DumpError(f"{path}: record '{name}' needs {4 * count} data bytes at byte {offset}, "
                            f"file has {size}; hint: file truncated")
        if name in records:
            raise DumpError(f"{path}: duplicate record name '{name}'")
        data = np.frombuffer(blob, dtype=NUMPY_DTYPES[dtype], count=count, offset=offset)
        records[name] = data.reshape(dims).copy()
        offset += 4 * count
    if offset != size:
        raise DumpError(f"{path}: {n_records} records end at byte {offset}, but the file has {size} "
                        f"bytes; hint: trailing garbage or wrong record count")
    return records


def relative_rms_error(a, b):
    """||a - b|| / ||a|| in float64; 0 when both are all-zero, inf when only a is."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    norm_a = np.linalg.norm(a.ravel())
    norm_diff = np.linalg.norm((a - b).ravel())
    if norm_a == 0.0:
        return 0.0 if norm_diff == 0.0 else float("inf")
    return float(norm_diff / norm_a)


def compare_records(a, b, tol):
    """Compare two record dicts. Returns (list of problem strings, worst float (name, err))."""
    problems = []
    worst = (None, 0.0)
    if list(a.keys()) != list(b.keys()):
        only_a = [n for n in a if n not in b]
        only_b = [n for n in b if n not in a]
        if only_a or only_b:
            problems.append(f"record names differ: only in first {only_a[:5]}, only in second {only_b[:5]}")
        else:
            problems.append("same record names but in a different order")
    for name, x in a.items():
        if name not in b:
            continue
        y = b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            continue
        if x.dtype.kind == "i":
            if not np.array_equal(x, y):
                n_diff = int(np.sum(x != y))
                problems.append(f"{name}: int32 record differs in {n_diff} of {x.size} elements")
        else:
            err = relative_rms_error(x, y)
            if err > worst[1] or worst[0] is None:
                worst = (name, err)
            if not err <= tol:
                problems.append(f"{name}: relative RMS error {err:.3e} > {tol:.1e}")
    return problems, worst


def compare_files(path_a, path_b, tol):
    """Compare two dump files, print one line (plus problems). Returns True on a match."""
    label = os.path.basename(path_a)
    try:
        a = read_dump(path_a)
        b = read_dump(path_b)
    except (OSError, DumpError) as e:
        print(f"FAIL {label}: {e}")
        return False
    problems, (worst_name, worst_err) = compare_records(a, b, tol)
    status = "ok  " if not problems else "FAIL"
    if worst_err == 0.0:
        worst = "all float records identical"
    else:
        worst = f"worst float record {worst_name} rel RMS {worst_err:.3e}"
    print(f"{status} {label}: {len(a)} records, {worst}")
    for p in problems[:20]:
        print(f"       {p}")
    if len(problems) > 20:
        print(f"       ... and {len(problems) - 20} more")
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="reference dump file or directory")
    parser.add_argument("b", help="dump file or directory to check against it")
    parser.add_argument("--tol", type=float, default=1e-5, help="max relative RMS error (1e-5)")
    args = parser.parse_args()

    if os.path.isdir(args.a) and os.path.isdir(args.b):
        names_a = {n for n in os.listdir(args.a) if n.endswith(".bin")}
        names_b = {n for n in os.listdir(args.b) if n.endswith(".bin")}
        ok = True
        for name in sorted(names_a | names_b):
            if name not in names_a or name not in names_b:
                where = args.a if name not in names_a else args.b
                print(f"FAIL {name}: missing in {where}")
                ok = False
                continue
            ok &= compare_files(os.path.join(args.a, name), os.path.join(args.b, name), args.tol)
        if not names_a and not names_b:
            print(f"FAIL: no .bin files in {args.a} or {args.b}")
            ok = False
    elif os.path.isfile(args.a) and os.path.isfile(args.b):
        ok = compare_files(args.a, args.b, args.tol)
    else:
        for p in (args.a, args.b):
            if not os.path.exists(p):
                print(f"FAIL: {p} does not exist")
        print("FAIL: give two dump files or two directories")
        sys.exit(1)
    print("all dumps match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
