//! OCI distribution client: manifests and blobs from and to registries, on
//! top of `oci-client`.
//!
//! - [`ImageRef`]: a Docker-normalized image reference
//!   (`busybox` → `docker.io/library/busybox:latest`).
//! - [`Registry`]: fetch/push manifests and blobs, with Basic and bearer-token
//!   auth (oci-client's auth flow), credentials from the options or from
//!   docker's `config.json`, pull mirrors, and retries of transient failures.
//!
//! Plain HTTP is only ever used for loopback registries (127.0.0.0/8, ::1,
//! localhost) and for registries listed as insecure; see
//! [`plain_http_allowed`].
//!
//! Where oci-client 0.18 falls short, this module works around it:
//! - `pull_manifest_raw` does not return the response's Content-Type, so the
//!   media type is read from the manifest's own `mediaType` field (and, when
//!   that is absent as OCI allows, inferred from its shape).
//! - `ClientProtocol::HttpsExcept` takes an exact list of hosts, so each
//!   registry host gets its own `oci_client::Client` (cheap, cached) whose
//!   protocol is decided by [`plain_http_allowed`].
//! - `mount_blob` reports a 202 (mount refused, upload session opened
//!   instead) as a spec violation error; it is turned into `Ok(false)`.
//! - There is no retry in oci-client; [`Registry`] retries connect errors,
//!   timeouts, 5xx and 429 itself.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ACCEPTED, OCI_INDEX, OCI_MANIFEST};

/// Docker Hub's name in references.
const DOCKER_HUB: &str = "docker.io";
/// How many times a transient failure is retried.
const RETRIES: u32 = 3;
/// First retry delay; doubles each time.
const BACKOFF: Duration = Duration::from_millis(250);
/// Blobs up to this size are pushed in one PUT; larger ones in chunks.
const MONOLITHIC_MAX: usize = 4 * 1024 * 1024;

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

// ---------------------------------------------------------------------------
// ImageRef
// ---------------------------------------------------------------------------

/// A parsed, Docker-normalized image reference (busybox -> docker.io/library/busybox:latest).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses `name[:tag][@digest]` with Docker's normalization: no registry
    /// means docker.io, a single-component Docker Hub name gets `library/`,
    /// no tag and no digest means `:latest`.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let bad = |reason: String| Error::InvalidReference { reference: s.to_string(), reason };
        let p = crate::reference::parse(s).map_err(bad)?;
        if let Some(d) = &p.digest {
            // The store takes sha256/sha512 in lowercase hex only.
            d.parse::<Digest>().map_err(|e| bad(format!("invalid digest: {e}")))?;
        }
        let inner = match (p.tag, p.digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(p.registry, p.repository, t, d),
            (None, Some(d)) => Reference::with_digest(p.registry, p.repository, d),
            (Some(t), None) => Reference::with_tag(p.registry, p.repository, t),
            (None, None) => Reference::with_tag(p.registry, p.repository, "latest".into()),
        };
        Ok(ImageRef { inner })
    }

    /// The registry host[:port]: "docker.io" for Docker Hub refs, "127.0.0.1:5000", …
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry: "library/busybox".
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest (`sha256:<hex>`), if pinned.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// Docker's short form: "busybox:latest", "user/app:1", "127.0.0.1:5000/x/y:tag".
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = self.tag() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = self.digest() {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The short form of the repository alone, without tag or digest ("busybox").
    pub fn familiar_name(&self) -> String {
        if self.registry() == DOCKER_HUB {
            self.repository().strip_prefix("library/").unwrap_or(self.repository()).to_string()
        } else {
            format!("{}/{}", self.registry(), self.repository())
        }
    }

    /// Same repository, pinned to `d` (the tag is dropped).
    pub fn with_digest(&self, d: &Digest) -> ImageRef {
        ImageRef { inner: Reference::with_digest(self.registry().into(), self.repository().into(), d.to_string()) }
    }

    /// Same repository, with `tag` (the digest is dropped). `tag` is not
    /// validated; use [`ImageRef::parse`] for user input.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef { inner: Reference::with_tag(self.registry().into(), self.repository().into(), tag.into()) }
    }

    /// Same registry, another repository, same tag/digest.
    pub fn with_repository(&self, repository: &str) -> ImageRef {
        let inner = match (self.tag(), self.digest()) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(self.registry().into(), repository.into(), t.into(), d.into())
            }
            (None, Some(d)) => Reference::with_digest(self.registry().into(), repository.into(), d.into()),
            (t, None) => Reference::with_tag(self.registry().into(), repository.into(), t.unwrap_or("latest").into()),
        };
        ImageRef { inner }
    }

    /// The underlying oci-client reference.
    pub fn as_reference(&self) -> &Reference {
        &self.inner
    }

    /// What a manifest request names: "x/y:tag" or "x/y@sha256:…".
    fn manifest_name(&self) -> String {
        match (self.digest(), self.tag()) {
            (Some(d), _) => format!("{}@{d}", self.repository()),
            (None, Some(t)) => format!("{}:{t}", self.repository()),
            (None, None) => format!("{}:latest", self.repository()),
        }
    }
}

