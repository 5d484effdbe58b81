"""CPU-only PyTorch from PyPI without GBs of CUDA wheels.

PyPI's Linux torch wheel links its CUDA libraries (cuBLAS, cuDNN, NCCL…) at load time, and they
come as separate multi-GB wheels. bench/run installs `torch --no-deps` and generates, with this
script, tiny stand-ins with the same names, symbol versions and symbols; every function returns
an error code (100 = cudaErrorNoDevice). Nothing calls them on the CPU path; torch then imports and
runs on the CPU. Usage: torch_stubs.py TORCH_LIB_DIR OUT_DIR (put OUT_DIR on LD_LIBRARY_PATH).
"""
import glob, os, re, subprocess, sys
lib, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
files = glob.glob(lib + "/*.so") + glob.glob(lib + "/../_C*.so")
have = set(os.listdir(lib))
sys_libs = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
needed, vers, syms = set(), {}, {}
for f in files:
    d = subprocess.run(["readelf", "-dV", "-W", f], capture_output=True, text=True).stdout
    needed |= set(re.findall(r"\(NEEDED\).*\[(.*)\]", d))
    cur = None
    for line in d.splitlines():
        m = re.search(r"File: (\S+)", line)
        if m: cur = m.group(1); continue
        m = re.search(r"Name: (\S+)", line)
        if m and cur: vers.setdefault(cur, set()).add(m.group(1))
    for line in subprocess.run(["nm", "-D", "--undefined-only", f], capture_output=True, text=True).stdout.splitlines():
        s = line.split()[-1]
        if "@" in s:
            name, v = s.split("@", 1)
            syms.setdefault(v, set()).add(name)
for so in sorted(needed):
    if so in have or (so + " ") in sys_libs: continue
    vs = sorted(vers.get(so, []))
    body = "".join(f"long {s}(void){{return 100;}}\n" for v in vs for s in sorted(syms.get(v, [])))
    open(f"{out}/{so}.c", "w").write(body)
    m = "".join(f"{v} {{ global: *; }};\n" for v in vs) or "{ global: *; };\n"
    open(f"{out}/{so}.map", "w").write(m)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", f"{out}/{so}", f"{out}/{so}.c", f"-Wl,-soname,{so}", f"-Wl,--version-script={out}/{so}.map"], check=True)
    print("stub", so, vs, body.count("\n"))
