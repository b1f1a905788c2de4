#!/usr/bin/env bash
# CI check for the generated blocklist files: re-runs both generators from their pinned inputs and fails if the
# committed output differs. The Alibaba generator downloads two npm tarballs (33 MB) into $HUSHWALL_GEN_CACHE
# (default ~/.cache/hushwall-blocklists) the first time and verifies their checksums; a run takes about 10 s.
set -euo pipefail
cd "$(dirname "$0")"
python3 gen/consensus.py --check
python3 gen/alibaba.py --check
echo "blocklists/check.sh: consensus-xiaomi.txt and alibaba-cloud-sg-ru.txt match their generators" >&2
