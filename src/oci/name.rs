//! Repository names, tags and references.
//!
//! ```text
//! name      := component ("/" component)*            at most 255 characters
//! component := alnum (separator alnum)*             alnum := [a-z0-9]+
//! separator := "." | "_" | "__" | "-"+
//! tag       := [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! reference := tag | digest
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Digest, ParseError};

pub const MAX_NAME_LEN: usize = 255;

const ALNUM: &str = "[a-z0-9]+";
const SEPARATOR: &str = r"(?:\.|_|__|-+)";
const TAG: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    let component = format!("{ALNUM}(?:{SEPARATOR}{ALNUM})*");
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("name grammar")
});
static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{TAG}$")).expect("tag grammar"));

/// A repository name such as `library/alpine`, valid by construction.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.len() > MAX_NAME_LEN {
            return Err(ParseError::new(
                "repository name",
                s,
                "longer than 255 characters",
            ));
        }
        if !NAME_RE.is_match(s) {
            return Err(ParseError::new(
                "repository name",
                s,
                "must be lowercase components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'",
            ));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag such as `v1.2.3`, valid by construction.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if !TAG_RE.is_match(s) {
            return Err(ParseError::new(
                "tag",
                s,
                "must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
            ));
        }
        Ok(Tag(s.to_owned()))
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        // A tag can never contain ':', so a colon means "this is a digest".
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

macro_rules! string_type_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}
string_type_impls!(RepoName);
string_type_impls!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "a",
            "library/alpine",
            "a/b/c/d",
            "foo.bar",
            "foo_bar",
            "foo__bar",
            "foo---bar",
            "0",
            "a/manifests/b",
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good:?}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "Library/alpine",
            "../x",
            "a/../b",
            "/a",
            "a/",
            "a//b",
            "a___b",
            "-a",
            "a-",
            "a.",
            ".a",
            "a b",
            long.as_str(),
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
        assert!(matches!(
            "v1".parse::<Reference>().unwrap(),
            Reference::Tag(_)
        ));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(
            d.parse::<Reference>().unwrap(),
            Reference::Digest(_)
        ));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }
}
