"""docs/how_it_works.md lists every pass of the pipeline, in order, and the forward pipeline."""

from __future__ import annotations

import re
from pathlib import Path

from rnncomp.transforms.passes import FORWARD_PIPELINE, PIPELINE

DOC = (Path(__file__).resolve().parents[2] / "docs" / "how_it_works.md").read_text()


def test_pass_table_lists_every_pass_in_order():
    table = DOC.split("| pass | what it does |")[1].split("\n\n")[0]
    listed = [name for row in re.findall(r"^\| ([^|]+) \|", table, re.M)
              for name in re.findall(r"`(\w+)`", row)]
    assert listed == [name for name, _ in PIPELINE]


def test_forward_pipeline_is_described():
    para = DOC.split("`FORWARD_PIPELINE` is")[1].split("\n\n")[0]
    assert re.findall(r"`(\w+)`", para.split("):")[0].split("(", 1)[1]) == \
        [name for name, _ in FORWARD_PIPELINE]
