//! Validation errors: one value per broken rule, each naming the field path,
//! the value given and what is allowed.

use std::fmt;

/// One broken configuration rule.
///
/// Every variant carries:
/// * `field`: the path of the offending field, e.g.
///   `connections[vpn-1].tunnels[0].phase2_lifetime_secs`;
/// * `value`: the value that was given, rendered as text (pre-shared keys are
///   never echoed; their value is shown redacted);
/// * `allowed`: the allowed range, set of values, or the rule in words.
///
/// `validate()` functions collect *all* broken rules instead of stopping at the
/// first one, so an operator fixes a file in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{field}: {value} is out of range; allowed: {allowed}")]
    OutOfRange {
        /// Path of the field.
        field: String,
        /// Value given.
        value: String,
        /// Allowed range, e.g. `900..=3600`.
        allowed: String,
    },
    /// A value that is not one of the allowed values.
    #[error("{field}: {value} is not allowed; allowed: {allowed}")]
    NotAllowed {
        /// Path of the field.
        field: String,
        /// Value given.
        value: String,
        /// Allowed values.
        allowed: String,
    },
    /// A value that is syntactically fine but breaks a rule of its own
    /// (format, prefix length, character set, …).
    #[error("{field}: {value} is invalid; {allowed}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// Value given.
        value: String,
        /// The rule it breaks.
        allowed: String,
    },
    /// A value that is in a reserved block.
    #[error("{field}: {value} is reserved; {allowed}")]
    Reserved {
        /// Path of the field.
        field: String,
        /// Value given.
        value: String,
        /// The rule, naming the reserved block.
        allowed: String,
    },
    /// A required value is absent.
    #[error("{field}: missing; {allowed}")]
    Missing {
        /// Path of the field.
        field: String,
        /// Always `"(absent)"`; kept so every variant has a value.
        value: String,
        /// Why the value is required.
        allowed: String,
    },
    /// A value that must be unique appears twice.
    #[error("{field}: {value} is already used by {allowed}")]
    Duplicate {
        /// Path of the second occurrence.
        field: String,
        /// The duplicated value.
        value: String,
        /// Path of the first occurrence (the rule is "unique").
        allowed: String,
    },
    /// A rule that relates two fields is broken.
    #[error("{field}: {value} conflicts with {allowed}")]
    Conflict {
        /// Path of the field reported.
        field: String,
        /// Value given.
        value: String,
        /// The other field and the rule that ties them.
        allowed: String,
    },
    /// A reference to an object that does not exist.
    #[error("{field}: {value} does not exist; {allowed}")]
    UnknownReference {
        /// Path of the referencing field.
        field: String,
        /// The identifier that was referenced.
        value: String,
        /// Which objects may be referenced.
        allowed: String,
    },
}

impl ConfigError {
    /// The path of the offending field.
    #[must_use]
    pub fn field(&self) -> &str {
        match self {
            Self::OutOfRange { field, .. }
            | Self::NotAllowed { field, .. }
            | Self::Invalid { field, .. }
            | Self::Reserved { field, .. }
            | Self::Missing { field, .. }
            | Self::Duplicate { field, .. }
            | Self::Conflict { field, .. }
            | Self::UnknownReference { field, .. } => field,
        }
    }

    /// The value given, as text.
    #[must_use]
    pub fn value(&self) -> &str {
        match self {
            Self::OutOfRange { value, .. }
            | Self::NotAllowed { value, .. }
            | Self::Invalid { value, .. }
            | Self::Reserved { value, .. }
            | Self::Missing { value, .. }
            | Self::Duplicate { value, .. }
            | Self::Conflict { value, .. }
            | Self::UnknownReference { value, .. } => value,
        }
    }

    /// The three texts of any variant: field path, value, rule.
    fn parts_mut(&mut self) -> (&mut String, &mut String, &mut String) {
        match self {
            Self::OutOfRange {
                field,
                value,
                allowed,
            }
            | Self::NotAllowed {
                field,
                value,
                allowed,
            }
            | Self::Invalid {
                field,
                value,
                allowed,
            }
            | Self::Reserved {
                field,
                value,
                allowed,
            }
            | Self::Missing {
                field,
                value,
                allowed,
            }
            | Self::Duplicate {
                field,
                value,
                allowed,
            }
            | Self::Conflict {
                field,
                value,
                allowed,
            }
            | Self::UnknownReference {
                field,
                value,
                allowed,
            } => (field, value, allowed),
        }
    }