impl fmt::Display for ImageRef {
    /// The full form: docker.io/library/busybox:latest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

// ---------------------------------------------------------------------------
// Options and credentials
// ---------------------------------------------------------------------------

/// Credentials for a registry.
#[derive(Clone)]
pub enum Credentials {
    /// No credentials.
    Anonymous,
    /// HTTP Basic credentials (also used to obtain bearer tokens).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                f.debug_struct("Basic").field("username", username).field("password", &"<redacted>").finish()
            }
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries reachable over plain HTTP besides loopback ones ("host:port",
    /// or a bare "host" for any port on it).
    pub insecure: Vec<String>,
    /// Mirrors per registry host (tried in order before the registry itself,
    /// for pulls only). A mirror written `http://host:port` may use plain HTTP.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Explicit credentials per registry host; when absent, read
    /// ~/.docker/config.json `auths` (base64 "auth" or username/password
    /// fields; credential helpers are not supported and are named in
    /// authentication errors).
    pub credentials: HashMap<String, Credentials>,
    /// Path of a docker config.json to read instead of
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json.
    pub docker_config: Option<PathBuf>,
}

/// Whether `host` ("host[:port]") may be reached over plain HTTP: loopback
/// registries (127.0.0.0/8, ::1, localhost) always, others only when listed in
/// `insecure` (as "host:port", or as a bare "host" meaning any port).
pub fn plain_http_allowed(host: &str, insecure: &[String]) -> bool {
    let host = canonical_host(host);
    let bare = strip_port(&host);
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure.iter().any(|entry| {
            let entry = canonical_host(entry);
            entry == host || (!has_port(&entry) && entry == bare)
        })
}

/// Normalizes a registry name as written in options or config files:
/// lowercase, no scheme, no path, Docker Hub aliases folded to "docker.io".
pub(crate) fn canonical_host(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => s,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn has_port(host: &str) -> bool {
    strip_port(host).len() != host.trim_start_matches('[').trim_end_matches(']').len() || host.contains("]:")
}

/// What was learnt from docker's config.json.
#[derive(Debug, Default)]
struct DockerConfig {
    /// Canonical host → credentials.
    auths: HashMap<String, Credentials>,
    /// Canonical host → credential helper named for it (unsupported).
    helpers: HashMap<String, String>,
    /// `credsStore` (unsupported).
    store: Option<String>,
    /// The file read, for messages.
    path: Option<PathBuf>,
    /// Why it could not be read, if it exists but is unreadable or malformed.
    error: Option<String>,
}

/// Where docker's config.json is: `explicit`, else `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub(crate) fn docker_config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn load_docker_config(explicit: Option<&Path>) -> DockerConfig {
    let mut cfg = DockerConfig { path: docker_config_path(explicit), ..DockerConfig::default() };
    let Some(path) = cfg.path.clone() else { return cfg };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return cfg,
        Err(e) => {
            cfg.error = Some(format!("cannot read {}: {e}", path.display()));
            return cfg;
        }
    };
    let json: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(j) => j,
        Err(e) => {
            cfg.error = Some(format!("cannot parse {}: {e}", path.display()));
            return cfg;
        }
    };
    if let Some(auths) = json.get("auths").and_then(|a| a.as_object()) {
        for (key, entry) in auths {
            let creds = entry
                .get("auth")
                .and_then(|a| a.as_str())
                .filter(|a| !a.is_empty())
                .and_then(|a| {
                    let decoded = base64_decode(a)?;
                    let decoded = String::from_utf8(decoded).ok()?;
                    let (u, p) = decoded.split_once(':')?;
                    Some(Credentials::Basic { username: u.to_string(), password: p.to_string() })
                })
                .or_else(|| {
                    let u = entry.get("username")?.as_str()?;
                    let p = entry.get("password")?.as_str()?;
                    Some(Credentials::Basic { username: u.to_string(), password: p.to_string() })
                });
            match creds {
                Some(c) => {
                    cfg.auths.insert(canonical_host(key), c);
                }
                None if entry.get("identitytoken").is_some() => {
                    cfg.helpers.insert(canonical_host(key), "identitytoken (OAuth refresh token)".into());
                }
                None => {}
            }
        }
    }
    if let Some(helpers) = json.get("credHelpers").and_then(|h| h.as_object()) {
        for (key, helper) in helpers {
            if let Some(h) = helper.as_str() {
                cfg.helpers.entry(canonical_host(key)).or_insert_with(|| format!("docker-credential-{h}"));
            }
        }
    }
    cfg.store = json.get("credsStore").and_then(|s| s.as_str()).map(|s| format!("docker-credential-{s}"));
    cfg
}

