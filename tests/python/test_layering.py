"""The layering the architecture promises (ARCHITECTURE.md, "The service contract"), checked
on the sources: core/ stays free of FAISS, CUDA, ZeroMQ and gRPC headers, and the front ends
(FAISSx and gRPC) reach core only through the service contract."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)

# What a front end may include from core/: the contract (and the value types it brings),
# status and text utilities, and metrics. Nothing of the engine, scheduler, store or devices.
FRONT_END_ALLOWED = re.compile(
    r"^core/(service/collection_service\.h|service/values\.h|types\.h|options\.h|"
    r"util/[a-z0-9_]+\.h|metrics/[a-z0-9_]+\.h)$")


def sources(folder):
    return sorted(p for p in (ROOT / folder).rglob("*")
                  if p.suffix in (".h", ".cc") and not p.name.endswith("_test.cc"))


def test_core_has_no_faiss_cuda_zeromq_or_grpc_header():
    bad = []
    for path in sources("core"):
        for inc in INCLUDE.findall(path.read_text()):
            if re.match(r"(faiss/|cuda|zmq|grpc|google/protobuf)", inc):
                bad.append(f"{path.relative_to(ROOT)}: {inc}")
    assert not bad, bad


@pytest.mark.parametrize("front_end", ["server/faissx", "server/grpc"])
def test_front_ends_include_only_the_service_contract(front_end):
    files = sources(front_end)
    assert files
    bad = []
    for path in files:
        text = path.read_text()
        for inc in INCLUDE.findall(text):
            if inc.startswith("core/") and not FRONT_END_ALLOWED.match(inc):
                bad.append(f"{path.relative_to(ROOT)}: {inc}")
        if re.search(r"\bEngine\s*[&*:]|\bStore\s*[&*]", text):
            bad.append(f"{path.relative_to(ROOT)}: names the Engine or the Store")
    assert not bad, bad