    /// The allowed range, values or rule.
    #[must_use]
    pub fn allowed(&self) -> &str {
        match self {
            Self::OutOfRange { allowed, .. }
            | Self::NotAllowed { allowed, .. }
            | Self::Invalid { allowed, .. }
            | Self::Reserved { allowed, .. }
            | Self::Missing { allowed, .. }
            | Self::Duplicate { allowed, .. }
            | Self::Conflict { allowed, .. }
            | Self::UnknownReference { allowed, .. } => allowed,
        }
    }
}

/// Longest text of one part (field path, value or rule) of a
/// [`ConfigError`]; longer ones keep their head and tail.
pub(crate) const MAX_ECHO_CHARS: usize = 256;

/// `s` unchanged when it has at most `max` characters; otherwise its
/// first and last `max / 2` characters around a note of how long it was.
/// Both ends are kept: a field path's leaf and a value's start say most.
#[must_use]
pub(crate) fn bounded(s: String, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s;
    }
    let half = max / 2;
    let head: String = s.chars().take(half).collect();
    let tail: String = s.chars().skip(n - half).collect();
    format!("{head}…[{n} characters, shortened]…{tail}")
}

/// A parser's message (serde, toml) with each part it quotes between
/// backticks — a field name, a variant, a value: input echoed back —
/// bounded to 64 characters, and the whole to `max` (the parsers echo them
/// whole: a 100,000-character request type gave a 100 KB error).
#[must_use]
pub(crate) fn bounded_quoted(text: &str, max: usize) -> String {
    let parts: Vec<String> = text
        .split('`')
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                bounded(p.to_owned(), 64)
            } else {
                p.to_owned()
            }
        })
        .collect();
    bounded(parts.join("`"), max)
}

/// `prefix.field`, or `field` alone when `prefix` is empty.
pub(crate) fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Collects errors for one validation pass, with the current field prefix.
#[derive(Debug)]
pub(crate) struct Errors<'a> {
    prefix: String,
    out: &'a mut Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(prefix: impl Into<String>, out: &'a mut Vec<ConfigError>) -> Self {
        Self {
            prefix: prefix.into(),
            out,
        }
    }

    /// A collector for a nested path (`self.prefix + "." + part`).
    pub(crate) fn nested(&mut self, part: &str) -> Errors<'_> {
        Errors {
            prefix: join(&self.prefix, part),
            out: self.out,
        }
    }

    /// Full path of `field` under the current prefix.
    pub(crate) fn path(&self, field: &str) -> String {
        join(&self.prefix, field)
    }

    /// Records `e` with every text in it bounded by [`bounded`]: field
    /// paths and values echo what the operator sent, which may be of any
    /// size (a 5 MB identifier must not make a 5 MB error).
    pub(crate) fn push(&mut self, mut e: ConfigError) {
        let (field, value, allowed) = e.parts_mut();
        for part in [field, value, allowed] {
            *part = bounded(std::mem::take(part), MAX_ECHO_CHARS);
        }
        self.out.push(e);
    }

    /// Check `lo <= value <= hi`.
    pub(crate) fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        field: &str,
        value: T,
        lo: T,
        hi: T,
    ) {
        if value < lo || value > hi {
            let field = self.path(field);
            self.push(ConfigError::OutOfRange {
                field,
                value: value.to_string(),
                allowed: format!("{lo}..={hi}"),
            });
        }
    }

    pub(crate) fn out_of_range(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::OutOfRange {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }

    pub(crate) fn not_allowed(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::NotAllowed {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }

    pub(crate) fn invalid(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::Invalid {
            field,
            value: value.to_string(),
            allowed: rule.into(),
        });
    }

    pub(crate) fn reserved(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::Reserved {
            field,
            value: value.to_string(),
            allowed: rule.into(),
        });
    }

    pub(crate) fn missing(&mut self, field: &str, why: impl Into<String>) {
        let field = self.path(field);
        self.push(ConfigError::Missing {
            field,
            value: "(absent)".to_owned(),
            allowed: why.into(),
        });
    }

    pub(crate) fn duplicate(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        first: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::Duplicate {
            field,
            value: value.to_string(),
            allowed: first.into(),
        });
    }

    pub(crate) fn conflict(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        rule: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::Conflict {
            field,
            value: value.to_string(),
            allowed: rule.into(),
        });
    }

    pub(crate) fn unknown_reference(
        &mut self,
        field: &str,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) {
        let field = self.path(field);
        self.push(ConfigError::UnknownReference {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }
}

/// Turn a collected list into the `validate()` result.
pub(crate) fn finish(errors: Vec<ConfigError>) -> Result<(), Vec<ConfigError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
