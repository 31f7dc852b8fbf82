"""The README and the docs against the repository: the configuration table is generated from
the binary's key tables, nothing points outside the checkout, and every cited section exists."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_readme_config_table_matches_binary(chanced_bin):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    table = subprocess.run([chanced_bin, "config", "markdown"], capture_output=True, text=True,
                           env=env, check=True).stdout.strip()
    text = (ROOT / "README.md").read_text()
    begin = text.index("\n", text.index("<!-- BEGIN CONFIG TABLE")) + 1
    end = text.index("<!-- END CONFIG TABLE -->")
    assert text[begin:end].strip() == table, (
        "README.md's configuration table is stale: run tools/update_readme_config.sh")


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile and "\ntest:" in makefile


# --- the repository stands on its own --------------------------------------------------------

# Spelled in two pieces so that this file does not match itself.
OUTSIDE_REFERENCES = ("../" + "shared", "DESIGN" + ".md")
SKIP_DIRS = {".git", "build", "node_modules", ".run"}


def tracked_files():
    """The repository's files: `git ls-files` (without node_modules), or, outside a git
    checkout (an exported tree), every file below the top but build output and state."""
    p = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if p.returncode == 0:
        names = [n for n in p.stdout.decode().split("\0") if n]
        return [ROOT / n for n in names if "node_modules" not in Path(n).parts]
    out = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        out += [Path(top) / f for f in files]
    return out


def test_nothing_refers_outside_the_repository():
    """The architecture lives in docs/architecture.md: no file may cite the old design file or
    anything beside the checkout."""
    files = tracked_files()
    assert len(files) > 50, "found only %d files under %s" % (len(files), ROOT)
    bad = []
    for f in files:
        if not f.is_file() or f.is_symlink():
            continue
        data = f.read_bytes()
        for needle in OUTSIDE_REFERENCES:
            if needle.encode() in data:
                line = data[:data.index(needle.encode())].count(b"\n") + 1
                bad.append("%s:%d mentions %s" % (f.relative_to(ROOT), line, needle))
    assert not bad, "\n".join(bad)


def heading_anchors(path):
    """The anchors GitHub gives the headings of a Markdown file (lowercased, punctuation
    dropped, spaces to hyphens, -1, -2 ... for repeats)."""
    anchors, seen, fence = set(), {}, False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else "%s-%d" % (slug, n))
    return anchors


CITATION = re.compile(r"(?<![\w.])((?:[\w.-]+/)*(?:README|architecture|protocol|deploy)\.md)"
                      r"#([A-Za-z0-9_-]+)")


def test_document_anchors_resolve():
    """Every `<doc>.md#anchor` cited anywhere (code comments, tests, docs) names a heading that
    exists, so renaming a section of docs/architecture.md cannot silently break a citation."""
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    anchors = {f.resolve(): heading_anchors(f) for f in docs}
    bad, checked = [], 0
    for f in tracked_files():
        if not f.is_file() or f.suffix in (".png", ".svg", ".ico") or f.is_symlink():
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        for m in CITATION.finditer(text):
            # relative to the citing file, else to the top, else a bare name of docs/
            target = next((c.resolve() for c in (f.parent / m.group(1), ROOT / m.group(1),
                                                  ROOT / "docs" / Path(m.group(1)).name)
                           if c.resolve() in anchors), None)
            if target is None:
                continue
            checked += 1
            if m.group(2) not in anchors[target]:
                line = text[:m.start()].count("\n") + 1
                bad.append("%s:%d cites %s#%s, which has no such heading" % (
                    f.relative_to(ROOT), line, m.group(1), m.group(2)))
    # links inside one document: [text](#anchor)
    for doc in docs:
        text = doc.read_text()
        for m in re.finditer(r"\]\(#([A-Za-z0-9_-]+)\)", text):
            checked += 1
            if m.group(1) not in anchors[doc.resolve()]:
                line = text[:m.start()].count("\n") + 1
                bad.append("%s:%d links #%s, which has no such heading" % (
                    doc.relative_to(ROOT), line, m.group(1)))
    assert checked >= 5, "expected citations of docs/architecture.md sections, found %d" % checked
    assert not bad, "\n".join(bad)
