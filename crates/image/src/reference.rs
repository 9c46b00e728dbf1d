//! Image reference grammar (`[registry/]repository[:tag][@digest]`), as
//! docker/distribution's `reference` package defines it, with Docker's
//! normalization (`busybox` → `docker.io/library/busybox:latest`).
//!
//! Hand-written instead of oci-spec's `Reference::from_str`: that one
//! compiles one very large regular expression on first use, which costs
//! about 40 ms of CPU and 12 MB of memory in every process that parses a
//! name (each CLI call, and the daemon for its whole life). The grammar is
//! small and fixed; checking it directly is cheap.

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalized reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`, …
    pub registry: String,
    /// `library/busybox`, `x/y`.
    pub repository: String,
    /// The tag (`latest` when neither a tag nor a digest was given).
    pub tag: Option<String>,
    /// `algorithm:hex`, checked for shape only here.
    pub digest: Option<String>,
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == sep_start || !run(&mut i) {
            return false;
        }
    }
    true
}

/// `host[:port]`: DNS labels separated by dots, an IPv4 address, or an
/// IPv6 address in brackets; an optional numeric port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
pub fn valid_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && t.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// `algorithm:encoded`: `[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+` in
/// shape (which algorithms berth accepts is the digest parser's call).
fn valid_digest_shape(d: &str) -> bool {
    let Some((alg, enc)) = d.split_once(':') else { return false };
    let alg_ok = !alg.is_empty()
        && alg
            .split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    alg_ok && !enc.is_empty() && enc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
}

/// Parses and normalizes `s`; the error says which part is wrong.
pub fn parse(s: &str) -> Result<Parsed, String> {
    if s.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if !valid_digest_shape(d) {
            return Err(format!("invalid digest {d:?}"));
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(format!(
                "invalid tag {t:?}: a tag is 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
            ));
        }
    }
    if name.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    if name.len() > 255 {
        return Err("repository name must not be more than 255 characters".into());
    }
    // The first component is a registry when it looks like a host.
    let (registry, path) = match name.split_once('/') {
        Some((first, p)) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
            if !valid_domain(first) {
                return Err(format!("invalid registry host {first:?}"));
            }
            (first.to_string(), p)
        }
        _ => (DOCKER_HUB.to_string(), name),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    if !path.split('/').all(valid_path_component) {
        return Err("invalid reference format (expected [registry/]repository[:tag][@digest])".into());
    }
    if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid repository name: cannot be a 64-character hexadecimal string".into());
    }
    let registry =
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { DOCKER_HUB.into() } else { registry };
    let repository =
        if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
    let tag = match (tag, digest) {
        (None, None) => Some("latest".to_string()),
        (t, _) => t.map(str::to_string),
    };
    Ok(Parsed { registry, repository, tag, digest: digest.map(str::to_string) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(
            p("busybox"),
            Parsed {
                registry: "docker.io".into(),
                repository: "library/busybox".into(),
                tag: Some("latest".into()),
                digest: None
            }
        );
        assert_eq!(p("user/app:1.0").repository, "user/app");
        assert_eq!(p("index.docker.io/library/alpine:3").registry, "docker.io");
        let r = p("127.0.0.1:5000/x/y:tag");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "x/y", Some("tag"))
        );
        assert_eq!(p("localhost/foo").registry, "localhost");
        assert_eq!(p("[::1]:5000/foo").registry, "[::1]:5000");
        assert_eq!(p("Example.COM/foo").registry, "Example.COM", "hosts may be uppercase");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("busybox@{d}"));
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        let r = p(&format!("busybox:1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert!(p("a/b__c/d-e--f/g.h").repository.ends_with("g.h"));
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in [
            "",
            "Busybox",
            "example.com/Foo/bar:1",
            "busybox:-bad",
            "busybox:a+b",
            "foo bar",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "a-",
            "-a",
            "busybox@",
            "busybox@sha256",
            "exa_mple.com:80/x",
            "host:port/x",
            ":tag",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse(&"a".repeat(256)).is_err());
        assert!(parse(&"f".repeat(64)).is_err());
        assert!(parse("busybox:").is_err());
    }
}
