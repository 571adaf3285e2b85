#!/usr/bin/env bash
# Build the image the Docker executor tests run in, with no registry: prints its tag.
#   tests/infra/docker/build_image.sh            (DOCKER_HOST set by start.sh)
#
# Two layers, each cached by content in the engine's image store:
#  nemo-lite-base:<hash of this venv's pinned packages>  Debian bookworm minbase (debootstrap)
#      + a venv at /opt/venv with exactly this .venv's packages, installed offline from wheels
#      downloaded on the host (pip inside the chroot has no usable TLS). About 3 minutes, once.
#  nemo-lite:<hash of base + nemo_lite's sources>       + nemo_lite's own wheel (seconds).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY="$ROOT/.venv/bin/python"
CACHE=${NEMO_LITE_DOCKER_CACHE:-/tmp/nemo_lite_docker/build}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"
log() { echo "== $*" >&2; }
exec 9>"$CACHE/.lock"  # one build at a time: a second session waits, then finds the image
flock 9

freeze="$CACHE/requirements.txt"
"$PY" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v -i '^nemo-lite' > "$freeze"
base_hash=$( (cat "$freeze"; echo bookworm) | sha256sum | cut -c1-12)
BASE="nemo-lite-base:$base_hash"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  start=$(date +%s)
  rootfs="$CACHE/rootfs"
  rm -rf "$rootfs"
  log "debootstrap bookworm minbase (python3, venv)"
  debootstrap --variant=minbase --include=python3,python3-venv,procps bookworm "$rootfs" "$MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # One wheel folder per pinned set: wheels left by an earlier set (another session's .venv) must
  # not join this install, or pip sees two versions of one package.
  wheels="$CACHE/wheels-$base_hash"
  find "$CACHE" -maxdepth 1 -name 'wheels*' ! -name "wheels-$base_hash" -exec rm -rf {} +
  log "downloading $(wc -l < "$freeze") pinned wheels on the host"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" -r "$freeze" 2>&1 \
    | grep -v "is ignored: it is neither" >&2 || true
  log "installing them offline into /opt/venv"
  mkdir -p "$rootfs/tmp/wheels"
  cp "$wheels"/* "$rootfs/tmp/wheels/"
  chroot "$rootfs" python3 -m venv /opt/venv
  chroot "$rootfs" /bin/sh -c 'cd /tmp/wheels && /opt/venv/bin/pip install -q --no-index \
    --no-deps --no-build-isolation --disable-pip-version-check --no-cache-dir ./*' >&2
  rm -rf "$rootfs/tmp/wheels" "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/root/.cache"
  log "docker import $BASE"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PYTHONUNBUFFERED=1' --change 'ENV OMP_NUM_THREADS=1' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  log "base image built in $(( $(date +%s) - start )) s"
  # bases of earlier pinned sets (about 4 GB each) and the nemo_lite layers on them go: the
  # store is on /tmp and filled the disk once; one in use by a container stays (rmi refuses)
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^nemo-lite:' \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^nemo-lite-base:' | grep -vx "$BASE" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
fi

src_hash=$( (echo "$BASE"; cd "$ROOT" && git ls-files -co --exclude-standard -- nemo_lite recipes \
  executors pyproject.toml | sort | xargs sha256sum) | sha256sum | cut -c1-12)
IMAGE="nemo-lite:$src_hash"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "nemo_lite wheel -> $IMAGE"
  rm -rf "$CACHE/app" && mkdir -p "$CACHE/app"
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$CACHE/app" "$ROOT" >&2
  name="nemo-lite-build-$$"
  docker run --name "$name" --network none -v "$CACHE/app:/wheel:ro" "$BASE" sh -c \
    'pip install -q --no-index --no-deps --disable-pip-version-check --no-cache-dir /wheel/*.whl' >&2 \
    || { docker rm -f "$name" >/dev/null 2>&1; exit 1; }
  docker commit "$name" "$IMAGE" >/dev/null
  docker rm "$name" >/dev/null
  # older builds of nemo_lite's layer are not needed any more (the base stays)
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^nemo-lite:' | grep -vx "$IMAGE" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
fi
echo "$IMAGE"
