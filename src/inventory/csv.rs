//! The CSV of inventory data files, parsed as it streams in: fields separated
//! by commas, optionally in double quotes (inside which commas, line breaks
//! and doubled quotes `""` are data), rows ended by `\n` or `\r\n`, no header.

use std::io;

use super::BadRow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    Start,
    /// In a field without quotes.
    Plain,
    /// Inside quotes.
    Quoted,
    /// Just after a quote inside quotes: the field's end, or the first of `""`.
    QuoteInQuoted,
}

/// Splits bytes into rows and hands each to `convert`, keeping what it returns;
/// stops at the first bad row. Written to as the bytes arrive.
pub struct RowReader<F, T> {
    convert: F,
    state: State,
    field: Vec<u8>,
    row: Vec<String>,
    /// Rows seen, for messages.
    rows: u64,
    kept: Vec<T>,
    error: Option<(u64, BadRow)>,
}

impl<F, T> RowReader<F, T>
where
    F: FnMut(Vec<String>) -> Result<Option<T>, BadRow>,
{
    pub fn new(convert: F) -> Self {
        RowReader {
            convert,
            state: State::Start,
            field: Vec::new(),
            row: Vec::new(),
            rows: 0,
            kept: Vec::new(),
            error: None,
        }
    }

    /// How many rows were kept and not yet taken.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// What the rows gave so far, taken out (so they need not all be held at once).
    pub fn take_kept(&mut self) -> Vec<T> {
        std::mem::take(&mut self.kept)
    }

    /// What the rows gave, or the first bad row (its number from 1, and why).
    pub fn finish(mut self) -> Result<Vec<T>, (u64, BadRow)> {
        if self.error.is_none() {
            match self.state {
                State::Quoted => self.error = Some((self.rows + 1, BadRow::Unterminated)),
                State::Start if self.row.is_empty() => {}
                _ => self.end_row(),
            }
        }
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.kept),
        }
    }

    fn push(&mut self, byte: u8) {
        match (self.state, byte) {
            (State::Start, b'"') => self.state = State::Quoted,
            (State::Start | State::Plain, b',') => self.end_field(),
            (State::Start | State::Plain, b'\n') => self.end_row(),
            (State::Start | State::Plain, b'\r') => {}
            (State::Start | State::Plain, b) => {
                self.field.push(b);
                self.state = State::Plain;
            }
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, b) => self.field.push(b),
            (State::QuoteInQuoted, b'"') => {
                self.field.push(b'"');
                self.state = State::Quoted;
            }
            (State::QuoteInQuoted, b',') => self.end_field(),
            (State::QuoteInQuoted, b'\n') => self.end_row(),
            (State::QuoteInQuoted, b'\r') => {}
            // Text after a closing quote: kept, as most readers do.
            (State::QuoteInQuoted, b) => {
                self.field.push(b);
                self.state = State::Plain;
            }
        }
    }

    fn end_field(&mut self) {
        let bytes = std::mem::take(&mut self.field);
        match String::from_utf8(bytes) {
            Ok(text) => self.row.push(text),
            Err(_) => self.error = Some((self.rows + 1, BadRow::NotUtf8)),
        }
        self.state = State::Start;
    }

    fn end_row(&mut self) {
        // A blank line is no row.
        if self.row.is_empty() && self.field.is_empty() && self.state == State::Start {
            return;
        }
        self.end_field();
        self.rows += 1;
        if self.error.is_some() {
            return;
        }
        match (self.convert)(std::mem::take(&mut self.row)) {
            Ok(Some(kept)) => self.kept.push(kept),
            Ok(None) => {}
            Err(why) => self.error = Some((self.rows, why)),
        }
    }
}

impl<F, T> io::Write for RowReader<F, T>
where
    F: FnMut(Vec<String>) -> Result<Option<T>, BadRow>,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // After a bad row the rest is only drained: the error is reported once
        // the file's checksum has been checked.
        if self.error.is_none() {
            for &byte in buf {
                self.push(byte);
                if self.error.is_some() {
                    break;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rows(text: &[u8], chunk: usize) -> Result<Vec<Vec<String>>, (u64, BadRow)> {
        let mut reader = RowReader::new(|row: Vec<String>| Ok(Some(row)));
        for piece in text.chunks(chunk.max(1)) {
            reader.write_all(piece).unwrap();
        }
        reader.finish()
    }

    fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|f| f.to_string()).collect())
            .collect()
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        let text = b"\"b\",\"a,b\",\"say \"\"hi\"\"\"\n\"b\",\"two\nlines\",\"\"\r\nplain,x,\n";
        let expected = strings(&[
            &["b", "a,b", "say \"hi\""],
            &["b", "two\nlines", ""],
            &["plain", "x", ""],
        ]);
        // However the bytes are cut into chunks, the rows are the same.
        for chunk in [1, 2, 3, 7, text.len()] {
            assert_eq!(rows(text, chunk).unwrap(), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_last_row_without_a_line_break_counts_and_blank_lines_do_not() {
        assert_eq!(
            rows(b"\n\"a\",\"1\"\n\n\"b\",\"2\"", 4).unwrap(),
            strings(&[&["a", "1"], &["b", "2"]])
        );
        assert_eq!(rows(b"", 1).unwrap(), Vec::<Vec<String>>::new());
    }

    #[test]
    fn an_unterminated_quote_is_an_error_with_its_row() {
        let (row, why) = rows(b"\"a\",\"1\"\n\"b\",\"2\n", 5).unwrap_err();
        assert_eq!(row, 2);
        assert!(matches!(why, BadRow::Unterminated));
    }

    #[test]
    fn the_first_bad_row_stops_the_reader() {
        let mut seen = 0;
        let mut reader = RowReader::new(|row: Vec<String>| {
            seen += 1;
            match row[0].as_str() {
                "bad" => Err(BadRow::Size(row[0].clone())),
                "skip" => Ok(None),
                _ => Ok(Some(row[0].clone())),
            }
        });
        reader.write_all(b"ok\nskip\nbad\nok\n").unwrap();
        let (row, why) = reader.finish().unwrap_err();
        assert_eq!(row, 3);
        assert!(matches!(why, BadRow::Size(_)));
        assert_eq!(seen, 3);
        let invalid = rows(b"\"\xff\"\n", 1).unwrap_err();
        assert!(matches!(invalid, (1, BadRow::NotUtf8)));
    }
}
