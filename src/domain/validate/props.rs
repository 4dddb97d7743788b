//! Property tests of the validators: what they accept is exactly what their rules describe.

use proptest::prelude::*;

use super::*;

/// Strings near the id rules: printable ASCII, with spaces, anything, around the length limit.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{0,130}",
        "[ -~]{0,130}",
        ".{0,130}",
        "[!-~]{126,130}",
        any::<String>(),
    ]
}

/// Text with some refused characters mixed in.
fn text_like() -> impl Strategy<Value = String> {
    let refused = prop::sample::select(vec![
        '\u{0}', '\n', '\u{7F}', '\u{85}', '\u{061C}', '\u{200B}', '\u{200D}', '\u{200E}',
        '\u{202E}', '\u{2060}', '\u{2064}', '\u{2066}', '\u{2069}', '\u{FEFF}', '\u{00AD}',
        '\u{180E}',
    ]);
    let piece = prop_oneof![4 => any::<char>(), 2 => prop::char::range(' ', '~'), 1 => refused];
    prop::collection::vec(piece, 0..40).prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn id_accepts_exactly_1_to_128_printable_ascii_without_spaces(value in id_like()) {
        let expected = (1..=MAX_ID_LEN).contains(&value.len())
            && value.bytes().all(|b| (b'!'..=b'~').contains(&b));
        prop_assert_eq!(id("field", &value).is_ok(), expected);
    }

    #[test]
    fn text_accepts_exactly_bounded_text_without_refused_characters_in_normal_form(
        value in text_like(),
        max in 0usize..30,
        required in any::<bool>(),
    ) {
        let composed = normal_form::compose(&value);
        let trimmed = composed.trim();
        let normal = normal_form(&value);
        let expected = !(required && trimmed.is_empty())
            && normal.chars().count() <= max
            && trimmed.chars().all(|c| refused_char(c, false).is_none());
        match text("field", &value, max, required) {
            Ok(out) => {
                prop_assert!(expected);
                prop_assert_eq!(&out, &normal);
                prop_assert!(out.chars().all(|c| !c.is_control() && refused_char(c, false).is_none()));
                // What is stored is accepted again unchanged.
                prop_assert_eq!(text("field", &out, max, required).ok(), Some(out.clone()));
            }
            Err(err) => {
                prop_assert!(!expected);
                let is_field = matches!(err, AppError::InvalidArgument(_)) && err.fields() == vec!["field"];
                prop_assert!(is_field);
            }
        }
    }

    #[test]
    fn tags_are_each_valid_text_sorted_and_unique(values in prop::collection::vec(text_like(), 0..8)) {
        match tags("member_tags", &values) {
            Ok(out) => {
                prop_assert!(out.windows(2).all(|w| w[0] < w[1]));
                for tag in &out {
                    prop_assert!(text("t", tag, MAX_TAG_LEN, true).is_ok());
                }
            }
            Err(_) => prop_assert!(values.iter().any(|v| text("t", v, MAX_TAG_LEN, true).is_err())),
        }
    }
}
