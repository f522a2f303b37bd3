//! Manifest parsing of arbitrary bytes under an arbitrary Content-Type.
//!
//! Input layout: the first line is the Content-Type and the rest is the body.
//! An empty first line, or no newline at all, means no Content-Type; a first
//! line of a single digit picks one of `CONTENT_TYPES`, so that mutations reach
//! the interesting headers easily.
//!
//! Properties: parsing never panics, not even while formatting the error; on
//! success the media type is one of the four manifest kinds and agrees with
//! the kind, a manifest Content-Type is the media type, every digest listed is
//! valid and canonical, an image has no child manifests and an index no blobs.
//! The first line is also fed to `media::accepts` as an Accept header.

#![no_main]

use berth_fuzz::oci::manifest::{self, bare_media_type};
use berth_fuzz::oci::media::{self, ManifestKind};
use berth_fuzz::oci::Digest;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 10] = [
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
    media::DOCKER_SCHEMA1,
    media::DOCKER_SCHEMA1_SIGNED,
    media::OCTET_STREAM,
    "application/vnd.oci.image.index.v1+json; charset=utf-8",
    " application/vnd.oci.image.manifest.v1+json ;",
    "application/json",
];

const KNOWN: [(&str, ManifestKind); 4] = [
    (media::OCI_MANIFEST, ManifestKind::Image),
    (media::DOCKER_MANIFEST, ManifestKind::Image),
    (media::OCI_INDEX, ManifestKind::Index),
    (media::DOCKER_MANIFEST_LIST, ManifestKind::Index),
];

fn split(data: &[u8]) -> (Option<String>, &[u8]) {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return (None, data);
    };
    let (line, body) = (&data[..newline], &data[newline + 1..]);
    let content_type = match line {
        [] => None,
        [d @ b'0'..=b'9'] => Some(CONTENT_TYPES[usize::from(d - b'0')].to_owned()),
        _ => Some(String::from_utf8_lossy(line).into_owned()),
    };
    (content_type, body)
}

fn check_digest(d: &Digest) {
    let text = d.to_string();
    assert_eq!(text.parse::<Digest>().as_ref(), Ok(d), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = split(data);
    // The Content-Type line doubles as an Accept header: never panics either.
    if let Some(accept) = content_type.as_deref() {
        for (t, _) in KNOWN {
            let _ = media::accepts([accept], t);
        }
    }
    let m = match manifest::parse(body, content_type.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let kind = KNOWN
        .iter()
        .find(|(t, _)| *t == m.media_type)
        .map(|(_, k)| *k)
        .unwrap_or_else(|| panic!("accepted media type {:?}", m.media_type));
    assert_eq!(m.kind, kind, "{:?}", m.media_type);
    if let Some(header) = content_type.as_deref().map(bare_media_type) {
        if KNOWN.iter().any(|(t, _)| *t == header) {
            assert_eq!(m.media_type, header, "a manifest Content-Type decides");
        }
        assert!(
            header != media::DOCKER_SCHEMA1 && header != media::DOCKER_SCHEMA1_SIGNED,
            "schema 1 accepted"
        );
    }
    m.blobs
        .iter()
        .chain(&m.manifests)
        .chain(&m.subject)
        .for_each(check_digest);
    match m.kind {
        ManifestKind::Image => assert!(m.manifests.is_empty()),
        ManifestKind::Index => assert!(m.blobs.is_empty()),
    }
    assert!(media::accepts([media::OCI_MANIFEST, "*/*"], &m.media_type));
});
