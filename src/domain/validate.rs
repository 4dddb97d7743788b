//! Input validation: every id and string that reaches the database passes through here.

use crate::error::{AppError, AppResult, FieldViolation};

mod normal_form;

pub use normal_form::normal_form;

/// Ids of campaigns, users, members and conversations are opaque strings owned by the systems of record.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_DISPLAY_NAME_LEN: usize = 200;
pub const MAX_GROUP_NAME_LEN: usize = 100;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_TAGS: usize = 100;
/// Explicit conversation lists in one access-group request.
pub const MAX_SCOPE_CONVERSATIONS: usize = 10_000;
pub const MAX_IDS_PER_REQUEST: usize = 1_000;

/// Collects every invalid field of a request, so that one answer names them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// The checked value; on a violation, records it and returns a default stand-in, which
    /// [`Violations::finish`] then refuses to let through.
    pub fn check<T: Default>(&mut self, result: AppResult<T>) -> T {
        match result {
            Ok(value) => value,
            Err(AppError::InvalidArgument(mut violations)) => {
                self.0.append(&mut violations);
                T::default()
            }
            Err(other) => unreachable!("validators only report invalid arguments, not {other:?}"),
        }
    }

    /// Records a violation found by the caller.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `Err` naming every violation recorded, if any.
    pub fn finish(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::InvalidArgument(self.0))
        }
    }
}

