//! Quoting values for bash, so a value from a config is always data, never code.

/// Characters that never need quoting in a bash word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
}

/// Quote `s` as one bash word. Plain words stay as they are; anything else is wrapped in single
/// quotes, inside which bash expands nothing (`'` itself is written as `'\''`).
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_plain) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether `s` can stand unquoted in an `#SBATCH` line (sbatch parses those itself, without a
/// shell, so we only allow values that need no quoting at all).
pub fn is_sbatch_safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_left_alone() {
        assert_eq!(quote("GEN_0"), "GEN_0");
        assert_eq!(quote("/a/b-c.d:e"), "/a/b-c.d:e");
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(x)"), "'$(x)'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("a\nb"), "'a\nb'");
    }
}
