"""Generates runtime/tokenizer/hf_unicode_tables.inc: where the Unicode data
of Hugging Face `tokenizers` (the pinned version in tools/requirements.txt)
differs from the libraries fjord uses, so fjord splits and normalizes exactly
as HF does.

  - Regex properties: HF's Oniguruma knows a newer Unicode than Debian's PCRE2
    10.42 (Unicode 14), so for each \\p{X} fjord translates, the code points
    Oniguruma puts in X and PCRE2 does not (and, if any, the reverse).
  - Normalization: HF normalizes with old Unicode tables (its
    unicode-normalization fork), utf8proc with Unicode 15. Code points whose
    decomposition, combining class or compositions HF does not know are
    "inert" for HF: fjord normalizes the text between them and keeps them as
    they are.

Run after changing the pinned `tokenizers` (tests/interop/test_tokenizer.py
checks the checked-in table is current):

    ~/.cache/fjord/venv/bin/python tools/tokenizer/gen_unicode_tables.py > runtime/tokenizer/hf_unicode_tables.inc
"""

import ctypes
import ctypes.util
import sys

import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers

# Properties fjord's regex translation extends (\p{X} in tokenizer.json).
PROPERTIES = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No",
              "P", "Pc", "S", "Z"]
# fjord's translations of Oniguruma's \s and \w (regex.cc); checked below.
SPACE = {0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
         0x2029, 0x202F, 0x205F, 0x3000}
# Combining marks of classes 1, 202, 220, 230, 232, 240 for reordering probes.
MARKS = ["\u0334", "\u0328", "\u0316", "\u0301", "\u0315", "\u0345"]
ALL = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
ALL_TEXT = "".join(chr(c) for c in ALL)


def onig_set(pattern):
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    return {ord(ch) for piece, _ in split.pre_tokenize_str(ALL_TEXT) for ch in piece}


class Pcre2:
    def __init__(self):
        self.lib = ctypes.CDLL(ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0")
        self.lib.pcre2_compile_8.restype = ctypes.c_void_p
        self.lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                             ctypes.POINTER(ctypes.c_int),
                                             ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
        self.lib.pcre2_match_data_create_8.restype = ctypes.c_void_p
        self.lib.pcre2_match_data_create_8.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
        self.lib.pcre2_match_8.restype = ctypes.c_int
        self.lib.pcre2_match_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                           ctypes.c_size_t, ctypes.c_uint32, ctypes.c_void_p,
                                           ctypes.c_void_p]
        self.lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(ctypes.c_size_t)
        self.lib.pcre2_get_ovector_pointer_8.argtypes = [ctypes.c_void_p]

    def set(self, pattern):
        pattern = f"(?:{pattern})+".encode()
        err, off = ctypes.c_int(), ctypes.c_size_t()
        utf, ucp = 0x00080000, 0x00020000
        code = self.lib.pcre2_compile_8(pattern, len(pattern), utf | ucp, ctypes.byref(err),
                                        ctypes.byref(off), None)
        assert code, pattern
        md = self.lib.pcre2_match_data_create_8(1, None)
        subject = ALL_TEXT.encode("utf-8")
        out, pos = set(), 0
        while True:
            rc = self.lib.pcre2_match_8(code, subject, len(subject), pos, 0, md, None)
            if rc < 0:
                break
            ov = self.lib.pcre2_get_ovector_pointer_8(md)
            start, end = ov[0], ov[1]
            out.update(ord(ch) for ch in subject[start:end].decode("utf-8"))
            pos = end
        return out


class Utf8proc:
    def __init__(self):
        self.lib = ctypes.CDLL(ctypes.util.find_library("utf8proc") or "libutf8proc.so.2")
        self.lib.utf8proc_get_property.restype = ctypes.POINTER(ctypes.c_int16)
        self.lib.utf8proc_get_property.argtypes = [ctypes.c_int32]
        self.lib.utf8proc_unicode_version.restype = ctypes.c_char_p
        for f in ["utf8proc_NFD", "utf8proc_NFC", "utf8proc_NFKD", "utf8proc_NFKC"]:
            getattr(self.lib, f).restype = ctypes.c_void_p
            getattr(self.lib, f).argtypes = [ctypes.c_char_p]
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]

    def ccc(self, c):
        return self.lib.utf8proc_get_property(c)[1]

    def norm(self, form, s):
        ptr = getattr(self.lib, "utf8proc_" + form)(s.encode("utf-8"))
        out = ctypes.string_at(ptr).decode("utf-8")
        self.libc.free(ptr)
        return out


