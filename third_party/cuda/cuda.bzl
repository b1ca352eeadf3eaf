"""Repository rule that detects the CUDA toolkit (CUDA_HOME, else /usr/local/cuda).

With a toolkit, @local_cuda provides cudart/cuBLAS libraries and
@local_cuda//:defs.bzl says HAVE_CUDA = True with the nvcc path; the
cuda_library macro (//tools/bazel:cuda.bzl) then compiles .cu files for
sm_80 and sm_90. Without one, HAVE_CUDA = False and the build is CPU-only.
"""

def _cuda_impl(rctx):
    home = rctx.os.environ.get("CUDA_HOME", "") or rctx.os.environ.get("CUDA_PATH", "") or "/usr/local/cuda"
    nvcc = home + "/bin/nvcc"
    have = rctx.path(nvcc).exists and rctx.os.environ.get("FJORD_DISABLE_CUDA", "") != "1"
    if have:
        rctx.symlink(home + "/include", "include")
        libdir = home + "/lib64"
        if not rctx.path(libdir + "/libcudart.so").exists:
            fail("CUDA toolkit at %s has nvcc but no %s/libcudart.so; set CUDA_HOME to a complete toolkit or FJORD_DISABLE_CUDA=1" % (home, libdir))
        build = """
package(default_visibility = ["//visibility:public"])

# CUDA toolkit at {home}.
cc_library(
    name = "cuda_headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

cc_library(
    name = "cudart",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcudart"],
    deps = [":cuda_headers"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcublasLt", "-lcublas"],
    deps = [":cudart"],
)
""".format(home = home, lib = libdir)
    else:
        build = """
package(default_visibility = ["//visibility:public"])

# No CUDA toolkit found (CUDA_HOME or /usr/local/cuda): CPU-only build.
cc_library(name = "cuda_headers")
cc_library(name = "cudart")
cc_library(name = "cublas")
"""
    rctx.file("BUILD.bazel", build)
    rctx.file("defs.bzl", "HAVE_CUDA = %r\nNVCC = %r\nCUDA_HOME = %r\n" % (have, nvcc if have else "", home if have else ""))

cuda_repository = repository_rule(
    implementation = _cuda_impl,
    environ = ["CUDA_HOME", "CUDA_PATH", "FJORD_DISABLE_CUDA"],
    local = True,
)
