//! Located policy errors, and the byte offset → line conversion they need.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// One problem, located.
///
/// Displays as `policies/vendors/acme-ehr.toml:12: target `ehr-db` is defined twice`, with
/// `:LINE` left out when the problem has no line (a missing or unreadable file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub path: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// One sentence: what is wrong and what is expected.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// Every problem found by one [`PolicySet::load`](super::PolicySet::load), in file load
/// order and then line order. Never empty when returned by `load`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// The errors of one file, located against its text.
pub(super) struct FileErrors<'a> {
    path: &'a Path,
    text: &'a str,
    pub(super) errors: Vec<PolicyError>,
}

impl<'a> FileErrors<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        FileErrors {
            path,
            text,
            errors: Vec::new(),
        }
    }

    pub(super) fn path(&self) -> &'a Path {
        self.path
    }

    /// 1-based line of a byte offset; offsets past the end count as the last line.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        // Spans from toml are on char boundaries, but a byte count is all that is needed.
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
    }

    pub(super) fn at_span(&mut self, span: Option<Range<usize>>, reason: impl Into<String>) {
        let line = span.map(|span| self.line_of(span.start));
        self.errors.push(PolicyError {
            path: self.path.to_path_buf(),
            line,
            reason: reason.into(),
        });
    }

    /// An error about a spanned raw value, located at its line.
    pub(super) fn at<T>(&mut self, value: &Spanned<T>, reason: impl Into<String>) {
        self.at_span(Some(value.span()), reason);
    }
}

/// Renders a user-supplied string in quotes, escaping as TOML basic strings would need.
pub(super) fn quoted(value: &str) -> String {
    format!("{value:?}")
}
