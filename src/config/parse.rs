//! The pipeline file's TOML into figment values, one spec table at a time.
//!
//! `toml::from_str` holds the whole document three times while it parses (its tokens,
//! its events, its spanned tables: ~2 KiB per spec table), which made the parse the
//! peak of a run's memory. Here each `[specs.NAME]` table (with the tables under it
//! that follow it) is parsed on its own and moved into the result, and the rest of the
//! file is parsed as one document. The result is the same `Dict`.
//!
//! Only for files whose shape makes that provably the same: whenever anything is
//! unusual (a spec table written twice, `specs` also set by dotted keys or an inline
//! table, a spec's sub-table away from its spec, a syntax error anywhere), the whole
//! file is parsed at once, as before, so that every error and its position are the
//! ones `toml` gives for the whole file. Reads files; judges nothing.

use figment::value::{Dict, Value};
use toml_parser::lexer::TokenKind;

/// Parses the pipeline file's text as `toml::from_str::<Dict>` does, except that a
/// spec table may be left as text (see `Lazy`): in the dict it is then an empty table.
pub fn pipeline(text: &str) -> Result<(Dict, Lazy), toml::de::Error> {
    match by_spec(text) {
        Some(parsed) => Ok(parsed),
        None => toml::from_str::<Dict>(text).map(|dict| (dict, Lazy::default())),
    }
}

/// Spec tables kept as their text in the pipeline file rather than as values: each
/// was parsed once (so the file is known good) and is parsed again when asked for. A
/// figment table costs ~820 bytes even with one key; this costs ~60.
#[derive(Debug, Default)]
pub struct Lazy(Vec<(Box<str>, usize, usize)>);

impl Lazy {
    /// Whether spec `name` is kept as text.
    pub fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The table of spec `name` as the file writes it, when it is kept as text.
    pub fn table(&self, text: &str, name: &str) -> Option<Dict> {
        let &(_, start, end) = self.find(name)?;
        match spec_table(text.get(start..end)?, name)? {
            Value::Dict(_, mut table) => {
                table
                    .values_mut()
                    .for_each(super::load::datetimes_as_strings);
                Some(table)
            }
            _ => None,
        }
    }

    fn find(&self, name: &str) -> Option<&(Box<str>, usize, usize)> {
        self.0
            .binary_search_by(|(n, ..)| (**n).cmp(name))
            .ok()
            .map(|i| &self.0[i])
    }
}

/// Whether a spec table must be kept as values: what the loader does to spec tables
/// as soon as the file is read (matrix expansion, its `${matrix.…}` check) needs it.
/// Text that might spell `matrix` (escapes included) says so.
fn needs_values(text: &str) -> bool {
    text.contains("matrix") || text.contains('\\')
}

/// A table header: `[a.b]` or `[[a.b]]`, at byte `start` of the text.
struct Header {
    start: usize,
    path: Vec<String>,
    array: bool,
}

/// The spec table being gathered: its name and where its text starts.
struct Gathering {
    name: String,
    start: usize,
}

