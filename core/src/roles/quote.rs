//! Quoting for the statements pgops builds: every identifier and literal goes through here.

/// A double-quoted identifier. Always quoted, so case, spaces, keywords and Unicode survive
/// as written (Postgres' quote_ident quotes only when needed; always is equally correct).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that reads the same whatever `standard_conforming_strings` is: with a
/// backslash in it, an E'' literal with backslashes doubled (as Postgres' quote_literal).
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_keep_quotes_case_and_spaces() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident("My \"App\""), "\"My \"\"App\"\"\"");
        assert_eq!(ident("ünï cødé"), "\"ünï cødé\"");
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("'; DROP ROLE x; --"), "'''; DROP ROLE x; --'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }
}
