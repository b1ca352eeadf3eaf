"""No shell is ever built from user input: fjord's programs start processes
only with an argument vector (execve), never through a shell or a PATH
search (docs/security.md). This scans the shipped sources (tests excluded):
no system(), popen(), /bin/sh -c, execvp/execlp, shell=True or os.system,
and the only places that exec at all are the reviewed ones."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ["daemon", "sdk", "runtime", "lora", "tools"]

CPP_FORBIDDEN = {
    "system()": re.compile(r"(?<![\w:.])(?:std::)?system\s*\("),
    "popen()": re.compile(r"\bpopen\s*\("),
    "a PATH-searching exec": re.compile(r"\bexec(?:vp|vpe|lp)\s*\("),
    "/bin/sh": re.compile(r"\"/bin/(?:ba)?sh\""),
    "sh -c": re.compile(r"\"-c\""),
}
PY_FORBIDDEN = {
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "os.system": re.compile(r"\bos\.system\s*\("),
    "os.popen": re.compile(r"\bos\.popen\s*\("),
    "subprocess.getoutput": re.compile(r"subprocess\.getstatusoutput|subprocess\.getoutput"),
}
EXEC = re.compile(r"\b(?:exec[lv]p?e?|posix_spawnp?)\s*\(")
# Every exec in the shipped code, reviewed: both pass an argument vector to an
# absolute path (no shell, no PATH search).
REVIEWED_EXEC = {
    "daemon/worker/worker_process.cc",  # workers: execve(program, argv, env) after fork
    "sdk/cpp/cli/quickstart.cc",  # `fjord quickstart` starts fjordd: execv(absolute path, argv)
    "runtime/dist/launcher.cc",  # `fjord-train --nproc-per-node` starts its ranks: posix_spawn of
                                 # /proc/self/exe with its own argument vector (no PATH search)
    "daemon/slurm/command.cc",  # the Slurm executor runs sbatch/squeue/scancel/scontrol:
                                # execve(executor.slurm.bin_dir + "/sbatch", argv, env); the batch
                                # script it hands sbatch on stdin quotes every word (slurm.cc ShellQuote)
}


def shipped(suffixes):
    for top in SHIPPED:
        for p in sorted((ROOT / top).rglob("*")):
            if p.suffix in suffixes and p.is_file() and not re.search(r"(_test|_gpu_test)\.cc$|/test_[^/]*\.py$", str(p)):
                yield p


def code_only(text):
    """Drops // and # comments and the contents of string literals' lines that are comments."""
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.splitlines())


def test_no_shell_or_path_search_in_cpp():
    found = []
    for p in shipped({".cc", ".h", ".cpp"}):
        text = code_only(p.read_text(encoding="utf-8", errors="replace"))
        for what, pattern in CPP_FORBIDDEN.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{p.relative_to(ROOT)}:{line}: {what}")
    assert not found, "shell or PATH-search process starts:\n" + "\n".join(found)


def test_no_shell_in_python():
    found = []
    for p in shipped({".py"}):
        text = p.read_text(encoding="utf-8", errors="replace")
        for what, pattern in PY_FORBIDDEN.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{p.relative_to(ROOT)}:{line}: {what}")
    assert not found, "shell process starts:\n" + "\n".join(found)


def test_every_exec_is_a_reviewed_one():
    sites = set()
    for p in shipped({".cc", ".h", ".cpp"}):
        if EXEC.search(code_only(p.read_text(encoding="utf-8", errors="replace"))):
            sites.add(str(p.relative_to(ROOT)))
    assert sites == REVIEWED_EXEC, (
        f"exec sites changed: new {sorted(sites - REVIEWED_EXEC)}, gone {sorted(REVIEWED_EXEC - sites)}; "
        "review them (argument vector, absolute path, no shell) and update docs/security.md")


def test_the_scan_sees_what_it_forbids():
    assert CPP_FORBIDDEN["system()"].search('std::system("rm -rf /");')
    assert CPP_FORBIDDEN["system()"].search("  system(cmd);")
    assert not CPP_FORBIDDEN["system()"].search("std::filesystem::path p; fs::system_error e;")
    assert CPP_FORBIDDEN["popen()"].search("FILE* f = popen(cmd, \"r\");")
    assert CPP_FORBIDDEN["a PATH-searching exec"].search('execvp("fjord-train", argv);')
    assert PY_FORBIDDEN["shell=True"].search("subprocess.run(cmd, shell=True)")
    assert EXEC.search("::execve(argv[0], argv.data(), envp.data());")
