//! Names, tags, references and digests parsed from arbitrary strings.
//!
//! Properties: parsing never panics, not even while formatting the error;
//! whatever parses prints back as the exact input and parses again to an equal
//! value (also through serde); a repository name is at most 255 characters and
//! a tag at most 128; a reference is a digest exactly when it has a colon.

#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use berth_fuzz::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `s` as `T`; on success checks the Display round trip and returns it.
fn round_trip<T>(s: &str) -> Option<T>
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
    T::Err: Display,
{
    match s.parse::<T>() {
        Ok(v) => {
            let shown = v.to_string();
            assert_eq!(shown, s, "Display must give back the parsed text");
            let again: T = shown
                .parse()
                .unwrap_or_else(|e| panic!("{shown:?} no longer parses: {e}"));
            assert_eq!(again, v);
            Some(v)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

/// Values that serialise as strings must come back equal from JSON.
fn serde_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let json = serde_json::to_string(v).expect("serialise");
    let back: T = serde_json::from_str(&json).expect("deserialise what was serialised");
    assert_eq!(&back, v);
}

fn check_digest(d: &Digest) {
    let hex_len = match d.algorithm() {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    };
    assert_eq!(d.hex().len(), hex_len);
    assert_eq!(d.as_str(), format!("{}:{}", d.algorithm().name(), d.hex()));
}

fn check(s: &str) {
    if let Some(name) = round_trip::<RepoName>(s) {
        assert!(name.as_str().len() <= 255, "name of {} bytes", s.len());
        serde_round_trip(&name);
    }
    let tag = round_trip::<Tag>(s);
    if let Some(tag) = &tag {
        assert!(tag.as_str().len() <= 128, "tag of {} bytes", s.len());
        assert!(!s.contains(':'));
        serde_round_trip(tag);
    }
    let digest = round_trip::<Digest>(s);
    if let Some(d) = &digest {
        check_digest(d);
        serde_round_trip(d);
    }
    match round_trip::<Reference>(s) {
        Some(Reference::Tag(t)) => assert!(tag == Some(t) && digest.is_none(), "{s:?}"),
        Some(Reference::Digest(d)) => assert!(digest == Some(d) && tag.is_none(), "{s:?}"),
        None => assert!(tag.is_none() && digest.is_none(), "{s:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    check(&s);
    // "name:reference" and "name@digest", as clients write image references.
    if let Some((name, reference)) = s.rsplit_once(['@', ':']) {
        check(name);
        check(reference);
    }
    // Digests computed by berth must parse back to themselves.
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let d = Digest::of(algorithm, data);
        check_digest(&d);
        assert_eq!(d.as_str().parse::<Digest>().as_ref(), Ok(&d));
    }
});
