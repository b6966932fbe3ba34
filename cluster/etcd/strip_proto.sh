#!/bin/sh
# Copies one of etcd's .proto files (Debian's golang-etcd-server-dev) with the gogoproto and
# grpc-gateway annotations taken out: they change nothing on the wire, and their own .proto
# files are not packaged.   strip_proto.sh IN OUT
set -eu
mkdir -p "$(dirname "$2")"
sed -e '/import "gogoproto\/gogo.proto";/d' \
    -e '/import "google\/api\/annotations.proto";/d' \
    -e '/^ *option (gogoproto\.[a-z_]*) = [a-z]*;/d' \
    -e '/option (google\.api\.http) = {/,/};/d' \
    -e 's/ *\[(gogoproto\.[a-z_]*) = [^]]*\]//g' \
    "$1" > "$2.tmp"
if grep -q 'gogoproto\|google\.api' "$2.tmp"; then
  echo "strip_proto.sh: $1: annotations left after stripping" >&2
  exit 1
fi
mv "$2.tmp" "$2"
