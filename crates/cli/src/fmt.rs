//! Plain-text tables; the numbers in them come from `resnet_core::format`.

pub use resnet_core::format::{mib, si, thousands};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: a header, rules and aligned columns (widths in characters, so `×` and
/// `…` count as one).
pub struct Table {
    header: Vec<(String, Align)>,
    rows: Vec<Option<Vec<String>>>,
}

impl Table {
    pub fn new(header: &[(&str, Align)]) -> Self {
        Table { header: header.iter().map(|(h, a)| (h.to_string(), *a)).collect(), rows: vec![] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(Some(cells));
    }

    /// A horizontal rule between rows.
    pub fn rule(&mut self) {
        self.rows.push(None);
    }

    pub fn render(&self) -> String {
        let len = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|(h, _)| len(h)).collect();
        for cells in self.rows.iter().flatten() {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(len(c));
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - len(c));
                if i > 0 {
                    s.push_str("  ");
                }
                match self.header[i].1 {
                    Align::Left => {
                        s.push_str(c);
                        s.push_str(&pad);
                    }
                    Align::Right => {
                        s.push_str(&pad);
                        s.push_str(c);
                    }
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        let mut out = line(self.header.iter().map(|(h, _)| h.as_str()).collect());
        out.push_str(&"─".repeat(total));
        out.push('\n');
        for row in &self.rows {
            match row {
                Some(cells) => out.push_str(&line(cells.iter().map(String::as_str).collect())),
                None => {
                    out.push_str(&"─".repeat(total));
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&[("name", Align::Left), ("n", Align::Right)]);
        t.row(vec!["a×b".into(), "1,000".into()]);
        t.row(vec!["long name".into(), "7".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[2], "a×b        1,000");
        assert_eq!(lines[3], "long name      7");
    }
}
