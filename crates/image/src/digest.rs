//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`) and a streaming
//! verifier that hashes data as it passes through.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};

/// A digest algorithm berth accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the registry default.
    Sha256,
    /// SHA-512, allowed by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings and store paths.
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
}

/// A validated digest: algorithm plus lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part (safe to use as a file name: validated lowercase hex).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// SHA-256 of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest { algorithm: Algorithm::Sha256, hex: hex::encode(Sha256::digest(data)) }
    }

    /// The digest of `data` with this digest's algorithm.
    pub fn of_same_kind(&self, data: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm);
        h.update(data);
        h.finish()
    }

    /// Checks that `data` hashes to this digest.
    pub fn verify(&self, data: &[u8]) -> Result<()> {
        let actual = self.of_same_kind(data);
        if &actual == self {
            Ok(())
        } else {
            Err(Error::DigestMismatch { expected: self.to_string(), actual: actual.to_string() })
        }
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        let bad = |reason| Error::InvalidDigest { digest: s.to_string(), reason };
        let (alg, hex) = s.split_once(':').ok_or_else(|| bad("expected <algorithm>:<hex>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad("unsupported algorithm (sha256 and sha512 are)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(bad("wrong length for the algorithm"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("not lowercase hex"));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hasher::Sha256(_) => "Hasher(sha256)",
            Hasher::Sha512(_) => "Hasher(sha512)",
        })
    }
}

impl Hasher {
    /// A fresh hash state.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest { algorithm: Algorithm::Sha256, hex: hex::encode(h.finalize()) },
            Hasher::Sha512(h) => Digest { algorithm: Algorithm::Sha512, hex: hex::encode(h.finalize()) },
        }
    }
}

/// A reader that hashes and counts what passes through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader { inner, hasher: Hasher::new(algorithm), count: 0 }
    }

    /// The digest and byte count of what was read.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter { inner, hasher: Hasher::new(algorithm), count: 0 }
    }

    /// The inner writer, digest and byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d: Digest =
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".parse().expect("parse");
        assert_eq!(d, Digest::sha256_of(b"foo"));
        assert_eq!(d.to_string(), "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae");
        d.verify(b"foo").expect("verify");
        assert!(d.verify(b"bar").is_err());
    }

    #[test]
    fn refuses_bad_digests() {
        for bad in [
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE",
            "sha256:../../../../etc/passwd/../../../../../../../../../../../../../../../../../../../..",
            "nocolon",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sha512_works() {
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"foo");
        let d = h.finish();
        assert_eq!(d.hex().len(), 128);
        let back: Digest = d.to_string().parse().expect("parse");
        back.verify(b"foo").expect("verify");
    }
}