def ranges(points):
    out, points = [], sorted(points)
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


def inert_code_points(u):
    """Code points HF's normalizer does not know as utf8proc does."""
    hf = {f: getattr(normalizers, f)() for f in ["NFD", "NFC", "NFKD", "NFKC"]}
    canonical, compat = set(), set()
    for c in ALL:
        ch = chr(c)
        if c < 0x80:
            continue
        if hf["NFD"].normalize_str(ch) != u.norm("NFD", ch):
            canonical.add(c)
        if hf["NFKD"].normalize_str(ch) != u.norm("NFKD", ch):
            compat.add(c)
        if u.ccc(c) == 0:
            continue
        # A combining mark: HF must reorder it against marks of every class
        # as utf8proc does, or it does not know its combining class.
        for mark in MARKS:
            for probe in (mark + ch, ch + mark):
                if hf["NFD"].normalize_str(probe) != u.norm("NFD", probe):
                    canonical.add(c)
    # Compositions utf8proc makes and HF does not: the first character of the
    # pair is where HF stops composing.
    for c in ALL:
        d = u.norm("NFD", chr(c))
        if len(d) != 2 or u.norm("NFC", d) != chr(c):
            continue
        if hf["NFC"].normalize_str(d) != chr(c):
            canonical.add(ord(d[0]))
    return canonical, compat | canonical


def emit(name, points, out):
    rs = ranges(points)
    out.append(f"// {len(points)} code points in {len(rs)} ranges.")
    out.append(f"constexpr CodePointRange {name}[] = {{")
    line = "   "
    for a, b in rs:
        item = f" {{0x{a:X}, 0x{b:X}}},"
        if len(line) + len(item) > 98:
            out.append(line)
            line = "   "
        line += item
    if rs:
        out.append(line)
    else:
        out.append("    {0x110000, 0x110000},  // none")
    out.append("};")


def main():
    pcre, u = Pcre2(), Utf8proc()
    out = [
        "// Generated by tools/tokenizer/gen_unicode_tables.py for Hugging Face tokenizers "
        f"{tokenizers.__version__}",
        f"// (PCRE2 10.42, utf8proc {u.lib.utf8proc_unicode_version().decode()}). Do not edit.",
        "// Included by regex.cc and unicode.cc inside namespace fjord::tokenizer::internal.",
        "",
    ]
    # class name -> (Oniguruma pattern, the PCRE2 pattern regex.cc uses for it)
    classes = {prop: (rf"\p{{{prop}}}", rf"\p{{{prop}}}") for prop in PROPERTIES}
    classes["w"] = (r"\w", r"[\p{L}\p{M}\p{N}\p{Pc}]")
    # Oniguruma's \w inside a bracket class is not quite its \w outside.
    classes["w@class"] = (r"[\w]", r"[\p{L}\p{M}\p{N}\p{Pc}]")
    classes["d"] = (r"\d", r"\p{Nd}")
    assert onig_set(r"\s") == SPACE, "Oniguruma's \\s is not regex.cc's kSpaceSet"
    deltas = []
    for name, (onig_pattern, pcre_pattern) in classes.items():
        onig, pc = onig_set(onig_pattern), pcre.set(pcre_pattern)
        extra, missing = onig - pc, pc - onig
        key = name.replace("@class", "_in_class")
        key = key if key[0].isupper() else "_" + key
        emit(f"kOnigExtra{key}", extra, out)
        emit(f"kOnigMissing{key}", missing, out)
        out.append("")
        deltas.append((name, key, extra, missing))
    out.append("// Per class: what Oniguruma matches beyond PCRE2's pattern, and what it")
    out.append("// does not match of it.")
    out.append("constexpr ClassDelta kClassDeltas[] = {")
    for name, key, extra, missing in deltas:
        out.append(f"    {{\"{name}\", kOnigExtra{key}, {len(ranges(extra))}, "
                   f"kOnigMissing{key}, {len(ranges(missing))}}},")
    out.append("};")
    out.append("")
    canonical, compat = inert_code_points(u)
    out.append("// Inert for HF's NFC/NFD.")
    emit("kHfInertCanonical", canonical, out)
    out.append(f"constexpr size_t kHfInertCanonicalSize = {len(ranges(canonical))};")
    out.append("// Inert for HF's NFKC/NFKD.")
    emit("kHfInertCompat", compat, out)
    out.append(f"constexpr size_t kHfInertCompatSize = {len(ranges(compat))};")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