/// An opaque id: 1 to 128 printable ASCII characters, no spaces.
pub fn id(field: &str, value: &str) -> AppResult<()> {
    if value.is_empty() {
        return Err(AppError::invalid(field, format!("{field} is required")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(AppError::invalid(
            field,
            format!(
                "{field} is {} characters long; ids are at most {MAX_ID_LEN}",
                value.len()
            ),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::invalid(
            field,
            format!("{field} {value:?} may only contain printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// An optional id: empty means "not given".
pub fn optional_id(field: &str, value: &str) -> AppResult<Option<String>> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(field, value).map(|()| Some(value.to_owned()))
    }
}

/// A list of ids: each valid, at most `max`, duplicates dropped (first occurrence wins).
pub fn id_list(field: &str, values: &[String], max: usize) -> AppResult<Vec<String>> {
    if values.len() > max {
        return Err(AppError::invalid(
            field,
            format!(
                "{field} has {} entries; at most {max} are allowed",
                values.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        id(&format!("{field}[{i}]"), value)?;
        if seen.insert(value.as_str()) {
            out.push(value.clone());
        }
    }
    Ok(out)
}

/// A list of ids where a repeat is a mistake (each bulk target takes turns): each valid, at most `max`,
/// no id twice.
pub fn distinct_id_list(field: &str, values: &[String], max: usize) -> AppResult<Vec<String>> {
    let ids = id_list(field, values, max)?;
    if ids.len() < values.len() {
        let repeated = values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        return Err(AppError::invalid(
            field,
            format!("{field} names {repeated:?} more than once; name each user once"),
        ));
    }
    Ok(ids)
}

/// Text people tell apart by eye (group names, tags), in its [`normal_form`]: at most `max` characters,
/// no control, bidi or invisible characters.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> AppResult<String> {
    // Refused characters are found before whitespace is folded: a tab is a control, not a space.
    let composed = normal_form::compose(value);
    let checked = checked_text(field, &composed, usize::MAX, required, false)?;
    let normal = normal_form::fold_whitespace(&checked);
    check_length(field, &normal, max)?;
    Ok(normal)
}

/// A person's display name: like [`text`], but joiners (U+200C, U+200D) are allowed.
pub fn display_name(field: &str, value: &str, max: usize) -> AppResult<String> {
    checked_text(field, value, max, false, true)
}

fn checked_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
    allow_joiners: bool,
) -> AppResult<String> {
    let trimmed = value.trim();
    if required && trimmed.is_empty() {
        return Err(AppError::invalid(field, format!("{field} is required")));
    }
    check_length(field, trimmed, max)?;
    if let Some((c, kind)) = trimmed
        .chars()
        .find_map(|c| refused_char(c, allow_joiners).map(|k| (c, k)))
    {
        return Err(AppError::invalid(
            field,
            format!(
                "{field} may not contain {kind} characters; it contains U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

fn check_length(field: &str, value: &str, max: usize) -> AppResult<()> {
    let chars = value.chars().count();
    if chars > max {
        return Err(AppError::invalid(
            field,
            format!("{field} is {chars} characters long; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// Why `c` may not appear in a name or tag, if it may not. Bidi controls can make text display as
/// something else ("Trojan Source"), and invisible characters make two names look identical. Joiners
/// (U+200C, U+200D) are refused too, in group names and tags, which people match by eye; a person's
/// display name may carry them (emoji sequences, Persian and Indic scripts need them).
fn refused_char(c: char, allow_joiners: bool) -> Option<&'static str> {
    match c {
        _ if c.is_control() => Some("control"),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some("bidirectional control"),
        '\u{200C}' | '\u{200D}' if allow_joiners => None,
        '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{00AD}'
        | '\u{180E}' => Some("zero-width or invisible"),
        _ => None,
    }
}

/// Member tags: each 1 to 64 characters in normal form, at most 100, duplicates (after normalization)
/// dropped, sorted for stable storage.
pub fn tags(field: &str, values: &[String]) -> AppResult<Vec<String>> {
    if values.len() > MAX_TAGS {
        return Err(AppError::invalid(
            field,
            format!(
                "{field} has {} tags; at most {MAX_TAGS} are allowed",
                values.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        out.push(text(&format!("{field}[{i}]"), value, MAX_TAG_LEN, true)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: AppError) -> String {
        match err.fields().as_slice() {
            [field] => field.to_string(),
            other => panic!("expected one invalid field, got {other:?}"),
        }
    }

    #[test]
    fn display_names_may_join_but_group_names_and_tags_may_not() {
        let family = "Ana \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(display_name("display_name", family, 50).unwrap(), family);
        assert!(text("name", family, 50, true).is_err());
        assert!(display_name("display_name", "a\u{202E}b", 50).is_err());
        assert!(display_name("display_name", "a\u{200B}b", 50).is_err());
    }

    #[test]
    fn violations_name_every_bad_field() {
        let mut violations = Violations::default();
        violations.check(id("conversation_id", ""));
        let kept = violations.check(optional_id("assignee_id", "ok"));
        violations.check(tags("member_tags", &["".to_string()]));
        assert_eq!(kept.as_deref(), Some("ok"));
        let err = violations.finish().unwrap_err();
        assert_eq!(err.fields(), vec!["conversation_id", "member_tags[0]"]);
        assert!(Violations::default().finish().is_ok());
    }

    #[test]
    fn ids_must_be_present_bounded_and_printable() {
        assert!(id("user_id", "u-1@example.org").is_ok());
        assert_eq!(field_of(id("user_id", "").unwrap_err()), "user_id");
        assert!(id("user_id", &"x".repeat(MAX_ID_LEN)).is_ok());
        assert!(id("user_id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(id("user_id", "has space").is_err());
        assert!(id("user_id", "tab\t").is_err());
        assert!(id("user_id", "é").is_err());
    }

    #[test]
    fn optional_id_treats_empty_as_absent() {
        assert_eq!(optional_id("user_id", "").unwrap(), None);
        assert_eq!(optional_id("user_id", "u1").unwrap(), Some("u1".into()));
        assert!(optional_id("user_id", " ").is_err());
    }

    #[test]
    fn id_lists_name_the_bad_entry_and_drop_duplicates() {
        let ids = vec!["a".to_string(), "b".into(), "a".into()];
        assert_eq!(id_list("ids", &ids, 10).unwrap(), vec!["a", "b"]);
        let bad = vec!["a".to_string(), "".into()];
        assert_eq!(field_of(id_list("ids", &bad, 10).unwrap_err()), "ids[1]");
        assert!(id_list("ids", &ids, 2).is_err());
    }

    #[test]
    fn distinct_lists_refuse_repeats() {
        let ids = vec!["a".to_string(), "b".into(), "a".into()];
        let err = distinct_id_list("ids", &ids, 10).unwrap_err();
        assert!(err.to_string().contains("\"a\""));
        assert_eq!(
            distinct_id_list("ids", &ids[..2], 10).unwrap(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(
            text("name", "  Field team ", 20, true).unwrap(),
            "Field team"
        );
        assert!(text("name", "   ", 20, true).is_err());
        assert_eq!(text("name", "", 20, false).unwrap(), "");
        assert!(text("name", &"é".repeat(21), 20, true).is_err());
        assert!(text("name", &"é".repeat(20), 20, true).is_ok());
        assert!(text("name", "a\nb", 20, true).is_err());
    }

    fn message_of(err: AppError) -> String {
        match err {
            err @ AppError::InvalidArgument(_) => err.to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn text_refuses_bidi_controls_and_invisible_characters_naming_the_code_point() {
        let refused = [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}',
            '\u{200D}', '\u{2060}', '\u{2061}', '\u{2062}', '\u{2063}', '\u{2064}', '\u{FEFF}',
            '\u{00AD}', '\u{180E}',
        ];
        for c in refused {
            let err = text("name", &format!("ab{c}cd"), 20, true).unwrap_err();
            let message = message_of(err);
            let code_point = format!("U+{:04X}", u32::from(c));
            assert!(
                message.contains(&code_point),
                "{message:?} names {code_point}"
            );
            assert!(message.starts_with("name "), "{message:?} names the field");
        }
        let message = message_of(text("name", "evil\u{202E}gpj.exe", 20, true).unwrap_err());
        assert!(message.contains("U+202E") && message.contains("bidirectional"));
        let message = message_of(text("name", "a\u{200B}b", 20, true).unwrap_err());
        assert!(message.contains("U+200B") && message.contains("invisible"));
        assert!(message_of(text("name", "a\tb", 20, true).unwrap_err()).contains("U+0009"));
        // Neighbours of the refused ranges, and ordinary non-Latin text, are fine.
        for ok in [
            "a\u{2010}b",
            "a\u{2065}b",
            "a\u{206A}b",
            "Zoë",
            "עברית",
            "日本語",
        ] {
            assert_eq!(text("name", ok, 20, true).unwrap(), ok);
        }
    }

    #[test]
    fn tags_refuse_confusable_characters_by_index() {
        let with_zwj = vec!["donor".to_string(), "vol\u{200D}unteer".into()];
        let err = tags("member_tags", &with_zwj).unwrap_err();
        assert_eq!(field_of(err), "member_tags[1]");
    }

    #[test]
    fn tags_are_sorted_and_deduplicated() {
        let tags_in = vec!["volunteer".to_string(), "donor".into(), "volunteer".into()];
        assert_eq!(tags("tags", &tags_in).unwrap(), vec!["donor", "volunteer"]);
        assert!(tags("tags", &["".to_string()]).is_err());
        assert!(tags("tags", &vec!["t".to_string(); MAX_TAGS + 1]).is_err());
    }
}

#[cfg(test)]
mod props;
