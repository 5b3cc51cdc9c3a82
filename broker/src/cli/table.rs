//! Plain-text tables, and the cleaning of text that came from someone else.

/// `text` made safe to print on one line of a terminal: control characters (escape
/// sequences, newlines, tabs) and bidirectional overrides become `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

/// [`clean`]ed and cut to at most `max` characters, ending with `…` when cut.
pub(super) fn cut(text: &str, max: usize) -> String {
    let text = clean(text.trim());
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A table with a header row; columns are padded to their widest cell.
pub(super) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; its cells must already be [`clean`].
    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut widths = vec![0; self.headers.len()];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_direction_overrides_do_not_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\nc\td"), "a?[2Jb?c?d");
        assert_eq!(clean("x\u{202e}y"), "x?y");
        assert_eq!(clean("パッチ 5.2.1"), "パッチ 5.2.1");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
    }

    #[test]
    fn columns_line_up_under_their_headers() {
        let mut table = Table::new(&["ID", "STATE"]);
        table.row(vec!["r-abc".into(), "approved".into()]);
        table.row(vec!["r-abcdefg".into(), "ended".into()]);
        assert_eq!(
            table.render(),
            "ID         STATE\nr-abc      approved\nr-abcdefg  ended"
        );
    }
}
