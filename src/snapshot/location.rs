//! Where a snapshot lives, parsed from the URL a user writes (`/dir/file`,
//! `file:///dir/file`, `s3://bucket/key`). Pure: no I/O, so every rule is unit-tested.
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A parsed snapshot location: one object (a file) or, for schedules, a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path on the controller's own volume.
    Local { path: PathBuf },
    /// An object (or, for a folder, a key prefix) in an S3-compatible bucket.
    S3 { bucket: String, key: String },
}

/// Why a location string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid snapshot location {location:?}: {reason}")]
pub struct LocationError {
    pub location: String,
    pub reason: &'static str,
}

/// Suffix of the checksum file written next to every saved snapshot.
pub const SIDECAR_SUFFIX: &str = ".sha256";

impl Location {
    /// Parses the location of one snapshot object.
    pub fn parse_file(s: &str) -> Result<Location, LocationError> {
        let loc = Self::parse(s)?;
        let err = |reason| LocationError { location: s.to_string(), reason };
        match &loc {
            Location::Local { .. } if s.ends_with('/') => Err(err("a snapshot file path must not end with '/'")),
            Location::Local { path } if path == Path::new("/") => Err(err("a snapshot file needs a file name")),
            Location::S3 { key, .. } if key.is_empty() || key.ends_with('/') => {
                Err(err("an s3:// snapshot location needs an object key after the bucket"))
            }
            _ => Ok(loc),
        }
    }

    /// Parses a folder (a schedule's `location`): a directory or a bucket with an optional prefix.
    pub fn parse_dir(s: &str) -> Result<Location, LocationError> {
        Self::parse(s)
    }