/// Standard base64 (with or without padding), as Docker writes `auth`; None if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    base64::Engine::decode(&LENIENT, s.trim()).ok()
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

static CRYPTO: Once = Once::new();

/// Installs rustls' ring crypto provider as the process default (once; an
/// already installed provider is kept).
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An OCI distribution client for any number of registries.
pub struct Registry {
    opts: RegistryOptions,
    /// `opts.insecure` plus mirrors given with an http:// scheme.
    insecure: Vec<String>,
    docker_config: DockerConfig,
    /// (host as oci-client resolves it, monolithic push) → client.
    clients: Mutex<HashMap<(String, bool), Client>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// Where a pull is tried: a mirror or the registry itself.
struct Source {
    /// The reference rewritten to the mirror host (or the original).
    reference: Reference,
    /// Host for messages ("docker.io", "mirror:5000").
    name: String,
    mirror: bool,
}

impl Registry {
    /// A client with these settings. Docker's config.json is read once, here;
    /// its `auths` are used for hosts without explicit credentials.
    pub fn new(opts: RegistryOptions) -> Registry {
        install_crypto_provider();
        let mut insecure = opts.insecure.clone();
        for mirror in opts.mirrors.values().flatten() {
            if mirror.trim().starts_with("http://") {
                insecure.push(canonical_host(mirror));
            }
        }
        let docker_config = load_docker_config(opts.docker_config.as_deref());
        Registry { opts, insecure, docker_config, clients: Mutex::new(HashMap::new()) }
    }

    /// Whether requests to `host` go over plain HTTP with these options.
    pub fn uses_plain_http(&self, host: &str) -> bool {
        plain_http_allowed(host, &self.insecure)
    }

    /// The options this client was made with (to derive a client with
    /// per-request credentials).
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// The credentials used for `host`: explicit ones, else docker's config.json, else anonymous.
    pub fn credentials_for(&self, host: &str) -> Credentials {
        let host = canonical_host(host);
        self.opts
            .credentials
            .iter()
            .find(|(k, _)| canonical_host(k) == host)
            .map(|(_, c)| c.clone())
            .or_else(|| self.docker_config.auths.get(&host).cloned())
            .unwrap_or(Credentials::Anonymous)
    }

    /// Fetches a manifest or index by the ref's tag or digest: returns raw
    /// bytes, the media type, and its digest (sha256 of the bytes; when the
    /// ref is pinned by digest the bytes must verify against it, else
    /// [`Error::DigestMismatch`]). Mirrors are tried first.
    pub async fn fetch_manifest(&self, r: &ImageRef) -> Result<(Vec<u8>, String, Digest)> {
        let what = format!("manifest for {}", r.manifest_name());
        let pinned = r.digest().map(str::parse::<Digest>).transpose()?;
        let mut mirror_errors = Vec::new();
        for src in self.pull_sources(r) {
            let host = src.reference.resolve_registry().to_string();
            let res = async {
                let client = self.client_for(&host, false).await?;
                let auth = self.credentials_for(&host).to_auth();
                let (body, _) = retry(|| client.pull_manifest_raw(&src.reference, &auth, ACCEPTED))
                    .await
                    .map_err(|e| self.map_err(&src.name, &what, e))?;
                let digest = match &pinned {
                    Some(d) => {
                        d.verify(&body)?;
                        d.clone()
                    }
                    None => Digest::sha256_of(&body),
                };
                let media_type = manifest_media_type(&body)?;
                Ok::<_, Error>((body.to_vec(), media_type, digest))
            }
            .await;
            match res {
                Ok(v) => return Ok(v),
                Err(e) if src.mirror => mirror_errors.push(e.to_string()),
                Err(e) => return Err(with_mirror_errors(e, &mirror_errors)),
            }
        }
        Err(self.registry_err(r.registry(), format!("{what}: no source to pull from")))
    }

