"""Counts test cases from Bazel's test.xml files and pytest's JUnit XML.

Usage: count_results.py BAZEL_TESTLOGS_DIR [BAZEL_TESTLOGS_DIR...] JUNIT_XML...
  Directories are Bazel test log trees (copies of the plain and the ASan
  run's test.xml files),
  files are JUnit XML (pytest's, the fuzzers'). A missing file counts nothing.
Prints a per-source summary, the number skipped, and, last, the line "N passed, N failed".
Exits 1 if anything failed or nothing ran.
"""
import os
import sys
import xml.etree.ElementTree as ET


def count_xml(path):
    passed = failed = skipped = 0
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return 0, 1, 0  # an unreadable result file counts as a failure
    cases = list(root.iter("testcase"))
    if not cases:
        # A Bazel test target that produced no per-case XML: judge the suite.
        suites = list(root.iter("testsuite"))
        bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        return (0, 1, 0) if bad else (1, 0, 0)
    for c in cases:
        if c.find("failure") is not None or c.find("error") is not None:
            failed += 1
        elif c.find("skipped") is not None or c.get("result") == "skipped" or c.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def count_testlogs(testlogs):
    totals = [0, 0, 0]
    for dirpath, _, files in os.walk(testlogs, followlinks=True):
        if "test.xml" in files:
            for i, n in enumerate(count_xml(os.path.join(dirpath, "test.xml"))):
                totals[i] += n
    return totals


def main():
    args = sys.argv[1:]
    # The first argument is always a test log tree (it may not exist yet);
    # later ones are trees if they are directories, JUnit files otherwise.
    trees = [args[0]] + [a for a in args[1:] if os.path.isdir(a)]
    junit_files = [a for a in args[1:] if not os.path.isdir(a)]
    totals = [0, 0, 0]
    for tree in trees:
        c = count_testlogs(tree) if os.path.isdir(tree) else [0, 0, 0]
        label = f"bazel {os.path.basename(os.path.normpath(tree))} (C++ test cases)"
        print(f"{label}: {c[0]} passed, {c[1]} failed, {c[2]} skipped")
        for i in range(3):
            totals[i] += c[i]
    for path in junit_files:
        c = count_xml(path) if os.path.exists(path) else (0, 0, 0)
        print(f"{os.path.basename(path)}: {c[0]} passed, {c[1]} failed, {c[2]} skipped")
        for i in range(3):
            totals[i] += c[i]
    print(f"skipped (GPU-only or missing prerequisites, each with its reason in the logs): {totals[2]}")
    print(f"{totals[0]} passed, {totals[1]} failed")
    return 1 if totals[1] or totals[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
