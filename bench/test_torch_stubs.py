"""torch_stubs.py on a miniature torch: a library that needs two missing libraries, one exporting
versioned symbols (as cuBLAS does) and one exporting unversioned symbols (as cuSPARSELt and NCCL
do), and a present library. With the stand-ins on LD_LIBRARY_PATH it must load with immediate
binding, get the stand-ins' error code from the missing ones and the real definition from the
present one. Needs gcc, readelf, nm (binutils). Run: python3 bench/test_torch_stubs.py
"""
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cc(out, src, *flags, cwd):
    (cwd / (out + ".c")).write_text(src)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", out, out + ".c", *flags], cwd=cwd, check=True)


class TorchStubs(unittest.TestCase):
    def test_versioned_and_unversioned_symbols_are_stubbed(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            lib, missing, stubs = tmp / "torch" / "lib", tmp / "missing", tmp / "stubs"
            lib.mkdir(parents=True)
            missing.mkdir()
            (missing / "v.map").write_text("libfakeblas.so.13 { global: *; };\n")
            cc("libfakeblas.so.13", "int fakeblasCreate(void) { return 0; }\n",
               "-Wl,-soname,libfakeblas.so.13", "-Wl,--version-script=v.map", cwd=missing)
            cc("libfakeLt.so.0", "int fakeLtPlanDestroy(void) { return 0; }\nint fakeLtInit(void) { return 0; }\n",
               "-Wl,-soname,libfakeLt.so.0", cwd=missing)
            cc("libpresent.so", "int present_fn(void) { return 42; }\n", "-Wl,-soname,libpresent.so", cwd=lib)
            user = (
                "int fakeblasCreate(void); int fakeLtPlanDestroy(void); int fakeLtInit(void); int present_fn(void);\n"
                "int (*volatile taken)(void) = fakeLtInit;\n"  # an address taken: bound at load, lazily or not
                "int use_blas(void) { return fakeblasCreate(); }\n"
                "int use_lt(void) { return fakeLtPlanDestroy(); }\n"
                "int use_present(void) { return present_fn(); }\n"
            )
            cc("libuser.so", user, "-L.", f"-L{missing}", "-l:libfakeblas.so.13", "-l:libfakeLt.so.0", "-lpresent",
               "-Wl,-z,now", "-Wl,-rpath,$ORIGIN", cwd=lib)
            for f in missing.iterdir():
                f.unlink()  # as on a machine without the CUDA wheels

            p = subprocess.run([sys.executable, str(HERE / "torch_stubs.py"), str(lib), str(stubs)],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue((stubs / "libfakeblas.so.13").exists() and (stubs / "libfakeLt.so.0").exists(), p.stdout)
            self.assertFalse((stubs / "libpresent.so").exists(), "a present library was stubbed")

            probe = (
                "import ctypes, os, sys\n"
                "u = ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW)\n"
                "print(u.use_blas(), u.use_lt(), u.use_present())\n"
            )
            env = dict(os.environ, LD_LIBRARY_PATH=str(stubs), LD_BIND_NOW="1")
            p = subprocess.run([sys.executable, "-c", probe, str(lib / "libuser.so")], env=env, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            # The stand-ins return 100 (cudaErrorNoDevice); the present library keeps its own definition.
            self.assertEqual(p.stdout.split(), ["100", "100", "42"])


if __name__ == "__main__":
    unittest.main()