/// The file parsed a spec table at a time, or `None` where that might not be what
/// parsing it whole gives.
fn by_spec(text: &str) -> Option<(Dict, Lazy)> {
    let mut rest = String::new();
    let mut specs = Dict::new();
    let mut lazy = Vec::new();
    // Whether the rest holds a `[specs]` header: then `specs` is a table written
    // with headers, which spec tables may add to.
    let mut specs_header = false;
    // Where the section being read started, and the spec table it belongs to.
    let mut section_start = 0;
    let mut gathering: Option<Gathering> = None;

    let finish = |upto: usize,
                  next: Option<&Header>,
                  section_start: &mut usize,
                  gathering: &mut Option<Gathering>,
                  rest: &mut String,
                  specs: &mut Dict,
                  lazy: &mut Vec<(Box<str>, usize, usize)>|
     -> Option<()> {
        // A header under the spec being gathered continues it.
        if let (Some(g), Some(h)) = (gathering.as_ref(), next)
            && h.path.len() > 2
            && h.path[0] == "specs"
            && h.path[1] == g.name
        {
            return Some(());
        }
        if let Some(g) = gathering.take() {
            let chunk = &text[g.start..upto];
            let mut table = spec_table(chunk, &g.name)?;
            if !matches!(table, Value::Dict(..)) {
                return None;
            }
            if !needs_values(chunk) {
                table = Value::from(Dict::new());
                lazy.push((g.name.clone().into_boxed_str(), g.start, upto));
            }
            if specs.insert(g.name, table).is_some() {
                return None;
            }
        } else {
            rest.push_str(&text[*section_start..upto]);
        }
        *section_start = upto;
        if let Some(h) = next
            && !h.array
            && h.path.len() == 2
            && h.path[0] == "specs"
        {
            *gathering = Some(Gathering {
                name: h.path[1].clone(),
                start: h.start,
            });
        }
        Some(())
    };

    let mut tokens = toml_parser::Source::new(text).lex();
    // Brackets and braces open in a value (a header is a `[` outside any).
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => line_start = depth == 0,
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let start = token.span().start();
                let header = header(text, start, &mut tokens)?;
                if header.path == ["specs"] && !header.array {
                    specs_header = true;
                }
                finish(
                    start,
                    Some(&header),
                    &mut section_start,
                    &mut gathering,
                    &mut rest,
                    &mut specs,
                    &mut lazy,
                )?;
                line_start = false;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.checked_sub(1)?;
                line_start = false;
            }
            TokenKind::Eof => break,
            _ => line_start = false,
        }
    }
    finish(
        text.len(),
        None,
        &mut section_start,
        &mut gathering,
        &mut rest,
        &mut specs,
        &mut lazy,
    )?;
    lazy.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let lazy = Lazy(lazy);

    let mut dict = toml::from_str::<Dict>(&rest).ok()?;
    if specs.is_empty() {
        return Some((dict, lazy));
    }
    match dict.get_mut("specs") {
        None => {
            dict.insert("specs".into(), Value::from(specs));
        }
        // `specs` written with headers only (`[specs]`, and sub-tables of specs not
        // gathered): the spec tables add to it, as they would in one document.
        Some(Value::Dict(_, written)) if specs_header => {
            for (name, table) in specs {
                if written.insert(name, table).is_some() {
                    return None;
                }
            }
        }
        // `specs` by dotted keys or an inline table: whether the spec tables may add
        // to it is the whole document's parser's call.
        Some(_) => return None,
    }
    Some((dict, lazy))
}

/// Reads a header whose `[` is at `start`: its key path, and whether it is `[[…]]`.
fn header(text: &str, start: usize, tokens: &mut toml_parser::lexer::Lexer<'_>) -> Option<Header> {
    let mut array = false;
    let mut end = None;
    let mut first = true;
    for token in tokens.by_ref() {
        match token.kind() {
            TokenKind::LeftSquareBracket if first => array = true,
            TokenKind::RightSquareBracket => {
                end = Some(token.span().end());
                break;
            }
            TokenKind::Newline | TokenKind::Eof | TokenKind::LeftSquareBracket => return None,
            _ => {}
        }
        first = false;
    }
    let mut end = end?;
    if array {
        // The second `]`, right after the first.
        let next = tokens.next()?;
        if next.kind() != TokenKind::RightSquareBracket || next.span().start() != end {
            return None;
        }
        end = next.span().end();
    }
    let written = &text[start..end];
    let inner = written
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_matches([' ', '\t']);
    let bare = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let path: Vec<String> = inner
        .split('.')
        .map(|k| k.trim_matches([' ', '\t']))
        .map(String::from)
        .collect();
    if path.iter().all(|k| bare(k)) {
        return Some(Header { start, path, array });
    }
    // Quoted keys: the header alone, as a document, says what its path is.
    let doc = toml::from_str::<toml::Table>(written).ok()?;
    let mut path = Vec::new();
    let mut table = &doc;
    loop {
        let mut entries = table.iter();
        let (key, value) = entries.next()?;
        if entries.next().is_some() {
            return None;
        }
        path.push(key.clone());
        match value {
            toml::Value::Table(t) if t.is_empty() => break,
            toml::Value::Table(t) => table = t,
            toml::Value::Array(a) if array && a.len() == 1 => match &a[0] {
                toml::Value::Table(t) if t.is_empty() => break,
                _ => return None,
            },
            _ => return None,
        }
    }
    Some(Header { start, path, array })
}

