//! Query strings of the admin listener: `name=value` pairs, percent-decoded.

/// The parameters of one query string, in order.
#[derive(Debug, Default, Clone)]
pub(super) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `a=1&b=x%20y`; a bad percent-encoding is an error naming the
    /// parameter.
    pub(super) fn parse(query: &str) -> Result<Params, String> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                percent_decode(value).ok_or_else(|| format!("parameter {name}: bad percent-encoding"))?;
            pairs.push((name.to_owned(), value));
        }
        Ok(Params { pairs })
    }

    /// The last value of `name`, if given and not empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// `name` as a number, if given; an error naming it if it is not one.
    pub(super) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.get(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| format!("parameter {name}: {value:?} is not a number"))
            })
            .transpose()
    }

    /// True for `name=true` or `name=1`.
    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it); `None` for a
/// bad escape or text that is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'%' => {
                let hex = tail.get(..2)?;
                bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                rest = &tail[2..];
            }
            b'+' => {
                bytes.push(b' ');
                rest = tail;
            }
            other => {
                bytes.push(other);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_decode_and_refuse_bad_ones() {
        let params = Params::parse("q=a%20b&limit=5&empty=&flag=true&q=c+d").unwrap();
        assert_eq!(params.get("q"), Some("c d"));
        assert_eq!(params.get("empty"), None);
        assert_eq!(params.number::<u32>("limit"), Ok(Some(5)));
        assert!(params.number::<u32>("q").unwrap_err().contains("parameter q"));
        assert!(params.flag("flag"));
        assert!(Params::parse("x=%zz").unwrap_err().contains("parameter x"));
        assert_eq!(percent_decode("%e2%28"), None);
    }
}