    /// Fetches a blob from byte `offset` on (Range request when offset > 0),
    /// as a stream of chunks. The caller verifies the digest. If the registry
    /// ignores the Range header, the first `offset` bytes are skipped here.
    pub async fn fetch_blob(&self, r: &ImageRef, d: &Digest, offset: u64) -> Result<BlobStream> {
        let what = format!("blob {d} in {}", r.repository());
        let digest = d.to_string();
        let mut mirror_errors = Vec::new();
        for src in self.pull_sources(r) {
            let host = src.reference.resolve_registry().to_string();
            let res = async {
                let client = self.client_for(&host, false).await?;
                let (stream, skip) = retry(|| async {
                    if offset == 0 {
                        Ok((client.pull_blob_stream(&src.reference, digest.as_str()).await?, 0))
                    } else {
                        match client.pull_blob_stream_partial(&src.reference, digest.as_str(), offset, None).await? {
                            BlobResponse::Partial(s) => Ok((s, 0)),
                            BlobResponse::Full(s) => Ok((s, offset)),
                        }
                    }
                })
                .await
                .map_err(|e| self.map_err(&src.name, &what, e))?;
                let name = src.name.clone();
                let what = what.clone();
                let mut remaining = skip;
                let stream = stream.stream.filter_map(move |item| {
                    let out = match item {
                        Ok(mut b) => {
                            if remaining >= b.len() as u64 {
                                remaining -= b.len() as u64;
                                None
                            } else {
                                let b = b.split_off(remaining as usize);
                                remaining = 0;
                                Some(Ok(b))
                            }
                        }
                        Err(e) => Some(Err(stream_error(&name, &what, e))),
                    };
                    futures_util::future::ready(out)
                });
                Ok::<BlobStream, Error>(Box::pin(stream))
            }
            .await;
            match res {
                Ok(v) => return Ok(v),
                Err(e) if src.mirror => mirror_errors.push(e.to_string()),
                Err(e) => return Err(with_mirror_errors(e, &mirror_errors)),
            }
        }
        Err(self.registry_err(r.registry(), format!("{what}: no source to pull from")))
    }

    /// Whether the registry has the blob in the ref's repository (HEAD).
    pub async fn blob_exists(&self, r: &ImageRef, d: &Digest) -> Result<bool> {
        let what = format!("checking blob {d} in {}", r.repository());
        let reference = r.as_reference();
        let client = self.client_for(reference.resolve_registry(), false).await?;
        let digest = d.to_string();
        retry(|| client.blob_exists(reference, &digest)).await.map_err(|e| self.map_err(r.registry(), &what, e))
    }

    /// Tries a cross-repository mount of `d` from repository `from` (same
    /// registry) into the ref's repository; Ok(true) if mounted, Ok(false) if
    /// the registry declined (the blob must then be uploaded).
    pub async fn mount_blob(&self, r: &ImageRef, from: &str, d: &Digest) -> Result<bool> {
        let what = format!("mounting blob {d} from {from} into {}", r.repository());
        let reference = r.as_reference();
        let client = self.client_for(reference.resolve_registry(), false).await?;
        let source = Reference::with_tag(r.registry().into(), from.into(), "latest".into());
        let digest = d.to_string();
        match retry(|| client.mount_blob(reference, &source, &digest)).await {
            Ok(()) => Ok(true),
            // 202 Accepted: not mounted, an upload session was opened instead
            // (left to expire; oci-client does not expose its location).
            Err(OciDistributionError::SpecViolationError(_)) => Ok(false),
            Err(e) => Err(self.map_err(r.registry(), &what, e)),
        }
    }

    /// Uploads a blob into the ref's repository: one PUT for small blobs,
    /// 4 MiB PATCH chunks for large ones. The digest is checked here and by
    /// the registry.
    pub async fn push_blob(&self, r: &ImageRef, d: &Digest, data: Bytes) -> Result<()> {
        d.verify(&data)?;
        let what = format!("uploading blob {d} to {}", r.repository());
        let reference = r.as_reference();
        // oci-client refuses empty monolithic uploads; the chunked path
        // handles them (POST, then PUT ?digest= with no body).
        let mono = !data.is_empty() && data.len() <= MONOLITHIC_MAX;
        let client = self.client_for(reference.resolve_registry(), mono).await?;
        let digest = d.to_string();
        retry(|| client.push_blob(reference, data.clone(), &digest))
            .await
            .map(drop)
            .map_err(|e| self.map_err(r.registry(), &what, e))
    }

