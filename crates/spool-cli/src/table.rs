//! Plain-text tables: left-aligned text, right-aligned numbers.

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named in `header`; a name ending in `>` is right-aligned (the
    /// `>` is not printed).
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header
                .iter()
                .map(|name| name.trim_end_matches('>').to_owned())
                .collect(),
            right_aligned: header.iter().map(|name| name.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// True when no row was added (the header alone).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|column| {
                std::iter::once(&self.header[column])
                    .chain(self.rows.iter().map(|row| &row[column]))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                let width = widths[column];
                if self.right_aligned[column] {
                    line.push_str(&format!("{cell:>width$}"));
                } else {
                    line.push_str(&format!("{cell:<width$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(&["NAME", "PARTITIONS>"]);
        table.row(vec!["orders".into(), "3".into()]);
        table.row(vec!["a".into(), "120".into()]);
        assert_eq!(
            table.render(),
            "NAME    PARTITIONS\norders           3\na              120\n"
        );
    }
}
