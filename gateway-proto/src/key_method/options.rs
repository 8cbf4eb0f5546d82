//! Option text: one option split into words with OpenVPN quoting, and the
//! comma-separated lists of the options string and of push messages.

/// One option of an options string or push message: a name and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Option name, e.g. `route`.
    pub name: String,
    /// Arguments, unquoted.
    pub args: Vec<String>,
}

/// Why an option or option list could not be parsed or emitted; offsets are byte offsets
/// into the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A quote opened at `offset` is never closed.
    #[error("option text: quote opened at byte {offset} is not closed")]
    UnterminatedQuote {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// A backslash at the very end.
    #[error("option text: backslash at byte {offset} escapes nothing")]
    DanglingEscape {
        /// Offset of the backslash.
        offset: usize,
    },
    /// A character an option cannot carry (NUL anywhere, `,` inside an option).
    #[error("option {name:?}: cannot carry the character {found:?}")]
    ForbiddenCharacter {
        /// Option name.
        name: String,
        /// The character.
        found: char,
    },
}

impl Directive {
    /// Splits one option into words: whitespace separates; `"…"` groups and allows `\`
    /// escapes; `'…'` groups literally; outside quotes `\` escapes the next character.
    /// Returns `None` for text with no words.
    pub fn parse(text: &str) -> Result<Option<Self>, OptionError> {
        let mut words: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut chars = text.char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {
                    if let Some(word) = current.take() {
                        words.push(word);
                    }
                }
                '"' => {
                    let word = current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            None => return Err(OptionError::UnterminatedQuote { offset }),
                            Some((_, '"')) => break,
                            Some((escape, '\\')) => match chars.next() {
                                Some((_, e)) => word.push(e),
                                None => return Err(OptionError::DanglingEscape { offset: escape }),
                            },
                            Some((_, other)) => word.push(other),
                        }
                    }
                }
                '\'' => {
                    let word = current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            None => return Err(OptionError::UnterminatedQuote { offset }),
                            Some((_, '\'')) => break,
                            Some((_, other)) => word.push(other),
                        }
                    }
                }
                '\\' => match chars.next() {
                    Some((_, e)) => current.get_or_insert_with(String::new).push(e),
                    None => return Err(OptionError::DanglingEscape { offset }),
                },
                other => current.get_or_insert_with(String::new).push(other),
            }
        }
        if let Some(word) = current {
            words.push(word);
        }
        let mut words = words.into_iter();
        Ok(words.next().map(|name| Directive {
            name,
            args: words.collect(),
        }))
    }

    /// The option as text, each word double-quoted (with `\` escapes) only if it needs it.
    /// Fails on NUL or `,`, which no option may contain.
    pub fn to_text(&self) -> Result<String, OptionError> {
        let mut out = String::new();
        for (i, word) in std::iter::once(&self.name).chain(&self.args).enumerate() {
            if let Some(found) = word.chars().find(|c| matches!(c, '\0' | ',')) {
                return Err(OptionError::ForbiddenCharacter {
                    name: self.name.clone(),
                    found,
                });
            }
            if i > 0 {
                out.push(' ');
            }
            let needs_quotes = word.is_empty()
                || word
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
            if needs_quotes {
                out.push('"');
                for c in word.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(word);
            }
        }
        Ok(out)
    }
}

/// Parses a comma-separated option list (an options string, or a push message after its
/// `PUSH_REPLY,` prefix). Commas always separate (options cannot contain them); empty
/// items are skipped.
pub fn parse_option_list(text: &str) -> Result<Vec<Directive>, OptionError> {
    let mut directives = Vec::new();
    let mut base = 0;
    for item in text.split(',') {
        let parsed = Directive::parse(item).map_err(|e| match e {
            OptionError::UnterminatedQuote { offset } => OptionError::UnterminatedQuote {
                offset: base + offset,
            },
            OptionError::DanglingEscape { offset } => OptionError::DanglingEscape {
                offset: base + offset,
            },
            other => other,
        })?;
        directives.extend(parsed);
        base += item.len() + 1;
    }
    Ok(directives)
}

/// Joins options with `,` (no trailing comma).
pub fn emit_option_list(directives: &[Directive]) -> Result<String, OptionError> {
    let texts = directives
        .iter()
        .map(Directive::to_text)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(texts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn options_string_of_the_lab_client() {
        let text = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-client";
        let list = parse_option_list(text).unwrap();
        assert_eq!(list.len(), 10);
        assert_eq!(
            list[0],
            Directive {
                name: "V4".to_owned(),
                args: vec![]
            }
        );
        assert_eq!(
            list[6],
            Directive {
                name: "auth".to_owned(),
                args: vec!["[null-digest]".to_owned()]
            }
        );
        assert_eq!(emit_option_list(&list).unwrap(), text);
    }

    #[test]
    fn option_quoting() {
        let d = Directive::parse(r#"static-challenge "Enter MFA code " 1"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.args, vec!["Enter MFA code ".to_owned(), "1".to_owned()]);
        assert_eq!(
            d.to_text().unwrap(),
            r#"static-challenge "Enter MFA code " 1"#
        );
        let d = Directive::parse(r#"x 'a "b' "c\"d\\e" f\ g "" h"i j"k"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.args, vec!["a \"b", "c\"d\\e", "f g", "", "hi jk"]);
        assert_eq!(
            d.to_text().unwrap(),
            r#"x "a \"b" "c\"d\\e" "f g" "" "hi jk""#
        );
        assert_eq!(Directive::parse("  \t "), Ok(None));
    }

    #[test]
    fn option_list_skips_empty_items() {
        let list = parse_option_list(",route 10.0.0.0 255.0.0.0,, ,ping 10,").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].name, "ping");
        assert_eq!(parse_option_list(""), Ok(vec![]));
        assert_eq!(emit_option_list(&[]), Ok(String::new()));
    }

    #[test]
    fn option_errors_with_offsets() {
        assert_eq!(
            parse_option_list("ping 10,x \"abc"),
            Err(OptionError::UnterminatedQuote { offset: 10 })
        );
        assert_eq!(
            parse_option_list("ping 10,x 'abc"),
            Err(OptionError::UnterminatedQuote { offset: 10 })
        );
        assert_eq!(
            parse_option_list("a,b\\"),
            Err(OptionError::DanglingEscape { offset: 3 })
        );
        assert_eq!(
            parse_option_list("a,\"b\\"),
            Err(OptionError::DanglingEscape { offset: 4 })
        );
        let comma = Directive {
            name: "route".to_owned(),
            args: vec!["a,b".to_owned()],
        };
        assert_eq!(
            emit_option_list(&[comma]),
            Err(OptionError::ForbiddenCharacter {
                name: "route".to_owned(),
                found: ','
            })
        );
        let nul = Directive {
            name: "x\0".to_owned(),
            args: vec![],
        };
        assert_eq!(
            nul.to_text(),
            Err(OptionError::ForbiddenCharacter {
                name: "x\0".to_owned(),
                found: '\0'
            })
        );
    }

    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("no NUL or comma", |c| !matches!(c, '\0' | ',')),
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn option_list_round_trip(list in prop::collection::vec((word(), prop::collection::vec(word(), 0..4)), 0..5)) {
            let list: Vec<Directive> = list.into_iter().map(|(name, args)| Directive { name, args }).collect();
            let text = emit_option_list(&list).unwrap();
            prop_assert_eq!(parse_option_list(&text), Ok(list));
        }

        #[test]
        fn option_parse_never_panics(text in "\\PC{0,100}") {
            let _ = parse_option_list(&text);
        }
    }
}