/// One spec table's text (its header first) → the table, when it parses and holds
/// that spec only.
fn spec_table(text: &str, name: &str) -> Option<Value> {
    let mut dict = toml::from_str::<Dict>(text).ok()?;
    if dict.len() != 1 {
        return None;
    }
    let Some(Value::Dict(_, mut specs)) = dict.remove("specs") else {
        return None;
    };
    if specs.len() != 1 {
        return None;
    }
    specs.remove(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What parsing at once gives, value or error message.
    fn whole(text: &str) -> Result<Dict, String> {
        toml::from_str::<Dict>(text).map_err(|e| e.to_string())
    }

    /// `pipeline`, with the spec tables it left as text parsed back in.
    fn filled(text: &str) -> Result<Dict, String> {
        let (mut dict, lazy) = pipeline(text).map_err(|e| e.to_string())?;
        if let Some(Value::Dict(_, specs)) = dict.get_mut("specs") {
            for (name, value) in specs.iter_mut() {
                if let Some(table) = lazy.table(text, name) {
                    assert!(matches!(value, Value::Dict(_, d) if d.is_empty()));
                    *value = Value::from(table);
                }
            }
        }
        Ok(dict)
    }

    /// The loader turns dates into strings; so does `Lazy::table`.
    fn whole_as_loaded(text: &str) -> Result<Dict, String> {
        whole(text).map(|mut d| {
            d.values_mut()
                .for_each(super::super::load::datetimes_as_strings);
            d
        })
    }

    fn check(text: &str) {
        let mut got = filled(text);
        if let Ok(d) = got.as_mut() {
            d.values_mut()
                .for_each(super::super::load::datetimes_as_strings);
        }
        assert_eq!(got, whole_as_loaded(text), "for:\n{text}");
    }

    #[test]
    fn spec_tables_parsed_one_by_one_give_what_the_whole_file_gives() {
        let cases = [
            "",
            "jobs = 2\n",
            "jobs = 2\n[specs.a]\ncommand = [\"true\"]\n[specs.b]\ncommand = \"x\"\ndepends_on = [\"a\"]\n",
            // Sub-tables that follow their spec, and array tables under it.
            "[specs.a]\ncommand = \"x\"\n[specs.a.env]\nK = \"v\"\n[[specs.a.retry_rules]]\naction = \"fail\"\n[specs.b]\ncommand = \"y\"\n",
            // A `[specs]` header first, with keys of its own.
            "[specs]\n[specs.a]\ncommand = \"x\"\n",
            "[specs]\nb.command = \"y\"\n[specs.a]\ncommand = \"x\"\n",
            // Tables after the specs, and array tables at the top.
            "[specs.a]\ncommand = \"x\"\n[slurm]\npartition = \"p\"\n[[retry_rules]]\naction = \"retry\"\n[[retry_rules]]\naction = \"fail\"\n",
            // Headers and brackets where they are not headers.
            "[specs.a]\ncommand = [\n  \"sh\",\n  \"-c\",\n]\nenv = { A = \"[specs.b]\" }\n[specs.b]\ncommand = \"\"\"\n[specs.c]\n\"\"\"\n",
            "[ specs . a ]  # spaced\ncommand = \"x\"\n[specs.\"b.c\"]\ncommand = \"y\"\n['specs'.d]\ncommand = \"z\"\n",
            // Windows line ends, and a byte order mark.
            "jobs = 2\r\n[specs.a]\r\ncommand = [\r\n\"x\",\r\n]\r\n[specs.b]\r\ncommand = \"y\"\r\n",
            "\u{feff}[specs.a]\ncommand = \"x\"\n",
            // A `[specs]` header after the spec tables, and a multi-line inline table.
            "[specs.a]\ncommand = \"x\"\n[specs]\nb = { command = \"y\" }\n",
            "[specs.a]\ncommand = \"x\"\nenv = {\n  K = \"[specs.z]\",\n}\n[specs.b]\ncommand = \"y\"\n",
            // Dates, kept as toml gives them (the loader makes them strings).
            "[specs.a]\ncommand = \"x\"\ncwd = 1979-05-27T07:32:00Z\n",
        ];
        for text in cases {
            check(text);
            assert!(by_spec(text).is_some(), "parsed whole:\n{text}");
        }
    }

    #[test]
    fn what_one_document_refuses_is_refused_with_the_same_message() {
        let cases = [
            // A spec table twice, and a sub-table away from its spec.
            "[specs.a]\ncommand = \"x\"\n[specs.a]\ncommand = \"y\"\n",
            "[specs.a]\ncommand = \"x\"\n[specs.b]\ncommand = \"y\"\n[specs.a.env]\nK = \"v\"\n",
            // `specs` written otherwise too.
            "specs = { b = { command = \"y\" } }\n[specs.a]\ncommand = \"x\"\n",
            "specs.b.command = \"y\"\n[specs.a]\ncommand = \"x\"\n",
            "specs = 3\n[specs.a]\ncommand = \"x\"\n",
            "[[specs]]\n[specs.a]\ncommand = \"x\"\n",
            "[specs]\na.command = \"y\"\n[specs.a]\ncommand = \"x\"\n",
            // Syntax errors in a spec table, and in the rest.
            "[specs.a]\ncommand = [\"x\"\n[specs.b]\ncommand = \"y\"\n",
            "[specs.a]\ncommand = \"x\"\njobs = = 2\n",
            "jobs = \n[specs.a]\ncommand = \"x\"\n",
            "[specs.a\ncommand = \"x\"\n",
            "[specs.a]]\ncommand = \"x\"\n",
            "[specs.a] x = 1\ncommand = \"x\"\n",
            "]\n[specs.a]\n",
            "[specs.a]\ncommand = \"x\"\ncommand = \"y\"\n",
            "[specs.a]\ncommand = \"\"\"unclosed\n[specs.b]\n",
        ];
        for text in cases {
            check(text);
        }
    }

    /// Pieces of pipeline files, right and wrong, put together at random: table by
    /// table or whole, the same values or the same error.
    #[test]
    fn any_mix_of_tables_and_mistakes_parses_as_the_whole_file_does() {
        use proptest::prelude::*;
        const PIECES: &[&str] = &[
            "jobs = 2\n",
            "[specs]\n",
            "[specs.a]\n",
            "[specs.b]\n",
            "[specs.\"c.d\"]\n",
            "[specs.a.env]\n",
            "[[specs.a.retry_rules]]\n",
            "[[retry_rules]]\n",
            "[slurm]\n",
            "[[specs]]\n",
            "[specs.a\n",
            "command = \"x\"\n",
            "command = [\"x\",\n \"y\"]\n",
            "action = \"fail\"\n",
            "K = \"v\"\n",
            "b.command = \"y\"\n",
            "specs.e.command = \"z\"\n",
            "specs = { f = { command = \"w\" } }\n",
            "env = { A = \"[specs.b]\" }\n",
            "s = \"\"\"\n[specs.b]\n\"\"\"\n",
            "arr = [\n[1],\n]\n",
            "# [specs.a]\n",
            "\n",
            "x = \n",
            "]\n",
            "[specs.b] # ]\n",
        ];
        proptest!(ProptestConfig::with_cases(2000), |(picks in proptest::collection::vec(0..PIECES.len(), 0..12))| {
            let text: String = picks.iter().map(|&i| PIECES[i]).collect();
            let mut got = filled(&text);
            if let Ok(d) = got.as_mut() {
                d.values_mut().for_each(super::super::load::datetimes_as_strings);
            }
            prop_assert_eq!(got, whole_as_loaded(&text), "for:\n{}", text);
        });
    }

    #[test]
    fn a_large_file_is_parsed_table_by_table() {
        let mut text = String::from("jobs = 2\n");
        for i in 0..500 {
            text.push_str(&format!("[specs.s{i:06}]\ncommand = [\"true\"]\n"));
        }
        let (_, lazy) = by_spec(&text).unwrap();
        assert_eq!(lazy.0.len(), 500, "every spec table kept as text");
        check(&text);
    }
}
