"""Repository rule that finds LibTorch.

Search order:
  1. FJORD_LIBTORCH_DIR: a directory holding include/ and lib/ (a standalone
     libtorch zip, or site-packages/torch of any torch wheel install).
  2. The torch package of fjord's virtualenv (FJORD_VENV, default
     ~/.cache/fjord/venv), made by tools/bootstrap.sh.
Fails with a message saying what to do when neither is there.
"""

_HELP = ("LibTorch not found. Run `bash tools/bootstrap.sh` (installs the torch " +
         "wheel into ~/.cache/fjord/venv) or set FJORD_LIBTORCH_DIR to a directory " +
         "that holds LibTorch's include/ and lib/ (for example " +
         "$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')).")

def _find_torch_dir(rctx):
    explicit = rctx.os.environ.get("FJORD_LIBTORCH_DIR", "")
    if explicit:
        if not rctx.path(explicit + "/include/torch").exists:
            fail("FJORD_LIBTORCH_DIR=%s has no include/torch. %s" % (explicit, _HELP))
        return explicit, ""
    home = rctx.os.environ.get("HOME", "/root")
    venv = rctx.os.environ.get("FJORD_VENV", home + "/.cache/fjord/venv")
    python = venv + "/bin/python"
    if not rctx.path(python).exists:
        fail("No virtualenv at %s. %s" % (venv, _HELP))
    res = rctx.execute([python, "-c", "import os, torch; print(os.path.dirname(torch.__file__))"])
    if res.return_code != 0:
        fail("%s cannot import torch: %s\n%s" % (python, res.stderr, _HELP))
    torch_dir = res.stdout.strip()
    site = rctx.path(torch_dir).dirname
    return torch_dir, str(site)

def _libtorch_impl(rctx):
    torch_dir, site = _find_torch_dir(rctx)
    rctx.symlink(torch_dir + "/include", "include")
    lib = torch_dir + "/lib"
    has_cuda = rctx.path(lib + "/libtorch_cuda.so").exists

    # Directories of the CUDA libraries a CUDA torch wheel depends on (nvidia-*
    # wheels); needed by the linker to resolve libtorch_cuda.so's own needs.
    extra_dirs = []
    if site and has_cuda:
        res = rctx.execute(["sh", "-c", "ls -d %s/nvidia/*/lib %s/nvidia/*/*/lib 2>/dev/null" % (site, site)])
        extra_dirs = [d for d in res.stdout.strip().split("\n") if d]

    linkopts = ["-L" + lib, "-Wl,-rpath," + lib]
    for d in extra_dirs:
        linkopts += ["-Wl,-rpath-link," + d]
    linkopts += ["-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10"]
    if has_cuda:
        linkopts += ["-ltorch_cuda", "-lc10_cuda"]
    linkopts += ["-Wl,--as-needed"]

    rctx.file("BUILD.bazel", """
package(default_visibility = ["//visibility:public"])

# LibTorch found at {torch_dir} (CUDA backend: {has_cuda}).
cc_library(
    name = "libtorch",
    hdrs = glob(["include/**"]),
    includes = ["include", "include/torch/csrc/api/include"],
    linkopts = {linkopts},
    defines = {defines},
)
""".format(
        torch_dir = torch_dir,
        has_cuda = has_cuda,
        linkopts = repr(linkopts),
        defines = repr(["FJORD_TORCH_HAS_CUDA=1"] if has_cuda else []),
    ))
    cu13 = [d for d in extra_dirs if d.endswith("/nvidia/cu13/lib")]
    if cu13:
        # Link fjord's CUDA kernels against the same CUDA runtime and cuBLAS the
        # wheel's libtorch_cuda uses, so one copy of each is loaded.
        d = cu13[0]
        rt = ["-L" + d, "-Wl,-rpath," + d, "-l:libcudart.so.13", "-l:libcublasLt.so.13", "-l:libcublas.so.13"]
    else:
        rt = []
    rctx.file("BUILD.bazel", rctx.read("BUILD.bazel") + """
# CUDA runtime and cuBLAS that ship with the torch wheel (empty when none).
cc_library(
    name = "cuda_runtime",
    linkopts = {rt},
)
""".format(rt = repr(rt)))
    # NCCL's header, from the nvidia-nccl wheel a CUDA torch wheel depends on
    # (c10d's ProcessGroupNCCL.hpp includes it; the library is libtorch_cuda's).
    nccl_h = site + "/nvidia/nccl/include/nccl.h" if site else ""
    has_nccl = has_cuda and bool(nccl_h) and rctx.path(nccl_h).exists
    if has_nccl:
        rctx.symlink(site + "/nvidia/nccl/include", "nccl_include")
    rctx.file("BUILD.bazel", rctx.read("BUILD.bazel") + """
# NCCL's headers (empty when the wheel has none).
cc_library(
    name = "nccl_headers",
    hdrs = {hdrs},
    includes = {includes},
)
""".format(
        hdrs = 'glob(["nccl_include/**"])' if has_nccl else "[]",
        includes = repr(["nccl_include"] if has_nccl else []),
    ))
    rctx.file("config.bzl", "LIBTORCH_DIR = %r\nLIBTORCH_HAS_CUDA = %r\nLIBTORCH_CUDA_RUNTIME = %r\nLIBTORCH_HAS_NCCL = %r\n" % (torch_dir, has_cuda, len(rt) > 0, has_nccl))

libtorch_repository = repository_rule(
    implementation = _libtorch_impl,
    environ = ["FJORD_LIBTORCH_DIR", "FJORD_VENV", "HOME"],
    local = True,
)
