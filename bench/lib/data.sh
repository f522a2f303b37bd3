# shellcheck shell=bash
# Benchmark inputs: random blobs, a small OCI image and a one-layer OCI layout made
# offline with umoci. All are deterministic (AES-CTR keystream keyed by the file
# name) and are generated only once per DATA_DIR. Sourced by bench/run.sh.

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_CONFIG=application/vnd.oci.image.config.v1+json
OCI_LAYER=application/vnd.oci.image.layer.v1.tar

# sha256_of FILE : "sha256:<hex>" (openssl uses the CPU's SHA extensions).
sha256_of() {
    printf 'sha256:%s\n' "$(openssl dgst -sha256 -r "$1" | cut -d' ' -f1)"
}

# size_of FILE : bytes.
size_of() {
    stat -c %s "$1"
}

# key_for NAME : a 128-bit AES key derived from NAME, so each input has its own bytes.
key_for() {
    printf '%s' "$1" | openssl dgst -sha256 -r | cut -c1-32
}

# random_file NAME MIB : prints the path of an incompressible file of MIB MiB, and
# keeps its digest next to it in NAME.bin.digest.
random_file() {
    local name=$1 mib=$2 path
    path="$DATA_DIR/$name.bin"
    if [[ ! -s $path.digest ]]; then
        log "generating $name ($(size_label "$mib") of random bytes)"
        openssl enc -aes-128-ctr -K "$(key_for "$name")" -iv 00000000000000000000000000000000 \
            -nosalt </dev/zero 2>/dev/null | head -c "$((mib * 1024 * 1024))" >"$path.tmp" || true
        [[ $(size_of "$path.tmp") == $((mib * 1024 * 1024)) ]] || die "could not write $path"
        mv "$path.tmp" "$path"
        sha256_of "$path" >"$path.digest"
    fi
    printf '%s\n' "$path"
}

# digest_of FILE : the digest recorded by random_file, else computed.
digest_of() {
    if [[ -s $1.digest ]]; then cat "$1.digest"; else sha256_of "$1"; fi
}

# blob_file MIB N : the Nth distinct blob of MIB MiB.
blob_file() {
    random_file "blob-${1}m-$2" "$1"
}

# small_image : writes layer.bin, config.json and manifest.json of a one-layer OCI image,
# plus an empty blob, empty.bin, into DATA_DIR/small and prints that directory.
small_image() {
    local dir="$DATA_DIR/small" layer_digest config_digest
    if [[ ! -s $dir/manifest.json ]]; then
        mkdir -p "$dir"
        : >"$dir/empty.bin"
        openssl enc -aes-128-ctr -K "$(key_for small-layer)" -iv 00000000000000000000000000000000 \
            -nosalt </dev/zero 2>/dev/null | head -c 4096 >"$dir/layer.bin" || true
        layer_digest=$(sha256_of "$dir/layer.bin")
        jq -cn --arg diff "$layer_digest" \
            '{architecture: "amd64", os: "linux", config: {}, rootfs: {type: "layers", diff_ids: [$diff]}}' \
            >"$dir/config.json"
        config_digest=$(sha256_of "$dir/config.json")
        jq -cn --arg mt "$OCI_MANIFEST" \
            --arg cmt "$OCI_CONFIG" --arg cd "$config_digest" --argjson cs "$(size_of "$dir/config.json")" \
            --arg lmt "$OCI_LAYER" --arg ld "$layer_digest" --argjson ls "$(size_of "$dir/layer.bin")" \
            '{schemaVersion: 2, mediaType: $mt,
              config: {mediaType: $cmt, digest: $cd, size: $cs},
              layers: [{mediaType: $lmt, digest: $ld, size: $ls}]}' >"$dir/manifest.json"
    fi
    printf '%s\n' "$dir"
}

# oci_layout MIB : an OCI layout (tag "bench") holding one gzip layer made of a MIB MiB
# random file; prints the layout path.
oci_layout() {
    local mib=$1 layout="$DATA_DIR/oci-${1}m" file
    if [[ ! -e $layout/.complete ]]; then
        file=$(blob_file "$mib" 1)
        log "building a $(size_label "$mib") one-layer OCI image with umoci"
        rm -rf "$layout"
        umoci init --layout "$layout" >&2
        umoci new --image "$layout:bench" >&2
        umoci config --image "$layout:bench" --no-history --created 1970-01-01T00:00:00Z \
            --os linux --architecture amd64 --config.cmd /bin/true >&2
        umoci insert --image "$layout:bench" --history.created 1970-01-01T00:00:00Z \
            "$file" /data/blob >&2
        umoci gc --layout "$layout" >&2
        touch "$layout/.complete"
    fi
    printf '%s\n' "$layout"
}

# layout_bytes LAYOUT : total size of the blobs a copy of the layout moves.
layout_bytes() {
    find "$1/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }'
}
