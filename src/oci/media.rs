//! Media types berth gives meaning to.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Layer types whose content lives outside registries; manifests may name
/// them without the registry holding the blob.
pub const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The manifest kinds berth stores, with whether each is an index (its
/// children are manifests) or an image manifest (its children are blobs).
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// Whether a client's `Accept` header values admit `media_type`. No header
/// at all admits everything; `*/*` and `type/*` ranges match as usual.
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any = false;
    for range in accept_values.into_iter().flat_map(|v| v.split(',')) {
        let range = range.split(';').next().unwrap_or("").trim();
        if range.is_empty() {
            continue;
        }
        any = true;
        let matches = range == "*/*"
            || range == media_type
            || range
                .strip_suffix("/*")
                .is_some_and(|top| media_type.split('/').next() == Some(top));
        if matches {
            return true;
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(accepts([], OCI_MANIFEST));
        assert!(accepts([""], OCI_MANIFEST));
        assert!(accepts([DOCKER_MANIFEST, OCI_MANIFEST], OCI_MANIFEST));
        assert!(accepts(
            ["application/vnd.docker.distribution.manifest.v2+json, */*"],
            OCI_INDEX
        ));
        assert!(accepts(["application/*;q=0.5"], OCI_INDEX));
        assert!(accepts(
            [" application/vnd.oci.image.index.v1+json ; q=1"],
            OCI_INDEX
        ));
        assert!(!accepts([DOCKER_MANIFEST], OCI_MANIFEST));
        assert!(!accepts(["text/*"], OCI_MANIFEST));
    }
}
