//! Japanese and English: chosen by the browser's `Accept-Language`, or by the switch on every
//! page (a cookie). Each text is written where it is used, in both languages, so a page
//! cannot lack one.

use axum::http::{HeaderMap, header};

use super::auth::{LANG_COOKIE, cookie};

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    En,
    Ja,
}

impl Lang {
    /// The switch's choice if made, else the first of Japanese or English the browser names,
    /// else English.
    pub(crate) fn of(headers: &HeaderMap) -> Lang {
        if let Some(chosen) = cookie(headers, LANG_COOKIE).and_then(|c| Lang::parse(&c)) {
            return chosen;
        }
        let accepted = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        for item in accepted.split(',') {
            let tag = item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("ja") {
                return Lang::Ja;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }

    pub(crate) fn parse(word: &str) -> Option<Lang> {
        match word {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// The other language, for the switch.
    pub(crate) fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Ja,
            Lang::Ja => Lang::En,
        }
    }

    /// The text in this language.
    pub(crate) fn t(self, en: &'static str, ja: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Ja => ja,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_browser_language_chooses_unless_the_switch_did() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::of(&headers), Lang::En);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("ja-JP,ja;q=0.9,en;q=0.8"),
        );
        assert_eq!(Lang::of(&headers), Lang::Ja);
        headers.insert(header::COOKIE, HeaderValue::from_static("sekisho_lang=en"));
        assert_eq!(Lang::of(&headers), Lang::En);
    }
}
