//! Environment strings such as `environment.worker_env_var: "A=1 B='x y'"`.
//!
//! Upstream pastes these strings in front of a shell command, so they are shell words. We
//! split them into `NAME=VALUE` pairs here, so nothing downstream ever hands them to a shell.

/// Why an environment string could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// A quote was opened and never closed.
    UnclosedQuote,
    /// A word is not of the form `NAME=VALUE` with a valid variable name.
    NotAnAssignment(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::UnclosedQuote => write!(f, "a quote is never closed"),
            EnvError::NotAnAssignment(w) => {
                write!(f, "`{w}` is not a NAME=VALUE assignment")
            }
        }
    }
}

/// Whether `name` is a valid environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Split `A=1 B="x y" C='z'` into pairs. Quotes group words as in a POSIX shell; backslash
/// escapes the next character outside single quotes. Nothing is expanded.
pub fn parse_env_assignments(text: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(EnvError::UnclosedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(EnvError::UnclosedQuote),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(EnvError::UnclosedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((name, value)) if is_env_name(name) => Ok((name.to_string(), value.to_string())),
            _ => Err(EnvError::NotAnAssignment(w)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_words() {
        let pairs = parse_env_assignments(r#"A=1  B="x y" C='$(no)' D=a\ b E="q\"q""#).unwrap();
        assert_eq!(
            pairs,
            [
                ("A".into(), "1".into()),
                ("B".into(), "x y".into()),
                ("C".into(), "$(no)".into()),
                ("D".into(), "a b".into()),
                ("E".into(), "q\"q".into()),
            ]
        );
    }

    #[test]
    fn rejects_commands_and_open_quotes() {
        assert_eq!(
            parse_env_assignments("A=1 rm -rf /"),
            Err(EnvError::NotAnAssignment("rm".into()))
        );
        assert_eq!(parse_env_assignments("A='x"), Err(EnvError::UnclosedQuote));
        assert_eq!(
            parse_env_assignments("1A=x"),
            Err(EnvError::NotAnAssignment("1A=x".into()))
        );
    }
}