    /// Uploads the blob stored at `path` (`size` bytes, already verified
    /// as `d`). Small blobs go in one PUT; larger ones are streamed from
    /// the file in 4 MiB PATCH chunks, so memory stays flat whatever the
    /// layer size, and the registry checks the digest at the end.
    /// `progress` is told the bytes sent so far. A transient failure
    /// restarts the upload from the file.
    pub async fn push_blob_file(
        &self,
        r: &ImageRef,
        d: &Digest,
        path: &Path,
        size: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let io_err = |e: std::io::Error| Error::Io { context: format!("reading blob {d} for upload"), source: e };
        if size <= MONOLITHIC_MAX as u64 {
            let data = tokio::fs::read(path).await.map_err(io_err)?;
            self.push_blob(r, d, data.into()).await?;
            progress(size);
            return Ok(());
        }
        let what = format!("uploading blob {d} to {}", r.repository());
        let reference = r.as_reference();
        let client = self.client_for(reference.resolve_registry(), false).await?;
        let digest = d.to_string();
        let mut attempt = 0;
        loop {
            let file = tokio::fs::File::open(path).await.map_err(io_err)?;
            let (tx, rx) = tokio::sync::watch::channel(0u64);
            let chunks = futures_util::stream::unfold((file, 0u64, tx), |(mut file, sent, tx)| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; MONOLITHIC_MAX];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => return Some((Err(OciDistributionError::IoError(e)), (file, sent, tx))),
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                let sent = sent + filled as u64;
                let _ = tx.send(sent);
                Some((Ok(Bytes::from(buf)), (file, sent, tx)))
            });
            let upload = client.push_blob_stream(reference, chunks, &digest, Some(size));
            tokio::pin!(upload);
            let mut rx = rx;
            // Until the stream ends (and drops the sender), report progress.
            let mut reporting = true;
            let res = loop {
                tokio::select! {
                    res = &mut upload => break res,
                    changed = rx.changed(), if reporting => match changed {
                        Ok(()) => progress(*rx.borrow()),
                        Err(_) => reporting = false,
                    },
                }
            };
            match res {
                Ok(_) => {
                    progress(size);
                    return Ok(());
                }
                Err(e) if attempt < RETRIES && is_transient(&e) => {
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.map_err(r.registry(), &what, e)),
            }
        }
    }

    /// Uploads a manifest/index with its media type under the ref's tag (or
    /// its digest when it has no tag); returns its digest. A ref pinned by
    /// digest must match the bytes.
    pub async fn push_manifest(&self, r: &ImageRef, bytes: Vec<u8>, media_type: &str) -> Result<Digest> {
        let digest = match r.digest() {
            Some(d) => {
                let d: Digest = d.parse()?;
                d.verify(&bytes)?;
                d
            }
            None => Digest::sha256_of(&bytes),
        };
        let what = format!("uploading manifest {}", r.manifest_name());
        let reference = match r.tag() {
            Some(t) => Reference::with_tag(r.registry().into(), r.repository().into(), t.into()),
            // oci-client's workaround for registries that send no Location
            // strips the tag (default "latest") off the URL and panics if it
            // is not there; naming the digest as the tag too keeps it sound.
            None => Reference::with_tag_and_digest(
                r.registry().into(),
                r.repository().into(),
                digest.to_string(),
                digest.to_string(),
            ),
        };
        if media_type.is_empty() || !media_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(self.registry_err(r.registry(), format!("{what}: bad media type {media_type:?}")));
        }
        let client = self.client_for(reference.resolve_registry(), false).await?;
        let body = Bytes::from(bytes);
        retry(|| async {
            // The header type is oci-client's (http's); it is only named by inference.
            let content_type =
                media_type.parse().map_err(|_| OciDistributionError::GenericError(Some("bad media type".into())))?;
            client.push_manifest_raw(&reference, body.clone(), content_type).await
        })
        .await
        .map_err(|e| self.map_err(r.registry(), &what, e))?;
        Ok(digest)
    }

    /// Checks `creds` against the registry at `host`, as `docker login`
    /// does before saving them: a bearer-token registry must issue a token
    /// for them; a basic-auth one must accept them on a request that needs
    /// authentication. Err names why they were refused.
    pub async fn login(&self, host: &str, creds: &Credentials) -> Result<()> {
        let host = canonical_host(host);
        let what = format!("login to {host}");
        // Fresh client: cached ones hold the credentials they started with.
        let client = self.new_client(&host, false)?;
        let auth = creds.to_auth();
        // Any repository will do: the answer is about the credentials.
        let probe = Reference::with_tag(host.clone(), "berth/login-check".into(), "latest".into());
        let refused = |detail: String| {
            self.registry_err(&host, format!("{what}: unauthorized: incorrect username or password ({detail})"))
        };
        match retry(|| client.auth(&probe, &auth, RegistryOperation::Pull)).await {
            // A token was issued for these credentials.
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(OciDistributionError::AuthenticationFailure(m)) => return Err(refused(clip(&m))),
            Err(e) => return Err(self.map_err(&host, &what, e)),
        }
        match retry(|| client.list_tags(&probe, &auth, Some(1), None)).await {
            Ok(_) => Ok(()),
            Err(OciDistributionError::UnauthorizedError { url }) => Err(refused(format!("401 from {url}"))),
            Err(OciDistributionError::AuthenticationFailure(m)) => Err(refused(clip(&m))),
            // 404 and friends: the credentials were accepted, the probe
            // repository just does not exist.
            Err(OciDistributionError::RegistryError { envelope, url })
                if envelope.errors.iter().any(|e| e.code == OciErrorCode::Unauthorized) =>
            {
                Err(refused(format!("401 from {url}")))
            }
            Err(OciDistributionError::RegistryError { .. }) => Ok(()),
            Err(OciDistributionError::ServerError { code: 401, url, .. }) => Err(refused(format!("401 from {url}"))),
            Err(OciDistributionError::ServerError { code, .. }) if code < 500 => Ok(()),
            Err(e) => Err(self.map_err(&host, &what, e)),
        }
    }

    // -- internals ----------------------------------------------------------

    /// The places to pull `r` from: its mirrors in order, then the registry.
    fn pull_sources(&self, r: &ImageRef) -> Vec<Source> {
        let registry = canonical_host(r.registry());
        let mut out = Vec::new();
        for (key, mirrors) in &self.opts.mirrors {
            if canonical_host(key) != registry {
                continue;
            }
            for m in mirrors {
                let host = canonical_host(m);
                if host.is_empty() || host == registry {
                    continue;
                }
                let reference = match (r.tag(), r.digest()) {
                    (_, Some(d)) => Reference::with_digest(host.clone(), r.repository().into(), d.into()),
                    (t, None) => Reference::with_tag(host.clone(), r.repository().into(), t.unwrap_or("latest").into()),
                };
                out.push(Source { reference, name: host, mirror: true });
            }
        }
        out.push(Source { reference: r.as_reference().clone(), name: r.registry().to_string(), mirror: false });
        out
    }

    /// The oci-client client for `host` (as `Reference::resolve_registry`
    /// names it), with its credentials stored.
    async fn client_for(&self, host: &str, monolithic: bool) -> Result<Client> {
        let key = (host.to_string(), monolithic);
        let existing = self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let client = match existing {
            Some(c) => c,
            None => {
                let c = self.new_client(host, monolithic)?;
                self.clients.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(c).clone()
            }
        };
        client.store_auth_if_needed(host, &self.credentials_for(host).to_auth()).await;
        Ok(client)
    }

    /// A new HTTP client for `host` (no credentials stored yet).
    fn new_client(&self, host: &str, monolithic: bool) -> Result<Client> {
        let protocol = if self.uses_plain_http(host) {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: monolithic,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| self.registry_err(host, format!("cannot set up an HTTP client: {e}")))
    }

    fn registry_err(&self, registry: &str, reason: String) -> Error {
        Error::Registry { registry: registry.to_string(), reason }
    }

    /// Why `host` may lack working credentials, for unauthorized errors.
    fn auth_hint(&self, host: &str) -> String {
        let canon = canonical_host(host);
        let mut hint = match self.credentials_for(host) {
            Credentials::Basic { username, .. } => format!(" (credentials for user {username:?} were refused)"),
            Credentials::Anonymous => format!(" (no credentials configured for {host})"),
        };
        if matches!(self.credentials_for(host), Credentials::Anonymous) {
            let cfg = &self.docker_config;
            let config =
                cfg.path.as_ref().map_or_else(|| "docker config.json".to_string(), |p| p.display().to_string());
            if let Some(h) = cfg.helpers.get(&canon) {
                hint.push_str(&format!(
                    "; {config} names {h} for it, which berth does not support: add an `auths` entry"
                ));
            } else if let Some(s) = &cfg.store {
                hint.push_str(&format!(
                    "; {config} uses the credential store {s}, which berth does not support: add an `auths` entry"
                ));
            }
            if let Some(e) = &cfg.error {
                hint.push_str(&format!("; {e}"));
            }
        }
        hint
    }

    /// Turns an oci-client error into an [`Error`] naming the registry and what failed.
    fn map_err(&self, registry: &str, what: &str, e: OciDistributionError) -> Error {
        let reason = match e {
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                return Error::DigestMismatch { expected, actual };
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                let message = first.map(|e| e.message.clone()).filter(|m| !m.is_empty());
                match first.map(|e| &e.code) {
                    Some(
                        OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound,
                    ) => format!("{what} not found"),
                    Some(OciErrorCode::Unauthorized) => format!(
                        "{what}: unauthorized: {}{}",
                        message.as_deref().unwrap_or("authentication required"),
                        self.auth_hint(registry)
                    ),
                    Some(OciErrorCode::Denied) => format!(
                        "{what}: denied: {}{}",
                        message.as_deref().unwrap_or("requested access to the resource is denied"),
                        self.auth_hint(registry)
                    ),
                    Some(code) => {
                        let code = serde_json::to_value(code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_else(|| format!("{code:?}"));
                        format!("{what}: {code}: {}", message.unwrap_or_default())
                    }
                    None => format!("{what}: registry error"),
                }
            }
            OciDistributionError::UnauthorizedError { .. } => {
                format!("{what}: unauthorized: authentication required{}", self.auth_hint(registry))
            }
            OciDistributionError::AuthenticationFailure(msg) => {
                format!("{what}: authentication failed: {}{}", clip(&msg), self.auth_hint(registry))
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                404 => format!("{what} not found"),
                401 => format!("{what}: unauthorized: authentication required{}", self.auth_hint(registry)),
                403 => format!("{what}: denied{}", self.auth_hint(registry)),
                _ => format!("{what}: HTTP {code}: {}", clip(&message)),
            },
            OciDistributionError::RequestError(re) => {
                let status = re.status().map(|s| s.as_u16());
                let chain = error_chain(&re);
                match status {
                    Some(404) => format!("{what} not found"),
                    Some(401) => format!("{what}: unauthorized: authentication required{}", self.auth_hint(registry)),
                    Some(403) => format!("{what}: denied{}", self.auth_hint(registry)),
                    Some(code) => format!("{what}: HTTP {code}"),
                    None => {
                        let lower = chain.to_ascii_lowercase();
                        let hint = if !self.uses_plain_http(registry)
                            && (lower.contains("tls") || lower.contains("certificate") || lower.contains("handshake"))
                        {
                            " (if this registry only speaks plain HTTP, list it as an insecure registry)"
                        } else {
                            ""
                        };
                        if re.is_connect() {
                            format!("{what}: cannot connect: {}{hint}", root_cause(&re))
                        } else if re.is_timeout() {
                            format!("{what}: timed out: {chain}")
                        } else {
                            format!("{what}: request failed: {chain}{hint}")
                        }
                    }
                }
            }
            other => format!("{what}: {}", error_chain(&other)),
        };
        self.registry_err(registry, reason)
    }
}

