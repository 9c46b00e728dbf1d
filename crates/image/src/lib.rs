//! berth-image: everything between a registry and a container's root
//! filesystem.
//!
//! - [`digest`]: content digests (sha256, sha512) and streaming verifiers.
//! - [`content`]: the content store, blobs addressed by digest, written
//!   temp → verify → fsync → rename so a bad or partial blob is never
//!   visible.
//! - [`manifest`]: OCI and Docker schema2 manifests, indexes and configs;
//!   platform selection.
//! - [`unpack`]: safe extraction of a layer tar into a directory, with OCI
//!   whiteouts turned into overlayfs ones.
//! - [`snapshot`]: unpacked layers keyed by chain ID, stacked with
//!   overlayfs into container root filesystems.
//! - [`registry`]: the OCI distribution client (pull, push, auth).
//! - [`reference`]: the image reference grammar and Docker's normalization.
//! - [`docker_config`]: `login`/`logout` writes to docker's config.json.
//! - [`images`]: image metadata in an embedded database (redb).
//! - [`store`]: the facade users drive: pull, resolve, tag, gc.
//! - [`push`]: uploading a stored image to a registry.
//! - [`commit`]: a container's overlay upper dir becomes an image layer.
//! - [`import`]: a rootfs tarball becomes an image (`import --change`).
//! - [`archive`]: `save`/`load` of docker-archive, oci-archive and OCI
//!   layout directories.
//! - [`history`]: an image's history with layer sizes.
//! - [`docker_view`]: Docker-shaped inspect and rmi, shared by CLI and API.
//!
//! Library code is synchronous except [`registry`] (tokio); callers in an
//! async context run store and unpack work on blocking threads.

pub mod archive;
pub mod commit;
pub mod content;
pub mod digest;
pub mod docker_config;
pub mod docker_view;
pub mod error;
pub mod history;
pub mod images;
pub mod import;
pub mod manifest;
pub mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
