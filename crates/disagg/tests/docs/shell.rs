//! The `disagg` command lines of a shell snippet, and whether the commands and flags they name
//! exist.
//!
//! Docs write usage lines as well as commands (`disagg run FILE [--engine sim]`,
//! `disagg results list|show`, `disagg check RUN|--latest`), so the reading is loose on purpose:
//! words split on whitespace and quotes, `[`...`]` and `a|b` are notation, placeholders
//! (`FILE`, `<ROLE>`) end the subcommand path, and only what looks like a subcommand or a flag is
//! checked.

/// A word of a shell line: its text without quotes, and whether no part of it was quoted (only
/// plain words can be operators).
#[derive(Debug, PartialEq)]
struct Word {
    text: String,
    plain: bool,
}

/// The words of `line` up to an unquoted `#` that starts a word (a comment).
fn words(line: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut plain = true;
    let mut started = false;
    let mut chars = line.chars();
    let end = |text: &mut String, plain: &mut bool, started: &mut bool, out: &mut Vec<Word>| {
        if *started {
            out.push(Word {
                text: std::mem::take(text),
                plain: *plain,
            });
        }
        *plain = true;
        *started = false;
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => end(&mut text, &mut plain, &mut started, &mut out),
            '#' if !started => break,
            '\'' => {
                started = true;
                plain = false;
                text.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                started = true;
                plain = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => text.extend(chars.next()),
                        c => text.push(c),
                    }
                }
            }
            '\\' => {
                started = true;
                text.extend(chars.next());
            }
            c => {
                started = true;
                text.push(c);
            }
        }
    }
    end(&mut text, &mut plain, &mut started, &mut out);
    out
}

/// Words that end one command and start another.
const OPERATORS: [&str; 6] = ["|", "||", "&&", ";", "&", "|&"];
/// Words after which a command still has to come.
const PREFIXES: [&str; 5] = ["time", "exec", "command", "env", "!"];

/// The arguments of every `disagg` command on `line`: the words after `disagg`, up to the end
/// of that command (an operator outside `[`...`]`, or a `)` closing the `$(` it began in).
pub fn invocations(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut command_position = true;
    let mut brackets = 0i32;
    for word in words(line) {
        let t = word.text.as_str();
        if word.plain {
            brackets =
                (brackets + t.matches('[').count() as i32 - t.matches(']').count() as i32).max(0);
        }
        if word.plain && brackets == 0 && OPERATORS.contains(&t) {
            out.extend(current.take());
            command_position = true;
            continue;
        }
        if let Some(args) = current.as_mut() {
            match t.strip_suffix(')') {
                Some(last) if word.plain && !t.contains('(') => {
                    if !last.is_empty() {
                        args.push(last.to_string());
                    }
                    out.extend(current.take());
                    command_position = false;
                }
                _ => args.push(t.to_string()),
            }
        } else if let Some(inner) = t.rfind("$(").map(|i| &t[i + 2..]) {
            // A command substitution: `$(disagg` opens one here; a quoted word holds all of it.
            if !word.plain {
                out.extend(invocations(inner));
            } else if inner == "disagg" {
                current = Some(Vec::new());
            }
        } else if command_position {
            let name = t.trim_start_matches('(');
            if name == "disagg" {
                current = Some(Vec::new());
            } else if !(PREFIXES.contains(&name) || is_assignment(name)) {
                command_position = false;
            }
        }
    }
    out.extend(current);
    out
}

/// `NAME=value`: an environment assignment before a command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// A subcommand's or a flag's name: `results`, `mark-invalid`, `no-store`.
fn is_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Is `flag` (`--out`, `-c`, without a value) a flag of `cmd` (its own, a global one, an alias,
/// `--help`)?
fn find_flag<'a>(cmd: &'a clap::Command, flag: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments().find(|a| {
        if let Some(long) = flag.strip_prefix("--") {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|all| all.contains(&long))
        } else {
            let short = flag.chars().nth(1);
            short.is_some()
                && (a.get_short() == short
                    || a.get_all_short_aliases()
                        .is_some_and(|all| short.is_some_and(|s| all.contains(&s))))
        }
    })
}

/// The flag a word names, if it names one: `--out` of `[--out`, `--out=DIR` or `RUN|--out`
/// (each `|` alternative is returned), `-c` of `-c`; never a value such as `-1`.
fn flags_of(word: &str) -> Vec<&str> {
    word.split('|')
        .map(|part| part.trim_start_matches(['[', '(']))
        .filter_map(|part| {
            if let Some(long) = part.strip_prefix("--") {
                let name = long
                    .split(['=', '[', ']', ')', ',', '.'])
                    .next()
                    .unwrap_or("");
                is_name(name).then(|| &part[..2 + name.len()])
            } else {
                let part = part.trim_end_matches([']', ')', ',']);
                let mut c = part.chars();
                (c.next() == Some('-')
                    && c.next().is_some_and(|c| c.is_ascii_alphabetic())
                    && c.next().is_none())
                .then_some(part)
            }
        })
        .collect()
}