/// An error from a blob stream, with a digest mismatch kept as such.
fn stream_error(registry: &str, what: &str, e: std::io::Error) -> Error {
    if let Some(DigestError::VerificationError { expected, actual }) =
        e.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        return Error::DigestMismatch { expected: expected.clone(), actual: actual.clone() };
    }
    Error::Registry { registry: registry.to_string(), reason: format!("reading {what}: {}", error_chain(&e)) }
}

fn with_mirror_errors(e: Error, mirror_errors: &[String]) -> Error {
    if mirror_errors.is_empty() {
        return e;
    }
    match e {
        Error::Registry { registry, reason } => {
            Error::Registry { registry, reason: format!("{reason} (mirrors failed too: {})", mirror_errors.join("; ")) }
        }
        other => other,
    }
}

/// An error and its sources, "a: b: c", without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// The innermost source's message.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Whether retrying might help.
fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(re) => {
            re.is_connect()
                || re.is_timeout()
                || re.status().is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
                || (re.status().is_none() && (re.is_request() || re.is_body()))
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| e.code == OciErrorCode::Toomanyrequests)
        }
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Runs `f` until it succeeds, fails for good, or has been retried [`RETRIES`] times.
async fn retry<T, F, Fut>(mut f: F) -> std::result::Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if attempt < RETRIES && is_transient(&e) => {
                tokio::time::sleep(BACKOFF * 2u32.pow(attempt)).await;
                attempt += 1;
            }
            res => return res,
        }
    }
}

