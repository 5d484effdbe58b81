"""CPU-only PyTorch from PyPI without GBs of CUDA wheels.

PyPI's Linux torch wheel links its CUDA libraries (cuBLAS, cuDNN, cuSPARSELt, NCCL…) at load time,
and they come as separate multi-GB wheels. bench/run installs `torch --no-deps` and generates, with
this script, tiny stand-ins with the same names, symbol versions and symbols; every function returns
an error code (100 = cudaErrorNoDevice). Nothing calls them on the CPU path; torch then imports
(with the loader's default, immediate binding) and runs on the CPU.

A stand-in defines every symbol torch takes from it: the versioned ones (`cublasCreate_v2@libcublas.so.13`,
named by their version) and the unversioned ones (cuSPARSELt and NCCL export no versions):
every undefined symbol of a library that needs a missing one, unless a present library (torch's
own, the system's, Python) defines it; a stand-in never shadows a real definition.

Usage: torch_stubs.py TORCH_LIB_DIR OUT_DIR (put OUT_DIR on LD_LIBRARY_PATH).
"""
import glob
import os
import re
import subprocess
import sys


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def needed_of(f):
    return re.findall(r"\(NEEDED\).*\[(.*)\]", sh("readelf", "-d", "-W", f))


def dynamic_symbols(f, undefined):
    """(name, version or None) of f's dynamic symbols: the strongly undefined ones, or the defined."""
    out = []
    for line in sh("nm", "-D", "--undefined-only" if undefined else "--defined-only", f).splitlines():
        parts = line.split()
        if len(parts) < 2 or (undefined and parts[-2] != "U"):
            continue  # weak references ("w", "v") may stay unresolved
        name, _, ver = parts[-1].partition("@")
        out.append((name, ver.lstrip("@") or None))
    return out


def owner(name, libs):
    """The missing library an unversioned symbol most likely comes from: the one whose stem is the
    longest prefix of its name (cusparseLtMatmulPlanDestroy: libcusparseLt.so.0, ncclRecv:
    libnccl.so.2, the driver's cuModuleLoad: libcuda.so.1), else the first. Any of them would do:
    the loader searches them all."""

    def stem(so):
        s = so.removeprefix("lib").split(".")[0].lower()
        return "cu" if s == "cuda" else s  # the driver API is cuXxx

    fits = [so for so in libs if name.lower().startswith(stem(so))]
    return max(fits, key=lambda so: len(stem(so))) if fits else libs[0]


def main(lib, out):
    os.makedirs(out, exist_ok=True)
    files = sorted(glob.glob(lib + "/*.so") + glob.glob(lib + "/../_C*.so"))
    have = set(os.listdir(lib))
    system = {}  # soname -> path, from the loader's cache
    for line in sh("ldconfig", "-p").splitlines():
        m = re.match(r"\s*(\S+) \(.*\) => (\S+)", line)
        if m:
            system.setdefault(m.group(1), m.group(2))

    # Every library that is really there: torch's own, the system libraries they pull in
    # (transitively), and the Python that loads them (its executable and libpython).
    present = [os.path.join(lib, f) for f in sorted(have) if ".so" in f and os.path.isfile(os.path.join(lib, f))]
    present.append(os.path.realpath(sys.executable))
    present += re.findall(r"=> (/\S+)", sh("ldd", os.path.realpath(sys.executable)))
    todo = [so for f in files for so in needed_of(f)]
    seen = set()
    while todo:
        so = todo.pop()
        if so in seen or so in have or so not in system:
            continue
        seen.add(so)
        present.append(system[so])
        todo += needed_of(system[so])
    defined = {name for f in present for name, _ in dynamic_symbols(f, undefined=False)}

    missing = set()
    vers = {}  # missing soname -> its version names
    versioned = {}  # version name -> symbols
    unversioned = {}  # missing soname -> symbols
    for f in files:
        d = sh("readelf", "-dV", "-W", f)
        needs = re.findall(r"\(NEEDED\).*\[(.*)\]", d)
        lacking = [so for so in needs if so not in have and so not in system]
        missing |= set(lacking)
        cur = None
        for line in d.splitlines():
            m = re.search(r"File: (\S+)", line)
            if m:
                cur = m.group(1)
                continue
            m = re.search(r"Name: (\S+)", line)
            if m and cur:
                vers.setdefault(cur, set()).add(m.group(1))
        for name, ver in dynamic_symbols(f, undefined=True):
            if ver:
                versioned.setdefault(ver, set()).add(name)
            elif lacking and name not in defined:
                unversioned.setdefault(owner(name, lacking), set()).add(name)

    for so in sorted(missing):
        vs = sorted(vers.get(so, []))
        names = sorted({s for v in vs for s in versioned.get(v, [])} | unversioned.get(so, set()))
        # Assembler names, so that any symbol name (C++ mangled included) is one stub.
        body = "".join(f'long stub_{i}(void) __asm__("{s}");\nlong stub_{i}(void) {{ return 100; }}\n' for i, s in enumerate(names))
        with open(f"{out}/{so}.c", "w") as fh:
            fh.write(body)
        with open(f"{out}/{so}.map", "w") as fh:
            fh.write("".join(f"{v} {{ global: *; }};\n" for v in vs) or "{ global: *; };\n")
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", f"{out}/{so}", f"{out}/{so}.c", f"-Wl,-soname,{so}", f"-Wl,--version-script={out}/{so}.map"],
            check=True,
        )
        print("stub", so, vs, len(names))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: torch_stubs.py TORCH_LIB_DIR OUT_DIR")
    main(sys.argv[1], sys.argv[2])
