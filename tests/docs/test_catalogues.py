"""docs/bad-inputs.md and docs/security.md name the tests that prove what they
say (`path::Suite.Name` for GoogleTest, `path::test_name` for pytest): every
test named there must exist, and the bad-input catalogue must keep at least
40 entries, each with a test."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
REF = re.compile(r"`([A-Za-z0-9_./-]+\.(?:cc|py))::([A-Za-z0-9_.]+)`")


def find_test(path, name):
    source = ROOT / path
    if not source.is_file():
        return f"{path} does not exist"
    text = source.read_text(encoding="utf-8")
    if path.endswith(".py"):
        ok = re.search(rf"^\s*def {re.escape(name)}\(", text, re.M)
    else:
        if "." not in name:
            return f"{path}::{name}: expected Suite.Name"
        suite, case = name.split(".", 1)
        ok = re.search(rf"\bTEST(?:_F|_P)?\(\s*{re.escape(suite)}\s*,\s*{re.escape(case)}\s*\)", text)
    return None if ok else f"{path} has no test {name}"


def refs(doc):
    return REF.findall((ROOT / doc).read_text(encoding="utf-8"))


def test_every_named_test_exists():
    missing = []
    for doc in ("docs/bad-inputs.md", "docs/security.md"):
        found = refs(doc)
        assert found, f"{doc} names no test"
        missing += [f"{doc}: {m}" for m in (find_test(p, n) for p, n in found) if m]
    assert not missing, "\n".join(missing)


def test_the_bad_input_catalogue_has_40_entries_each_with_a_test():
    rows = [l for l in (ROOT / "docs/bad-inputs.md").read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| \d+ \|", l)]
    numbers = [int(l.split("|")[1]) for l in rows]
    assert len(rows) >= 40, f"only {len(rows)} entries"
    assert numbers == list(range(1, len(rows) + 1)), "entries must be numbered 1, 2, 3, ... in order"
    without = [l[:60] for l in rows if not REF.search(l.rsplit("|", 2)[1])]
    assert not without, f"entries without a test: {without}"


def test_the_checker_catches_a_missing_test():
    assert find_test("daemon/auth/keys_test.cc", "KeysTest.Errors") is None
    assert find_test("daemon/auth/keys_test.cc", "KeysTest.NoSuchTest") is not None
    assert find_test("tests/docs/test_catalogues.py", "test_every_named_test_exists") is None
    assert find_test("tests/nonexistent_test.cc", "A.B") is not None
