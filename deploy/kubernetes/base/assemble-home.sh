#!/bin/sh
# The init container of deploy/kubernetes: assemble the node home CREDIT_NODE_HOME from the
# pod's ConfigMaps and Secrets (mounted under MOUNTS, default /etc/credit-node), install
# every version of the memorandum in order, and bring the database schema up to date.
#
# The home is new at every start (an emptyDir): the files are copied in with the modes
# the node requires (folders 0700, files 0600), since a Secret's own files are readable
# by the pod's group. Installing each signed version from the first checks the whole
# chain of trust at every start (each version signed by a threshold of the keys of the
# one before). The home keeps nothing between starts: the newest version in the
# ConfigMap is the one in force, so only add versions to it, never remove the newest.
set -eu

home=${CREDIT_NODE_HOME:?CREDIT_NODE_HOME names the node home to assemble}
mounts=${MOUNTS:-/etc/credit-node}

umask 077
install -d -m 0700 "$home" "$home/keys" "$home/tls" "$home/policy" "$home/rejects"
install -m 0600 "$mounts/config/node.toml" "$home/node.toml"
for key in signing.key subject-hmac.key; do
    if [ ! -e "$mounts/keys/$key" ]; then
        echo "assemble-home: no $key in the Secret credit-node-keys" >&2
        exit 2
    fi
done
# every key of the Secret; one named retired.<file> is keys/retired/<file>, a key the
# node retired in a rotation and still needs (deploy/operations/keys.md)
for path in "$mounts"/keys/*; do
    key=$(basename "$path")
    case $key in
        retired.*)
            install -d -m 0700 "$home/keys/retired"
            install -m 0600 "$path" "$home/keys/retired/${key#retired.}"
            ;;
        *) install -m 0600 "$path" "$home/keys/$key" ;;
    esac
done
install -m 0600 "$mounts/tls/tls.crt" "$home/tls/node.crt"
install -m 0600 "$mounts/tls/tls.key" "$home/tls/node.key"

found=0
for memorandum in $(ls "$mounts/federation" | grep -E '^memorandum-v[0-9]+\.json$' | sort -V); do
    credit-node policy install "$mounts/federation/$memorandum" --home "$home"
    found=1
done
if [ "$found" = 0 ]; then
    echo "assemble-home: no memorandum-v<N>.json in the ConfigMap credit-node-federation" >&2
    exit 2
fi

# Two replicas starting together on a new database may both migrate; the second then
# fails, is restarted by Kubernetes and finds the schema current.
credit-node db upgrade --home "$home"
