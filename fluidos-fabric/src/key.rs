//! The node's WireGuard static key.
//!
//! WireGuard needs an x25519 key, which the node's ed25519 identity is not; the two
//! are tied together by the contract instead: each party's [`WireGuardKey`] is part
//! of the terms both parties sign.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519;
use fluidos_contracts::WireGuardKey;
use zeroize::Zeroizing;

/// A WireGuard static secret (x25519).
///
/// The secret is zeroized on drop (x25519-dalek's `zeroize` feature, which boringtun
/// enables) and its `Debug` output shows only the public key.
pub struct WireGuardSecret {
    secret: x25519::StaticSecret,
}

impl WireGuardSecret {
    /// Generates a fresh key from the operating system's random source, clamped as
    /// `wg genkey` does, so the stored form is what WireGuard tools produce.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        // getrandom only fails when the OS has no entropy source at all; nothing
        // sensible can run then.
        #[allow(clippy::expect_used)]
        getrandom::fill(bytes.as_mut()).expect("the operating system's random source failed");
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self::from_bytes(&bytes)
    }

    /// Builds the key from its 32 bytes (any 32 bytes are a key: x25519 clamps them
    /// when it uses them, as WireGuard does).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            secret: x25519::StaticSecret::from(*bytes),
        }
    }

    /// The 32 secret bytes, to be stored. Keep the copy short-lived.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key, as it appears in contracts.
    pub fn public(&self) -> WireGuardKey {
        WireGuardKey(self.x25519_public().to_bytes())
    }

    /// The public key as boringtun's type.
    pub fn x25519_public(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(&self.secret)
    }

    /// A copy of the secret for boringtun (`Tunn::new` takes it by value). The copy
    /// zeroizes itself on drop as well.
    pub fn to_static_secret(&self) -> x25519::StaticSecret {
        self.secret.clone()
    }
}

impl fmt::Debug for WireGuardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireGuardSecret")
            .field("public", &STANDARD.encode(self.public().0))
            .finish_non_exhaustive()
    }
}

/// A peer's public key from a contract, as boringtun's type.
pub fn x25519_public(key: &WireGuardKey) -> x25519::PublicKey {
    x25519::PublicKey::from(key.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = WireGuardSecret::from_bytes(&[0x42; 32]);
        let debug = format!("{key:?}");
        assert!(debug.contains(&STANDARD.encode(key.public().0)), "{debug}");
        assert!(!debug.contains(&STANDARD.encode([0x42u8; 32])), "{debug}");
        assert!(!debug.contains("66, 66"), "{debug}");
    }

    #[test]
    fn generated_keys_are_clamped_distinct_and_round_trip() {
        let a = WireGuardSecret::generate();
        let b = WireGuardSecret::generate();
        assert_ne!(a.public(), b.public());
        let bytes = a.to_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        assert_eq!(WireGuardSecret::from_bytes(&bytes).public(), a.public());
        assert_eq!(x25519_public(&a.public()), a.x25519_public());
    }

    #[test]
    fn matches_the_rfc7748_test_vector() {
        // RFC 7748 §6.1: Alice's private and public key.
        let secret: [u8; 32] =
            hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            WireGuardSecret::from_bytes(&secret).public(),
            WireGuardKey(public)
        );
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
