//! Quoting for the shells in a guest: one single-quoted word, and Python's `shlex.quote`.
//!
//! Every machine kind builds shell commands (file copies, wait loops, systemctl calls), so the
//! quoting is shared; upstream builds its file-copy commands with `shlex.quote` and logs them,
//! so ntd quotes the same way where the command is shown.

/// Quote `text` as one single-quoted shell word.
pub fn shell_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Python's `shlex.quote`: the word as it is when it has only safe characters, else
/// single-quoted. Upstream builds its file-copy commands with it, and they are logged, so ntd
/// quotes the same way.
pub fn shlex_quote(word: &str) -> String {
    if word.is_empty() {
        return "''".to_owned();
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\"'\"'"))
}

/// Upstream's `make_command`: the words quoted with `shlex.quote` and joined by spaces.
pub fn make_command<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| shlex_quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_quotes_like_python() {
        assert_eq!(shlex_quote("/tmp/shared/tmpab_12"), "/tmp/shared/tmpab_12");
        assert_eq!(shlex_quote(""), "''");
        assert_eq!(shlex_quote("a b"), "'a b'");
        assert_eq!(shlex_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(shlex_quote("ünï"), "'ünï'");
        assert_eq!(make_command(&["cp", "-r", "/a b", "/c"]), "cp -r '/a b' /c");
    }

    #[test]
    fn quoting_survives_sh() {
        // The quoted word must come back unchanged through a real POSIX shell.
        let nasty = "it's \"quoted\" $HOME `id` \\ \n newline ' unbalanced";
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(nasty)))
            .output()
            .expect("run sh");
        assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), nasty);
    }
}
