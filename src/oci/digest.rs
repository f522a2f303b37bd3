//! Content digests.
//!
//! ```text
//! digest    := algorithm ":" encoded
//! algorithm := component (separator component)*   component := [a-z0-9]+, separator := [+._-]
//! encoded   := [a-zA-Z0-9=_-]+
//! ```
//! Of the grammar's algorithms berth accepts the two the spec registers:
//! `sha256` (64 lowercase hex) and `sha512` (128 lowercase hex).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::ParseError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A validated digest such as `sha256:e3b0…`. Always in canonical form, so
/// equality of digests is equality of strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Digest of `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(bytes);
        h.finish()
    }

    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

fn is_component_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks the spec's general algorithm grammar, so that an unknown but
/// well-formed algorithm is reported as unsupported rather than malformed.
fn valid_algorithm_grammar(alg: &str) -> bool {
    let bytes = alg.as_bytes();
    !bytes.is_empty()
        && is_component_char(bytes[0])
        && is_component_char(bytes[bytes.len() - 1])
        && bytes
            .windows(2)
            .all(|w| is_component_char(w[0]) || is_component_char(w[1]))
        && bytes
            .iter()
            .all(|&c| is_component_char(c) || b"+._-".contains(&c))
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseError::new("digest", s, reason);
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| err("expected <algorithm>:<hex>"))?;
        if !valid_algorithm_grammar(alg) {
            return Err(err("malformed algorithm"));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(err(
                    "unsupported algorithm (sha256 and sha512 are supported)",
                ))
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(err("wrong length for its algorithm"));
        }
        if !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(err("encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            text: s.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Incremental hashing for either supported algorithm. sha2 picks the CPU's
/// SHA extensions at run time where the processor has them.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_match_known_vectors() {
        assert_eq!(Digest::sha256(b"").as_str(), EMPTY256);
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.as_str().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(EMPTY256.parse::<Digest>().unwrap().hex().len(), 64);
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:zzb0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ":e3b0",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ",
            "-sha:aa",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn algorithm_grammar() {
        assert!(valid_algorithm_grammar("sha256"));
        assert!(valid_algorithm_grammar("multihash+base58"));
        assert!(!valid_algorithm_grammar("a..b"));
        assert!(!valid_algorithm_grammar("a+"));
        assert!(!valid_algorithm_grammar(""));
    }
}
