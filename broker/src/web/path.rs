//! Names put into URLs. Staff names may hold almost any character (`%`, `?`, `#`, `&`, `+`),
//! and a name put into a form's `action` as it is would be decoded by the server into another
//! name: the row of an account named `%73ato` would act on `sato`. So every name, id or word
//! that becomes part of a path goes through [`segment`], which percent-encodes everything but
//! RFC 3986's unreserved characters; axum decodes it back into exactly the name.
//! (`.` and `..` are refused as staff names: browsers resolve them out of a path even
//! encoded.)

/// `text` as one path segment: every byte outside `A-Z a-z 0-9 - . _ ~` percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn names_that_look_encoded_or_hold_url_syntax_stay_themselves() {
        assert_eq!(segment("sato"), "sato");
        assert_eq!(segment("%73ato"), "%2573ato");
        assert_eq!(segment("a?b#c&d+e/f"), "a%3Fb%23c%26d%2Be%2Ff");
        assert_eq!(segment("佐藤"), "%E4%BD%90%E8%97%A4");
        assert_eq!(segment("r-abc.def_1~"), "r-abc.def_1~");
    }
}
