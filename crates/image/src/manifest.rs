//! Manifests, indexes and image configs, OCI and Docker schema2 alike, and
//! the choice of one platform's manifest from an index.
//!
//! Docker's schema2 manifest and manifest list have the same JSON shape as
//! OCI's image manifest and index (only media types differ), so both parse
//! into `oci-spec`'s types; the media type is kept next to them.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::error::{Error, Result};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every manifest media type berth accepts, for `Accept` headers.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Layer compression, from the layer's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (also Docker's `rootfs.diff.tar.gzip`).
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression of a layer media type, or an error for something that
/// is not a layer berth can unpack.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    // Non-distributable ("foreign") layers are ordinary layers fetched from
    // their URLs; the `.nondistributable.` infix does not change the format.
    let m = media_type.replace(".nondistributable", "");
    match m.as_str() {
        "application/vnd.oci.image.layer.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
        "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        _ => Err(Error::InvalidManifest {
            what: "manifest",
            reason: format!("unsupported layer media type {media_type}"),
        }),
    }
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A multi-platform index / manifest list.
    Index(Box<ImageIndex>),
    /// A single-platform manifest.
    Manifest(Box<ImageManifest>),
}

/// Parses a manifest or index. `media_type` is the Content-Type the
/// registry sent (or the descriptor's); the JSON's own `mediaType` is used
/// when it is missing, and the presence of `manifests`/`layers` last.
pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Parsed> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidManifest { what: "manifest", reason: format!("not JSON: {e}") })?;
    let declared = v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string);
    let mt = media_type.filter(|m| !m.is_empty() && *m != "application/json").map(str::to_string).or(declared);
    let is_index = match mt.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) if v.get("schemaVersion").and_then(|s| s.as_i64()) == Some(1) || other.contains("v1+prettyjws") => {
            return Err(Error::InvalidManifest {
                what: "manifest",
                reason: "Docker schema 1 manifests are not supported (deprecated since 2017)".into(),
            })
        }
        _ => v.get("manifests").is_some(),
    };
    if is_index {
        serde_json::from_value(v)
            .map(|i| Parsed::Index(Box::new(i)))
            .map_err(|e| Error::InvalidManifest { what: "index", reason: e.to_string() })
    } else {
        serde_json::from_value(v)
            .map(|m| Parsed::Manifest(Box::new(m)))
            .map_err(|e| Error::InvalidManifest { what: "manifest", reason: e.to_string() })
    }
}

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Go's GOARCH spelling: `amd64`, `arm64`, `arm`, …
    pub arch: String,
    /// `v7`, `v8`, … when it matters.
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// This machine's platform, in Go's spelling (`linux/amd64`,
    /// `linux/arm64/v8`).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), arch: arch.into(), variant: variant.map(str::to_string) }
    }

    /// Parses `os/arch[/variant]` (as `--platform` takes it).
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidManifest { what: "platform", reason: format!("{s:?} is not os/arch[/variant]") };
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: normalize_arch(arch), variant: None })
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform { os: os.to_string(), arch: normalize_arch(arch), variant: Some(variant.to_string()) })
            }
            _ => Err(bad()),
        }
    }

    fn matches(&self, d: &Descriptor) -> bool {
        let Some(p) = d.platform() else { return false };
        if p.os().to_string() != self.os || normalize_arch(&p.architecture().to_string()) != self.arch {
            return false;
        }
        match (&self.variant, p.variant()) {
            (Some(want), Some(have)) => want == have,
            // arm64 images often omit "v8".
            (Some(want), None) => self.arch == "arm64" && want == "v8",
            (None, _) => true,
        }
    }
}

fn normalize_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

/// Picks the manifest for `want` from `index` (first match, as Docker).
pub fn select<'a>(index: &'a ImageIndex, want: &Platform, reference: &str) -> Result<&'a Descriptor> {
    index.manifests().iter().find(|d| want.matches(d)).ok_or_else(|| Error::NoMatchingPlatform {
        wanted: want.to_string(),
        reference: reference.to_string(),
        available: index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s.push('/');
                    s.push_str(v);
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":10,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":10,"platform":{"os":"linux","architecture":"arm64"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":10,"platform":{"os":"linux","architecture":"amd64"}}]}"#;

    #[test]
    fn selects_platforms() {
        let Parsed::Index(idx) = parse(INDEX.as_bytes(), None).expect("parse") else { panic!("not an index") };
        let pick = |p: &str| select(&idx, &Platform::parse(p).expect("platform"), "x").map(|d| d.digest().to_string());
        assert!(pick("linux/amd64").expect("amd64").contains("cccc"));
        assert!(pick("linux/arm64/v8").expect("arm64").contains("bbbb"));
        assert!(pick("linux/arm/v7").expect("arm").contains("aaaa"));
        let err = pick("linux/s390x").expect_err("s390x");
        assert!(err.to_string().contains("linux/amd64"), "{err}");
    }

    #[test]
    fn media_types_and_schema1() {
        assert_eq!(layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").expect("zstd"), Compression::Zstd);
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").expect("foreign"),
            Compression::Gzip
        );
        assert!(layer_compression("text/plain").is_err());
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(parse(s1, Some("application/vnd.docker.distribution.manifest.v1+prettyjws")).is_err());
    }
}
