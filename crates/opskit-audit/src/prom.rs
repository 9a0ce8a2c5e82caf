//! A reader of the Prometheus text exposition format (0.0.4, and the
//! OpenMetrics text that shares its sample lines).
//!
//! Hand-written: the crates that parse it (`prometheus-parse`, …) are
//! unmaintained or pull a regex engine, and the audit only needs the sample
//! names, label pairs and the TYPE lines, with line-numbered errors.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Labels,
    pub(crate) value: f64,
}

/// A parsed page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub(crate) samples: Vec<Sample>,
    /// `# TYPE name kind` lines.
    pub(crate) types: Vec<(String, String)>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A sample's label pairs, in order.
type Labels = Vec<(String, String)>;

/// Label pairs of `{…}` (without the braces); the rest after the closing brace.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without `=`")?;
        let name = rest[..eq].trim();
        if !is_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest[eq + 1..].trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_owned(), value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by `,`".into());
        }
    }
}

/// Parses a whole page; the first bad line is the error (with its number).
pub(crate) fn parse(text: &str) -> Result<Page, String> {
    let mut page = Page::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end();
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(format!("line {n}: a TYPE line needs a name and a type"));
                };
                page.types.push((name.to_owned(), kind.to_owned()));
            }
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| format!("line {n}: a sample without a value"))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(format!("line {n}: bad metric name `{name}`"));
        }
        let (labels, rest) = if let Some(after) = line[name_end..].strip_prefix('{') {
            parse_labels(after).map_err(|e| format!("line {n}: {e}"))?
        } else {
            (Vec::new(), &line[name_end..])
        };
        // Value, then an optional timestamp (and an OpenMetrics exemplar after `#`).
        let rest = rest.split(" # ").next().unwrap_or_default();
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| format!("line {n}: `{name}` has no number as its value"))?;
        if let Some(ts) = fields.next() {
            if ts.parse::<f64>().is_err() {
                return Err(format!("line {n}: bad timestamp `{ts}`"));
            }
        }
        page.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_types() {
        let page = parse(
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3 1700000000000\nup 1\nh_bucket{le=\"+Inf\"} 2 # {trace_id=\"ab\"} 1.0\n",
        )
        .unwrap();
        assert_eq!(page.types, vec![("x_total".into(), "counter".into())]);
        assert_eq!(page.samples.len(), 3);
        assert_eq!(page.samples[0].labels[1], ("b".into(), "q\"uote".into()));
        assert_eq!(page.samples[1].value, 1.0);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        assert!(parse("<html>nope</html>").unwrap_err().contains("line 1"));
        assert!(parse("x{a=1} 2").unwrap_err().contains("quotes"));
        assert!(parse("ok 1\nx{a=\"1\" 2")
            .unwrap_err()
            .starts_with("line 2"));
        assert!(parse("x abc").unwrap_err().contains("no number"));
        assert!(parse("9x 1").unwrap_err().contains("bad metric name"));
    }
}