/// What is wrong with `disagg ARGS...`: a subcommand or a flag that `root` does not have.
pub fn check(root: &clap::Command, args: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut cmd = root;
    let mut path = String::from("disagg");
    let mut rest = args.iter().peekable();
    // The subcommand path, with any flags given before it.
    while cmd.has_subcommands() {
        let Some(word) = rest.peek() else { break };
        if word.starts_with('-') {
            let word = rest.next().map(String::as_str).unwrap_or_default();
            for flag in flags_of(word) {
                match find_flag(cmd, flag) {
                    None => problems.push(format!("`{path}` has no flag {flag}")),
                    Some(a) if a.get_action().takes_values() && !word.contains('=') => {
                        rest.next();
                    }
                    Some(_) => {}
                }
            }
            continue;
        }
        let names: Vec<&str> = word.split('|').collect();
        if !names.iter().all(|n| is_name(n)) {
            // A placeholder (`COMMAND`, `<cmd>`): nothing more to check.
            return problems;
        }
        for name in &names {
            if cmd.find_subcommand(name).is_none() {
                problems.push(format!("`{path}` has no subcommand `{name}`"));
            }
        }
        if names.len() > 1 || !problems.is_empty() {
            return problems;
        }
        cmd = cmd.find_subcommand(names[0]).expect("checked just above");
        path = format!("{path} {}", cmd.get_name());
        rest.next();
    }
    for word in rest {
        if word == "--" {
            break;
        }
        for flag in flags_of(word) {
            if find_flag(cmd, flag).is_none() {
                problems.push(format!("`{path}` has no flag {flag}"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command;

    fn problems(line: &str) -> Vec<String> {
        let root = command();
        invocations(line)
            .iter()
            .flat_map(|args| check(&root, args))
            .collect()
    }

    #[test]
    fn words_follow_the_shell_quotes_and_stop_at_a_comment() {
        let w = words(r#"disagg run "my file.yaml" --sla 'a=1' x\ y # --nope"#);
        let texts: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            texts,
            ["disagg", "run", "my file.yaml", "--sla", "a=1", "x y"]
        );
        assert!(!w[2].plain && w[3].plain);
    }

    #[test]
    fn commands_are_found_after_operators_assignments_and_in_substitutions() {
        assert_eq!(
            invocations("DISAGG_DB=x disagg check --latest && ls runs | disagg report r"),
            [vec!["check", "--latest"], vec!["report", "r"]]
        );
        assert_eq!(
            invocations(r#"run=$(ls -d runs/*) ; echo "$(disagg results list --limit 1)" x"#),
            vec![vec!["results", "list", "--limit", "1"]]
        );
        assert_eq!(
            invocations("cargo install --path crates/disagg"),
            Vec::<Vec<String>>::new()
        );
        assert_eq!(
            invocations("echo disagg run --nope"),
            Vec::<Vec<String>>::new()
        );
    }

    #[test]
    fn usage_notation_is_read_as_alternatives() {
        assert!(
            problems("disagg sweep SPEC [--cluster C | --local] [--max-parallel N]").is_empty()
        );
        assert!(problems("disagg results list|show|export|mark-invalid|import|push").is_empty());
        assert!(problems("disagg check RUN|--latest [--pre-merge] [--baseline FILE]").is_empty());
        assert!(problems("disagg status RUN | disagg cancel RUN").is_empty());
        assert!(
            problems("disagg --clusters c.yaml plan FILE -c gb200 --sbatch --run-dir=/x")
                .is_empty()
        );
        assert!(problems("disagg run FILE --run-dir D --db=x.sqlite --help").is_empty());
        assert!(problems("disagg <command> --whatever").is_empty());
    }

    #[test]
    fn a_missing_subcommand_or_flag_is_named() {
        assert_eq!(
            problems("disagg run FILE --engine sim --no-such-flag -z"),
            [
                "`disagg run` has no flag --no-such-flag",
                "`disagg run` has no flag -z"
            ]
        );
        assert_eq!(
            problems("disagg results list|frobnicate"),
            ["`disagg results` has no subcommand `frobnicate`"]
        );
        assert_eq!(
            problems("disagg --nope launch x"),
            [
                "`disagg` has no flag --nope",
                "`disagg` has no subcommand `launch`"
            ]
        );
        assert_eq!(
            problems("disagg sweep SPEC [--cluster C | --locall]"),
            ["`disagg sweep` has no flag --locall"]
        );
    }
}
