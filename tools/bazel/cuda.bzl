"""cuda_library: the one macro that compiles fjord's .cu files.

Each .cu file is compiled by nvcc (from @local_cuda) into a position-independent
object with one list of options (NVCC_OPTS), and the objects are wrapped in a
cc_library linked against cudart and cuBLAS. .cu files include only CUDA headers
and fjord's own plain headers, never LibTorch, so nvcc stays fast and the
LibTorch-facing wrapper code is compiled by the C++ toolchain.

Without a CUDA toolkit the macro yields a cc_library with the headers only and
no FJORD_HAVE_CUDA define, so callers fall back to their references.
"""

load("@local_cuda//:defs.bzl", "HAVE_CUDA", "NVCC")
load("@libtorch//:config.bzl", "LIBTORCH_CUDA_RUNTIME")

# The CUDA runtime and cuBLAS to link: the torch wheel's own when it has them
# (one copy per process), else the toolkit's.
_RUNTIME = ["@libtorch//:cuda_runtime"] if LIBTORCH_CUDA_RUNTIME else ["@local_cuda//:cudart", "@local_cuda//:cublas"]

# Targets: Ampere (A100) and Hopper (H100/H200) machine code, plus PTX for
# newer GPUs to JIT.
CUDA_ARCHS = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]

NVCC_OPTS = [
    "-std=c++20",
    "-O3",
    "--use_fast_math",
    "-Xcompiler=-fPIC",
    "-Xcompiler=-Wall",
    "--expt-relaxed-constexpr",
    "-Werror=all-warnings",
    "-I.",
] + CUDA_ARCHS

def cuda_library(name, srcs, hdrs = [], deps = [], visibility = None, **kwargs):
    """A cc_library whose .cu srcs are compiled by nvcc.

    Args:
      name: target name.
      srcs: .cu files.
      hdrs: headers the .cu files and users include (plain C++/CUDA only).
      deps: cc_library deps of users (headers-only deps are fine).
      visibility: as for cc_library.
    """
    if not HAVE_CUDA:
        native.cc_library(name = name, hdrs = hdrs, deps = deps, visibility = visibility, **kwargs)
        return
    objs = []
    for src in srcs:
        base = src.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        obj = "_objs_cuda/%s/%s.pic.o" % (name, base)
        native.genrule(
            name = "%s_%s_nvcc" % (name, base),
            srcs = [src] + hdrs,
            outs = [obj],
            cmd = "%s %s -c $(location %s) -o $@" % (NVCC, " ".join(NVCC_OPTS), src),
            message = "nvcc %s" % src,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        defines = ["FJORD_HAVE_CUDA=1"],
        deps = deps + ["@local_cuda//:cuda_headers"] + _RUNTIME,
        visibility = visibility,
        alwayslink = True,
        **kwargs
    )
