#!/bin/sh
# Build the node's image from this checkout:
#
#   deploy/container/build.sh [IMAGE]          (default localhost/credit-node:latest)
#
# 1. the base image BASE_IMAGE (default localhost/debian:bookworm), when the engine does
#    not have it yet: made from Debian's packages with mmdebstrap and imported;
# 2. the wheels of this checkout and of every dependency, built on this host with
#    PYTHON (default python3, which must be Python 3.11 like the base's);
# 3. the image, from Containerfile beside this script; the build downloads nothing.
#
# CONTAINER_ENGINE is the engine's command (default podman; docker works too), with any
# global options it needs on this host; BUILD_OPTIONS are added to its `build`.
set -eu

image=${1:-localhost/credit-node:latest}
engine=${CONTAINER_ENGINE:-podman}
base=${BASE_IMAGE:-localhost/debian:bookworm}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "build.sh: $python is not Python 3.11; the wheels must fit the base's Python 3.11:" \
        "set PYTHON" >&2
    exit 2
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
trap 'exit 130' INT TERM

if ! $engine image inspect "$base" > /dev/null 2>&1; then
    if [ "$base" != localhost/debian:bookworm ]; then
        echo "build.sh: the engine has no image $base: pull it first" >&2
        exit 2
    fi
    echo "build.sh: making $base from Debian's packages (mmdebstrap)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$context/rootfs.tar"
    $engine import "$context/rootfs.tar" "$base" > /dev/null
    rm "$context/rootfs.tar"
fi

echo "build.sh: building the wheels of $checkout"
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" \
    "$checkout"

format=
case $(basename "${engine%% *}") in
    podman) format="--format docker" ;;  # an OCI image would drop HEALTHCHECK
esac
echo "build.sh: building $image"
# shellcheck disable=SC2086  # the options are words
$engine build $format ${BUILD_OPTIONS:-} --build-arg "BASE=$base" \
    --file "$here/Containerfile" --tag "$image" "$context"
