//! Hugging Face Hub model names, as the page takes them: `owner/name` or `owner/name@revision`
//! (a branch, a commit, or a pull request's `refs/pr/N`) → the folder URL the Hub serves the
//! repository's files from, `<endpoint>/<owner>/<name>/resolve/<revision>/`, with the revision
//! percent-encoded as one path segment (`refs%2Fpr%2F18`). Anything that looks like a URL or a
//! path is not a Hub name (`Ok(None)`); a malformed name is an error saying what is wrong.
//!
//! May use: `error` only.

use crate::{Error, Result};

/// Where the Hub serves files.
pub const HUB_ENDPOINT: &str = "https://huggingface.co";
/// The revision when a name has none.
pub const DEFAULT_REVISION: &str = "main";
/// Longest owner or repository name the Hub allows.
const MAX_NAME: usize = 96;
/// Longest revision accepted (a branch name; a commit is 40 hex digits).
const MAX_REVISION: usize = 255;

/// A repository on the Hub at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `owner/name`.
    pub repo: String,
    /// A branch, a commit or `refs/pr/N`.
    pub revision: String,
}

impl HubModel {
    /// Parses `owner/name` or `owner/name@revision`; `Ok(None)` for text that is a URL or a path
    /// rather than a Hub name (it has a scheme, or starts with `/`, `.` or `~`, or has more than
    /// one `/` before any `@`).
    pub fn parse(spec: &str) -> Result<Option<Self>> {
        let spec = spec.trim();
        if spec.contains("://") || spec.starts_with(['/', '.', '~']) || spec.is_empty() {
            return Ok(None);
        }
        let (repo, revision) = match spec.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (spec, None),
        };
        let Some((owner, name)) = repo.split_once('/') else {
            return Ok(None);
        };
        if name.contains('/') {
            return Ok(None);
        }
        let bad = |why: String| Error::InvalidArgument(format!("Hub model \"{spec}\": {why}"));
        for (what, part) in [("owner", owner), ("name", name)] {
            check_name(part).map_err(|why| bad(format!("the {what} \"{part}\" {why}")))?;
        }
        let revision = match revision {
            None => DEFAULT_REVISION.to_string(),
            Some(rev) => {
                check_revision(rev).map_err(|why| bad(format!("the revision \"{rev}\" {why}")))?;
                rev.to_string()
            }
        };
        Ok(Some(Self {
            repo: format!("{owner}/{name}"),
            revision,
        }))
    }

    /// The folder URL of the repository's files at this revision on `endpoint` (no trailing `/`
    /// needed), ending in `/`.
    pub fn folder_url(&self, endpoint: &str) -> String {
        let revision: String = self
            .revision
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                _ => (b as char).to_string(),
            })
            .collect();
        format!(
            "{}/{}/resolve/{revision}/",
            endpoint.trim_end_matches('/'),
            self.repo
        )
    }

    /// `owner/name`, with `@revision` unless it is the default.
    pub fn label(&self) -> String {
        if self.revision == DEFAULT_REVISION {
            self.repo.clone()
        } else {
            format!("{}@{}", self.repo, self.revision)
        }
    }
}

/// Non-empty, at most `max` bytes, and only ASCII letters, digits and the characters of `extra`.
fn check_chars(part: &str, max: usize, extra: &'static str) -> std::result::Result<(), String> {
    if part.is_empty() {
        return Err("is empty".into());
    }
    if part.len() > max {
        return Err(format!("is longer than {max} characters"));
    }
    if !part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    {
        let extra: Vec<String> = extra.chars().map(|c| format!("'{c}'")).collect();
        return Err(format!(
            "may hold only letters, digits and {}",
            extra.join(", ")
        ));
    }
    Ok(())
}

/// An owner or repository name: letters, digits, `-`, `_`, `.`; starting and ending with a letter
/// or digit; no `--` or `..`; at most [`MAX_NAME`] characters.
fn check_name(part: &str) -> std::result::Result<(), String> {
    check_chars(part, MAX_NAME, "-_.")?;
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(part.chars().next()) || !edge(part.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if part.contains("--") || part.contains("..") {
        return Err("may not hold '--' or '..'".into());
    }
    Ok(())
}

/// A revision: a branch or tag name (git's rules, simplified), a commit, or `refs/pr/N`.
fn check_revision(rev: &str) -> std::result::Result<(), String> {
    check_chars(rev, MAX_REVISION, "-_./")?;
    if rev.starts_with(['/', '.', '-'])
        || rev.ends_with(['/', '.'])
        || rev.contains("//")
        || rev.contains("..")
    {
        return Err("is not a branch, a commit or refs/pr/N".into());
    }
    if let Some(n) = rev.strip_prefix("refs/pr/") {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err("names a pull request without its number (refs/pr/N)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(spec: &str) -> Option<String> {
        HubModel::parse(spec)
            .unwrap()
            .map(|m| m.folder_url(HUB_ENDPOINT))
    }

    #[test]
    fn names_and_revisions_become_resolve_urls() {
        assert_eq!(
            url("Salesforce/blip-image-captioning-base").as_deref(),
            Some("https://huggingface.co/Salesforce/blip-image-captioning-base/resolve/main/")
        );
        assert_eq!(
            url(" Salesforce/blip-image-captioning-large@refs/pr/18 ").as_deref(),
            Some("https://huggingface.co/Salesforce/blip-image-captioning-large/resolve/refs%2Fpr%2F18/")
        );
        let commit = "82a37760796d32b1411fe092ab5d4e227313294b";
        assert_eq!(
            url(&format!("Salesforce/blip-image-captioning-base@{commit}")),
            Some(format!(
                "https://huggingface.co/Salesforce/blip-image-captioning-base/resolve/{commit}/"
            ))
        );
        let m = HubModel::parse("a/b@v1.0").unwrap().unwrap();
        assert_eq!(m.label(), "a/b@v1.0");
        assert_eq!(
            m.folder_url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/a/b/resolve/v1.0/"
        );
        assert_eq!(HubModel::parse("a/b").unwrap().unwrap().label(), "a/b");
    }

    #[test]
    fn urls_and_paths_are_not_hub_names() {
        for spec in [
            "",
            "https://huggingface.co/a/b/resolve/main/",
            "http://127.0.0.1:8080/models/demo/",
            "/models/demo/",
            "./models/demo",
            "../x/y",
            "~/x/y",
            "models/demo/",
            "a/b/c",
            "demo",
        ] {
            assert_eq!(HubModel::parse(spec).unwrap(), None, "{spec:?}");
        }
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        for (spec, needle) in [
            ("a b/c", "owner \"a b\""),
            ("a/-c", "start and end"),
            ("a/c--d", "'--'"),
            ("a/b@", "revision \"\" is empty"),
            ("a/b@refs/pr/x", "refs/pr/N"),
            ("a/b@../main", "not a branch"),
            ("a/b@ma in", "may hold only"),
        ] {
            let err = HubModel::parse(spec).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(spec), "{spec}: {err}");
        }
        let long = format!("a/{}", "x".repeat(97));
        assert!(HubModel::parse(&long).is_err());
    }
}
