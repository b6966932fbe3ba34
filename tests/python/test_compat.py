"""A data directory written by format version 1 (tests/compat/v1, made by
tests/compat/make_v1.py) keeps loading, with the same contents, in every later version."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import Server, call, ok

COMPAT = Path(__file__).resolve().parents[1] / "compat"


def test_version_1_data_directory_loads(tmp_path):
    data = tmp_path / "v1"
    shutil.copytree(COMPAT / "v1", data)  # the server appends to it: work on a copy
    expected = json.loads((COMPAT / "v1.json").read_text())
    srv = Server("--data-dir", str(data), "--log-level", "warning")
    try:
        names = sorted(i["index_id"] for i in ok(call(srv, action="list_indexes"))["indexes"])
        assert names == expected["indexes"]
        assert ok(call(srv, action="get_vectors", index_id="flat"))["vectors"] == \
            expected["flat_vectors"]
        assert ok(call(srv, action="reconstruct", index_id="ids", id=71))["vector"] == \
            pytest.approx(expected["ids_71"])
        found = ok(call(srv, action="search", index_id="ivf",
                        query_vectors=expected["queries"], k=3))
        assert found["indices"] == expected["ivf_search"]
        assert ok(call(srv, action="get_parameter", index_id="ivf",
                       parameter="nprobe"))["param_value"] == expected["ivf_nprobe"]
        assert ok(call(srv, action="get_index_stats", index_id="bin"))["ntotal"] == \
            expected["bin_ntotal"]
    finally:
        assert srv.stop() == 0
