//! Signatures on webhook bodies: HMAC-SHA256 over `<unix seconds>.<body>`,
//! sent as `Berth-Signature: t=<unix seconds>,v1=<hex>`. The timestamp is
//! signed too, so a receiver that refuses old timestamps refuses replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "berth-signature";

/// How far a receiver should let a signature's time be from its clock.
pub const TOLERANCE_SECS: u64 = 300;

fn mac(secret: &str, t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Berth-Signature` value for `body` sent at `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is {0} s from now, more than the tolerance")]
    Stale(u64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// A receiver's check, as the documentation describes it: the header
/// parses, its time is within [`TOLERANCE_SECS`] of `now`, and the MAC
/// matches (compared in constant time).
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64) -> Result<(), Refused> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(Refused::Malformed);
    };
    let skew = now.abs_diff(t);
    if skew > TOLERANCE_SECS {
        return Err(Refused::Stale(skew));
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| Refused::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_is_detected() {
        let header = sign("s3cret", 1000, b"{\"events\":[]}");
        assert!(header.starts_with("t=1000,v1="));
        assert_eq!(verify("s3cret", &header, b"{\"events\":[]}", 1010), Ok(()));
        assert_eq!(
            verify("s3cret", &header, b"{\"events\":[1]}", 1010),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify("other", &header, b"{\"events\":[]}", 1010),
            Err(Refused::Mismatch)
        );
        // The time is signed: moving it breaks the MAC.
        let moved = header.replace("t=1000", "t=1001");
        assert_eq!(
            verify("s3cret", &moved, b"{\"events\":[]}", 1010),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify("s3cret", &header, b"{\"events\":[]}", 2000),
            Err(Refused::Stale(1000))
        );
        assert_eq!(verify("s3cret", "v1=zz", b"", 0), Err(Refused::Malformed));
    }
}