    fn parse(s: &str) -> Result<Location, LocationError> {
        let err = |reason| LocationError { location: s.to_string(), reason };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(err("the bucket name must be 3-63 lowercase letters, digits, '.' or '-'"));
            }
            if key.split('/').any(|part| part == "." || part == "..") {
                return Err(err("the key must not contain '.' or '..' segments"));
            }
            if key.contains("//") {
                return Err(err("the key must not contain empty segments ('//')"));
            }
            return Ok(Location::S3 { bucket: bucket.to_string(), key: key.to_string() });
        }
        let path = match s.strip_prefix("file://") {
            Some(rest) if rest.starts_with('/') => rest,
            Some(_) => return Err(err("a file URL must be file:///absolute/path")),
            None if s.starts_with('/') => s,
            None => return Err(err("use an absolute path, a file:/// URL or an s3:// URL")),
        };
        let path = PathBuf::from(path);
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            return Err(err("the path must not contain '.' or '..'"));
        }
        Ok(Location::Local { path })
    }

    /// The location of `name` inside this folder.
    pub fn child(&self, name: &str) -> Location {
        match self {
            Location::Local { path } => Location::Local { path: path.join(name) },
            Location::S3 { bucket, key } => {
                let prefix = key.trim_end_matches('/');
                let key = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
                Location::S3 { bucket: bucket.clone(), key }
            }
        }
    }

    /// Path segments: a local path's components after `/`, or an object key split on `/`.
    pub fn segments(&self) -> Vec<String> {
        match self {
            Location::Local { path } => path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect(),
            Location::S3 { key, .. } => key.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        }
    }

    /// The namespace a snapshot file belongs to: in `<root>/<namespace>/<folder>/<file>`,
    /// the third segment from the end. ConsulSnapshot objects save and restore only
    /// under their own namespace there, so no namespace reads or overwrites another's.
    pub fn namespace_segment(&self) -> Option<String> {
        let segments = self.segments();
        segments.len().checked_sub(3).map(|i| segments[i].clone())
    }

    /// Whether this location lies inside the folder `dir` (same store, whole segments).
    pub fn is_within(&self, dir: &Location) -> bool {
        let same_store = match (self, dir) {
            (Location::Local { .. }, Location::Local { .. }) => true,
            (Location::S3 { bucket: a, .. }, Location::S3 { bucket: b, .. }) => a == b,
            _ => false,
        };
        let (mine, theirs) = (self.segments(), dir.segments());
        same_store && mine.len() > theirs.len() && mine.starts_with(&theirs)
    }

    /// The checksum file that sits next to this snapshot (`<file>.sha256`).
    pub fn sidecar(&self) -> Location {
        match self {
            Location::Local { path } => {
                let mut p = path.clone().into_os_string();
                p.push(SIDECAR_SUFFIX);
                Location::Local { path: PathBuf::from(p) }
            }
            Location::S3 { bucket, key } => {
                Location::S3 { bucket: bucket.clone(), key: format!("{key}{SIDECAR_SUFFIX}") }
            }
        }
    }

    /// The last path segment (the file name the sidecar's line refers to).
    pub fn file_name(&self) -> String {
        match self {
            Location::Local { path } => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Location::S3 { key, .. } => key.rsplit('/').next().unwrap_or_default().to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local { path } => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checksum file contents in `sha256sum` format, so `sha256sum -c` checks a download.
pub fn sidecar_contents(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

/// The sha256 in a sidecar file, if it holds one (first word, 64 hex digits).
pub fn parse_sidecar(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?.to_ascii_lowercase();
    (word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit())).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_third_segment_from_the_end() {
        let local = Location::parse_file("/var/lib/concord/snapshots/team-a/consul-1234/x.snap").expect("local");
        assert_eq!(local.namespace_segment().as_deref(), Some("team-a"));
        let s3 = Location::parse_file("s3://backups/team-b/consul-1234/x.snap").expect("s3");
        assert_eq!(s3.namespace_segment().as_deref(), Some("team-b"));
        assert_eq!(Location::parse_file("s3://backups/x.snap").expect("s3").namespace_segment(), None);
        assert_eq!(Location::parse_file("/x/y.snap").expect("short").namespace_segment(), None);
    }

    #[test]
    fn within_a_folder_means_same_store_and_whole_segments() {
        let dir = Location::parse_dir("s3://backups/a/consul-1").expect("dir");
        assert!(Location::parse_file("s3://backups/a/consul-1/x.snap").expect("f").is_within(&dir));
        assert!(!Location::parse_file("s3://backups/a/consul-12/x.snap").expect("f").is_within(&dir));
        assert!(!Location::parse_file("s3://other/a/consul-1/x.snap").expect("f").is_within(&dir));
        assert!(!Location::parse_file("/a/consul-1/x.snap").expect("f").is_within(&dir));
        let local = Location::parse_dir("/snapshots/a/consul-1/").expect("dir");
        assert!(Location::parse_file("/snapshots/a/consul-1/x.snap").expect("f").is_within(&local));
    }

    #[test]
    fn local_paths_and_file_urls_are_the_same_place() {
        let a = Location::parse_file("/var/lib/concord/s1.snap").expect("path");
        let b = Location::parse_file("file:///var/lib/concord/s1.snap").expect("url");
        assert_eq!(a, b);
        assert_eq!(a, Location::Local { path: "/var/lib/concord/s1.snap".into() });
        assert_eq!(a.sidecar().to_string(), "/var/lib/concord/s1.snap.sha256");
        assert_eq!(a.file_name(), "s1.snap");
    }

    #[test]
    fn s3_urls_split_into_bucket_and_key() {
        let l = Location::parse_file("s3://backups/consul/prod/s1.snap").expect("s3");
        assert_eq!(l, Location::S3 { bucket: "backups".into(), key: "consul/prod/s1.snap".into() });
        assert_eq!(l.sidecar().to_string(), "s3://backups/consul/prod/s1.snap.sha256");
        assert_eq!(l.file_name(), "s1.snap");
    }

    #[test]
    fn bad_locations_are_refused_with_a_reason() {
        for bad in [
            "relative/path",
            "file://host/path",
            "/a/../etc/passwd",
            "s3://",
            "s3://Upper/key",
            "s3://ab/key",
            "s3://bucket",
            "s3://bucket/",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "/dir/",
            "/",
            "http://example/x",
        ] {
            let e = Location::parse_file(bad).expect_err(bad);
            assert!(!e.reason.is_empty());
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn folders_take_children() {
        let d = Location::parse_dir("s3://backups").expect("bucket only");
        assert_eq!(d.child("a.snap").to_string(), "s3://backups/a.snap");
        let d = Location::parse_dir("s3://backups/consul/").expect("prefix");
        assert_eq!(d.child("a.snap").to_string(), "s3://backups/consul/a.snap");
        let d = Location::parse_dir("file:///snaps").expect("dir");
        assert_eq!(d.child("a.snap"), Location::Local { path: "/snaps/a.snap".into() });
    }

    #[test]
    fn sidecars_round_trip_and_garbage_is_no_checksum() {
        let sha = "ab".repeat(32);
        let text = sidecar_contents(&sha, "s1.snap");
        assert_eq!(text, format!("{sha}  s1.snap\n"));
        assert_eq!(parse_sidecar(&text), Some(sha.clone()));
        assert_eq!(parse_sidecar(&sha.to_uppercase()), Some(sha));
        assert_eq!(parse_sidecar(""), None);
        assert_eq!(parse_sidecar("abc  s1.snap"), None);
        assert_eq!(parse_sidecar(&"zz".repeat(32)), None);
    }
}