/// The media type of a manifest from its own `mediaType`, or from its shape
/// when absent (oci-client does not expose the response's Content-Type).
fn manifest_media_type(body: &[u8]) -> Result<String> {
    let bad = |reason: String| Error::InvalidManifest { what: "manifest", reason };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    if let Some(mt) = json.get("mediaType").and_then(|m| m.as_str()) {
        return Ok(mt.to_string());
    }
    if json.get("schemaVersion").and_then(|v| v.as_i64()) == Some(1) {
        return Err(bad("Docker schema 1 manifests are not supported".into()));
    }
    if json.get("manifests").is_some() {
        Ok(OCI_INDEX.to_string())
    } else if json.get("config").is_some() && json.get("layers").is_some() {
        Ok(OCI_MANIFEST.to_string())
    } else {
        Err(bad("neither an image manifest nor an index (no mediaType, config or manifests)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style() {
        let r = ImageRef::parse("busybox").expect("parse");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");

        let r = ImageRef::parse("127.0.0.1:5000/x/y:tag").expect("parse");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.familiar(), "127.0.0.1:5000/x/y:tag");

        let r = ImageRef::parse("user/app:1.0").expect("parse");
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        assert_eq!(r.familiar(), "user/app:1.0");

        let r = ImageRef::parse("index.docker.io/library/alpine:3").expect("parse");
        assert_eq!(r.familiar(), "alpine:3");

        let d = Digest::sha256_of(b"x");
        let pinned = r.with_digest(&d);
        assert_eq!(pinned.digest(), Some(d.to_string().as_str()));
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.familiar(), format!("alpine@{d}"));
        assert_eq!(ImageRef::parse(&pinned.to_string()).expect("reparse"), pinned);
        assert_eq!(pinned.with_tag("edge").to_string(), "docker.io/library/alpine:edge");

        let r = ImageRef::parse("localhost/foo").expect("parse");
        assert_eq!(r.registry(), "localhost");
    }

    #[test]
    fn refuses_bad_references() {
        let reason = |s: &str| match ImageRef::parse(s) {
            Err(Error::InvalidReference { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        assert!(reason("Busybox").contains("lowercase"), "{}", reason("Busybox"));
        assert!(reason("example.com/Foo/bar:1").contains("lowercase"));
        assert!(reason("busybox:-bad").contains("invalid tag"), "{}", reason("busybox:-bad"));
        assert!(reason("busybox:a+b").contains("invalid tag"));
        assert!(reason("busybox@sha256:abc").contains("digest"), "{}", reason("busybox@sha256:abc"));
        let upper = format!("busybox@sha256:{}", "A".repeat(64));
        assert!(reason(&upper).contains("digest"), "{}", reason(&upper));
        assert!(reason("").contains("at least one"));
        assert!(ImageRef::parse("foo bar").is_err());
    }

    #[test]
    fn plain_http_decision() {
        let none: Vec<String> = vec![];
        assert!(plain_http_allowed("127.0.0.1:5000", &none));
        assert!(plain_http_allowed("127.1.2.3:80", &none));
        assert!(plain_http_allowed("localhost:5000", &none));
        assert!(plain_http_allowed("localhost", &none));
        assert!(plain_http_allowed("[::1]:5000", &none));
        assert!(!plain_http_allowed("10.0.0.1:5000", &none));
        assert!(!plain_http_allowed("registry.example.com", &none));
        assert!(!plain_http_allowed("docker.io", &none));
        assert!(!plain_http_allowed("localhost.example.com:5000", &none));
        let insecure = vec!["10.0.0.1:5000".to_string(), "reg.lan".to_string()];
        assert!(plain_http_allowed("10.0.0.1:5000", &insecure));
        assert!(!plain_http_allowed("10.0.0.1:5001", &insecure));
        assert!(plain_http_allowed("reg.lan:8080", &insecure));
        assert!(plain_http_allowed("reg.lan", &insecure));
    }

    #[test]
    fn base64_and_hosts() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("!!"), None);
        assert_eq!(canonical_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(canonical_host("http://Reg.example:5000/v2/"), "reg.example:5000");
    }

    /// Compile-time check: the futures can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(reg: &Registry, r: &ImageRef, d: &Digest) {
        fn is_send<T: Send>(_: T) {}
        fn is_sync<T: Send + Sync>() {}
        is_sync::<Registry>();
        is_send(reg.fetch_manifest(r));
        is_send(reg.fetch_blob(r, d, 0));
        is_send(reg.blob_exists(r, d));
        is_send(reg.mount_blob(r, "x", d));
        is_send(reg.push_blob(r, d, Bytes::new()));
        is_send(reg.push_manifest(r, Vec::new(), OCI_MANIFEST));
    }

    #[test]
    fn media_type_inference() {
        assert_eq!(manifest_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).expect("index"), OCI_INDEX);
        assert_eq!(manifest_media_type(br#"{"schemaVersion":2,"mediaType":"x/y","config":{}}"#).expect("mt"), "x/y");
        assert!(manifest_media_type(b"nope").is_err());
    }
}
