#!/usr/bin/env python3
"""Writes a benchmark report into a document between its markers.

    hack/splice-results.py REPORT DOC NAME

replaces what lies between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in DOC with the text of
REPORT; the rest of DOC is kept as it is. Used by `make bench` and `make bench-router`.
"""
import sys

report, doc, name = sys.argv[1:]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
with open(doc) as f:
    text = f.read()
if begin not in text or end not in text:
    sys.exit(f"{doc} has no {begin} ... {end} section to write the results into")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(report) as f:
    body = f.read()
with open(doc, "w") as f:
    f.write(head + begin + "\n" + body + end + tail)
