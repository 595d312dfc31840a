#!/usr/bin/env bash
# oci-labels.sh NAME[,NAME…] KEY=VALUE… — sets the labels org.opencontainers.image.KEY=VALUE on
# the image the first NAME tags, as a new image that every NAME then tags (other tags of the
# old image stay where they were; nothing but the labels changes).
# Why: buildah 1.28 (podman build) reuses a cached LABEL step when only the build-arg it
# expands changed, and ignores --label when the whole stage comes from cache — the runtime
# stages' files are often the same from one commit to the next, so the version and revision
# labels of `make images` would be an older commit's. Docker's builder has no such problem.
set -euo pipefail
IFS=, read -r -a names <<< "$1"
image=${names[0]}
shift
args=()
for kv in "$@"; do
  args+=(--label "org.opencontainers.image.$kv")
done
c=$(buildah from --pull-never -q "$image")
trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
buildah config "${args[@]}" "$c"
id=$(buildah commit -q --format docker --rm "$c")
trap - EXIT
for t in "${names[@]}"; do
  podman tag "$id" "$t"
done
