"""Counts test cases from Bazel's test.xml files and pytest's JUnit XML.

Usage: count_results.py BAZEL_TESTLOGS_DIR JUNIT_XML...  (pytest's, the fuzzers')
Prints a per-source summary and, last, the line "N passed, N failed, N skipped".
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


def main():
    testlogs, junit_files = sys.argv[1], sys.argv[2:]
    totals = [0, 0, 0]
    bazel = [0, 0, 0]
    if os.path.isdir(testlogs):
        for dirpath, _, files in os.walk(testlogs, followlinks=True):
            if "test.xml" in files:
                for i, n in enumerate(count_xml(os.path.join(dirpath, "test.xml"))):
                    bazel[i] += n
    print(f"bazel (C++ test cases): {bazel[0]} passed, {bazel[1]} failed, {bazel[2]} skipped")
    totals = list(bazel)
    for path in junit_files:
        c = count_xml(path) if os.path.exists(path) else (0, 0, 0)
        print(f"{os.path.basename(path)}: {c[0]} passed, {c[1]} failed, {c[2]} skipped")
        for i in range(3):
            totals[i] += c[i]
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] or totals[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
