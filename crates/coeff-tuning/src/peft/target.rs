//! Choosing layers by module path, in the spirit of PEFT's `target_modules` / `exclude_modules`.
//!
//! A module path is the dot-separated field path Burn's visitors report, e.g.
//! `encoder.layers.3.attn.query`. A pattern matches a path when
//! - it equals the path, or
//! - the path ends with `.` + the pattern (whole components: `query` matches
//!   `encoder.layers.3.attn.query` but not `encoder.layers.3.attn.subquery`), or
//! - it starts with `re:` and the rest is a regular expression matching the whole path
//!   (`re:encoder\.layers\.(0|1)\.attn\.(query|value)`).

use regex::Regex;

use crate::error::{PeftError, Result};

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    regex: Option<Regex>,
}

impl Pattern {
    /// Compile `text`; `field` names the config field for error messages.
    pub fn new(text: &str, field: &'static str) -> Result<Self> {
        let regex = match text.strip_prefix("re:") {
            Some(re) => Some(Regex::new(&format!("^(?:{re})$")).map_err(|source| {
                PeftError::BadPattern {
                    field,
                    pattern: text.to_string(),
                    source,
                }
            })?),
            None => None,
        };
        Ok(Self {
            text: text.to_string(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this pattern selects `path`.
    pub fn matches(&self, path: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(path),
            None => {
                path == self.text
                    || (path.len() > self.text.len()
                        && path.ends_with(&self.text)
                        && path.as_bytes()[path.len() - self.text.len() - 1] == b'.')
            }
        }
    }
}

/// Select the `candidates` matched by any of `patterns`; a pattern that matches no candidate
/// is an error listing the candidates.
pub fn select<'a>(
    patterns: &[String],
    candidates: &'a [String],
    field: &'static str,
    kind: &'static str,
) -> Result<Vec<&'a String>> {
    let compiled = patterns
        .iter()
        .map(|p| Pattern::new(p, field))
        .collect::<Result<Vec<_>>>()?;
    for pattern in &compiled {
        if !candidates.iter().any(|c| pattern.matches(c)) {
            return Err(PeftError::PatternMatchedNothing {
                field,
                pattern: pattern.as_str().to_string(),
                kind,
                available: candidates.to_vec(),
            });
        }
    }
    Ok(candidates
        .iter()
        .filter(|c| compiled.iter().any(|p| p.matches(c)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matches_whole_components_only() {
        let p = Pattern::new("query", "target_modules").unwrap();
        assert!(p.matches("encoder.layers.3.attn.query"));
        assert!(p.matches("query"));
        assert!(!p.matches("encoder.layers.3.attn.subquery"));
        assert!(!p.matches("encoder.layers.3.attn.query.base"));
        let p = Pattern::new("attn.query", "target_modules").unwrap();
        assert!(p.matches("encoder.layers.3.attn.query"));
    }

    #[test]
    fn regex_matches_whole_path() {
        let p = Pattern::new(r"re:layers\.(0|1)\.attn\.(query|value)", "t").unwrap();
        assert!(p.matches("layers.0.attn.value"));
        assert!(!p.matches("layers.2.attn.value"));
        assert!(!p.matches("x.layers.0.attn.value"));
    }

    #[test]
    fn unmatched_pattern_lists_candidates() {
        let c = vec!["a.query".to_string(), "a.key".to_string()];
        let err = select(&["qeury".to_string()], &c, "target_modules", "linear layer")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`qeury`"), "{err}");
        assert!(err.contains("a.query") && err.contains("a.key"), "{err}");
    }

    #[test]
    fn bad_regex_is_reported() {
        let err = Pattern::new("re:(", "exclude_modules")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exclude_modules") && err.contains("re:("),
            "{err}"
        );
    }
}
